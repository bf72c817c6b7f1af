"""Training inputs, streamed one validated :class:`TrainingSample` at a time.

Three inputs:

* **Text triples**, TSV: ``query \\t positive \\t negative``, or n-tuples ``query \\t positive \\t
  neg1 \\t neg2 ...`` (at least 3 columns, none empty).
* **Id triples** (the MS MARCO layout): the same columns holding ids, resolved with a queries file
  (BEIR ``queries.jsonl`` or MS MARCO ``queries.tsv``) and a corpus read through
  :class:`~retrieval.docstore.DocStore` (random access, nothing loaded whole). Documents are given
  as ``title text`` (:attr:`Document.full_text`), the way the encoders read them.
* **A BEIR folder**: the ``(query, positive)`` pairs of ``qrels/<split>.tsv`` with relevance > 0,
  with no negatives (train with in-batch negatives).

Teacher scores come in the Margin-MSE file format of Hofstätter et al. (2020), line ``i`` scoring
triples line ``i``: ``score_pos \\t score_neg \\t query_id \\t pos_id \\t neg_id``; for a line with
``k`` negatives, ``k + 1`` scores, the query id and ``k + 1`` doc ids (``2k + 3`` columns). With id
triples the ids of both files must agree; with text triples only the number of lines and of columns
can be checked, so the teacher file's ids are taken on trust there.

Line pairing counts non-blank lines, as :func:`rankwise.retrieval.formats.iter_lines` reads them. Every
problem is an :class:`InputError` naming the file, the line and the field.
"""

from __future__ import annotations

import gzip
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from dataclasses import dataclass
from typing import NamedTuple

from rankwise.retrieval.docstore import DocStore
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Corpus, iter_lines, iter_qrels, read_queries

_TEXT_FIELDS = ("query", "positive", "negative")
_ID_FIELDS = ("query_id", "positive_id", "negative_id")


class TrainingSample(NamedTuple):
    """One training example: a query, its positive and zero or more negatives (texts, ids when known)."""

    query: str
    positive: str
    negatives: tuple[str, ...]
    query_id: str | None = None
    positive_id: str | None = None
    negative_ids: tuple[str, ...] | None = None
    teacher: tuple[float, ...] | None = None  # scores of (positive, *negatives)
    source: tuple[str, int] = ("", 0)  # (file, line) it was read from


class BeirFiles(NamedTuple):
    """The three files of a BEIR split, for data laid out other than as a BEIR folder."""

    corpus: Path
    queries: Path
    qrels: Path


def read_training_samples(
    triples: str | Path,
    *,
    queries: str | Path | Mapping[str, str] | None = None,
    corpus: str | Path | Corpus | DocStore | None = None,
    teacher: str | Path | None = None,
    group_by_query: bool = False,
    split: str = "train",
) -> Iterator[TrainingSample]:
    """Stream the training samples of ``triples``: a text triples TSV, id triples or a BEIR folder.

    Id triples are read when ``queries`` and ``corpus`` are given (both or neither). ``teacher`` is
    a Margin-MSE score file aligned with the triples. ``group_by_query`` merges consecutive lines
    with the same query and positive into one n-tuple (see :func:`group_samples`). A BEIR folder
    yields the positive pairs of ``qrels/<split>.tsv`` (:func:`read_qrels_pairs`).
    """
    path = Path(triples)
    if path.is_dir():
        if queries is not None or corpus is not None or teacher is not None:
            raise InputError("a BEIR folder brings its own queries, corpus and qrels; queries=, corpus= and "
                             "teacher= go with a triples file", path=path)
        return read_qrels_pairs(path, split)
    if not path.is_file():
        raise InputError("file not found", path=path)
    if (queries is None) != (corpus is None):
        _refuse_half_id_triples(path, "queries" if corpus is None else "corpus")
    if queries is not None and corpus is not None:
        source = "the queries" if isinstance(queries, Mapping) else str(queries)
        samples = _id_triples(path, _queries(queries), source, _store(corpus))
    else:
        samples = _text_triples(path)
    if teacher is not None:
        teacher = Path(teacher)
        if not teacher.is_file():
            raise InputError("file not found", path=teacher)
        samples = _with_teacher(samples, teacher, path)
    return group_samples(samples) if group_by_query else samples


