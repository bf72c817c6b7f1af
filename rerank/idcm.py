"""IDCM, intra-document cascading (Hofstätter et al., 2021, "Intra-Document Cascading: Learning to
Select Passages for Neural Document Ranking", SIGIR).

Each document is split into passages (:mod:`rankwise.retrieval.passages`); a cheap selector ranks them and
only the ``select`` best are scored by the expensive cross-encoder; the document's score is the max
of those scores (MaxP over the selected passages). A document of at most ``select`` passages has
all of them scored, so ``select`` >= the passage count is exactly MaxP.

Selectors: ``bm25`` -- BM25 (k1 0.9, b 0.4, Anserini's defaults) of the query against the passages,
with document frequencies and the average length taken over all the passages of the query's
candidate list (the in-memory statistics of the passages at hand; no index); ``dense:ENCODER`` --
cosine (or the encoder's similarity) of a bi-encoder's query and passage vectors. The paper's
selector is a small learned model distilled from the scorer's passage scores; training one is not
part of this module.

Spec: ``idcm:bm25>>MODEL,select=4,passages=128,stride=64`` (MODEL a cross-encoder, optionally
written ``cross-encoder:MODEL``). ``stats.extra``: ``documents``, ``passages`` (all passages of
the documents) and ``passages_scored`` (those the cross-encoder saw).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from rankwise.rerank.base import Reranker
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Document
from rankwise.retrieval.passages import Splitter

_TOKEN = re.compile(r"\w+")
K1, B = 0.9, 0.4


class PassageSelector(Protocol):
    """Scores a query's passages (one list per candidate document); higher is better."""

    def __call__(self, query: str, passages: Sequence[Sequence[str]]) -> list[list[float]]: ...


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def bm25_passage_scores(query: str, passages: Sequence[Sequence[str]], k1: float = K1,
                        b: float = B) -> list[list[float]]:
    """BM25 of ``query`` against every passage, statistics over all ``passages`` given (see module)."""
    bags = [[Counter(_tokens(p)) for p in doc] for doc in passages]
    flat = [bag for doc in bags for bag in doc]
    if not flat:
        return [[] for _ in passages]
    n = len(flat)
    lengths = [sum(bag.values()) for bag in flat]
    avg = (sum(lengths) / n) or 1.0
    terms = set(_tokens(query))
    df = {t: sum(1 for bag in flat if t in bag) for t in terms}
    idf = {t: math.log(1.0 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}
    out, i = [], 0
    for doc in bags:
        scores = []
        for bag in doc:
            norm = k1 * (1.0 - b + b * lengths[i] / avg)
            scores.append(sum(idf[t] * bag[t] * (k1 + 1.0) / (bag[t] + norm) for t in terms if t in bag))
            i += 1
        out.append(scores)
    return out


class DenseSelector:
    """A bi-encoder selector: similarity of the query's and the passages' vectors."""

    def __init__(self, model: str, **kwargs: Any) -> None:
        from rankwise.retrieval.encoder import Encoder

        self.encoder = Encoder(model, **kwargs)

    def __call__(self, query: str, passages: Sequence[Sequence[str]]) -> list[list[float]]:
        flat = [p for doc in passages for p in doc]
        q = self.encoder.encode_queries([query])[0]
        sims = self.encoder.encode_docs(flat) @ q if flat else np.empty(0)
        out, start = [], 0
        for doc in passages:
            out.append(sims[start:start + len(doc)].tolist())
            start += len(doc)
        return out


def top_passages(scores: Sequence[float], select: int) -> list[int]:
    """Positions of the ``select`` best-scored passages (ties: the earlier passage), in document order."""
    best = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:select]
    return sorted(best)


class IDCMReranker(Reranker):
    """Selector picks ``select`` passages per document; the cross-encoder scores those; doc = max."""

    name = "idcm"

    def __init__(self, model: str, *, select: int = 4, passages: int = 128, stride: int | None = None,
                 batch_size: int = 32, max_length: int | None = None, backend: Any = "torch",
                 device: str | None = None) -> None:
        super().__init__()
        selector, sep, scorer = (part.strip() for part in str(model).partition(">>"))
        if not sep or not selector or not scorer:
            raise InputError(f"idcm model {model!r} must be SELECTOR>>SCORER (e.g. bm25>>./my-ce)", field="reranker")
        if select < 1:
            raise InputError(f"select must be at least 1, got {select}", field="select")
        self.select = int(select)
        self.splitter = Splitter(passages, stride)
        self.selector: PassageSelector
        if selector == "bm25":
            self.selector = bm25_passage_scores
        elif selector.startswith("dense:") and selector[6:]:
            self.selector = DenseSelector(selector[6:], device=device)
        else:
            raise InputError(f"idcm selector {selector!r} is not bm25 or dense:ENCODER", field="reranker")
        from rankwise.rerank.cross_encoder import CrossEncoderReranker

        scorer = scorer.removeprefix("cross-encoder:")
        self.scorer = CrossEncoderReranker(scorer, batch_size=batch_size, max_length=max_length, backend=backend,
                                           device=device)
        self.max_scored = 0  # the most passages scored for one document so far

    def score_documents(self, lists: Sequence[tuple[str, Sequence[Document]]],
                        progress: bool = False) -> list[list[float]]:
        from tqdm.auto import tqdm

        pairs: list[tuple[str, str]] = []
        owners: list[tuple[int, int]] = []  # (list, document) of each pair
        extra = self.stats.extra
        for li, (query, docs) in enumerate(tqdm(lists, desc="idcm select", unit="list", disable=not progress,
                                                leave=False)):
            split = [self.splitter.split(d.text, d.title) for d in docs]
            chosen = self.selector(query, split)
            for di, (passages, scores) in enumerate(zip(split, chosen)):
                keep = top_passages(scores, self.select)
                self.max_scored = max(self.max_scored, len(keep))
                pairs.extend((query, passages[i]) for i in keep)
                owners.extend((li, di) for _ in keep)
                extra["passages"] = extra.get("passages", 0) + len(passages)
                extra["documents_split"] = extra.get("documents_split", 0) + self.splitter.needs_split(docs[di].text)
            extra["documents"] = extra.get("documents", 0) + len(docs)
        self.stats.lists += len(lists)
        before = self.scorer.stats.truncated
        scores = self.scorer.score_pairs(pairs, progress=progress)
        self.stats.passages += len(pairs)
        self.stats.truncated += self.scorer.stats.truncated - before
        self.stats.forward_passes = self.scorer.stats.forward_passes
        extra["passages_scored"] = extra.get("passages_scored", 0) + len(pairs)
        out = [[-math.inf] * len(docs) for _, docs in lists]
        for (li, di), s in zip(owners, scores):
            out[li][di] = max(out[li][di], s)
        return out

    def score(self, lists: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        """Plain texts have no title: each is split as a document's text."""
        return self.score_documents([(q, [Document("", "", t) for t in docs]) for q, docs in lists], progress)
