"""BM25 over Anserini/Lucene: index a tiny BEIR corpus once (one JVM per session), then search it."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from rankwise.retrieval.bm25 import BM25Retriever, build_bm25_index
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Corpus
from rankwise.retrieval.manifest import read_manifest

DOCS = [
    {"_id": "d1", "title": "Photosynthesis", "text": "Plants convert sunlight, water and carbon dioxide into glucose."},
    {"_id": "d2", "title": "Volcanoes", "text": "Magma rises through the crust and erupts as lava and ash."},
    {"_id": "d3", "title": "Vaccines", "text": "A vaccine trains the immune system to recognise a virus."},
    {"_id": "d4", "title": "Black holes", "text": "Gravity near a black hole is so strong that light cannot escape."},
    {"_id": "d5", "title": "Honey bees", "text": "Bees pollinate flowers and make honey from nectar."},
    {"_id": "d6", "title": "", "text": "The stock market fell sharply as interest rates rose."},
    {"_id": "d7", "title": "Penguins of Antarctica", "text": ""},  # empty text: indexed by title
    {"_id": "d8", "title": "", "text": ""},  # nothing at all: counted, Anserini skips it
]


def write_corpus(folder: Path, docs: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps(doc) + "\n")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bm25")
    corpus = Corpus(write_corpus(root / "beir", DOCS))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = build_bm25_index(corpus, root / "index", threads=2, progress=False)
    return {"root": root, "index": root / "index", "corpus": corpus, "manifest": manifest, "warnings": caught}


@pytest.fixture(scope="module")
def retriever(built):
    with BM25Retriever(built["index"]) as r:
        yield r


def test_manifest_records_kind_source_and_files(built):
    manifest = built["manifest"]
    assert manifest["kind"] == "bm25"
    assert manifest["source"] == {"path": str(built["corpus"].path), "sha256": built["corpus"].fingerprint, "count": 8}
    assert manifest["bm25"] == {"k1": 0.9, "b": 0.4, "fields": "title+text"}
    assert manifest["lucene"]["indexed"] == 7 and manifest["lucene"]["empty_skipped"] == 1
    assert manifest["files"] and all(name.startswith("lucene/") for name in manifest["files"])
    assert read_manifest(built["index"], kinds=("bm25",))["files"] == manifest["files"]
    assert not (built["index"] / ".work").exists()


def test_empty_text_documents_are_warned_about(built):
    messages = [str(w.message) for w in built["warnings"]]
    assert any("2 of 8 documents have empty text" in m and "1 have no title either" in m for m in messages), messages


@pytest.mark.parametrize("query, expected", [
    ("how do plants turn sunlight into sugar", "d1"),
    ("lava eruption", "d2"),
    ("virus immune system", "d3"),
    ("can light escape a black hole", "d4"),
    ("pollinating bees", "d5"),   # Porter stemming: pollinating -> pollin
    ("interest rates", "d6"),
    ("penguin", "d7"),            # found by its title alone
])
def test_right_document_ranks_first(retriever, query, expected):
    run = retriever.search({"q": query}, k=3, progress=False)
    assert run["q"][0][0] == expected


def test_run_shape_scores_and_k(retriever):
    queries = {"a": "the black hole light gravity", "b": "honey and flowers and plants", "c": "glucose"}
    run = retriever.search(queries, k=2, progress=False)
    assert run.name == "bm25" and list(run) == ["a", "b", "c"]
    for qid, docs in run.items():
        assert 1 <= len(docs) <= 2
        scores = [score for _, score in docs]
        assert all(isinstance(s, float) and s > 0 for s in scores)
        assert scores == sorted(scores, reverse=True)
    assert len(run["c"]) == 1  # only d1 contains "glucose"
    many = retriever.search({"q": "the water and the light"}, k=100, progress=False)["q"]
    assert len({doc for doc, _ in many}) == len(many) <= 7


def test_empty_and_stopword_queries_give_empty_lists(retriever):
    run = retriever.search({"empty": "", "blank": "   ", "stop": "the and of", "ok": "volcano"}, k=5, progress=False)
    assert run["empty"] == [] and run["blank"] == [] and run["stop"] == []
    assert run["ok"][0][0] == "d2"


def test_bad_arguments_are_input_errors(built, retriever):
    with pytest.raises(InputError, match="k must be"):
        retriever.search({"q": "bees"}, k=0)
    with pytest.raises(InputError, match="b must be"):
        BM25Retriever(built["index"], b=2.0)


def test_folder_without_manifest_is_refused(tmp_path, built):
    with pytest.raises(InputError, match="no manifest.json"):
        BM25Retriever(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(built["index"], copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(InputError, match="no manifest.json"):
        BM25Retriever(copy)


def test_failed_rebuild_keeps_the_old_index(tmp_path, built):
    copy = tmp_path / "copy"
    shutil.copytree(built["index"], copy)
    before = {p.name: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    bad = write_corpus(tmp_path / "bad", DOCS[:2])
    with open(bad / "corpus.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"_id": "d9", "text": \n')
    with pytest.raises(InputError, match=r"corpus.jsonl:3: malformed JSON"):
        build_bm25_index(Corpus(bad), copy, force=True, progress=False)
    assert {p.name: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.glob(".copy.*"))  # no temporary folder left beside it
    with BM25Retriever(copy) as retriever:
        assert retriever.search({"q": "honey"}, k=3, progress=False)["q"]


def test_rebuild_from_another_corpus_needs_force(tmp_path):
    out = tmp_path / "index"
    build_bm25_index(Corpus(write_corpus(tmp_path / "one", DOCS[:3])), out, threads=1, progress=False)
    two = Corpus(write_corpus(tmp_path / "two", DOCS[3:5]))
    with pytest.raises(InputError, match="holds the BM25 index of another corpus; pass --force"):
        build_bm25_index(two, out, threads=1, progress=False)
    manifest = build_bm25_index(two, out, threads=1, force=True, progress=False)
    assert manifest["source"]["count"] == 2
    with BM25Retriever(out, threads=1) as r:
        run = r.search({"old": "volcanoes lava", "new": "honey"}, k=10, progress=False)
    assert run["old"] == [] and run["new"][0][0] == "d5"
    again = build_bm25_index(two, out, threads=1, progress=False)  # the same corpus: reused
    assert again["created"] == manifest["created"] and again["files"] == manifest["files"]


def test_relative_paths_after_chdir(tmp_path, monkeypatch):
    """The JVM keeps the working directory it started in; relative paths must still work after chdir."""
    from rankwise.retrieval.bm25 import BM25Retriever, build_bm25_index
    from rankwise.retrieval.formats import Corpus

    folder = tmp_path / "cwd"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "a", "text": "wing airflow"}\n{"_id": "b", "text": "heart"}\n')
    monkeypatch.chdir(folder)
    build_bm25_index(Corpus("corpus.jsonl"), "idx", progress=False)
    run = BM25Retriever("idx").search({"q": "wing"}, k=1, progress=False)
    assert run["q"][0][0] == "a"
