"""A reranker as a pipeline stage: ``retriever >> reranker % depth`` (see :mod:`rankwise.retrieval.pipeline`).

``Rerank(reranker, depth)`` reranks the top ``depth`` of the run before it
(:meth:`rankwise.rerank.base.Reranker.rerank_run`; the documents below keep their order). The
reranker is an object, or a :class:`~rankwise.rerank.spec.RerankerSpec` parsed once from the command
line, loaded on first use and shared by every pipeline of an experiment that names the same spec.
(This module imports neither: ``Reranker`` and ``RerankerSpec`` build their stage through it.)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rankwise.retrieval.backend.value import Backend
from rankwise.retrieval.distributed import device_for_rank, gather, world
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.retriever import Context, Stage, Step
from rankwise.retrieval.run import Run
from rankwise.retrieval.workdir import shard_units


@dataclass(frozen=True)
class Rerank(Stage):
    """Rerank the top ``depth`` with ``reranker``; ``first_stage_weight`` > 0 mixes in the first-stage
    scores (min-max per query); ``backend`` fills what a spec leaves out."""

    reranker: Any  # a Reranker (has rerank_run) or a RerankerSpec (has load)
    depth: int = 100
    first_stage_weight: float = 0.0
    backend: Backend | None = None
    kind = "rerank"

    def __post_init__(self) -> None:
        if self.backend is not None:  # a name given: parsed once, here
            object.__setattr__(self, "backend", Backend.parse(self.backend))
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise InputError(f"the rerank depth is a positive integer, got {self.depth!r}", field="depth")
        if not 0.0 <= self.first_stage_weight < 1.0:
            raise InputError(f"the first-stage weight must be in [0, 1), got {self.first_stage_weight}",
                             field="first_stage_weight")

    def __mod__(self, depth: int) -> Rerank:  # type: ignore[override]
        return dataclasses.replace(self, depth=depth)

    @property
    def label(self) -> str:
        paradigm = getattr(self.reranker, "paradigm", None) or self.reranker.name
        return paradigm + (f"(w={self.first_stage_weight:g})" if self.first_stage_weight else "")

    def describe(self) -> dict[str, Any]:
        return {"stage": self.kind, "reranker": str(self.reranker) if self.is_spec else type(self.reranker).__name__, "depth": self.depth, "first_stage_weight": self.first_stage_weight,
                "backend": None if self.backend is None else str(self.backend)}

    @property
    def is_spec(self) -> bool:
        return not hasattr(self.reranker, "rerank_run")

    def load(self, ctx: Context) -> Any:
        """The reranker object (a spec is loaded once per context's resources)."""
        if not self.is_spec:
            return self.reranker
        spec = self.reranker
        _, size, local_rank = world()
        device = device_for_rank(local_rank, size)  # under torchrun: this rank's GPU, if any
        return ctx.resource(("reranker", spec, self.backend), lambda: spec.load(backend=self.backend, device=device))[0]

    def apply(self, previous: Run | None, k: int, ctx: Context, record: Step) -> Run:
        """Rerank ``previous`` (under torchrun, each rank its share of the queries: see
        :func:`rerank_across_ranks`)."""
        assert previous is not None
        reranker = self.load(ctx)
        reranker.stats.reset()
        t = time.perf_counter()
        run = rerank_across_ranks(reranker, previous, ctx.queries, ctx.need_corpus(self), depth=self.depth,
                                  progress=ctx.progress, first_stage_weight=self.first_stage_weight)
        record.timings["rerank_s"] = time.perf_counter() - t
        record.stats["rerank"] = dataclasses.asdict(reranker.stats)
        record.components["first-stage"] = previous
        model = self.reranker.model if self.is_spec else getattr(self.reranker, "model_name", None)
        record.models["reranker"] = model
        return run


def rerank_across_ranks(reranker: Any, run: Run, queries: Mapping[str, str], corpus: Any, *, depth: int,
                        first_stage_weight: float = 0.0, progress: bool = True) -> Run:
    """``reranker.rerank_run`` under torchrun: rank ``r`` of ``W`` reranks the queries ``u`` (in the run's
    order) with ``u % W == r``, and every rank gets the whole reranked run, in the run's order, with the
    reranker's stats summed over the ranks. In one process it is ``rerank_run`` itself."""
    rank, size, _ = world()
    if size == 1:
        return reranker.rerank_run(run, queries, corpus, depth=depth, progress=progress,
                                   first_stage_weight=first_stage_weight)
    qids = list(run)
    mine = Run({qids[u]: run[qids[u]] for u in shard_units(len(qids), rank, size)}, name=run.name)
    part = reranker.rerank_run(mine, queries, corpus, depth=depth, progress=progress and rank == 0,
                               first_stage_weight=first_stage_weight)
    merged: dict[str, list[tuple[str, float]]] = {}
    totals = type(reranker.stats)()
    for docs, stats in gather(({q: part[q] for q in part}, dataclasses.asdict(reranker.stats))):
        merged.update(docs)
        totals.add(stats)
    reranker.stats = totals
    return Run({q: merged[q] for q in qids}, name=part.name)
