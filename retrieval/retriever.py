"""The ``Retriever`` protocol, beside :class:`~rankwise.retrieval.run.Run`, and the ``>>`` / ``%`` operators.

Every first stage (BM25, dense, hybrid, a :class:`Pipeline`) offers ``search(queries, k) -> Run``.
Classes that mix in :class:`Composable` compose into pipelines the way PyTerrier's transformers do
(Macdonald et al., CIKM 2021): ``retriever >> reranker % 100`` reranks the retriever's top 100;
``retriever % 10`` keeps its top 10. This module holds that machinery: :class:`Stage`,
:class:`Pipeline`, the :class:`Context` in which every shared prefix runs once, :class:`Cutoff` and
:class:`Searcher` (see :mod:`rankwise.retrieval.pipeline` for the stages that index a corpus).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.run import Run


@runtime_checkable
class Retriever(Protocol):
    """What every first-stage retriever offers."""

    def search(self, queries: Mapping[str, str], k: int = 100, progress: bool = True) -> Run: ...


class Composable:
    """``self >> other`` builds a :class:`~rankwise.retrieval.pipeline.Pipeline`; ``self % k`` cuts it to ``k``."""

    def __rshift__(self, other: Any) -> Pipeline:
        return Pipeline.of(self, other)

    def __mod__(self, k: int) -> Pipeline:
        return Pipeline.of(self, Cutoff(k))


# --------------------------------------------------------------------------------------------
# Stages and pipelines (the stages that index a corpus, BM25, Dense and Hybrid, are in
# rankwise.retrieval.pipeline).


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
    reads_corpus: bool = True  # False for a stage that never reads the corpus (a precomputed run)

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
        run = self.retriever.search(ctx.queries, k=k, progress=ctx.progress)
        record.timings[f"{self.kind}_search_s"] = time.perf_counter() - t
        return run


class Precomputed(Stage):
    """A run computed before (a TREC run file read with :meth:`Run.read`, another toolkit's output) as a
    first stage, so that run files compare in an :class:`~rankwise.eval.experiment.Experiment` like any
    pipeline; equal only to itself. It is returned as it is (not cut to the experiment's depth: measures
    are computed on the run as given); a query the experiment does not have is an :class:`InputError`
    (the run and the queries are of different query sets)."""

    first = True
    kind = "run"
    reads_corpus = False

    def __init__(self, run: Run) -> None:
        self.run = run

    @property
    def label(self) -> str:
        return self.run.name

    def describe(self) -> dict[str, Any]:
        return {"stage": self.kind, "name": self.run.name, "queries": len(self.run)}

    def apply(self, previous: Run | None, k: int, ctx: Context, record: Step) -> Run:
        extra = sorted(q for q in self.run if q not in ctx.queries)
        if extra:
            raise InputError(
                f"run {self.run.name!r} has {len(extra)} quer{'y' if len(extra) == 1 else 'ies'} absent from the qrels "
                f"(first: {extra[0]!r}); are the run and the qrels of the same query set?", field="query_id")
        return self.run


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
    """``part`` as pipeline stages: a stage, a pipeline, a :class:`Run` (:class:`Precomputed`), a reranker
    (``as_stage()``), or a retriever."""
    if isinstance(part, Stage):
        return (part,)
    if isinstance(part, Run):
        return (Precomputed(part),)
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
