"""Readers for the collection formats rankwise takes: BEIR folders and MS MARCO TSV files.

Everything streams: a corpus is read line by line, never loaded whole. Every problem is raised as
an :class:`InputError` naming the file, the line and the field.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.files import sha256_file

log = logging.getLogger(__name__)


class Document(NamedTuple):
    """One document of a corpus."""

    doc_id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """Title and text as one field, the way BM25 and the encoders read a document."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 text file (``.gz`` too), skipping blank lines."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"not valid UTF-8 (byte {err.start} of the line)", path=path, line=number) from None
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def json_line(path: Path, number: int, line: str) -> dict:
    """One JSONL line as an object; malformed JSON or a non-object names the file and line."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"malformed JSON: {err.msg} at column {err.colno}", path=path, line=number) from None
    if not isinstance(obj, dict):
        raise InputError("expected a JSON object", path=path, line=number)
    return obj


def _string_field(obj: dict, name: str, path: Path, number: int, *, required: bool = True) -> str:
    value = obj.get(name)
    if value is None:
        if required:
            raise InputError("missing", path=path, line=number, field=name)
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name == "_id":
        return str(value)
    if not isinstance(value, str):
        raise InputError(f"expected a string, got {type(value).__name__}", path=path, line=number, field=name)
    return value


def _check_id(value: str, path: Path, number: int, field: str) -> str:
    value = value.strip()
    if not value:
        raise InputError("empty id", path=path, line=number, field=field)
    if any(c in value for c in "\t\n\r ") :
        raise InputError(f"id {value!r} contains whitespace", path=path, line=number, field=field)
    return value


def _corpus_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("corpus.jsonl", "corpus.jsonl.gz", "collection.tsv", "collection.tsv.gz"):
            if (path / name).is_file():
                return path / name
        raise InputError("no corpus.jsonl or collection.tsv in this folder", path=path)
    if not path.exists():
        raise InputError("file not found", path=path)
    return path


def _is_tsv(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith(".tsv")


class Corpus:
    """A document collection read as a stream of :class:`Document` (``doc_id, title, text``).

    ``path`` is a BEIR folder, a ``corpus.jsonl`` (``_id``, ``title``, ``text``) or an MS MARCO
    ``collection.tsv`` (``id \\t text``, or ``id \\t title \\t text``); ``.gz`` files are read as is.
    Iterating validates every line and refuses duplicate ids; an empty corpus is an error.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = _corpus_file(Path(path))
        self.format = "msmarco" if _is_tsv(self.path) else "beir"
        self._count: int | None = None
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"Corpus({str(self.path)!r})"

    def __iter__(self) -> Iterator[Document]:
        seen: set[str] = set()
        parse = self._parse_tsv if self.format == "msmarco" else self._parse_jsonl
        count = 0
        for number, line in iter_lines(self.path):
            doc = parse(number, line)
            if doc.doc_id in seen:
                raise InputError(f"duplicate document id {doc.doc_id!r}", path=self.path, line=number, field="_id")
            seen.add(doc.doc_id)
            count += 1
            yield doc
        if count == 0:
            raise InputError("the corpus is empty", path=self.path)
        self._count = count

    def __len__(self) -> int:
        if self._count is None:
            for _ in self:
                pass
        assert self._count is not None
        return self._count

    def lookup(self, doc_ids: Iterable[str]) -> dict[str, Document]:
        """The documents with these ids, in one streaming pass; an id not in the corpus is an error."""
        wanted = set(doc_ids)
        found: dict[str, Document] = {}
        for doc in self:
            if doc.doc_id in wanted:
                found[doc.doc_id] = doc
                if len(found) == len(wanted):
                    break
        missing = wanted - found.keys()
        if missing:
            first = sorted(missing)[0]
            raise InputError(f"{len(missing)} document id(s) not in the corpus (first: {first!r})", path=self.path)
        return found

    def present(self, doc_ids: Iterable[str]) -> set[str]:
        """Which of ``doc_ids`` the corpus holds, in one streaming pass that stops when all are found."""
        wanted, found = set(doc_ids), set()
        for doc in self:
            if doc.doc_id in wanted:
                found.add(doc.doc_id)
                if len(found) == len(wanted):
                    break
        return found

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the corpus file: what an index records to know it was built from this data."""
        if self._fingerprint is None:
            self._fingerprint = sha256_file(self.path)
        return self._fingerprint

    def _parse_jsonl(self, number: int, line: str) -> Document:
        return parse_jsonl_document(self.path, number, line)

    def _parse_tsv(self, number: int, line: str) -> Document:
        return parse_tsv_document(self.path, number, line)


def parse_jsonl_document(path: Path, number: int, line: str) -> Document:
    """One ``corpus.jsonl`` line (``_id``, optional ``title``, ``text``) as a :class:`Document`."""
    obj = json_line(path, number, line)
    doc_id = _check_id(_string_field(obj, "_id", path, number), path, number, "_id")
    title = _string_field(obj, "title", path, number, required=False)
    text = _string_field(obj, "text", path, number)
    return Document(doc_id, title, text)


def parse_tsv_document(path: Path, number: int, line: str) -> Document:
    """One ``collection.tsv`` line (``id \\t text`` or ``id \\t title \\t text``) as a :class:`Document`."""
    cols = line.split("\t")
    if len(cols) == 2:
        doc_id, title, text = cols[0], "", cols[1]
    elif len(cols) == 3:
        doc_id, title, text = cols
    else:
        raise InputError(f"expected 2 or 3 tab-separated columns (id, [title,] text), got {len(cols)}",
                         path=path, line=number)
    return Document(_check_id(doc_id, path, number, "id"), title, text)


def document_parser(corpus_format: str) -> Callable[[Path, int, str], Document]:
    """The line parser of a corpus format: ``"msmarco"`` (TSV) or ``"beir"`` (JSONL)."""
    return parse_tsv_document if corpus_format == "msmarco" else parse_jsonl_document


def _queries_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("queries.jsonl", "queries.tsv"):
            if (path / name).is_file():
                return path / name
        raise InputError("no queries.jsonl or queries.tsv in this folder", path=path)
    return path


def read_queries(path: str | Path) -> dict[str, str]:
    """Queries as ``{query_id: text}`` from a BEIR ``queries.jsonl`` (or its folder) or a ``qid \\t text`` TSV."""
    path = _queries_file(Path(path))
    queries: dict[str, str] = {}
    tsv = _is_tsv(path)
    for number, line in iter_lines(path):
        if tsv:
            cols = line.split("\t")
            if len(cols) != 2:
                raise InputError(f"expected 2 tab-separated columns (id, text), got {len(cols)}", path=path, line=number)
            qid, text = _check_id(cols[0], path, number, "id"), cols[1]
        else:
            obj = json_line(path, number, line)
            qid = _check_id(_string_field(obj, "_id", path, number), path, number, "_id")
            text = _string_field(obj, "text", path, number)
        if qid in queries:
            raise InputError(f"duplicate query id {qid!r}", path=path, line=number, field="_id")
        queries[qid] = text
    if not queries:
        raise InputError("no queries in the file", path=path)
    return queries


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Relevance judgements as ``{query_id: {doc_id: grade}}``.

    Reads BEIR qrels (``query-id \\t corpus-id \\t score`` with a header line) and TREC / MS MARCO
    qrels (``qid  iteration  docid  grade``, tabs or spaces).
    """
    qrels: dict[str, dict[str, int]] = {}
    for _, qid, did, grade in iter_qrels(path):
        qrels.setdefault(qid, {})[did] = grade
    return qrels


