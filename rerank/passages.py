"""Any reranker over passages: split each document (:mod:`rankwise.retrieval.passages`), score every passage
with the wrapped reranker, aggregate (FirstP / MaxP / SumP / kmaxavg:K; Dai & Callan, 2019).

Spec: ``PARADIGM:MODEL,passages=N[,stride=S][,agg=maxp]`` wraps the reranker the rest of the spec
names. ``stats.extra`` counts the documents split and the passages scored; ``stats.truncated`` is
the number of passages the model still had to cut (a passage longer than its window).
"""

from __future__ import annotations

from collections.abc import Sequence

from rankwise.rerank.base import Reranker
from rankwise.retrieval.formats import Document
from rankwise.retrieval.passages import Splitter, aggregate, parse_aggregation


class PassageReranker(Reranker):
    """Score a document by its passages' scores under ``inner`` (see the module docstring)."""

    def __init__(self, inner: Reranker, *, passages: int = 128, stride: int | None = None,
                 agg: str = "maxp") -> None:
        super().__init__()
        self.inner = inner
        self.splitter = Splitter(passages, stride)
        parse_aggregation(agg)  # fail now, not after scoring
        self.agg = agg
        self.name = f"{inner.name}-{parse_aggregation(agg)[0]}"
        self.stats = inner.stats  # one set of counters: the inner reranker's, plus ours in extra

    def split(self, doc: Document) -> list[str]:
        """The passages of ``doc``; FirstP needs only the first."""
        passages = self.splitter.split(doc.text, doc.title)
        if self.splitter.needs_split(doc.text):
            self.stats.extra["documents_split"] = self.stats.extra.get("documents_split", 0) + 1
        return passages[:1] if self.agg == "firstp" else passages

    def score_documents(self, lists: Sequence[tuple[str, Sequence[Document]]],
                        progress: bool = False) -> list[list[float]]:
        split = [(q, [self.split(d) for d in docs]) for q, docs in lists]
        flat = [(q, [p for passages in per_doc for p in passages]) for q, per_doc in split]
        scored = self.inner.score(flat, progress=progress)
        extra = self.stats.extra
        extra["documents"] = extra.get("documents", 0) + sum(len(docs) for _, docs in lists)
        extra["passages_scored"] = extra.get("passages_scored", 0) + sum(len(p) for _, p in flat)
        out = []
        for (_, per_doc), scores in zip(split, scored):
            doc_scores, start = [], 0
            for passages in per_doc:
                doc_scores.append(aggregate(scores[start:start + len(passages)], self.agg))
                start += len(passages)
            out.append(doc_scores)
        return out

    def score(self, lists: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        """Plain texts have no title: each is split as a document's text."""
        return self.score_documents([(q, [Document("", "", t) for t in docs]) for q, docs in lists], progress)
