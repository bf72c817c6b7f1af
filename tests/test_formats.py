"""Readers: BEIR corpus / queries / qrels, MS MARCO TSV, and their errors (file:line: field)."""

from __future__ import annotations

import gzip
import json

import pytest

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Corpus, Document, read_qrels, read_queries
from tests.conftest import require_shared


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_beir_corpus_streams_documents(tmp_path):
    path = _jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "title": "T", "text": "x y"}, {"_id": 7, "text": "z"}])
    docs = list(Corpus(path))
    assert docs == [Document("a", "T", "x y"), Document("7", "", "z")]
    assert docs[0].full_text == "T x y" and docs[1].full_text == "z"
    assert len(Corpus(tmp_path)) == 2  # the folder resolves to corpus.jsonl
    assert Corpus(path).format == "beir"


def test_msmarco_collection_tsv_and_gzip(tmp_path):
    path = tmp_path / "collection.tsv"
    path.write_text("0\tfirst passage\n1\tsecond passage\n", encoding="utf-8")
    assert [d.doc_id for d in Corpus(path)] == ["0", "1"]
    gz = tmp_path / "c.tsv.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write("5\tTitle\tbody\n")
    assert list(Corpus(gz)) == [Document("5", "Title", "body")]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (['{"_id": "a", "text": "x"}', '{"_id": "b", "text": '], r"corpus.jsonl:2: malformed JSON"),
        ([{"_id": "a", "text": "x"}, {"title": "t", "text": "y"}], r"corpus.jsonl:2: field '_id': missing"),
        ([{"_id": "a"}], r"corpus.jsonl:1: field 'text': missing"),
        ([{"_id": "a", "text": 3}], r"corpus.jsonl:1: field 'text': expected a string"),
        ([{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}], r"corpus.jsonl:2: field '_id': duplicate document id 'a'"),
        (['["not", "an", "object"]'], r"corpus.jsonl:1: expected a JSON object"),
    ],
)
def test_corpus_errors_name_file_line_and_field(tmp_path, rows, expected):
    path = _jsonl(tmp_path / "corpus.jsonl", rows)
    with pytest.raises(InputError, match=expected):
        list(Corpus(path))


def test_non_utf8_and_empty_corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"corpus.jsonl:2: not valid UTF-8"):
        list(Corpus(path))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="the corpus is empty"):
        list(Corpus(empty))


def test_tsv_wrong_column_count(tmp_path):
    path = tmp_path / "collection.tsv"
    path.write_text("0\ta\n1\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"collection.tsv:2: expected 2 or 3 tab-separated columns"):
        list(Corpus(path))


def test_missing_corpus(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        Corpus(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="no corpus.jsonl"):
        Corpus(tmp_path)


def test_queries_jsonl_tsv_and_errors(tmp_path):
    _jsonl(tmp_path / "queries.jsonl", [{"_id": "1", "text": "q one"}, {"_id": "2", "text": "q two"}])
    assert read_queries(tmp_path) == {"1": "q one", "2": "q two"}
    tsv = tmp_path / "queries.tsv"
    tsv.write_text("10\tfirst\n11\tsecond\n", encoding="utf-8")
    assert read_queries(tsv) == {"10": "first", "11": "second"}
    tsv.write_text("10\tfirst\n10\tagain\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"queries.tsv:2: field '_id': duplicate query id"):
        read_queries(tsv)


def test_qrels_beir_and_trec(tmp_path):
    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t2\n2\td3\t0\n", encoding="utf-8")
    assert read_qrels(beir) == {"1": {"d1": 1, "d2": 2}, "2": {"d3": 0}}
    trec = tmp_path / "qrels.dev.tsv"
    trec.write_text("1102400 0 7067032 1\n1102400\t0\t7067033\t2\n", encoding="utf-8")
    assert read_qrels(trec) == {"1102400": {"7067032": 1, "7067033": 2}}
    beir.write_text("query-id\tcorpus-id\tscore\n1\td1\thigh\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"test.tsv:2: field 'score': relevance grade 'high' is not an integer"):
        read_qrels(beir)
    with pytest.raises(InputError, match="file not found"):
        read_qrels(tmp_path / "missing.tsv")


def test_real_scifact_reads():
    root = require_shared("scifact")
    corpus = Corpus(root)
    assert len(corpus) == 5183
    assert len(read_queries(root)) == 1109
    assert len(read_qrels(root / "qrels" / "test.tsv")) == 300


def test_lookup_fetches_by_id_and_names_missing_ids(tmp_path):
    path = _jsonl(tmp_path / "corpus.jsonl", [{"_id": str(i), "text": f"doc {i}"} for i in range(10)])
    found = Corpus(path).lookup(["7", "2"])
    assert found == {"7": Document("7", "", "doc 7"), "2": Document("2", "", "doc 2")}
    with pytest.raises(InputError, match=r"corpus.jsonl: 1 document id\(s\) not in the corpus \(first: 'x'\)"):
        Corpus(path).lookup(["1", "x"])