def _refuse_half_id_triples(path: Path, given: str) -> None:
    """The error for triples given with a queries file or a corpus but not both: what the file holds
    first (a line with fewer than 3 columns is no triples file at all), then what id triples need."""
    first = next(iter_lines(path), None)
    if first is None:
        raise InputError("the file is empty: no triples", path=path)
    number, line = first
    cols = len(line.split("\t"))
    if cols < 3:
        raise InputError(f"{cols} tab-separated column{'s' if cols > 1 else ''} where triples need at least 3: "
                         f"{', '.join(_TEXT_FIELDS)} as texts, or {', '.join(_ID_FIELDS)} with both --queries "
                         "and --corpus", path=path, line=number, field=_TEXT_FIELDS[cols])
    raise InputError(f"{cols} columns, with only the {given} given: id triples need both a queries file and a "
                     "corpus (--queries and --corpus); text triples need neither", path=path)


def read_qrels_pairs(dataset: str | Path | BeirFiles, split: str = "train") -> Iterator[TrainingSample]:
    """The ``(query, positive)`` pairs of a BEIR split: every judgement with relevance > 0, no negatives.

    ``dataset`` is a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) or
    :class:`BeirFiles`. A judged query or document missing from the queries or the corpus is an
    error naming the qrels line.
    """
    if isinstance(dataset, BeirFiles):
        files = dataset
    else:
        root = Path(dataset)
        if not root.is_dir():
            raise InputError("not a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)", path=root)
        files = BeirFiles(root, root, root / "qrels" / f"{split}.tsv")
        if not files.qrels.is_file():
            splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
            raise InputError(f"no qrels for split {split!r} (splits: {', '.join(splits) or 'none'})", path=files.qrels)
    queries = read_queries(files.queries)
    store = DocStore(files.corpus)
    return _qrels_pairs(Path(files.qrels), queries, str(files.queries), store)


def group_samples(samples: Iterable[TrainingSample]) -> Iterator[TrainingSample]:
    """Merge runs of consecutive samples with the same query and positive into one n-tuple sample.

    Samples are keyed by ``(query_id, positive_id)`` when they have ids, else by their texts; only
    consecutive samples merge (sort the file first to group all of them). Negatives, their ids and
    teacher scores are concatenated in order; the positive's teacher score and the ``source`` are the
    first sample's.
    """
    run: list[TrainingSample] = []
    for sample in samples:
        if run and _key(sample) != _key(run[0]):
            yield _merge(run)
            run = []
        run.append(sample)
    if run:
        yield _merge(run)


def check_training_input(
    triples: str | Path,
    *,
    queries: str | Path | Mapping[str, str] | None = None,
    corpus: str | Path | Corpus | DocStore | None = None,
    teacher: str | Path | None = None,
    group_by_query: bool = False,
    split: str = "train",
) -> dict:
    """Read the whole training input once (streamed) before training starts; raise its first error.

    Returns ``{"kind", "samples", "negatives": {"min", "max", "mean", "counts"}, "teacher"}``, where
    ``counts`` maps a number of negatives to the number of samples that have it. An input with no
    samples is an error.
    """
    samples = read_training_samples(triples, queries=queries, corpus=corpus, teacher=teacher,
                                    group_by_query=group_by_query, split=split)
    counts: Counter[int] = Counter(len(sample.negatives) for sample in samples)
    total = sum(counts.values())
    if not total:
        raise InputError("no training samples", path=triples)
    kind = "qrels" if Path(triples).is_dir() else "ids" if queries is not None else "text"
    return {
        "kind": kind,
        "samples": total,
        "negatives": {"min": min(counts), "max": max(counts), "counts": dict(sorted(counts.items())),
                      "mean": sum(k * n for k, n in counts.items()) / total},
        "teacher": teacher is not None,
    }


