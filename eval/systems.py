"""System specs of the command line, parsed once into pipelines: ``bm25,dense,hybrid,bm25>>cross-encoder:MODEL``.

A system spec is ``FIRST[>>RERANKER]``: FIRST is ``bm25``, ``dense`` or ``hybrid`` (optionally
``dense:MODEL`` / ``hybrid:MODEL`` for another encoder than the default), RERANKER a reranker spec
(:mod:`rankwise.rerank.spec`, e.g. ``cross-encoder:./my-ce,batch_size=16``). :func:`parse_system` turns
one into a :class:`~rankwise.retrieval.pipeline.Pipeline` named by the spec, the reranker spec parsed
here and nowhere else; an :class:`~rankwise.eval.experiment.Experiment` then runs the pipelines of one
dataset with every shared first stage computed once (``bm25`` and ``bm25>>cross-encoder:M`` search
BM25 once).
"""

from __future__ import annotations

import re
from typing import Any

from rankwise.retrieval.backend.value import TORCH, Backend
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.pipeline import BM25, Dense, Hybrid, Pipeline, Stage

RETRIEVERS = ("bm25", "dense", "hybrid")
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


def first_stage(kind: str, *, model: str = DEFAULT_ENCODER, index_type: str = "flat", fusion: str = "rrf",
                alpha: float = 0.5, backend: Backend | str = "torch", batch_size: int = 64) -> Stage:
    """The first stage ``bm25``, ``dense`` or ``hybrid`` (BM25 fused with ``dense`` by ``fusion``)."""
    if kind not in RETRIEVERS:
        raise InputError(f"unknown retriever {kind!r}; choose from {', '.join(RETRIEVERS)}", field="retriever")
    if kind == "bm25":
        return BM25()
    dense = Dense(model, index_type=index_type, backend=backend, batch_size=batch_size)
    return dense if kind == "dense" else Hybrid(BM25(), dense, fusion=fusion, alpha=alpha)


def parse_system(text: str, *, name: str | None = None, model: str = DEFAULT_ENCODER, index_type: str = "flat",
                 fusion: str = "rrf", alpha: float = 0.5, backend: Backend | str = "torch",
                 batch_size: int = 64, depth: int = 100, first_stage_weight: float = 0.0) -> Pipeline:
    """The pipeline of one system spec (module docstring), named ``name`` (default: the spec itself;
    ``Pipeline(parse_system(text).stages)`` is named by its stages, e.g. ``hybrid-rrf+cross-encoder``).

    The keyword arguments are the defaults the spec does not name: the encoder of ``dense`` /
    ``hybrid``, the rerank ``depth`` and ``first_stage_weight`` (systems with a reranker), and the
    ``backend`` a reranker spec without ``backend=`` gets.
    """
    from rankwise.rerank.spec import parse_spec

    first, sep, reranker = (part.strip() for part in text.partition(">>"))
    kind, _, own_model = first.partition(":")
    if kind not in RETRIEVERS:
        raise InputError(f"system {text!r} must start with one of {', '.join(RETRIEVERS)} "
                         "(then optionally >>RERANKER)", field="systems")
    if own_model and kind == "bm25":
        raise InputError(f"system {text!r}: bm25 takes no model", field="systems")
    if sep and not reranker:
        raise InputError(f"system {text!r} names no reranker after >>", field="systems")
    stages: list[Stage] = [first_stage(kind, model=own_model or model, index_type=index_type, fusion=fusion,
                                       alpha=alpha, backend=backend, batch_size=batch_size)]
    if reranker:
        stages.append(_rerank(parse_spec(reranker), depth, first_stage_weight, backend))
    return Pipeline(stages, name=name or text)


def _rerank(spec: Any, depth: int, first_stage_weight: float, backend: Backend | str) -> Any:
    """The rerank stage; the default backend (torch) is left to the reranker, so that
    ``BM25() >> spec % depth`` is the same stage as the one a system spec names."""
    from rankwise.rerank.stage import Rerank

    backend = Backend.parse(backend)
    return Rerank(spec, depth, first_stage_weight, backend=None if backend == TORCH else backend)


def single_system(retriever: str, reranker: str | None = None, *, depth: int = 100, first_stage_weight: float = 0.0,
                  **first: Any) -> Pipeline:
    """``rankwise beir --retriever R [--reranker SPEC]``: the pipeline, named by its stages
    (``bm25``, ``hybrid-rrf``, ``bm25+cross-encoder``); ``first``: :func:`first_stage`'s options."""
    from rankwise.rerank.spec import parse_spec

    stages: list[Stage] = [first_stage(retriever, **first)]
    if reranker:
        stages.append(_rerank(parse_spec(reranker), depth, first_stage_weight, first.get("backend", TORCH)))
    elif first_stage_weight:
        raise InputError("a first-stage weight mixes the first stage with a reranker: add --reranker",
                         field="first_stage_weight")
    return Pipeline(stages)
