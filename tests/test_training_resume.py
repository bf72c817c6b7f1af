"""Training under faults: Ctrl-C and SIGTERM resume, a checkpoint torn by a kill is skipped, a finished run
is a no-op, and every file is written with the user's umask. The real CLI, as subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rankwise.training.runner import checkpoint_problem, last_checkpoint

ROOT = Path(__file__).resolve().parent.parent
UMASK = 0o027
STEPS = 6


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def train_cmd(model: Path, triples: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "rankwise", "train", "bi-encoder", "--model", str(model), "--triples", str(triples),
            "--out", str(out), "--max-steps", str(STEPS), "--save-steps", "2", "--batch-size", "4",
            "--logging-steps", "1", "--lr", "1e-3"]


def popen(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.umask(UMASK))


def finish(proc: subprocess.Popen, status: int | None = 0) -> str:
    _, err = proc.communicate(timeout=600)
    assert "Traceback" not in err, err
    if status is not None:
        assert proc.returncode == status, err
    return err


@pytest.fixture(scope="module")
def triples(tmp_path_factory) -> Path:
    from tests._helpers import write_tuples

    return write_tuples(tmp_path_factory.mktemp("triples"), n=16)[0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_encoder, triples) -> Path:
    """An uninterrupted run, under umask 0o027."""
    out = tmp_path_factory.mktemp("straight") / "model"
    finish(popen(train_cmd(tiny_encoder, triples, out)))
    return out


def test_only_complete_checkpoints_count(tmp_path):
    from safetensors.numpy import save_file
    import numpy as np

    out = tmp_path / "run"
    for step in (2, 4, 6):
        folder = out / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        save_file({"w": np.zeros((8, 8), dtype=np.float32)}, str(folder / "model.safetensors"))
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    assert last_checkpoint(out).endswith("checkpoint-6")
    (out / "checkpoints" / "checkpoint-6" / "trainer_state.json").unlink()  # killed before the state was written
    torn = out / "checkpoints" / "checkpoint-4" / "model.safetensors"
    torn.write_bytes(torn.read_bytes()[:-10])  # a file cut short
    assert checkpoint_problem(out / "checkpoints" / "checkpoint-6") == "no trainer_state.json"
    assert "model.safetensors: truncated" in checkpoint_problem(out / "checkpoints" / "checkpoint-4")
    assert last_checkpoint(out).endswith("checkpoint-2")
    assert (out / "checkpoints" / "checkpoint-6").exists()  # only looked at
    assert last_checkpoint(out, remove_torn=True).endswith("checkpoint-2")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]


@pytest.mark.slow
def test_sigterm_and_sigint_during_training_then_the_rerun_resumes(tmp_path, tiny_encoder, triples, straight):
    out = tmp_path / "model"
    for sig, step, status in ((signal.SIGTERM, 2, 143), (signal.SIGINT, 4, 130)):
        proc = popen(train_cmd(tiny_encoder, triples, out))
        state = out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json"
        deadline = time.time() + 300
        while proc.poll() is None and not state.exists() and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(sig)
        finish(proc, status=None)
        assert proc.returncode in (status, -sig)
        assert not (out / "model.safetensors").exists()
    err = finish(popen(train_cmd(tiny_encoder, triples, out)))
    assert "trained 6 steps" in err
    assert (out / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_a_checkpoint_torn_by_a_kill_is_skipped_and_the_run_resumes(tmp_path, tiny_encoder, triples, straight):
    out = tmp_path / "model"
    shutil.copytree(straight / "checkpoints", out / "checkpoints")  # the run, killed while writing checkpoint-6
    torn = out / "checkpoints" / f"checkpoint-{STEPS}"
    (torn / "trainer_state.json").unlink()
    weights = torn / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    err = finish(popen(train_cmd(tiny_encoder, triples, out)))
    assert f"checkpoint-{STEPS} is incomplete" in err
    assert "trained 6 steps" in err
    assert (out / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_a_finished_run_run_again_is_a_no_op(straight, tiny_encoder, triples):
    before = {p: p.stat().st_mtime_ns for p in straight.rglob("*") if p.is_file()}
    err = finish(popen(train_cmd(tiny_encoder, triples, straight)))
    assert "already holds this finished run (6 steps): nothing trained" in err
    assert {p: p.stat().st_mtime_ns for p in straight.rglob("*") if p.is_file()} == before
    assert json.loads((straight / "rankwise_training.json").read_text())["steps"] == STEPS


@pytest.mark.slow
def test_files_get_the_permissions_of_the_umask(tmp_path, straight, tiny_encoder):
    from rankwise.eval.plots import quality_cost
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus
    from rankwise.retrieval.index import build_dense_index
    from rankwise.retrieval.run import Run
    from tests._helpers import write_corpus

    expected = 0o666 & ~UMASK
    for name in ("model.safetensors", "rankwise_training.json", "training_log.jsonl", "config.json"):
        assert mode(straight / name) == expected, name
    old = os.umask(UMASK)
    try:
        corpus = Corpus(write_corpus(tmp_path / "corpus.jsonl", ["wing airflow", "heart blood", "gene protein"]))
        build_dense_index(corpus, Encoder(str(tiny_encoder)), tmp_path / "idx", progress=False)
        Run({"q": [("d0", 1.0)]}).write(tmp_path / "run.trec")
        quality_cost({"a": (0.5, 10.0), "b": (0.6, 5.0)}, tmp_path / "plot.png")
    finally:
        os.umask(old)
    assert mode(tmp_path / "idx") == 0o777 & ~UMASK
    for name in ("index.faiss", "docids.txt", "manifest.json"):
        assert mode(tmp_path / "idx" / name) == expected, name
    assert mode(tmp_path / "run.trec") == expected
    assert mode(tmp_path / "plot.png") == expected
