"""Labelled candidate lists for the LLM rerankers' training: a query, its candidates and their labels.

Two sources (windows built from mined candidates, labels from qrels or a teacher):

* :class:`~training.data.TrainingInput` (text triples / n-tuples, id triples, with
  ``group_by_query`` to merge mined triples into n-tuples): the list is ``(positive, *negatives)``,
  labelled with the teacher's scores when the input has them, else 1 for the positive and 0 for
  the negatives.
* :class:`RunInput`: the top ``depth`` of each query of a TREC run (e.g. BM25 over the training
  queries: the lists the reranker will see at test time), labelled with the graded qrels
  (unjudged = 0; a negative grade is an error); only queries that have qrels are used.

A list whose labels are all equal carries no ranking signal and is skipped (and counted). Rows
are plain ``{"query", "docs", "labels"}`` dicts written to an on-disk dataset
(:func:`rankwise.training.columns.to_dataset`); windows and groups are cut from them at batch time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankwise.retrieval.docstore import DocStore
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import iter_qrels, read_queries
from rankwise.retrieval.run import Run
from rankwise.training.data import TrainingInput

Row = dict[str, Any]


@dataclass(frozen=True)
class RunInput:
    """A TREC run with qrels (labels), queries and the corpus (texts): the top ``depth`` of each judged query."""

    run: str | Path
    qrels: str | Path
    queries: str | Path
    corpus: str | Path
    depth: int = 20

    def rows(self) -> Iterator[Row]:
        for name in ("run", "qrels", "queries", "corpus"):
            if not Path(getattr(self, name)).exists():
                raise InputError("file not found", path=getattr(self, name), field=name)
        if self.depth < 2:
            raise InputError(f"candidates per query must be at least 2, got {self.depth}", field="candidates")
        run, qrels, queries = Run.read(self.run), self._graded_qrels(), read_queries(self.queries)
        store = DocStore(self.corpus)
        for qid in run:
            if qid not in qrels:
                continue
            if qid not in queries:
                raise InputError(f"query id {qid!r} is not in {self.queries}", path=self.run, field="qid")
            docs, labels = [], []
            for did, _ in run[qid][: self.depth]:
                doc = store.find(did)
                if doc is None:
                    raise InputError(f"document id {did!r} (query {qid!r}) is not in the corpus {self.corpus}",
                                     path=self.run, field="docid")
                docs.append(doc.full_text)
                labels.append(float(qrels[qid].get(did, 0)))
            yield {"query": queries[qid], "docs": docs, "labels": labels}

    def _graded_qrels(self) -> dict[str, dict[str, int]]:
        """The qrels as labels: a negative grade (TREC's spam or junk marks) is refused, naming its line."""
        qrels: dict[str, dict[str, int]] = {}
        for number, qid, did, grade in iter_qrels(self.qrels):
            if grade < 0:
                raise InputError(f"relevance grade {grade} is negative: labels are grades >= 0 (0: not relevant); "
                                 "map the collection's negative grades to 0 first", path=self.qrels, line=number,
                                 field="score")
            qrels.setdefault(qid, {})[did] = grade
        return qrels

    def signature(self) -> dict:
        files = {name: _stat(Path(getattr(self, name))) for name in ("run", "qrels", "queries", "corpus")}
        return {"files": files, "depth": self.depth}


def _stat(path: Path) -> list:
    targets = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in targets if p.exists()]


CandidateSource = TrainingInput | RunInput


def sample_rows(data: TrainingInput) -> Iterator[Row]:
    """``(positive, *negatives)`` lists of a triples input, labelled by the teacher or 1/0."""
    for sample in data.samples():
        labels = list(sample.teacher) if sample.teacher is not None else [1.0] + [0.0] * len(sample.negatives)
        yield {"query": sample.query, "docs": [sample.positive, *sample.negatives], "labels": labels}


def candidate_rows(source: CandidateSource, size: int | None = None, counts: dict | None = None) -> Iterator[Row]:
    """The informative lists of ``source`` (labels not all equal), each cut to its first ``size`` candidates;
    ``counts`` (when given) receives the number of lists read (``lists``) and yielded (``used``)."""
    counts = {} if counts is None else counts
    counts.setdefault("lists", 0)
    counts.setdefault("used", 0)
    for row in source.rows() if isinstance(source, RunInput) else sample_rows(source):
        counts["lists"] += 1
        if size is not None:
            row = {"query": row["query"], "docs": row["docs"][:size], "labels": row["labels"][:size]}
        if len(set(row["labels"])) > 1:
            counts["used"] += 1
            yield row


def summarize(source: CandidateSource, size: int | None = None) -> dict:
    """One streamed pass before training: lists used and skipped; no usable list is an :class:`InputError`."""
    counts: dict = {}
    candidates = sum(len(row["docs"]) for row in candidate_rows(source, size, counts))
    if not counts["used"]:
        where = source.run if isinstance(source, RunInput) else source.triples
        raise InputError(f"no training list: {counts['lists']} lists, none with both relevant and non-relevant "
                         "candidates", path=where)
    return {**counts, "skipped_no_signal": counts["lists"] - counts["used"],
            "mean_candidates": round(candidates / counts["used"], 2)}


def source_description(source: CandidateSource) -> dict:
    """What identifies the input in ``run.json`` (the file stats come from ``signature``)."""
    return {k: str(v) for k, v in vars(source).items()}
