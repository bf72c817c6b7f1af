"""The causal-LM graph's inputs as NumPy arrays: left-padded prompts, per-position attention masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rankwise.retrieval.backend.features import left_padded


def causal_allowed(attention_mask: np.ndarray) -> np.ndarray:
    """``[n, t, t]`` bool: query position i may read key j when j <= i and j is not padding (padding reads itself)."""
    t = attention_mask.shape[1]
    causal = np.tril(np.ones((t, t), dtype=bool))
    allowed = causal[None] & attention_mask.astype(bool)[:, None, :]
    allowed |= np.eye(t, dtype=bool)[None]
    return allowed


def prompt_features(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, np.ndarray]:
    """The causal-LM graph's inputs reading the next-token logits after each (left-padded) prompt."""
    ids, mask = left_padded(sequences, pad_id)
    return {
        "input_ids": ids,
        "allowed": causal_allowed(mask),
        "position_ids": np.clip(mask.cumsum(-1) - 1, 0, None),
        "positions": np.full((len(sequences), 1), ids.shape[1] - 1, dtype=np.int64),
    }
