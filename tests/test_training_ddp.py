"""Data-parallel training: a 2-process torchrun (gloo, CPU) matches one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._helpers import ROOT, free_port, write_tuples

pytestmark = pytest.mark.slow  # two subprocesses, one of them a 2-process torchrun


def _train(args: list[str], out: Path, prefix: list[str]) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = prefix + ["-m", "rankwise", "train", "bi-encoder", *args, "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def encoder_without_dropout(tmp_path_factory) -> Path:
    from rankwise.testing import build_tiny_encoder

    # dropout draws differ per process
    return build_tiny_encoder(tmp_path_factory.mktemp("models") / "encoder", dropout=0.0)


@pytest.mark.parametrize("loss", ["margin-mse", "contrastive"])
def test_two_process_torchrun_matches_one_process(tmp_path, loss, encoder_without_dropout):
    tiny_encoder = encoder_without_dropout
    tuples, scores = write_tuples(tmp_path, n=32)
    common = ["--model", str(tiny_encoder), "--triples", str(tuples), "--loss", loss, "--max-steps", "3",
              "--lr", "1e-3", "--warmup-ratio", "0", "--logging-steps", "1", "--seed", "3"]
    if loss == "margin-mse":
        common += ["--teacher-scores", str(scores)]
    single = _train(common + ["--batch-size", "8"], tmp_path / "single", [sys.executable])
    ddp = _train(common + ["--batch-size", "4"], tmp_path / "ddp",
                 [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())])
    one = [e["loss"] for e in single if "loss" in e]
    two = [e["loss"] for e in ddp if "loss" in e]
    assert len(one) == len(two) == 3
    assert two == pytest.approx(one, rel=2e-3, abs=2e-4)
