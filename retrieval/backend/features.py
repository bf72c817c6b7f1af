"""Model inputs as NumPy arrays: tokenized texts and pairs, and left-padded token sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def text_features(tokenizer: Any, texts: Sequence[str], max_length: int | None,
                  pairs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Tokenize ``texts`` (or ``(texts, pairs)``) padded to the longest, cut to ``max_length``, as sentence-transformers does."""
    encoded = tokenizer(list(texts), list(pairs) if pairs is not None else None, padding=True,
                        truncation="longest_first", max_length=max_length, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}


def left_padded(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` ``[n, longest]`` int64, padded on the left."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq):] = seq
            mask[row, width - len(seq):] = 1
    return ids, mask