def iter_qrels(path: str | Path, columns: tuple[int, ...] = (3, 4)) -> Iterator[tuple[int, str, str, int]]:
    """Stream a qrels file (formats as :func:`read_qrels`) as ``(line_number, query_id, doc_id, grade)``.

    ``columns`` is what the format allows: 3 (BEIR) and 4 (TREC), or only ``(4,)`` where the format
    is TREC's. A file with no judgements is an error.
    """
    path = Path(path)
    count = 0
    for number, line in iter_lines(path):
        cols = line.split()
        if len(cols) == 3 and 3 in columns:
            qid, did, grade = cols
            if number == 1 and not _is_int(grade):
                continue  # BEIR header: query-id corpus-id score
        elif len(cols) == 4 and 4 in columns:
            qid, _, did, grade = cols
        elif columns == (4,):
            raise InputError(f"expected 4 columns (TREC qrels: QUERY 0 DOC GRADE), got {len(cols)}",
                             path=path, line=number)
        else:
            raise InputError(f"expected 3 (BEIR) or 4 (TREC) columns, got {len(cols)}", path=path, line=number)
        if not _is_int(grade):
            raise InputError(f"relevance grade {grade!r} is not an integer", path=path, line=number, field="score")
        count += 1
        yield number, qid, did, int(grade)
    if not count:
        raise InputError("no judgements in the file", path=path)


