"""Training inputs: text / id triples, n-tuples, Margin-MSE teacher scores, grouping, BEIR qrels pairs."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from rankwise.retrieval.docstore import DocStore
from rankwise.retrieval.errors import InputError
from tests.conftest import write_beir
from rankwise.training.data import (
    BeirFiles,
    TrainingSample,
    check_training_input,
    count_lines,
    group_samples,
    read_qrels_pairs,
    read_training_samples,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "cache"))


def _write(path, lines: list[str]):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _where(path, line: int) -> str:
    """The start of an error message: ``file:line: ``, as a regex."""
    return rf"^{re.escape(str(path))}:{line}: "


DOCS = {"p1": ("T1", "positive one"), "p2": ("", "positive two"), "n1": ("", "negative one"),
        "n2": ("T2", "negative two"), "n3": ("", "negative three")}
QUERIES = {"q1": "what is one", "q2": "what is two"}


@pytest.fixture(params=["beir", "msmarco"])
def id_layout(request, tmp_path):
    """(queries file, corpus file) in the BEIR jsonl or the MS MARCO tsv layout."""
    if request.param == "beir":
        queries = _write(tmp_path / "queries.jsonl", [json.dumps({"_id": q, "text": t}) for q, t in QUERIES.items()])
        corpus = _write(tmp_path / "corpus.jsonl",
                        [json.dumps({"_id": d, "title": t, "text": x}) for d, (t, x) in DOCS.items()])
    else:
        queries = _write(tmp_path / "queries.tsv", [f"{q}\t{t}" for q, t in QUERIES.items()])
        corpus = _write(tmp_path / "collection.tsv",
                        [f"{d}\t{t}\t{x}" if t else f"{d}\t{x}" for d, (t, x) in DOCS.items()])
    return queries, corpus


def _full(doc_id: str) -> str:
    title, text = DOCS[doc_id]
    return f"{title} {text}" if title else text


# -- text triples --------------------------------------------------------------------------------


def test_text_triples_and_n_tuples(tmp_path):
    path = _write(tmp_path / "triples.tsv", ["q one\tpos one\tneg one", "", "q two\tpos two\tneg a\tneg b\tneg c"])
    samples = list(read_training_samples(path))
    assert samples == [
        TrainingSample("q one", "pos one", ("neg one",), source=(str(path), 1)),
        TrainingSample("q two", "pos two", ("neg a", "neg b", "neg c"), source=(str(path), 3)),
    ]
    assert samples[0].query_id is None and samples[0].negative_ids is None and samples[0].teacher is None


def test_text_triples_gzip(tmp_path):
    path = tmp_path / "triples.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("q\tp\tn\n")
    assert [s.negatives for s in read_training_samples(path)] == [("n",)]
    assert count_lines(path) == 1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("q\tp", r"field 'negative': missing: expected at least 3 tab-separated columns .* got 2"),
        ("only a query", r"field 'positive': missing: .* got 1"),
        ("q\t\tn", r"field 'positive': empty \(column 2\)"),
        ("\tp\tn", r"field 'query': empty \(column 1\)"),
        ("q\tp\tn1\t  ", r"field 'negative': empty \(column 4\)"),
    ],
)
def test_text_triples_errors_name_file_line_field(tmp_path, line, expected):
    path = _write(tmp_path / "triples.tsv", ["q\tp\tn", line])
    with pytest.raises(InputError, match=_where(path, 2) + expected):
        list(read_training_samples(path))


def test_reading_is_streamed(tmp_path):
    path = _write(tmp_path / "triples.tsv", ["q\tp\tn", "q\tp\tn", "broken"])
    samples = read_training_samples(path)
    assert next(samples).query == "q" and next(samples).query == "q"  # read before the bad line is reached
    with pytest.raises(InputError, match=_where(path, 3)):
        next(samples)


# -- id triples ----------------------------------------------------------------------------------


def test_id_triples_resolve_queries_and_documents(tmp_path, id_layout):
    queries, corpus = id_layout
    path = _write(tmp_path / "ids.tsv", ["q1\tp1\tn1", "q2\tp2\tn2\tn3"])
    samples = list(read_training_samples(path, queries=queries, corpus=corpus))
    assert samples == [
        TrainingSample(QUERIES["q1"], _full("p1"), (_full("n1"),), "q1", "p1", ("n1",), None, (str(path), 1)),
        TrainingSample(QUERIES["q2"], _full("p2"), (_full("n2"), _full("n3")), "q2", "p2", ("n2", "n3"), None,
                       (str(path), 2)),
    ]
    assert samples[0].positive == "T1 positive one"
    # A DocStore and a dict of queries are taken as they are.
    again = list(read_training_samples(path, queries=dict(QUERIES), corpus=DocStore(corpus)))
    assert again == samples


@pytest.mark.parametrize(
    ("line", "field", "missing"),
    [("q9\tp1\tn1", "query_id", "q9"), ("q1\tp9\tn1", "positive_id", "p9"), ("q1\tp1\tn1\tn9", "negative_id", "n9")],
)
def test_id_triples_missing_ids_name_triples_line_and_field(tmp_path, id_layout, line, field, missing):
    queries, corpus = id_layout
    path = _write(tmp_path / "ids.tsv", ["q1\tp1\tn1", line])
    with pytest.raises(InputError, match=_where(path, 2) + rf"field '{field}': .*'{missing}' is not in"):
        list(read_training_samples(path, queries=queries, corpus=corpus))


def test_id_triples_with_gzip_corpus(tmp_path):
    corpus = tmp_path / "collection.tsv.gz"
    with gzip.open(corpus, "wt", encoding="utf-8") as fh:
        fh.write("".join(f"{d}\t{x}\n" for d, (_, x) in DOCS.items()))
    queries = _write(tmp_path / "queries.tsv", [f"{q}\t{t}" for q, t in QUERIES.items()])
    path = _write(tmp_path / "ids.tsv", ["q1\tp1\tn1\tn2"])
    (sample,) = read_training_samples(path, queries=queries, corpus=corpus)
    assert sample.negatives == ("negative one", "negative two")
    path = _write(tmp_path / "ids.tsv", ["q1\tp1\tn7"])
    with pytest.raises(InputError, match=_where(path, 1) + "field 'negative_id'"):
        list(read_training_samples(path, queries=queries, corpus=corpus))


def test_queries_and_corpus_go_together(tmp_path, id_layout):
    queries, corpus = id_layout
    path = _write(tmp_path / "ids.tsv", ["q1\tp1\tn1"])
    for kwargs in ({"queries": queries}, {"corpus": corpus}):
        with pytest.raises(InputError, match="need both a queries file and a corpus"):
            read_training_samples(path, **kwargs)
    with pytest.raises(InputError, match=r"nope.tsv: file not found"):
        read_training_samples(tmp_path / "nope.tsv")


# -- teacher scores ------------------------------------------------------------------------------


def test_teacher_scores_margin_mse_format(tmp_path, id_layout):
    queries, corpus = id_layout
    path = _write(tmp_path / "ids.tsv", ["q1\tp1\tn1", "q2\tp2\tn2\tn3"])
    teacher = _write(tmp_path / "scores.tsv", ["10.5\t-1.25\tq1\tp1\tn1", "", "3\t2\t1e-1\tq2\tp2\tn2\tn3"])
    samples = list(read_training_samples(path, queries=queries, corpus=corpus, teacher=teacher))
    assert [s.teacher for s in samples] == [(10.5, -1.25), (3.0, 2.0, 0.1)]


def test_teacher_scores_with_text_triples_check_arity_only(tmp_path):
    path = _write(tmp_path / "triples.tsv", ["q\tp\tn", "q\tp\tn1\tn2"])
    teacher = _write(tmp_path / "scores.tsv", ["1\t0\tany\tids\there", "1\t0.5\t0\tx\ty\tz\tw"])
    assert [s.teacher for s in read_training_samples(path, teacher=teacher)] == [(1.0, 0.0), (1.0, 0.5, 0.0)]
    teacher = _write(tmp_path / "scores.tsv", ["1\t0\tany\tids\there", "1\t0\tq\tp\tn"])
    with pytest.raises(InputError, match=_where(teacher, 2) + r"expected 7 columns \(3 scores, query id, 3 doc ids\)"
                                         rf" for the 2 negative\(s\) of {re.escape(str(path))}:2, got 5"):
        list(read_training_samples(path, teacher=teacher))


def test_teacher_file_shorter_or_longer_than_triples(tmp_path):
    path = _write(tmp_path / "triples.tsv", ["q\tp\tn", "q\tp\tn", "q\tp\tn"])
    short = _write(tmp_path / "short.tsv", ["1\t0\tq\tp\tn", "1\t0\tq\tp\tn"])
    with pytest.raises(InputError, match=_where(short, 3) + rf"ends after 2 lines, .*{re.escape(str(path))}:3 has no"):
        list(read_training_samples(path, teacher=short))
    long = _write(tmp_path / "long.tsv", ["1\t0\tq\tp\tn"] * 4)
    with pytest.raises(InputError, match=_where(long, 4) + r"more lines than the triples .* has 3\)"):
        list(read_training_samples(path, teacher=long))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("x\t0\tq1\tp1\tn1", r"field 'score_pos': 'x' is not a number \(column 1\)"),
        ("1\tnan\tq1\tp1\tn1", r"field 'score_neg': 'nan' is not a finite number \(column 2\)"),
        ("1\t0\tq2\tp1\tn1", r"field 'query_id': query id 'q2' where .*ids.tsv:2 has 'q1'"),
        ("1\t0\tq1\tp2\tn1", r"field 'pos_id': doc id 'p2' where .*ids.tsv:2 has 'p1' \(column 4\)"),
        ("1\t0\tq1\tp1\tn2", r"field 'neg_id': doc id 'n2' where .*ids.tsv:2 has 'n1' \(column 5\)"),
        ("1\t0\tq1\tp1", r"expected 5 columns"),
    ],
)
def test_teacher_errors_name_file_line_field(tmp_path, id_layout, line, expected):
    queries, corpus = id_layout
    path = _write(tmp_path / "ids.tsv", ["q1\tp1\tn1", "q1\tp1\tn1"])
    teacher = _write(tmp_path / "scores.tsv", ["1\t0\tq1\tp1\tn1", line])
    with pytest.raises(InputError, match=_where(teacher, 2) + expected):
        list(read_training_samples(path, queries=queries, corpus=corpus, teacher=teacher))


# -- grouping ------------------------------------------------------------------------------------


def test_group_by_query_merges_consecutive_lines_and_teacher_scores(tmp_path, id_layout):
    queries, corpus = id_layout
    path = _write(tmp_path / "ids.tsv", ["q1\tp1\tn1", "q1\tp1\tn2\tn3", "q2\tp2\tn1", "q1\tp1\tn3"])
    teacher = _write(tmp_path / "scores.tsv", ["9\t1\tq1\tp1\tn1", "9\t2\t3\tq1\tp1\tn2\tn3", "8\t4\tq2\tp2\tn1",
                                               "9\t5\tq1\tp1\tn3"])
    samples = list(read_training_samples(path, queries=queries, corpus=corpus, teacher=teacher, group_by_query=True))
    assert [(s.query_id, s.negative_ids, s.teacher, s.source[1]) for s in samples] == [
        ("q1", ("n1", "n2", "n3"), (9.0, 1.0, 2.0, 3.0), 1),
        ("q2", ("n1",), (8.0, 4.0), 3),
        ("q1", ("n3",), (9.0, 5.0), 4),  # not consecutive: not merged
    ]
    assert samples[0].negatives == (_full("n1"), _full("n2"), _full("n3"))


def test_group_by_query_text_triples(tmp_path):
    path = _write(tmp_path / "triples.tsv", ["q\tp\ta", "q\tp\tb", "q\tother\tc"])
    samples = list(read_training_samples(path, group_by_query=True))
    assert [(s.positive, s.negatives, s.negative_ids) for s in samples] == [("p", ("a", "b"), None),
                                                                             ("other", ("c",), None)]
    assert list(group_samples([])) == []


# -- BEIR qrels pairs ----------------------------------------------------------------------------


def _beir_folder(tmp_path, qrels):
    docs = [{"_id": d, "title": t, "text": x} for d, (t, x) in DOCS.items()]
    queries = [{"_id": q, "text": t} for q, t in QUERIES.items()]
    return write_beir(tmp_path / "beir", docs, queries, qrels, split="train")


def test_beir_qrels_pairs_keep_positive_judgements(tmp_path):
    folder = _beir_folder(tmp_path, [("q1", "p1", 1), ("q1", "n1", 0), ("q2", "p2", 2)])
    qrels = folder / "qrels" / "train.tsv"
    samples = list(read_qrels_pairs(folder))
    assert samples == [
        TrainingSample(QUERIES["q1"], _full("p1"), (), "q1", "p1", (), None, (str(qrels), 2)),
        TrainingSample(QUERIES["q2"], _full("p2"), (), "q2", "p2", (), None, (str(qrels), 4)),
    ]
    assert list(read_training_samples(folder)) == samples
    files = BeirFiles(folder / "corpus.jsonl", folder / "queries.jsonl", qrels)
    assert list(read_qrels_pairs(files)) == samples
    with pytest.raises(InputError, match=r"no qrels for split 'dev' \(splits: train\)"):
        read_qrels_pairs(folder, "dev")
    with pytest.raises(InputError, match="brings its own queries"):
        read_training_samples(folder, teacher=qrels)


@pytest.mark.parametrize(("row", "field"), [(("q9", "p1", 1), "query-id"), (("q1", "p9", 1), "corpus-id")])
def test_beir_qrels_missing_ids_name_qrels_line(tmp_path, row, field):
    folder = _beir_folder(tmp_path, [("q1", "p1", 1), row])
    with pytest.raises(InputError, match=_where(folder / "qrels" / "train.tsv", 3) + f"field '{field}'"):
        list(read_qrels_pairs(folder))


# -- the pre-flight check ------------------------------------------------------------------------


def test_check_training_input_counts_and_errors(tmp_path, id_layout):
    queries, corpus = id_layout
    path = _write(tmp_path / "ids.tsv", ["q1\tp1\tn1", "q1\tp1\tn2\tn3", "q2\tp2\tn1"])
    report = check_training_input(path, queries=queries, corpus=corpus)
    assert report == {"kind": "ids", "samples": 3, "teacher": False,
                      "negatives": {"min": 1, "max": 2, "mean": 4 / 3, "counts": {1: 2, 2: 1}}}
    grouped = check_training_input(path, queries=queries, corpus=corpus, group_by_query=True)
    assert grouped["samples"] == 2 and grouped["negatives"]["counts"] == {1: 1, 3: 1}
    assert check_training_input(_beir_folder(tmp_path, [("q1", "p1", 1)]))["negatives"]["max"] == 0
    bad = _write(tmp_path / "bad.tsv", ["q1\tp1\tn1", "q1\tp1\tn1", "q1\tp1"])
    with pytest.raises(InputError, match=_where(bad, 3) + "field 'negative_id'"):
        check_training_input(bad, queries=queries, corpus=corpus)


def test_empty_training_set_is_an_error(tmp_path):
    empty = _write(tmp_path / "empty.tsv", ["", "  "])
    with pytest.raises(InputError, match=rf"^{re.escape(str(empty))}: no training samples$"):
        check_training_input(empty)
    folder = _beir_folder(tmp_path, [("q1", "p1", 0)])
    with pytest.raises(InputError, match="no training samples"):
        check_training_input(folder)
    assert count_lines(empty) == 0
