"""Run fusion as small pure functions (as pyserini's ``pyserini.fusion`` has them).

- :func:`rrf`: reciprocal rank fusion, ``sum 1 / (k + rank)`` (Cormack, Clarke & Büttcher, SIGIR 2009).
- :func:`normalize`: per-query min-max score normalization.
- :func:`interpolate`: ``alpha * a + (1 - alpha) * b`` of normalized scores, a missing score
  counting as the query's minimum (0 after min-max).
"""

from __future__ import annotations

from collections.abc import Sequence

from rankwise.retrieval.run import Run


def rrf(runs: Sequence[Run], k: int = 60, depth: int | None = None) -> Run:
    """Reciprocal rank fusion of ``runs`` (ranks start at 1), each cut at ``depth`` when given."""
    fused: dict[str, dict[str, float]] = {}
    for run in runs:
        for qid, docs in run.items():
            scores = fused.setdefault(qid, {})
            for rank, (did, _) in enumerate(docs[:depth] if depth else docs, start=1):
                scores[did] = scores.get(did, 0.0) + 1.0 / (k + rank)
    return Run({q: s.items() for q, s in fused.items()}, name="rrf")


def normalize(run: Run) -> Run:
    """Min-max normalize each query's scores to [0, 1] (all equal scores become 1)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for qid, docs in run.items():
        if not docs:
            out[qid] = []
            continue
        hi, lo = docs[0][1], docs[-1][1]
        span = hi - lo
        out[qid] = [(d, (s - lo) / span if span > 0 else 1.0) for d, s in docs]
    return Run(out, name=run.name)


def interpolate(a: Run, b: Run, alpha: float = 0.5, depth: int | None = None) -> Run:
    """``alpha * a + (1 - alpha) * b`` over min-max normalized scores; absent documents score 0."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    na, nb = normalize(a.top(depth) if depth else a), normalize(b.top(depth) if depth else b)
    out: dict[str, dict[str, float]] = {}
    for weight, run in ((alpha, na), (1.0 - alpha, nb)):
        for qid, docs in run.items():
            scores = out.setdefault(qid, {})
            for did, score in docs:
                scores[did] = scores.get(did, 0.0) + weight * score
    return Run({q: s.items() for q, s in out.items()}, name="interpolation")