def count_lines(path: str | Path) -> int:
    """The number of non-blank lines of a text file (``.gz`` too): what :func:`iter_lines` yields."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return sum(1 for raw in fh if raw.strip())


# -- readers ------------------------------------------------------------------------------------


def _columns(path: Path, number: int, line: str, fields: tuple[str, str, str]) -> list[str]:
    """The >= 3 tab-separated, non-empty columns of a triples line."""
    cols = line.split("\t")
    if len(cols) < 3:
        raise InputError(f"missing: expected at least 3 tab-separated columns ({fields[0]}, {fields[1]}, "
                         f"{fields[2]}, ...), got {len(cols)}", path=path, line=number, field=fields[len(cols)])
    for i, col in enumerate(cols):
        if not col.strip():
            raise InputError(f"empty (column {i + 1})", path=path, line=number, field=fields[min(i, 2)])
    return cols


def _text_triples(path: Path) -> Iterator[TrainingSample]:
    for number, line in iter_lines(path):
        cols = _columns(path, number, line, _TEXT_FIELDS)
        yield TrainingSample(cols[0], cols[1], tuple(cols[2:]), source=(str(path), number))


def _id_triples(path: Path, queries: Mapping[str, str], source: str, store: DocStore) -> Iterator[TrainingSample]:
    if not store.random_access:  # a .gz corpus: keep just the documents these triples name
        store.preload(col.strip() for _, line in iter_lines(path) for col in line.split("\t")[1:])
    for number, line in iter_lines(path):
        qid, pid, *nids = (col.strip() for col in _columns(path, number, line, _ID_FIELDS))
        query = queries.get(qid)
        if query is None:
            raise InputError(f"query id {qid!r} is not in {source}", path=path, line=number, field="query_id")
        positive = _text(store, pid, path, number, "positive_id")
        negatives = tuple(_text(store, nid, path, number, "negative_id") for nid in nids)
        yield TrainingSample(query, positive, negatives, qid, pid, tuple(nids), None, (str(path), number))


def _qrels_pairs(qrels: Path, queries: Mapping[str, str], source: str, store: DocStore) -> Iterator[TrainingSample]:
    if not store.random_access:
        store.preload(did for _, _, did, grade in iter_qrels(qrels) if grade > 0)
    for number, qid, did, grade in iter_qrels(qrels):
        if grade <= 0:
            continue
        query = queries.get(qid)
        if query is None:
            raise InputError(f"query id {qid!r} is not in {source}", path=qrels, line=number, field="query-id")
        positive = _text(store, did, qrels, number, "corpus-id")
        yield TrainingSample(query, positive, (), qid, did, (), None, (str(qrels), number))


def _text(store: DocStore, doc_id: str, path: Path, number: int, field: str) -> str:
    doc = store.find(doc_id)
    if doc is None:
        raise InputError(f"document id {doc_id!r} is not in the corpus {store.path}", path=path, line=number,
                         field=field)
    return doc.full_text


def _queries(queries: str | Path | Mapping[str, str]) -> Mapping[str, str]:
    return queries if isinstance(queries, Mapping) else read_queries(queries)


def _store(corpus: str | Path | Corpus | DocStore) -> DocStore:
    return corpus if isinstance(corpus, DocStore) else DocStore(corpus)


# -- teacher scores -----------------------------------------------------------------------------


def _with_teacher(samples: Iterator[TrainingSample], teacher: Path, triples: Path) -> Iterator[TrainingSample]:
    """Attach teacher line ``i`` to triples line ``i``; the two files must have as many lines."""
    lines = iter_lines(teacher)
    read, last = 0, 0
    for sample in samples:
        entry = next(lines, None)
        if entry is None:
            raise InputError(f"ends after {read} lines, but the triples go on ({triples}:{sample.source[1]} has no "
                             f"scores)", path=teacher, line=last + 1)
        number, line = entry
        read, last = read + 1, number
        yield sample._replace(teacher=_scores(teacher, number, line, sample))
    extra = next(lines, None)
    if extra is not None:
        raise InputError(f"more lines than the triples ({triples} has {read})", path=teacher, line=extra[0])


def _scores(path: Path, number: int, line: str, sample: TrainingSample) -> tuple[float, ...]:
    """Parse one Margin-MSE line for ``sample``: ``k+1`` scores, query id, ``k+1`` doc ids."""
    k = len(sample.negatives)
    cols = line.split()
    if len(cols) != 2 * k + 3:
        raise InputError(f"expected {2 * k + 3} columns ({k + 1} scores, query id, {k + 1} doc ids) for the {k} "
                         f"negative(s) of {sample.source[0]}:{sample.source[1]}, got {len(cols)}",
                         path=path, line=number)
    scores = []
    for i, value in enumerate(cols[: k + 1]):
        field = "score_pos" if i == 0 else "score_neg"
        try:
            score = float(value)
        except ValueError:
            raise InputError(f"{value!r} is not a number (column {i + 1})", path=path, line=number,
                             field=field) from None
        if not math.isfinite(score):
            raise InputError(f"{value!r} is not a finite number (column {i + 1})", path=path, line=number, field=field)
        scores.append(score)
    if sample.query_id is not None:
        qid, doc_ids = cols[k + 1], cols[k + 2:]
        where = f"{sample.source[0]}:{sample.source[1]}"
        if qid != sample.query_id:
            raise InputError(f"query id {qid!r} where {where} has {sample.query_id!r}", path=path, line=number,
                             field="query_id")
        for i, (got, want) in enumerate(zip(doc_ids, (sample.positive_id, *(sample.negative_ids or ())))):
            if got != want:
                raise InputError(f"doc id {got!r} where {where} has {want!r} (column {k + 3 + i})", path=path,
                                 line=number, field="pos_id" if i == 0 else "neg_id")
    return tuple(scores)


# -- grouping -----------------------------------------------------------------------------------


def _key(sample: TrainingSample) -> tuple[str | None, ...]:
    if sample.query_id is not None:
        return ("ids", sample.query_id, sample.positive_id)
    return ("text", sample.query, sample.positive)


def _merge(run: list[TrainingSample]) -> TrainingSample:
    if len(run) == 1:
        return run[0]
    first = run[0]
    negatives = tuple(neg for sample in run for neg in sample.negatives)
    negative_ids = None
    if first.negative_ids is not None:
        negative_ids = tuple(nid for sample in run for nid in sample.negative_ids or ())
    teacher = None
    if first.teacher is not None:
        teacher = (first.teacher[0], *(score for sample in run for score in (sample.teacher or ())[1:]))
    return first._replace(negatives=negatives, negative_ids=negative_ids, teacher=teacher)


def file_stats(path: Path) -> list[tuple[str, int, int]]:
    """``(resolved path, size, mtime_ns)`` of a file, or of every file under a folder: what tells a resumed
    run its inputs did not change."""
    targets = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in targets if p.exists()]


@dataclass(frozen=True)
class TrainingInput:
    """Where a trainer's samples come from: the arguments of :func:`read_training_samples`, re-readable."""

    triples: str | Path
    queries: str | Path | None = None
    corpus: str | Path | None = None
    teacher: str | Path | None = None
    group_by_query: bool = False
    split: str = "train"

    def samples(self) -> Iterator[TrainingSample]:
        return read_training_samples(self.triples, queries=self.queries, corpus=self.corpus, teacher=self.teacher,
                                     group_by_query=self.group_by_query, split=self.split)

    def check(self) -> dict:
        """:func:`check_training_input` on this input (a full streamed pass; raises the first problem)."""
        return check_training_input(self.triples, queries=self.queries, corpus=self.corpus, teacher=self.teacher,
                                    group_by_query=self.group_by_query, split=self.split)

    def negatives_to_use(self, summary: dict, requested: int | None) -> int:
        """Negatives per sample for training: ``requested``, or the fewest any sample has (from :meth:`check`)."""
        fewest = summary["negatives"]["min"]
        k = fewest if requested is None else requested
        if k > fewest:
            raise InputError(f"--negatives {k}, but some samples have only {fewest}", path=self.triples,
                             field="negatives")
        return k

    def signature(self) -> dict:
        """Paths with sizes and modification times: what tells a resumed run its inputs did not change."""
        files = {}
        for name in ("triples", "queries", "corpus", "teacher"):
            value = getattr(self, name)
            if value is None:
                continue
            files[name] = file_stats(Path(value))
        return {"files": files, "group_by_query": self.group_by_query, "split": self.split}
