"""Several systems on the same queries: ``bm25,dense,hybrid,bm25>>cross-encoder:MODEL``.

A system spec is ``FIRST[>>RERANKER]``: FIRST is ``bm25``, ``dense`` or ``hybrid`` (optionally
``dense:MODEL`` / ``hybrid:MODEL`` for another encoder than ``--model``), RERANKER a reranker spec
(:mod:`rankwise.rerank.spec`, e.g. ``cross-encoder:./my-ce,batch_size=16``). Each system is the single
pipeline of :func:`rankwise.eval.pipeline.run_pipeline` with its own settings, so its numbers are those of
``rankwise beir --retriever FIRST --reranker RERANKER``; the systems of one dataset share one
corpus, the cached indexes, the encoders and every first-stage run (``bm25`` and
``bm25>>cross-encoder:M`` search BM25 once).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from rankwise.eval.pipeline import RETRIEVERS, DatasetResult, PipelineSettings, run_pipeline
from rankwise.retrieval.errors import InputError

_OPTION = re.compile(r"^\s*[A-Za-z_][\w-]*\s*=")


def parse_systems(text: str) -> list[str]:
    """Split ``--systems`` on commas, keeping a reranker's ``key=value`` options with their spec."""
    specs: list[str] = []
    for piece in text.split(","):
        if _OPTION.match(piece) and specs and ">>" in specs[-1]:
            specs[-1] += "," + piece.strip()
        elif piece.strip():
            specs.append(piece.strip())
    if not specs:
        raise InputError("no systems given", field="systems")
    seen: set[str] = set()
    for spec in specs:
        if spec in seen:
            raise InputError(f"system {spec!r} is given twice: each system needs its own name", field="systems")
        seen.add(spec)
    return specs


def system_settings(spec: str, base: PipelineSettings, first_stage_weight: float = 0.0) -> PipelineSettings:
    """The pipeline settings of one system spec, the rest taken from ``base`` (``first_stage_weight``:
    for the systems with a reranker)."""
    first, sep, reranker = (part.strip() for part in spec.partition(">>"))
    kind, _, model = first.partition(":")
    if kind not in RETRIEVERS:
        raise InputError(f"system {spec!r} must start with one of {', '.join(RETRIEVERS)} "
                         "(then optionally >>RERANKER)", field="systems")
    if model and kind == "bm25":
        raise InputError(f"system {spec!r}: bm25 takes no model", field="systems")
    if sep and not reranker:
        raise InputError(f"system {spec!r} names no reranker after >>", field="systems")
    return dataclasses.replace(base, retriever=kind, model=model or base.model, reranker=reranker or None,
                               first_stage_weight=first_stage_weight if reranker else 0.0)


def run_systems(dataset: Any, specs: list[str], base: PipelineSettings, *, first_stage_weight: float = 0.0,
                progress: bool = True) -> dict[str, DatasetResult]:
    """Run every system on ``dataset`` (shared corpus, indexes, encoders and first stages)."""
    settings = {spec: system_settings(spec, base, first_stage_weight) for spec in specs}  # every spec checked before any work
    shared: dict[Any, Any] = {}
    results = {}
    for spec, system in settings.items():
        result = run_pipeline(dataset, system, progress, shared=shared)
        result.run.name = spec
        results[spec] = result
    return results


def query_seconds(timings: dict[str, float]) -> float:
    """Query-time cost of a system: its searches plus reranking (index building excluded)."""
    return sum(v for k, v in timings.items() if k.endswith("_search_s") or k == "rerank_s")
