"""Pipelines as objects: ``BM25() >> CrossEncoderReranker(m) % 100`` is a retriever like any other.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.retriever import Composable, Retriever
from rankwise.retrieval.run import Run


@dataclass
class Step:
    """One stage's output on a prefix: its run, and what it measured on the way."""

    run: Run
    timings: dict[str, float] = field(default_factory=dict)  # "<kind>_index_s", "<kind>_search_s", "rerank_s"
    components: dict[str, Run] = field(default_factory=dict)  # intermediate runs worth evaluating
    stats: dict[str, Any] = field(default_factory=dict)  # e.g. the reranker's RerankStats
    models: dict[str, Any] = field(default_factory=dict)  # role -> the model used (name, path or object)
    reused: bool = False  # True when another pipeline computed this prefix first


class Context:
    """What the stages of one run share: the corpus and queries, the resources built once (indexes,
    encoders, rerankers; ``resources`` may be shared between contexts), and every prefix computed."""

    def __init__(self, queries: Mapping[str, str], corpus: Any = None, *, name: str | None = None,
                 progress: bool = True, resources: dict[Any, Any] | None = None) -> None:
        self.queries, self.corpus, self.name, self.progress = queries, corpus, name, progress
        self.resources = {} if resources is None else resources
        self.steps: dict[tuple[tuple[Stage, ...], int], Step] = {}

    def need_corpus(self, stage: Stage) -> Any:
        if self.corpus is None:
            raise InputError(f"{stage.label} needs the corpus it runs on: pass corpus= to search() or run it "
                             "in an Experiment", field="corpus")
        return self.corpus

    def resource(self, key: Any, build: Callable[[], Any]) -> tuple[Any, float]:
        """The resource of ``key``, built once; returns it and the seconds its building took."""
        if key not in self.resources:
            t = time.perf_counter()
            value = build()
            self.resources[key] = (value, time.perf_counter() - t)
        return self.resources[key]

    def step(self, stages: tuple[Stage, ...], k: int) -> Step:
        """The output of ``stages`` at depth ``k``, computing each prefix not computed before."""
        key = (stages, k)
        if key in self.steps:
            done = self.steps[key]
            return Step(done.run, done.timings, done.components, done.stats, done.models, reused=True)
        previous = self.step(stages[:-1], k).run if len(stages) > 1 else None
        stage = stages[-1]
        if previous is None and not stage.first:
            raise InputError(f"a pipeline starts with a retriever, not {stage.label}", field="pipeline")
        if previous is not None and stage.first:
            raise InputError(f"{stage.label} searches: it can only be a pipeline's first stage", field="pipeline")
        record = Step(Run())
        record.run = stage.apply(previous, k, self, record)
        self.steps[key] = record
        return record


class Stage(Composable):
    """One step of a pipeline. ``first`` stages search; the others take the run before them."""

    first: bool = False
    kind: str = "stage"

    @property
    def label(self) -> str:
        return self.kind

    def apply(self, previous: Run | None, k: int, ctx: Context, record: Step) -> Run:
        """The run of this stage (``previous``: the run before it; None for a first stage)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The stage's settings, for results files."""
        import dataclasses

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} if dataclasses.is_dataclass(self) else {}
        return {"stage": self.kind, **{k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                                       for k, v in values.items()}}


def _search(retriever: Retriever, queries: Mapping[str, str], k: int, progress: bool) -> Run:
    return retriever.search(queries, k=k, progress=progress)


@dataclass(frozen=True, eq=False)
class Searcher(Stage):
    """Any object with ``search(queries, k)`` (a ``BM25Retriever`` over an index, a PyTerrier
    transformer wrapped by :mod:`rankwise.retrieval.pyterrier`...) as a first stage; equal only to itself."""

    retriever: Any
    first = True
    kind = "search"

    @property
    def label(self) -> str:
        return str(getattr(self.retriever, "name", None) or type(self.retriever).__name__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Searcher) and other.retriever is self.retriever

    def __hash__(self) -> int:
        return id(self.retriever)

    def apply(self, previous: Run | None, k: int, ctx: Context, record: Step) -> Run:
        t = time.perf_counter()
        run = _search(self.retriever, ctx.queries, k, ctx.progress)
        record.timings[f"{self.kind}_search_s"] = time.perf_counter() - t
        return run


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
        run = _search(retriever, ctx.queries, k, ctx.progress)
        record.timings.update({f"{self.kind}_index_s": index_s, f"{self.kind}_search_s": time.perf_counter() - t})
        return run


