"""The FAISS index layer: every index type, save/load, manifests, reuse, resume after kill -9, shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rankwise.retrieval.dense import DenseRetriever
from rankwise.retrieval.encoder import Encoder
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Corpus
from rankwise.retrieval.index import DenseIndex, IndexConfig, build_dense_index, merge_shards, parse_shard
from rankwise.retrieval.manifest import MANIFEST, read_manifest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def encoder(tiny_encoder) -> Encoder:
    return Encoder(str(tiny_encoder), batch_size=32)


def _self_hits(index: DenseIndex, corpus: Corpus, encoder: Encoder, k: int, n: int = 50) -> float:
    """Share of the first ``n`` documents found in their own top ``k``."""
    docs = list(corpus)[:n]
    scores, pos = index.search(encoder.encode_docs([d.full_text for d in docs]), k)
    return float(np.mean([d.doc_id in {index.doc_ids[x] for x in p} for p, d in zip(pos, docs)]))


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq"])
def test_each_index_type_builds_saves_and_loads(tmp_path, synthetic_beir, encoder, kind):
    corpus = Corpus(synthetic_beir)
    manifest = build_dense_index(corpus, encoder, tmp_path / kind, IndexConfig(type=kind), chunk_size=64,
                                 progress=False)
    assert manifest["kind"] == "dense" and manifest["count"] == 400
    assert manifest["encoder"]["fingerprint"] == encoder.fingerprint
    assert manifest["source"]["sha256"] == corpus.fingerprint
    assert set(manifest["files"]) == {"index.faiss", "docids.txt"}
    assert not (tmp_path / kind / ".work").exists()
    index = DenseIndex.load(tmp_path / kind)
    assert len(index) == 400 and index.dim == encoder.dim
    assert index.doc_ids[:3] == ["d0", "d1", "d2"]
    # exact indexes (IVF probes every list here) find each document first; HNSW nearly always;
    # PQ codes (4 bytes a vector here) are lossy, so the document is looked for in the top 10
    if kind in ("flat", "ivf"):
        assert _self_hits(index, corpus, encoder, k=1) == 1.0
    elif kind == "hnsw":
        assert _self_hits(index, corpus, encoder, k=1) >= 0.9
    else:
        assert _self_hits(index, corpus, encoder, k=10) >= 0.8


def test_factory_strings():
    assert IndexConfig().factory(384, 10_000) == "Flat"
    assert IndexConfig(type="hnsw", hnsw_m=16).factory(384, 10) == "HNSW16"
    assert IndexConfig(type="ivf").factory(384, 10_000) == "IVF256,Flat"
    assert IndexConfig(type="ivfpq").factory(384, 10_000) == "IVF256,PQ48x8"
    with pytest.raises(InputError, match="unknown index type"):
        IndexConfig(type="annoy")
    with pytest.raises(InputError, match="needs at least 256 documents"):
        IndexConfig(type="ivfpq").factory(384, 100)
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(InputError, match="0 <= I < N"):
        parse_shard("4/4")


def test_dense_retriever_matches_brute_force(tmp_path, synthetic_beir, encoder):
    corpus = Corpus(synthetic_beir)
    build_dense_index(corpus, encoder, tmp_path / "idx", chunk_size=100, progress=False)
    retriever = DenseRetriever(tmp_path / "idx", str(encoder.path))
    queries = {"q1": "protein cell gene", "q2": "supersonic shock wave"}
    run = retriever.search(queries, k=5, progress=False)
    docs = list(corpus)
    d = encoder.encode_docs([x.full_text for x in docs])
    for qid, text in queries.items():
        scores = d @ encoder.encode_queries([text])[0]
        best = [docs[i].doc_id for i in np.argsort(-scores)[:5]]
        assert [x for x, _ in run[qid]] == best
        assert [s for _, s in run[qid]] == pytest.approx(sorted(scores, reverse=True)[:5], abs=1e-5)


def test_other_encoder_is_refused(tmp_path, synthetic_beir, encoder, other_tiny_encoder):
    build_dense_index(Corpus(synthetic_beir), encoder, tmp_path / "idx", progress=False)
    with pytest.raises(InputError, match=r"manifest.json: field 'encoder.fingerprint': the index was built with"):
        DenseRetriever(tmp_path / "idx", str(other_tiny_encoder))


def test_corrupt_or_unfinished_index_is_refused(tmp_path, synthetic_beir, encoder):
    out = tmp_path / "idx"
    build_dense_index(Corpus(synthetic_beir), encoder, out, progress=False)
    with open(out / "index.faiss", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(InputError, match=r"index.faiss: checksum does not match"):
        DenseIndex.load(out)
    (out / MANIFEST).unlink()
    with pytest.raises(InputError, match="no manifest.json"):
        DenseIndex.load(out)


def test_complete_index_is_reused_and_other_settings_refused(tmp_path, synthetic_beir, encoder):
    corpus = Corpus(synthetic_beir)
    first = build_dense_index(corpus, encoder, tmp_path / "idx", progress=False)
    again = build_dense_index(corpus, encoder, tmp_path / "idx", progress=False)
    assert again["created"] == first["created"] and again["files"] == first["files"]
    with pytest.raises(InputError, match="pass --force"):
        build_dense_index(corpus, encoder, tmp_path / "idx", IndexConfig(type="hnsw"), progress=False)
    replaced = build_dense_index(corpus, encoder, tmp_path / "idx", IndexConfig(type="hnsw"), force=True,
                                 progress=False)
    assert replaced["config"]["type"] == "hnsw"


def test_empty_texts_are_indexed_with_a_warning(tmp_path, encoder):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "text": "wing"}\n{"_id": "b", "title": "t", "text": ""}\n', encoding="utf-8")
    with pytest.warns(UserWarning, match="1 documents have empty text"):
        manifest = build_dense_index(Corpus(path), encoder, tmp_path / "idx", progress=False)
    assert manifest["count"] == 2


def test_bad_corpus_leaves_no_index(tmp_path, encoder):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="duplicate document id"):
        build_dense_index(Corpus(path), encoder, tmp_path / "idx", progress=False)
    assert not (tmp_path / "idx" / MANIFEST).exists()


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_shards_merge_into_the_unsharded_index(tmp_path, synthetic_beir, encoder, kind):
    corpus = Corpus(synthetic_beir)
    config = IndexConfig(type=kind)
    whole = build_dense_index(corpus, encoder, tmp_path / "whole", config, chunk_size=50, progress=False)
    shards = []
    for i in range(3):
        m = build_dense_index(corpus, encoder, tmp_path / f"shard{i}", config, chunk_size=50, shard=(i, 3),
                              progress=False)
        assert m["kind"] == "dense-shard" and m["chunks"] == [c for c in range(8) if c % 3 == i]
        shards.append(tmp_path / f"shard{i}")
    with pytest.raises(InputError, match="shards 2/3 are missing"):
        merge_shards(shards[:2], tmp_path / "merged")
    merged = merge_shards(list(reversed(shards)), tmp_path / "merged", progress=False)
    assert merged["files"] == whole["files"]  # byte-identical index.faiss and docids.txt
    with pytest.raises(InputError, match="one shard of an index"):
        from rankwise.retrieval.open import open_retriever

        open_retriever(tmp_path / "shard0")


def _index_cmd(corpus: Path, out: Path, model: Path, chunk: int) -> list[str]:
    return [sys.executable, "-m", "rankwise", "index", str(corpus), "--out", str(out), "--retriever", "dense",
            "--encoder", str(model), "--chunk-size", str(chunk), "--batch-size", "8"]


@pytest.mark.slow
def test_resume_after_kill_gives_the_uninterrupted_index(tmp_path, encoder, tiny_encoder):
    from tests._helpers import kill_when, write_corpus
    from rankwise.testing import corpus_texts

    corpus = write_corpus(tmp_path / "corpus.jsonl", corpus_texts() * 5)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = tmp_path / "killed"
    chunks = killed / ".work" / "chunks"
    status = kill_when(_index_cmd(corpus, killed, tiny_encoder, 10), lambda: len(list(chunks.glob("*.npy"))) >= 5,
                       env=env)
    assert status is None, "the build ended before it could be killed"
    done_before = len(list(chunks.glob("*.npy")))
    assert 5 <= done_before < 200, "the build must be killed part-way"
    assert not (killed / MANIFEST).exists()
    with pytest.raises(InputError, match="no manifest.json"):
        DenseIndex.load(killed)

    resumed = subprocess.run(_index_cmd(corpus, killed, tiny_encoder, 10), env=env, cwd=ROOT,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done_before} of 200 chunks already encoded" in resumed.stderr
    assert f"{200 - done_before} chunks encoded in this run, {done_before} kept from before" in resumed.stderr
    fresh = subprocess.run(_index_cmd(corpus, tmp_path / "fresh", tiny_encoder, 10), env=env, cwd=ROOT,
                           capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    assert read_manifest(killed)["files"] == read_manifest(tmp_path / "fresh")["files"]  # byte-identical


def _long_corpus(path: Path) -> tuple[Path, list[str]]:
    from rankwise.testing import corpus_texts

    texts = corpus_texts()[:30]
    texts = [" ".join(texts[i:i + 4]) if i % 3 == 0 else t for i, t in enumerate(texts)]  # every third is long
    path.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
                    encoding="utf-8")
    return path, texts


def _expected_truncated(encoder: Encoder, texts: list[str]) -> int:
    ids = encoder.tokenizer(texts, truncation=False)["input_ids"]
    return sum(1 for x in ids if len(x) > encoder.max_length)


def test_truncated_documents_are_counted_in_the_manifest_and_on_resume(tmp_path, encoder, monkeypatch):
    corpus, texts = _long_corpus(tmp_path / "corpus.jsonl")
    expected = _expected_truncated(encoder, texts)
    assert 0 < expected < len(texts)  # some documents are longer than the tiny encoder's 64 tokens, not all
    whole = build_dense_index(Corpus(corpus), encoder, tmp_path / "whole", chunk_size=7, progress=False)
    assert whole["truncated"] == expected

    # a build killed after two chunks, resumed: the same total from the per-chunk counts
    real, calls = Encoder.encode, []

    def dies_after_two(self, docs, **options):
        calls.append(len(docs))
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(self, docs, **options)

    monkeypatch.setattr(Encoder, "encode", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        build_dense_index(Corpus(corpus), encoder, tmp_path / "resumed", chunk_size=7, progress=False)
    monkeypatch.setattr(Encoder, "encode", real)
    chunks = tmp_path / "resumed" / ".work" / "chunks"
    assert len(list(chunks.glob("*.npy"))) == 2
    (chunks / "000001.counts.json").unlink()  # a chunk encoded before counts were kept is counted again
    resumed = build_dense_index(Corpus(corpus), encoder, tmp_path / "resumed", chunk_size=7, progress=False)
    assert resumed["truncated"] == expected

    shards = [tmp_path / f"shard{i}" for i in range(2)]
    for i, folder in enumerate(shards):
        build_dense_index(Corpus(corpus), encoder, folder, chunk_size=7, shard=(i, 2), progress=False)
    assert merge_shards(shards, tmp_path / "merged", progress=False)["truncated"] == expected


def test_index_command_reports_truncated_documents(tmp_path, encoder, tiny_encoder, capsys):
    from rankwise.cli import main

    corpus, texts = _long_corpus(tmp_path / "corpus.jsonl")
    expected = _expected_truncated(encoder, texts)
    main(["index", str(corpus), "--out", str(tmp_path / "idx"), "--encoder", str(tiny_encoder), "--batch-size", "8"])
    err = capsys.readouterr().err
    assert (f"{expected} of {len(texts)} documents were cut to max_length=64 tokens; index passages "
            "(see docs/long-documents.md) to keep their tails") in err
    assert read_manifest(tmp_path / "idx")["truncated"] == expected
