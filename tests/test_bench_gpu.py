"""``bench/gpu.py --device cpu``: the smoke mode runs end to end with tiny models and reports every figure."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_bench_smoke_on_cpu(tiny_encoder, tiny_cross_encoder, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu

    result = gpu.main(["--device", "cpu", "--docs", "40", "--vectors", "500", "--batch-size", "16",
                       "--max-tokens", "600", "--train-steps", "2", "--train-batch-size", "4",
                       "--train-max-length", "32", "--workers", "0", "--encoder", str(tiny_encoder), "--cross-encoder", str(tiny_cross_encoder)])
    for key in ("encode_docs_per_s", "st_encode_docs_per_s", "cross_encoder_pairs_per_s", "faiss_flat_qps",
                "matmul_peak_flops"):
        assert result[key] > 0, key
    assert 0 < result["encode_mfu"] < 1
    assert result["faiss_on_gpu"] is False
    assert result["train_samples_per_s"] > 0 and result["train_steps"] == 2
    assert result["train_gpu_busy"] is None and result["encode_gpu_busy"] is None  # no GPU: n/a
    out = capsys.readouterr().out
    assert "| cross-encoder |" in out and "MFU" in out
    assert "| cross-encoder training, batch 4, 2 steps |" in out and "samples/s, GPU busy n/a |" in out


def test_triples_from_passages(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu

    rows = [line.split("\t") for line in gpu.write_triples(["a b c", "d e"], tmp_path / "t.tsv").read_text().splitlines()]
    assert rows == [["a b c", "a b c", "d e"], ["d e", "d e", "a b c"]]