@dataclass(frozen=True)
class Dense(Stage):
    """A bi-encoder (``model``: name or path) over ``index``, or over the cached FAISS index of the corpus
    it runs on (``index_type``: flat, hnsw, ivf, ivfpq); ``backend``: torch, onnx or onnx-int8."""

    model: str = DEFAULT_ENCODER
    index: str | None = None
    index_type: str = "flat"
    backend: str = "torch"
    int8: bool = False
    batch_size: int = 64
    first = True
    kind = "dense"

    def encoder(self, ctx: Context) -> Any:
        from rankwise.retrieval.encoder import Encoder

        key = ("encoder", self.model, self.backend, self.int8, self.batch_size)
        return ctx.resource(key, lambda: Encoder(self.model, backend=self.backend, int8=self.int8,
                                                 batch_size=self.batch_size))[0]

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
        run = _search(retriever, ctx.queries, k, ctx.progress)
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


@dataclass(frozen=True)
class Cutoff(Stage):
    """The first ``k`` documents of each query (``pipeline % k``)."""

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise InputError(f"a cut-off is a positive integer, got {self.k!r}", field="k")

    kind = "cutoff"

    @property
    def label(self) -> str:
        return f"top{self.k}"

    def apply(self, previous: Run | None, k: int, ctx: Context, record: Step) -> Run:
        assert previous is not None
        return previous.top(self.k)


def as_stages(part: Any) -> tuple[Stage, ...]:
    """``part`` as pipeline stages: a stage, a pipeline, a reranker (``as_stage()``), or a retriever."""
    if isinstance(part, Stage):
        return (part,)
    if isinstance(part, Pipeline):
        return part.stages
    if hasattr(part, "as_stage"):
        return (part.as_stage(),)
    if hasattr(part, "search"):
        return (Searcher(part),)
    raise TypeError(f"cannot make a pipeline stage of {type(part).__name__}")


class Pipeline(Composable):
    """Stages run in order; itself a retriever: ``search(queries, k, corpus=...) -> Run``.

    ``name`` (default: the stages' labels joined by ``+``) names its run and its row in an experiment.
    Two pipelines are equal when their stages are.
    """

    def __init__(self, stages: Sequence[Any], name: str | None = None) -> None:
        self.stages: tuple[Stage, ...] = tuple(s for part in stages for s in as_stages(part))
        if not self.stages:
            raise InputError("a pipeline needs at least one stage", field="pipeline")
        if not self.stages[0].first:
            raise InputError(f"a pipeline starts with a retriever, not {self.stages[0].label}", field="pipeline")
        later = [s for s in self.stages[1:] if s.first]
        if later:
            raise InputError(f"{later[0].label} searches: it can only be a pipeline's first stage", field="pipeline")
        self._name = name

    @classmethod
    def of(cls, *parts: Any, name: str | None = None) -> Pipeline:
        return cls(parts, name=name)

    @property
    def name(self) -> str:
        return self._name or "+".join(s.label for s in self.stages if s.kind != "cutoff")

    def named(self, name: str) -> Pipeline:
        """The same stages under another name."""
        return Pipeline(self.stages, name=name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and other.stages == self.stages

    def __hash__(self) -> int:
        return hash(self.stages)

    def __repr__(self) -> str:
        return f"Pipeline({' >> '.join(s.label for s in self.stages)}, name={self.name!r})"

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.stages]

    def search(self, queries: Mapping[str, str], k: int = 100, progress: bool = True, *, corpus: Any = None,
               name: str | None = None) -> Run:
        """Run every stage on ``queries``; ``corpus`` (a :class:`~rankwise.retrieval.formats.Corpus` or
        ``{doc_id: text}``) is needed by stages that index it or read its text (rerankers)."""
        ctx = Context(queries, corpus, name=name, progress=progress)
        run = ctx.step(self.stages, k).run
        return Run(run, name=self.name)
