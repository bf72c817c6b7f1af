"""``bench/gpu.py --device cpu``: the smoke mode runs end to end with tiny models and reports every figure.

The benchmark runs as a user runs it, in a child process (tests never import bench/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests._helpers import ROOT


@pytest.mark.slow
def test_gpu_bench_smoke_on_cpu(tmp_path, tiny_encoder, tiny_cross_encoder):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--docs", "40", "--vectors", "500",
           "--batch-size", "16", "--max-tokens", "600", "--train-steps", "2", "--train-batch-size", "4",
           "--train-max-length", "32", "--workers", "0", "--encoder", str(tiny_encoder),
           "--cross-encoder", str(tiny_cross_encoder), "--json-out", str(out)]
    done = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("encode_docs_per_s", "st_encode_docs_per_s", "cross_encoder_pairs_per_s", "faiss_flat_qps",
                "matmul_peak_flops"):
        assert result[key] > 0, key
    assert 0 < result["encode_mfu"] < 1
    assert result["faiss_on_gpu"] is False
    assert result["train_samples_per_s"] > 0 and result["train_steps"] == 2
    assert result["train_gpu_busy"] is None and result["encode_gpu_busy"] is None  # no GPU: n/a
    assert "| cross-encoder |" in done.stdout and "MFU" in done.stdout
    assert "| cross-encoder training, batch 4, 2 steps |" in done.stdout
    assert "samples/s, GPU busy n/a |" in done.stdout
