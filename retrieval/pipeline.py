"""Pipelines as objects: ``BM25() >> CrossEncoderReranker(m) % 100`` is a retriever like any other.

The first stages that index the corpus they run on (:class:`BM25`, :class:`Dense`, :class:`Hybrid`);
the machinery (:class:`Stage`, :class:`Pipeline`, :class:`Context`, :class:`Cutoff`) is in
:mod:`rankwise.retrieval.retriever`, beside the ``Retriever`` protocol, and re-exported here.

A :class:`Pipeline` is a tuple of :class:`Stage` objects: a first stage that searches (``BM25``,
``Dense``, ``Hybrid``, or any object with ``search(queries, k)`` wrapped as :class:`Searcher`),
then stages that take the run before them (a reranker at a depth, :class:`Cutoff`). ``a >> b``
joins stages, ``x % k`` cuts at ``k`` (a reranker's ``% k`` is its depth), as in PyTerrier
(Macdonald et al., CIKM 2021, "PyTerrier: Declarative Experimentation in Python from BM25 to
Dense Retrieval").

``BM25()``, ``Dense(model)`` and ``Hybrid()`` name a first stage without naming an index: run on a
corpus (``pipeline.search(queries, k, corpus=...)``, or an :class:`~rankwise.eval.experiment.Experiment`
on a dataset), they use that corpus's cached index (:mod:`rankwise.retrieval.cached`), built on first
use. Stages compare equal when they would compute the same thing, so an experiment runs each shared
prefix of its pipelines once (:class:`Context`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rankwise.retrieval.backend.value import TORCH, Backend
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.retriever import (Composable, Context, Cutoff, Pipeline, Precomputed, Retriever, Searcher,
                                          Stage, Step, as_stages)
from rankwise.retrieval.run import Run

__all__ = ["BM25", "Composable", "Context", "Cutoff", "Dense", "Hybrid", "Pipeline", "Precomputed", "Retriever",
           "Searcher", "Stage", "Step", "as_stages"]


@dataclass(frozen=True)
class BM25(Stage):
    """BM25 (Anserini defaults k1=0.9, b=0.4) over ``index``, or over the cached index of the corpus it runs on."""

    index: str | None = None
    first = True
    kind = "bm25"

    def bind(self, ctx: Context) -> tuple[Retriever, float]:
        def build() -> Retriever:
            from rankwise.retrieval import cached
            from rankwise.retrieval.bm25 import BM25Retriever

            if self.index is not None:
                return BM25Retriever(self.index)
            return cached.cached_retriever(ctx.need_corpus(self), "bm25", name=ctx.name, progress=ctx.progress)

        return ctx.resource(self if self.index else ("bm25", id(ctx.corpus)), build)

    def apply(self, previous: Run | None, k: int, ctx: Context, record: Step) -> Run:
        retriever, index_s = self.bind(ctx)
        t = time.perf_counter()
        run = retriever.search(ctx.queries, k=k, progress=ctx.progress)
        record.timings.update({f"{self.kind}_index_s": index_s, f"{self.kind}_search_s": time.perf_counter() - t})
        return run


@dataclass(frozen=True)
class Dense(Stage):
    """A bi-encoder (``model``: name or path) over ``index``, or over the cached FAISS index of the corpus
    it runs on (``index_type``: flat, hnsw, ivf, ivfpq); ``backend``: a :class:`~rankwise.retrieval.backend.value.Backend` (or its name)."""

    model: str = DEFAULT_ENCODER
    index: str | None = None
    index_type: str = "flat"
    backend: Backend = TORCH
    batch_size: int = 64
    first = True
    kind = "dense"

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", Backend.parse(self.backend))  # a name given: parsed once, here

    def encoder(self, ctx: Context) -> Any:
        from rankwise.retrieval.encoder import Encoder

        from rankwise.retrieval.backend.calibration import corpus_calibration

        key = ("encoder", self.model, self.backend, self.batch_size)
        return ctx.resource(key, lambda: Encoder(self.model, backend=self.backend,
                                                 batch_size=self.batch_size,  # openvino-int8: calibrated on the corpus
                                                 calibration=lambda: corpus_calibration(ctx.need_corpus(self))))[0]

    def bind(self, ctx: Context) -> tuple[Retriever, float]:
        encoder = self.encoder(ctx)  # not timed: loading a model is not indexing

        def build() -> Retriever:
            from rankwise.retrieval import cached
            from rankwise.retrieval.dense import DenseRetriever

            if self.index is not None:
                return DenseRetriever(self.index, encoder)
            return cached.cached_retriever(ctx.need_corpus(self), "dense", encoder, name=ctx.name,
                                           index_type=self.index_type, backend=self.backend,
                                           batch_size=self.batch_size, progress=ctx.progress)

        return ctx.resource((self, id(ctx.corpus)), build)

    def apply(self, previous: Run | None, k: int, ctx: Context, record: Step) -> Run:
        retriever, index_s = self.bind(ctx)
        t = time.perf_counter()
        run = retriever.search(ctx.queries, k=k, progress=ctx.progress)
        record.timings.update({f"{self.kind}_index_s": index_s, f"{self.kind}_search_s": time.perf_counter() - t})
        record.models["encoder"] = self.encoder(ctx)  # fingerprinted by whoever records it
        return run


@dataclass(frozen=True)
class Hybrid(Stage):
    """Two first stages fused over their top ``depth`` (:func:`rankwise.retrieval.hybrid.fuse`):
    ``rrf`` (Cormack et al., SIGIR 2009; ``rrf_k``) or min-max ``interpolation`` (``alpha`` on the first)."""

    sparse: Stage = field(default_factory=BM25)
    dense: Stage = field(default_factory=Dense)
    fusion: str = "rrf"
    alpha: float = 0.5
    depth: int = 1000
    rrf_k: int = 60
    first = True
    kind = "hybrid"

    def __post_init__(self) -> None:
        from rankwise.retrieval.hybrid import FUSIONS

        if self.fusion not in FUSIONS:
            raise InputError(f"unknown fusion {self.fusion!r}; choose from {', '.join(FUSIONS)}", field="fusion")
        if not (self.sparse.first and self.dense.first):
            raise InputError("a hybrid fuses two first stages", field="pipeline")

    @property
    def label(self) -> str:
        return f"hybrid-{self.fusion}"

    def describe(self) -> dict[str, Any]:
        return {"stage": self.kind, "sparse": self.sparse.describe(), "dense": self.dense.describe(),
                "fusion": self.fusion, "alpha": self.alpha, "depth": self.depth, "rrf_k": self.rrf_k}

    def apply(self, previous: Run | None, k: int, ctx: Context, record: Step) -> Run:
        from rankwise.retrieval.hybrid import fuse

        depth = max(k, self.depth)
        parts = [ctx.step((child,), depth) for child in (self.sparse, self.dense)]
        for child, part in zip((self.sparse, self.dense), parts):
            record.timings.update(part.timings)
            record.models.update(part.models)
            record.components[child.kind] = part.run.top(k)
        return fuse(parts[0].run, parts[1].run, fusion=self.fusion, rrf_k=self.rrf_k, alpha=self.alpha,
                    depth=self.depth).top(k)


