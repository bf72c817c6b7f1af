"""DocStore: random access by id over BEIR / MS MARCO corpora, its cache, collisions, stale rebuilds."""

from __future__ import annotations

import gzip
import json
import pickle
import re

import numpy as np
import pytest

import rankwise.retrieval.docstore as docstore_module
from rankwise.retrieval.docstore import DocStore
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Corpus, Document


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "cache"))


def _docs(n: int = 25) -> list[Document]:
    # Multi-byte text: offsets are in bytes, not characters.
    return [Document(f"d{i}", f"title {i}" if i % 2 else "", f"passage {i} café 日本 {'x' * i}") for i in range(n)]


def _beir(path, docs):
    path.write_text("".join(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n" for d in docs),
                    encoding="utf-8")
    return path


def _tsv(path, docs):
    path.write_text("".join(f"{d.doc_id}\t{d.text}\n" for d in docs), encoding="utf-8")
    return path


def _cache_dirs(tmp_path):
    root = tmp_path / "cache" / "docstores"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


@pytest.mark.parametrize("layout", ["beir", "msmarco"])
def test_first_middle_last_and_missing(tmp_path, layout):
    docs = _docs()
    if layout == "beir":
        path = _beir(tmp_path / "corpus.jsonl", docs)
    else:
        path = _tsv(tmp_path / "collection.tsv", docs)
        docs = [Document(d.doc_id, "", d.text) for d in docs]
    store = DocStore(path)
    for doc in (docs[0], docs[len(docs) // 2], docs[-1]):
        assert store.get(doc.doc_id) == doc
    assert store.get_many(["d24", "d0", "d7"]) == [docs[24], docs[0], docs[7]]
    assert len(store) == len(docs)
    assert "d3" in store and "nope" not in store and 3 not in store
    assert store.find("nope") is None
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: document id 'nope' is not in the corpus$"):
        store.get("nope")
    with pytest.raises(InputError, match="'missing'"):
        store.get_many(["d1", "missing"])


def test_beir_folder_crlf_and_blank_lines(tmp_path):
    folder = tmp_path / "beir"
    folder.mkdir()
    (folder / "corpus.jsonl").write_bytes(
        b'{"_id": "a", "text": "first"}\r\n\r\n{"_id": "b", "title": "T", "text": "second"}\r\n'
        b'{"_id": "c", "text": "third"}')  # no newline at the end
    store = DocStore(folder)
    assert store.get("a") == Document("a", "", "first")
    assert store.get("b") == Document("b", "T", "second")
    assert store.get("c") == Document("c", "", "third")
    assert len(store) == 3


def test_cache_is_plain_numpy_with_manifest_and_reused(tmp_path, monkeypatch):
    path = _tsv(tmp_path / "collection.tsv", _docs(5))
    DocStore(path)
    (cache,) = _cache_dirs(tmp_path)
    assert cache.name == Corpus(path).fingerprint[:16]
    assert sorted(p.name for p in cache.iterdir()) == ["hashes.npy", "lengths.npy", "lines.npy", "manifest.json",
                                                      "offsets.npy"]
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["kind"] == "docstore" and manifest["count"] == 5
    assert manifest["corpus_sha256"] == Corpus(path).fingerprint
    hashes = np.load(cache / "hashes.npy", allow_pickle=False)
    assert hashes.dtype == np.uint64 and np.all(hashes[:-1] <= hashes[1:])

    def no_rebuild(self, progress):
        raise AssertionError("rebuilt a current cache")

    monkeypatch.setattr(DocStore, "_build", no_rebuild)
    assert DocStore(path).get("d4").text.startswith("passage 4")


def test_stale_cache_is_rebuilt_when_the_corpus_changes(tmp_path):
    path = _tsv(tmp_path / "collection.tsv", _docs(5))
    assert DocStore(path).get("d1").text.startswith("passage 1")
    path.write_text("d1\tchanged text\nd9\tnew doc\n", encoding="utf-8")
    store = DocStore(path)
    assert store.get("d1") == Document("d1", "", "changed text")
    assert "d0" not in store and store.get("d9").text == "new doc" and len(store) == 2
    assert len(_cache_dirs(tmp_path)) == 2


def test_cache_of_another_corpus_or_damaged_is_rebuilt(tmp_path):
    path = _tsv(tmp_path / "collection.tsv", _docs(5))
    DocStore(path)
    (cache,) = _cache_dirs(tmp_path)
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["corpus_sha256"] = "0" * 64
    (cache / "manifest.json").write_text(json.dumps(manifest))
    assert DocStore(path).get("d2").text.startswith("passage 2")
    assert json.loads((cache / "manifest.json").read_text())["corpus_sha256"] == Corpus(path).fingerprint
    (cache / "offsets.npy").write_bytes(b"garbage")
    assert DocStore(path).get("d3").text.startswith("passage 3")


def test_hash_collisions_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(docstore_module, "id_hash", lambda doc_id: len(doc_id) % 2)  # almost everything collides
    docs = _docs(30)
    store = DocStore(_beir(tmp_path / "corpus.jsonl", docs))
    assert [store.get(d.doc_id) for d in docs] == docs
    assert "d99" not in store and "x" not in store


@pytest.mark.parametrize("collide", [False, True])
def test_duplicate_ids_and_bad_lines_name_file_and_line(tmp_path, monkeypatch, collide):
    if collide:
        monkeypatch.setattr(docstore_module, "id_hash", lambda doc_id: 7)
    path = tmp_path / "collection.tsv"
    path.write_text("a\tone\nb\ttwo\na\tthree\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}:3: field 'id': duplicate document id 'a'$"):
        DocStore(path)
    path.write_text("a\tone\nb\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}:2: expected 2 or 3 tab-separated columns"):
        DocStore(path)
    path.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="the corpus is empty"):
        DocStore(path)
    assert _cache_dirs(tmp_path) == [] or not any((d / "manifest.json").exists() for d in _cache_dirs(tmp_path))


def test_gzip_corpus_falls_back_to_requested_ids_in_memory(tmp_path):
    path = tmp_path / "collection.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("0\tzero\n1\tTitle\tone\n2\ttwo\n")
    store = DocStore(path)
    assert not store.random_access
    store.preload(["0", "2"])
    assert store.get_many(["2", "0"]) == [Document("2", "", "two"), Document("0", "", "zero")]
    assert store.get("1") == Document("1", "Title", "one")
    assert "5" not in store and len(store) == 3
    with pytest.raises(InputError, match=r"collection.tsv.gz: document id '5' is not in the corpus"):
        store.get("5")
    assert _cache_dirs(tmp_path) == []


def test_pickles_for_worker_processes(tmp_path):
    store = DocStore(_tsv(tmp_path / "collection.tsv", _docs(5)))
    store.get("d0")  # opens the file
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("d3") == store.get("d3")
    store.close()
    assert store.get("d4").doc_id == "d4"  # reopens