# What a judgement of a document that is not in the corpus does: "error" refuses the file at its first
# such line; "warn" counts them in one warning and keeps them (relevant documents no run can
# retrieve, as BEIR's own evaluation keeps them).
MISSING_JUDGED = ("error", "warn")


def missing_judged_rule(value: str) -> str:
    """``value`` when it is one of :data:`MISSING_JUDGED`, else an :class:`InputError` naming the option."""
    if value not in MISSING_JUDGED:
        raise InputError(f"missing_judged is one of {', '.join(MISSING_JUDGED)}, not {value!r}",
                         field="missing_judged")
    return value


def check_judged(path: str | Path, corpus: Corpus, missing: str = "error") -> int:
    """Check that every document the qrels file ``path`` judges is in ``corpus``; returns how many are not.

    ``missing`` is one of :data:`MISSING_JUDGED`: ``error`` raises an :class:`InputError` naming the
    file, line and id of the first; ``warn`` logs one warning with their count and the first.
    Only the judged ids are held in memory; the corpus is streamed once.
    """
    path = Path(path)
    missing_judged_rule(missing)
    rows = [(number, qid, did) for number, qid, did, _ in iter_qrels(path)]
    present = corpus.present(did for _, _, did in rows)
    absent = [(number, qid, did) for number, qid, did in rows if did not in present]
    if not absent:
        return 0
    number, qid, did = absent[0]
    if missing == "error":
        more = f" ({len(absent) - 1} more lines like it)" if len(absent) > 1 else ""
        raise InputError(f"document {did!r} (judged for query {qid!r}) is not in the corpus{more}; fix the file, "
                         "or pass --missing-judged warn to count such judgements and go on", path=path, line=number,
                         field="corpus-id")
    log.warning("%s: %d of %d judgements name documents that are not in the corpus (first: line %d, %r); they are "
                "kept, as BEIR's evaluation keeps them: a relevant one is a document no run can retrieve "
                "(--missing-judged error refuses them)", path, len(absent), len(rows), number, did)
    return len(absent)


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def lookup_documents(corpus: Corpus | Mapping[str, str | Document], ids: Iterable[str]) -> dict[str, Document]:
    """The documents ``ids`` of ``corpus`` (a :class:`Corpus`, or ``{doc_id: text or Document}``); a missing
    one is an :class:`InputError` naming it."""
    ids = set(ids)
    if isinstance(corpus, Corpus):
        return corpus.lookup(ids)
    missing = [d for d in ids if d not in corpus]
    if missing:
        raise InputError(f"the run names {len(missing)} document(s) not in the corpus (first: {sorted(missing)[0]!r})",
                         field="doc-id")
    return {d: (corpus[d] if isinstance(corpus[d], Document) else Document(d, "", str(corpus[d]))) for d in ids}
