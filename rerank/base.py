"""The Reranker protocol shared by every paradigm (pointwise, listwise, groupwise).

``rerank(query, docs)`` returns ``[(index, score), ...]`` best first; ``rerank_run(run, queries,
corpus, depth)`` reranks the top ``depth`` of every query of a :class:`rankwise.retrieval.Run`, batching
across queries, and keeps the documents below ``depth`` after the reranked ones. A subclass
implements one method, :meth:`Reranker.score`, which scores many ``(query, candidates)`` lists at
once; listwise models that produce an order turn it into scores (higher is better).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Corpus, Document, lookup_documents
from rankwise.retrieval.run import Run

log = logging.getLogger(__name__)

CorpusLike = Corpus | Mapping[str, "str | Document"]


@dataclass
class RerankStats:
    """What a reranker did: lists and passages seen, passages truncated, model calls made."""

    lists: int = 0
    passages: int = 0
    truncated: int = 0
    forward_passes: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    # a served model's requests, tokens and cost so far (rankwise.rerank.served.ServedUsage); empty in-process
    served: dict[str, int | float] = field(default_factory=dict)

    def reset(self) -> None:
        self.lists = self.passages = self.truncated = self.forward_passes = 0
        self.extra.clear()
        self.served.clear()

    def add(self, other: Mapping[str, Any]) -> None:
        """Add the counts of ``other`` (another reranker's stats as a dict, e.g. from another process)."""
        for key, value in other.items():
            if isinstance(value, dict):
                into = getattr(self, key)
                for name, number in value.items():
                    into[name] = into.get(name, 0) + number
            else:
                setattr(self, key, getattr(self, key) + value)


class Reranker(abc.ABC):
    """Scores candidate documents for a query; see the module docstring."""

    name: str = "reranker"

    def __init__(self) -> None:
        self.stats = RerankStats()

    def __mod__(self, depth: int) -> Any:
        """``reranker % depth``: a pipeline stage reranking the top ``depth`` (``retriever >> reranker % 100``)."""
        return self.as_stage(depth)

    def as_stage(self, depth: int = 100) -> Any:
        """This reranker as a :class:`~rankwise.rerank.stage.Rerank` stage (``retriever >> reranker``: depth 100)."""
        from rankwise.rerank.stage import Rerank

        return Rerank(self, depth)

    @abc.abstractmethod
    def score(self, lists: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        """For each ``(query, candidate texts)``, one score per candidate (higher is more relevant)."""

    def score_documents(self, lists: Sequence[tuple[str, Sequence[Document]]],
                        progress: bool = False) -> list[list[float]]:
        """:meth:`score` on documents with their titles: each read as its ``full_text`` (passage
        rerankers override this to repeat the title in every passage)."""
        return self.score([(q, [d.full_text for d in docs]) for q, docs in lists], progress=progress)

    def rerank(self, query: str, docs: Sequence[str]) -> list[tuple[int, float]]:
        """``[(index into docs, score), ...]`` best first; an empty list gives an empty ranking."""
        if not docs:
            return []
        scores = self.score([(query, list(docs))])[0]
        return sorted(enumerate(scores), key=lambda x: (-x[1], x[0]))

    def rerank_run(self, run: Run, queries: Mapping[str, str], corpus: CorpusLike, depth: int = 100,
                   progress: bool = True, first_stage_weight: float = 0.0) -> Run:
        """Rerank the top ``depth`` documents of each query of ``run``; the rest follow, in their order.

        ``first_stage_weight`` > 0 ranks the top ``depth`` by ``w * first-stage + (1 - w) * reranker``
        over per-query min-max normalized scores (:func:`rankwise.retrieval.fusion.interpolate`): the usual
        interpolation of a reranker with BM25 (e.g. Nogueira & Cho 2019; Lin et al., "Pretrained
        Transformers for Text Ranking", sec. 3.2). Choose ``w`` on held-out queries, not on test.
        """
        if depth < 1:
            raise InputError(f"depth must be at least 1, got {depth}", field="depth")
        if not 0.0 <= first_stage_weight < 1.0:
            raise InputError(f"the first-stage weight must be in [0, 1), got {first_stage_weight}",
                             field="first_stage_weight")
        check_run_queries(run, queries)
        heads = {q: [d for d, _ in run[q][:depth]] for q in run}
        texts = lookup_documents(corpus, {d for ids in heads.values() for d in ids})
        qids = [q for q in run if heads[q]]
        scores = self.score_documents([(queries[q], [texts[d] for d in heads[q]]) for q in qids], progress=progress)
        from rankwise.rerank.served import served_usage

        usage = served_usage(self)
        if usage is not None:
            self.stats.served = usage.as_dict()
        if self.stats.truncated:
            log.info("%s: %d of %d passages were truncated to fit the model's window",
                     self.name, self.stats.truncated, self.stats.passages)
        reranked = Run({q: zip(heads[q], s) for q, s in zip(qids, scores)})
        if first_stage_weight > 0.0:
            from rankwise.retrieval.fusion import interpolate

            first = Run({q: run[q][:depth] for q in qids})
            reranked = interpolate(first, reranked, alpha=first_stage_weight)
        out: dict[str, list[tuple[str, float]]] = {q: [] for q in run}
        for q in qids:
            ranked = reranked[q]
            floor = ranked[-1][1] if ranked else 0.0
            tail = run[q][depth:]
            # documents below depth keep their order, scored below every reranked one
            out[q] = ranked + [(d, floor - 1.0 - i) for i, (d, _) in enumerate(tail)]
        return Run(out, name=self.name)


def check_run_queries(run: Run, queries: Mapping[str, str]) -> None:
    """Refuse a run naming a query that ``queries`` lacks."""
    missing = [q for q in run if q not in queries]
    if missing:
        raise InputError(f"the run names {len(missing)} quer{'y' if len(missing) == 1 else 'ies'} not in the "
                         f"queries (first: {missing[0]!r})", field="query-id")

