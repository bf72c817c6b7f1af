"""A dense index over passages that returns documents: a document's score is its best passage's
(MaxP at retrieval time; Dai & Callan, 2019, and the FirstP / MaxP dense baselines of Hofstätter
et al., 2021).

The passages of a corpus (:class:`rankwise.retrieval.passages.Splitter`, ids ``DOCID#pN``, the title in
every passage) are written once as a corpus of their own beside the cached indexes, and indexed by
the ordinary index layer (:func:`rankwise.retrieval.cached.dense_index`), so caching, resuming and every index
type come with it. ``search`` asks the index for ``passage_depth`` passages per query (default
``10 * k``) and keeps each document's best.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from rankwise.retrieval.files import atomic_open, write_json
from rankwise.retrieval.formats import Corpus
from rankwise.retrieval.index import IndexConfig
from rankwise.retrieval.passages import Splitter, document_id, passage_id
from rankwise.retrieval.retriever import Composable
from rankwise.retrieval.run import Run

if TYPE_CHECKING:
    from rankwise.retrieval.encoder import Encoder


def passage_corpus(corpus: Corpus, splitter: Splitter, *, name: str | None = None) -> tuple[Corpus, dict[str, int]]:
    """The passages of ``corpus`` as a cached corpus (written when missing) and its counts."""
    from rankwise.retrieval.cached import index_root

    label = f"passages-{splitter.passage_tokens}-{splitter.step}"
    folder = index_root(corpus, name) / label
    path, counts_file = folder / "corpus.jsonl", folder / "counts.json"
    if not counts_file.is_file():
        counts = {"documents": 0, "documents_split": 0, "passages": 0}
        with atomic_open(path) as fh:
            for doc in corpus:
                passages = splitter.split(doc.text, doc.title)
                counts["documents"] += 1
                counts["documents_split"] += len(passages) > 1
                counts["passages"] += len(passages)
                for i, text in enumerate(passages):
                    fh.write(json.dumps({"_id": passage_id(doc.doc_id, i), "title": "", "text": text}) + "\n")
        write_json(counts_file, counts)
    return Corpus(path), json.loads(counts_file.read_text(encoding="utf-8"))


def max_over_passages(passages: Run, k: int) -> Run:
    """Documents ranked by their best passage's score (the first, best, occurrence of each)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for q in passages:
        best: dict[str, float] = {}
        for pid, score in passages[q]:
            doc = document_id(pid)
            if doc not in best or score > best[doc]:
                best[doc] = score
        out[q] = sorted(best.items(), key=lambda x: (-x[1], x[0]))[:k]
    return Run(out, name="dense-passages")


class PassageDenseRetriever(Composable):
    """``search(queries, k) -> Run`` of documents from a dense index of their passages."""

    def __init__(self, corpus: Corpus, encoder: Encoder, splitter: Splitter, *, config: IndexConfig | None = None,
                 name: str | None = None, progress: bool = True) -> None:
        from rankwise.retrieval.cached import dense_index
        from rankwise.retrieval.dense import DenseRetriever

        self.passages, self.counts = passage_corpus(corpus, splitter, name=name)
        folder: Path = dense_index(self.passages, encoder, config, name=f"{name or 'corpus'}-passages",
                                   progress=progress)
        self.dense = DenseRetriever(folder, encoder)

    def search(self, queries: Mapping[str, str], k: int = 100, progress: bool = True,
               passage_depth: int | None = None) -> Run:
        """The top ``k`` documents by best passage, from the top ``passage_depth`` passages."""
        passages = self.dense.search(queries, k=passage_depth or 10 * k, progress=progress)
        return max_over_passages(passages, k)
