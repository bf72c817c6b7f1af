"""Pairs/s of `rankwise rerank` in one process and under `torchrun --nproc_per_node 2`, in one run.

    python bench/rerank_scaling.py [--queries 16] [--depth 20] [--dataset scifact] [--model DIR]

Reranks the first --queries queries of a BEIR folder, each with --depth documents of its corpus (a
deterministic stand-in first stage: the reranking cost does not depend on which documents they are),
with a cross-encoder made from all-MiniLM-L6-v2's weights (or --model), first in one process and
then with 2 processes, and checks that both write the same bytes. Wall time includes starting the
processes and loading the model, as a user sees it; the model time alone is the sum of the parts'
reranking, which the log does not give, so both ratios are printed: on 2 CPU cores shared by both
ranks the ratio shows the overhead of sharding, not a speed-up (GPUs: one model per device).
The outputs are byte-identical when every process runs the model with the same number of threads:
torchrun gives each rank OMP_NUM_THREADS=1, so run with OMP_NUM_THREADS=1 to compare like with like.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, command_line, log, machine, machine_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--chunk-size", type=int, default=2)
    ap.add_argument("--dataset", default=str(Path(os.environ.get("RANKWISE_DATA", REPO.parent / "shared/data/beir"))
                                             / "scifact"))
    ap.add_argument("--model", default=None, help="cross-encoder folder (default: made from all-MiniLM-L6-v2)")
    args = ap.parse_args()
    print(command_line())
    print(machine_line(machine()))
    data = Path(args.dataset)
    with tempfile.TemporaryDirectory(prefix="rerank-scaling-") as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            from rankwise.rerank.cross_encoder import init_cross_encoder

            model = str(init_cross_encoder("sentence-transformers/all-MiniLM-L6-v2", tmp / "ce", max_length=256))
        queries = [json.loads(line)["_id"] for line in open(data / "queries.jsonl", encoding="utf-8")][:args.queries]
        docs = []
        with open(data / "corpus.jsonl", encoding="utf-8") as fh:
            for line in fh:
                docs.append(json.loads(line)["_id"])
                if len(docs) == 997:
                    break
        run = tmp / "first.trec"
        run.write_text("".join(f"{q} Q0 {docs[(i * 31 + j) % len(docs)]} {j + 1} {args.depth - j} first\n"
                               for i, q in enumerate(queries) for j in range(args.depth)), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        pairs = len(queries) * args.depth
        rows = {}
        for label, prefix in (("1 process", [sys.executable]),
                              ("2 processes", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                               "--master_port", str(_free_port())])):
            out = tmp / f"{label.split()[0]}.trec"
            command = prefix + ["-m", "rankwise", "rerank", str(run), "--queries", str(data), "--corpus", str(data),
                                "--reranker", f"cross-encoder:{model}", "--depth", str(args.depth), "--out", str(out),
                                "--chunk-size", str(args.chunk_size)]
            log("running:", " ".join(command))
            start = time.perf_counter()
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(done.stderr[-3000:])
            rows[label] = (wall, out.read_bytes())
        one, two = rows["1 process"], rows["2 processes"]
        print(f"{pairs} pairs ({len(queries)} queries x depth {args.depth}), chunks of {args.chunk_size} queries")
        print("| processes | wall s | pairs/s | ratio |\n|---|---:|---:|---:|")
        for label, (wall, _) in rows.items():
            print(f"| {label} | {wall:.1f} | {pairs / wall:.1f} | {one[0] / wall:.2f}x |")
        print(f"outputs byte-identical: {one[1] == two[1]}; max abs score difference {_max_diff(one[1], two[1]):.3g} "
              f"(OMP_NUM_THREADS: one process {os.environ.get('OMP_NUM_THREADS', 'unset')}, torchrun's ranks 1 "
              "unless set: other thread counts split float32 sums differently)")


def _max_diff(a: bytes, b: bytes) -> float:
    """The largest score difference between two TREC runs of the same (query, document) pairs."""
    def scores(run: bytes) -> dict[tuple[str, str], float]:
        return {(c[0], c[2]): float(c[4]) for c in (line.split() for line in run.decode().splitlines())}

    x, y = scores(a), scores(b)
    return max(abs(x[k] - y[k]) for k in x) if x.keys() == y.keys() else float("inf")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
