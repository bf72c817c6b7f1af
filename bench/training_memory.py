"""Training memory: rankwise's pre-flight estimate (rankwise.training.memory) against the measured peak RSS.

Each setting trains a few steps of all-MiniLM-L6-v2 through ``rankwise train`` in its own process,
on synthetic triples whose texts all reach ``--max-length`` (the padded worst case the estimate
assumes); the peak resident set of that process (``ru_maxrss`` from ``os.wait4``) is compared with
the estimate (target: within 30%).

    HF_HUB_OFFLINE=1 RANKWISE_MODELS=~/.cache/rankwise/models python bench/training_memory.py
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import command_line, log, machine, machine_line, write_json  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# (name, kind, loss, batch size, negatives, max length, extra options)
SETTINGS = [
    ("cross-encoder lce, 4 x 5 pairs x 128", "cross-encoder", "lce", 4, 4, 128, []),
    ("cross-encoder lce, 8 x 5 pairs x 256", "cross-encoder", "lce", 8, 4, 256, []),
    ("bi-encoder contrastive, 32 x 3 texts x 256", "bi-encoder", "contrastive", 32, 1, 256, []),
    ("cross-encoder lce, 8 x 5 x 256, checkpointing", "cross-encoder", "lce", 8, 4, 256,
     ["--gradient-checkpointing"]),
]


def synthetic_triples(path: Path, rows: int, negatives: int, words: int, seed: int = 0) -> None:
    """Text n-tuples whose every text is ``words`` words long (longer than any --max-length used here)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(2000)]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(rows):
            texts = [" ".join(rng.choices(vocab, k=words)) for _ in range(2 + negatives)]
            f.write("\t".join(texts) + "\n")


def measure(kind: str, loss: str, batch: int, negatives: int, length: int, extra: list[str], steps: int,
            work: Path) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of ``rankwise train KIND`` for ``steps`` steps in a child process."""
    import time

    triples = work / f"triples-{negatives}.tsv"
    if not triples.exists():
        synthetic_triples(triples, rows=batch * steps * 2, negatives=negatives, words=600)
    out = work / f"out-{kind}-{batch}-{length}-{len(extra)}"
    cmd = [sys.executable, "-m", "rankwise", "train", kind, "--model", MODEL, "--triples", str(triples),
           "--loss", loss, "--batch-size", str(batch), "--max-length", str(length), "--max-steps", str(steps),
           "--save-steps", "1000", "--workers", "0", "--out", str(out), "--force", *extra]
    if kind == "cross-encoder":
        cmd += ["--negatives", str(negatives)]
    log("$", " ".join(cmd))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RANKWISE_MEMORY_LIMIT": "1T"})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training failed:\n{err[-2000:]}")
    return usage.ru_maxrss * 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--only", type=int, nargs="*", help="run these settings (0-based) only")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    from rankwise.training.memory import estimate_peak, model_shape, texts_per_sample

    print(command_line())
    print(machine_line(machine()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="rankwise-mem-") as tmp:
        for n, (name, kind, loss, batch, negatives, length, extra) in enumerate(SETTINGS):
            if args.only is not None and n not in args.only:
                continue
            shape = model_shape(MODEL, kind)
            texts = texts_per_sample(kind, loss, negatives)
            estimate = estimate_peak(shape, sequences=batch * texts, max_length=length,
                                     gradient_checkpointing="--gradient-checkpointing" in extra)
            measured, seconds = measure(kind, loss, batch, negatives, length, extra, args.steps, Path(tmp))
            ratio = estimate.total / measured
            rows.append({"setting": name, "estimate_bytes": estimate.total, "measured_bytes": measured,
                         "estimate_over_measured": round(ratio, 3), "seconds": round(seconds, 1),
                         "parts": vars(estimate)})
            print(f"{name}: estimate {estimate.total / 2**30:.2f} GB, measured peak RSS {measured / 2**30:.2f} GB, "
                  f"ratio {ratio:.2f} ({seconds:.0f} s)", flush=True)
    if args.json_out:
        write_json(args.json_out, {"command": command_line(), "settings": rows})


if __name__ == "__main__":
    main()
