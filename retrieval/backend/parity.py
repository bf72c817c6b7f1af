"""The parity check run at export time: the ONNX graph against the torch model on probe inputs.

fp32 must match torch within :data:`FP32_TOLERANCE` (max abs difference of embeddings, scores or logits). int8
and bf16 are compared by what users read: embeddings need a mean cosine of at least :data:`INT8_MIN_COSINE`
(bf16: :data:`BF16_MIN_COSINE`) to torch's (the minimum is recorded too: the 1-character probe ``"x"``, whose
embedding is mostly [CLS]/[SEP], is the worst, 0.977 for all-MiniLM-L6-v2, while real SciFact documents stay
above 0.99), and for every kind the ranking agreement (share of probe pairs ordered alike by torch and ONNX)
is reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rankwise.retrieval.errors import InputError

FP32_TOLERANCE = 1e-4
INT8_MIN_COSINE = 0.99
BF16_MIN_COSINE = 0.999  # bfloat16 keeps 8 bits of mantissa: all-MiniLM-L6-v2's SciFact vectors stay above 0.9999

PROBE_QUERIES = [
    "what causes heart disease",
    "vaccine safety in children",
    "supersonic flow over a wing",
    "gene expression in cancer cells",
]
PROBE_TEXTS = PROBE_QUERIES + [
    "Blood pressure and cholesterol are the main risk factors for heart disease in adults.",
    "The measles vaccine was given to 2,000 children; adverse events were rare and mild.",
    ("Shock waves form on the upper surface of the wing when the local flow becomes supersonic, "
     "thickening the boundary layer and raising drag."),
    "Tumour cells over-express the gene, and knocking it down slowed cell growth in culture.",
    "A neural network ranks documents by the inner product of dense query and document vectors.",
    "Kidney function declined in the treated group.",
    " ".join(["Laminar and turbulent boundary layers differ in heat transfer and skin friction."] * 40),
    "x",
]


def ranking_agreement(reference: np.ndarray, got: np.ndarray) -> float:
    """Share of pairs ``(i, j)`` ordered the same way by both score matrices' rows (Kendall-style, ties ignored)."""
    ref, new = np.atleast_2d(reference), np.atleast_2d(got)
    agree = total = 0
    for r, g in zip(ref, new):
        dr, dg = r[:, None] - r[None, :], g[:, None] - g[None, :]
        upper = np.triu(np.ones(dr.shape, dtype=bool), 1) & (dr != 0)
        agree += int((np.sign(dr[upper]) == np.sign(dg[upper])).sum())
        total += int(upper.sum())
    return agree / total if total else 1.0


def compare(reference: np.ndarray, got: np.ndarray, *, precision: str, vectors: bool,
            scores: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """The parity record of one variant (``precision``: ``fp32``, ``int8`` or ``bf16``, as
    :attr:`~rankwise.retrieval.backend.value.Backend.precision`): max abs diff, cosines (``vectors``),
    ranking agreement, and ``passed``.

    ``scores``: ``(torch, onnx)`` score matrices whose row orders are compared (default: the outputs).
    """
    reference, got = np.asarray(reference, dtype=np.float64), np.asarray(got, dtype=np.float64)
    record: dict[str, Any] = {"variant": precision, "probes": int(reference.shape[0]),
                              "max_abs_diff": float(np.abs(reference - got).max())}
    ref_scores, got_scores = scores if scores is not None else (reference, got)
    record["ranking_agreement"] = ranking_agreement(ref_scores, got_scores)
    if vectors:
        cos = (reference * got).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1) + 1e-12)
        record["min_cosine"], record["mean_cosine"] = float(cos.min()), float(cos.mean())
    if precision == "fp32":
        record["passed"] = record["max_abs_diff"] <= FP32_TOLERANCE
        record["requirement"] = f"max_abs_diff <= {FP32_TOLERANCE:g}"
    elif vectors:
        least = BF16_MIN_COSINE if precision == "bf16" else INT8_MIN_COSINE
        record["passed"] = record["mean_cosine"] >= least
        record["requirement"] = f"mean_cosine >= {least:g}"
    else:
        record["passed"] = True
        record["requirement"] = "reported only"
    return record


def require(record: dict[str, Any], what: str) -> None:
    """Raise an :class:`InputError` naming ``what`` when a parity record did not pass."""
    if not record["passed"]:
        measured = {k: round(v, 6) if isinstance(v, float) else v for k, v in record.items()
                    if k in ("max_abs_diff", "mean_cosine", "min_cosine", "ranking_agreement")}
        raise InputError(f"ONNX parity check failed for {what} ({record['variant']}): needs {record['requirement']}, "
                         f"measured {measured}", field="parity")
