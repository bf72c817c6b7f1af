"""Index folders under faults: failed rebuilds keep the old index, one writer per folder, torn work
re-encoded, interruptions resumed, settings refused before any encoding. The real CLI, as subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.locks import folder_lock, lock_file
from rankwise.retrieval.manifest import read_manifest

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 10


def cli(*args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    """``rankwise ARGS`` in a subprocess; never a traceback, and exit status ``check`` unless None."""
    result = subprocess.run([sys.executable, "-m", "rankwise", *args], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            capture_output=True, text=True)
    assert "Traceback" not in result.stderr, result.stderr
    if check is not None:
        assert result.returncode == check, result.stderr
    return result


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one line a refused command prints (besides progress bars)."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and "doc/s]" not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rankwise: error: "), result.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def dense_cmd(corpus: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return ["index", str(corpus), "--out", str(out), "--retriever", "dense", "--encoder", str(model),
            "--chunk-size", str(CHUNK), "--batch-size", "8", *extra]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    from tests._helpers import write_corpus
    from rankwise.testing import corpus_texts

    folder = tmp_path_factory.mktemp("corpora")
    texts = corpus_texts()
    bad = write_corpus(folder / "bad.jsonl", texts[:5])
    with open(bad, "a", encoding="utf-8") as fh:
        fh.write('{"_id": "d9", "text": \n')
    return {"good": write_corpus(folder / "good.jsonl", texts),  # 400 documents: enough for IVF-PQ
            "small": write_corpus(folder / "small.jsonl", texts[:40]), "bad": bad}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, corpora, tiny_encoder) -> Path:
    """The index an uninterrupted build gives."""
    out = tmp_path_factory.mktemp("fresh") / "idx"
    cli(*dense_cmd(corpora["good"], out, tiny_encoder))
    return out


def searchable(index: Path) -> None:
    from rankwise.retrieval.dense import DenseRetriever

    run = DenseRetriever(index).search({"q": "protein cell gene"}, k=3, progress=False)
    assert len(run["q"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("force", [False, True])
def test_a_failed_dense_rebuild_keeps_the_old_index(tmp_path, corpora, fresh, tiny_encoder, force):
    import shutil

    out = tmp_path / "idx"
    shutil.copytree(fresh, out)
    before = snapshot(out)
    result = cli(*dense_cmd(corpora["bad"], out, tiny_encoder, *(["--force"] if force else [])), check=2)
    line = error_line(result)
    assert ("bad.jsonl:6: malformed JSON" in line) if force else ("pass --force" in line)
    assert snapshot(out) == before  # byte-identical, nothing added
    searchable(out)


@pytest.mark.slow
def test_bm25_keeps_its_index_and_refuses_another_corpus_without_force(tmp_path, corpora):
    from rankwise.retrieval.bm25 import BM25Retriever

    out = tmp_path / "bm25"
    cli("index", str(corpora["small"]), "--out", str(out), "--retriever", "bm25")
    before = snapshot(out)
    bad = cli("index", str(corpora["bad"]), "--out", str(out), "--retriever", "bm25", "--force", check=2)
    assert "bad.jsonl:6: malformed JSON" in error_line(bad)
    other = cli("index", str(corpora["good"]), "--out", str(out), "--retriever", "bm25", check=2)
    assert "holds the BM25 index of another corpus; pass --force" in error_line(other)
    assert snapshot(out) == before
    with BM25Retriever(out, threads=1) as retriever:
        assert retriever.search({"q": "protein"}, k=5, progress=False)["q"]
    again = cli("index", str(corpora["small"]), "--out", str(out), "--retriever", "bm25")
    assert "reusing it" in again.stderr and snapshot(out) == before
    cli("index", str(corpora["good"]), "--out", str(out), "--retriever", "bm25", "--force")
    assert read_manifest(out)["source"]["count"] == 400


@pytest.mark.slow
def test_two_builds_of_one_folder_one_is_refused(tmp_path, corpora, fresh, tiny_encoder):
    out = tmp_path / "idx"
    first = subprocess.Popen([sys.executable, "-m", "rankwise", *dense_cmd(corpora["good"], out, tiny_encoder)],
                             cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not lock_file(out).exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, "the first build ended before the second started"
        first.send_signal(signal.SIGSTOP)  # holds the lock while the second build tries
        try:
            second = cli(*dense_cmd(corpora["good"], out, tiny_encoder), check=2)
        finally:
            first.send_signal(signal.SIGCONT)
        line = error_line(second)
        assert str(out) in line and "another build holds this folder" in line
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0 and "Traceback" not in err, err
    assert read_manifest(out)["files"] == read_manifest(fresh)["files"]
    assert not lock_file(out).exists()


@pytest.mark.slow
def test_an_unreadable_chunk_is_encoded_again(tmp_path, corpora, fresh, tiny_encoder):
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus
    from rankwise.retrieval.index import build_dense_index

    class Stop(Exception):
        pass

    encoder = Encoder(str(tiny_encoder), batch_size=8)
    calls = []
    encode = encoder.encode

    def stop_after_three(texts, **kw):
        if len(calls) == 3:
            raise Stop
        calls.append(1)
        return encode(texts, **kw)

    encoder.encode = stop_after_three
    out = tmp_path / "idx"
    with pytest.raises(Stop):
        build_dense_index(Corpus(corpora["good"]), encoder, out, chunk_size=CHUNK, progress=False)
    chunk = out / ".work" / "chunks" / "000001.npy"
    chunk.write_bytes(chunk.read_bytes()[:200])  # a full disk, a bad copy
    (out / ".work" / "chunks" / "000002.ids").write_text("d20\n", encoding="utf-8")
    result = cli(*dense_cmd(corpora["good"], out, tiny_encoder))
    assert "chunk 1 of the unfinished build cannot be read" in result.stderr
    assert "chunk 2 of the unfinished build cannot be read" in result.stderr
    assert "39 chunks encoded in this run, 1 kept from before" in result.stderr
    assert read_manifest(out)["files"] == read_manifest(fresh)["files"]


@pytest.mark.slow
def test_sigint_and_sigterm_during_index_then_the_rerun_resumes(tmp_path, corpora, fresh, tiny_encoder):
    out = tmp_path / "idx"
    chunks = out / ".work" / "chunks"
    done = 0
    for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        proc = subprocess.Popen([sys.executable, "-m", "rankwise", *dense_cmd(corpora["good"], out, tiny_encoder)],
                                cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 180
        while proc.poll() is None and time.time() < deadline and len(list(chunks.glob("*.npy"))) < done + 3:
            time.sleep(0.005)
        assert proc.poll() is None, "the build ended before it could be interrupted"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, err
        assert proc.returncode in (status, -sig), err
        now = len(list(chunks.glob("*.npy")))
        assert done + 3 <= now < 40
        done = now
    result = cli(*dense_cmd(corpora["good"], out, tiny_encoder))
    assert f"{done} of 40 chunks already encoded" in result.stderr
    assert read_manifest(out)["files"] == read_manifest(fresh)["files"]  # byte-identical


@pytest.mark.slow
def test_settings_the_corpus_rules_out_are_refused_before_encoding(tmp_path, corpora, fresh, tiny_encoder):
    out = tmp_path / "idx"
    pq = cli(*dense_cmd(corpora["small"], out, tiny_encoder, "--index-type", "ivfpq"), check=2)
    assert "needs at least 256 documents, got 40; use --index-type flat" in error_line(pq)
    assert not out.exists()
    cli(*dense_cmd(corpora["small"], out, tiny_encoder, "--index-type", "flat"))  # the advice, no --force needed
    assert read_manifest(out)["count"] == 40

    nlist = cli(*dense_cmd(corpora["good"], tmp_path / "ivf", tiny_encoder, "--index-type", "ivf", "--nlist", "500"),
                check=2)
    assert "IVF with 500 lists needs at least as many documents" in error_line(nlist)
    pq_m = cli(*dense_cmd(corpora["good"], tmp_path / "pq", tiny_encoder, "--index-type", "ivfpq", "--pq-m", "5"),
               check=2)
    assert "pq_m=5 does not divide the dimension 32" in error_line(pq_m)
    assert not list((tmp_path / "pq").rglob("*.npy"))  # refused before the first chunk

    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "q", "text": "protein"}\n', encoding="utf-8")
    backend = cli("search", str(fresh), "--queries", str(queries), "--out", str(tmp_path / "run.trec"),
                  "--backend", "onnx-int8", check=2)
    assert "built with backend 'torch'" in error_line(backend)
    cache = Path(os.environ["RANKWISE_CACHE"])
    assert not list(cache.rglob("*.onnx"))  # refused before any export


@pytest.mark.slow
def test_a_locked_folder_is_refused_or_waited_for(tmp_path):
    out = tmp_path / "idx"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom rankwise.retrieval.locks import folder_lock\n"
                               f"with folder_lock({str(out)!r}):\n    print('held', flush=True)\n    sys.stdin.read()"],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=rf"idx: another build holds this folder \(process {holder.pid}\)"):
            with folder_lock(out):
                pass
        entered = threading.Event()

        def wait() -> None:
            with folder_lock(out, wait=True):
                entered.set()

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.5)
        assert not entered.is_set()
        holder.stdin.close()  # the holder ends and its lock with it
        waiter.join(30)
        assert entered.is_set()
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(out), folder_lock(out):  # nests within one process
        pass
    assert not lock_file(out).exists()


@pytest.mark.slow
def test_a_cached_index_being_built_elsewhere_is_waited_for_and_reused(tmp_path, corpora, tiny_encoder, caplog):
    import logging

    from rankwise.retrieval.cached import dense_index, index_root
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus

    script = ("import sys\nfrom rankwise.retrieval.cached import dense_index\nfrom rankwise.retrieval.encoder import Encoder\n"
              "from rankwise.retrieval.formats import Corpus\n"
              f"print(dense_index(Corpus({str(corpora['good'])!r}), Encoder({str(tiny_encoder)!r}), progress=False))")
    builder = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    corpus = Corpus(corpora["good"])
    encoder = Encoder(str(tiny_encoder))
    encoded = []
    encode = encoder.encode
    encoder.encode = lambda texts, **kw: encoded.append(len(texts)) or encode(texts, **kw)
    folder = index_root(corpus) / f"dense-{encoder.index_key}-flat"
    try:
        deadline = time.time() + 120
        while not lock_file(folder).exists() and builder.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        assert builder.poll() is None, "the other build ended before this one started"
        builder.send_signal(signal.SIGSTOP)
        found: list[Path] = []
        with caplog.at_level(logging.INFO):
            waiter = threading.Thread(target=lambda: found.append(dense_index(corpus, encoder, progress=False)))
            waiter.start()
            time.sleep(1.0)
            assert waiter.is_alive()  # waiting, not building alongside
            builder.send_signal(signal.SIGCONT)
            out, err = builder.communicate(timeout=300)
            waiter.join(60)
    finally:
        if builder.poll() is None:
            builder.kill()
    assert builder.returncode == 0, err
    assert found == [folder] and out.strip() == str(folder)
    assert "another build holds this folder" in caplog.text and "waiting for it to finish" in caplog.text
    assert "already holds this index; reusing it" in caplog.text
    assert encoded == []  # reused, never encoded twice
    assert json.loads((folder / "manifest.json").read_text())["count"] == 400
