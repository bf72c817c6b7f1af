"""``torchrun --nproc_per_node 2 -m rankwise index``: each rank encodes its chunks, rank 0 merges; byte-identical,
and a run killed part-way (the whole process group, SIGKILL) resumes without re-encoding its finished chunks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rankwise.retrieval.distributed import RANKS_DIR, world
from rankwise.retrieval.manifest import MANIFEST
from tests._helpers import ROOT, free_port, kill_when, write_corpus

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _torchrun(port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]


def _index_cmd(prefix: list[str], corpus: Path, out: Path, model: Path, chunk: int = 40) -> list[str]:
    return prefix + ["-m", "rankwise", "index", str(corpus), "--out", str(out), "--encoder", str(model),
                     "--chunk-size", str(chunk), "--batch-size", "16", "--max-tokens", "400"]


def _index(prefix: list[str], corpus: Path, out: Path, model: Path, chunk: int = 40) -> str:
    """Run ``rankwise index`` to the end; its stderr (the log)."""
    done = subprocess.run(_index_cmd(prefix, corpus, out, model, chunk), cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.slow
def test_two_process_torchrun_builds_the_one_process_index(tmp_path, tiny_encoder):
    from rankwise.testing import corpus_texts

    corpus = write_corpus(tmp_path / "corpus.jsonl", corpus_texts()[:300])
    _index([sys.executable], corpus, tmp_path / "one", tiny_encoder)
    _index(_torchrun(free_port()), corpus, tmp_path / "two", tiny_encoder)
    for name in ("index.faiss", "docids.txt"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert not (tmp_path / "two" / ".ranks").exists()


@pytest.mark.slow
def test_killed_torchrun_build_resumes_without_reencoding(tmp_path, tiny_encoder):
    """kill -9 of torchrun and both ranks part-way; the same command again keeps every finished chunk
    (each rank logs how many it found) and gives the one-process index byte for byte."""
    from rankwise.testing import corpus_texts

    corpus = write_corpus(tmp_path / "corpus.jsonl", corpus_texts() * 2)  # 80 chunks of 10, 40 a rank
    out, port = tmp_path / "killed", free_port()
    command = _index_cmd(_torchrun(port), corpus, out, tiny_encoder, chunk=10)

    def finished() -> list[Path]:
        return sorted((out / RANKS_DIR).glob("shard-*/.work/chunks/*.npy"))

    status = kill_when(command, lambda: len(finished()) >= 6, env=ENV)
    assert status is None, "the build ended before it could be killed"
    before = len(finished())
    assert 6 <= before < 80, "the build must be killed part-way"
    assert not (out / MANIFEST).exists()

    log = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert log.returncode == 0, log.stderr[-3000:]
    # each rank reports the chunks it kept: together, every chunk that was on disk at the kill
    counts = [(int(a), int(b)) for a, b in re.findall(r"(\d+) chunks encoded in this run, (\d+) kept", log.stderr)]
    assert len(counts) == 2, log.stderr[-3000:]
    assert sum(b for _, b in counts) == before  # kept: every chunk that was on disk at the kill
    assert sum(a for a, _ in counts) == 80 - before  # encoded: only the others
    _index([sys.executable], corpus, tmp_path / "one", tiny_encoder, chunk=10)
    for name in ("index.faiss", "docids.txt"):
        assert (out / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert not (out / RANKS_DIR).exists()


def test_world_outside_torchrun(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert world() == (0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world() == (3, 4, 1)
