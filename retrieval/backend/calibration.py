"""Calibration inputs for quantization: texts drawn from the collection being indexed, or the bundled set.

``data/calibration.jsonl`` holds general-domain queries (``{"query": ...}``) and passages
(``{"passage": ...}``) written for calibration, with no text of any evaluation collection: the
causal LM's SmoothQuant prompts (:mod:`rankwise.rerank.onnx.causal_lm`) and the default calibration of
``openvino-int8`` cross-encoders (every query paired with every passage) and encoders (queries and
passages) come from it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CALIBRATION_FILE = Path(__file__).parent / "data" / "calibration.jsonl"
CALIBRATION_SIZE = 128  # texts drawn from a collection for int8 calibration


def bundled() -> tuple[list[str], list[str]]:
    """``(queries, passages)`` of the bundled calibration file."""
    rows = [json.loads(line) for line in CALIBRATION_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["query"] for r in rows if "query" in r], [r["passage"] for r in rows if "passage" in r]


def bundled_texts() -> list[str]:
    """The bundled queries and passages, as one list of texts (an encoder's default calibration)."""
    queries, passages = bundled()
    return queries + passages


def bundled_pairs() -> list[tuple[str, str]]:
    """Every bundled query with every bundled passage (a cross-encoder's default calibration)."""
    queries, passages = bundled()
    return [(q, p) for q in queries for p in passages]


def corpus_calibration(documents: Iterable[Any], size: int = CALIBRATION_SIZE) -> list[str]:
    """The first ``size`` non-empty documents of a collection (:class:`rankwise.retrieval.formats.Document`
    or strings) as calibration texts: read as a stream, the same texts for every shard of a collection."""
    texts = []
    for doc in documents:
        text = doc if isinstance(doc, str) else doc.full_text
        if text.strip():
            texts.append(text)
        if len(texts) >= size:
            break
    return texts


def calibration_key(items: Sequence[Any]) -> str:
    """The first 12 hex digits of the SHA-256 of calibration texts (or pairs), which name the int8 files."""
    h = hashlib.sha256()
    for item in items:
        parts = item if isinstance(item, (tuple, list)) else (item,)
        h.update("\x1f".join(parts).encode() + b"\x1e")
    return h.hexdigest()[:12]
