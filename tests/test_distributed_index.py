"""``torchrun --nproc_per_node 2 -m rankwise index``: each rank encodes its chunks, rank 0 merges; byte-identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from retrieval.distributed import world

ROOT = Path(__file__).resolve().parent.parent


def _index(prefix: list[str], corpus: Path, out: Path, model: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = prefix + ["-m", "rankwise", "index", str(corpus), "--out", str(out), "--model", str(model),
                    "--chunk-size", "40", "--batch-size", "16", "--max-tokens", "400"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_process_torchrun_builds_the_one_process_index(tmp_path, tiny_encoder):
    from tests.tiny_models import corpus_texts

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(corpus_texts()[:300])))
    _index([sys.executable], corpus, tmp_path / "one", tiny_encoder)
    _index([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"],
           corpus, tmp_path / "two", tiny_encoder)
    for name in ("index.faiss", "docids.txt"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert not (tmp_path / "two" / ".ranks").exists()


def test_world_outside_torchrun(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert world() == (0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world() == (3, 4, 1)
