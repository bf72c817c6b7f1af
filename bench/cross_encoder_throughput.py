"""Cross-encoder reranking throughput: rankwise ``CrossEncoderReranker`` against ``CrossEncoder.predict``.

Same model, same (query, document) pairs (SciFact test queries with their BM25 top documents, or
any queries/corpus), same batch size and threads, in the same process. The two alternate (order
rotated every round) for R rounds; median pairs/s of each and the ratio rankwise/baseline are
reported (target >= 1.0), with the largest score difference.

    RANKWISE_DATA=../shared/data/beir RANKWISE_MODELS=~/.cache/rankwise/models HF_HUB_OFFLINE=1 \\
        python bench/cross_encoder_throughput.py --model /path/to/cross-encoder
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CpuShare, command_line, log, machine, machine_line, median, write_json  # noqa: E402

BASELINE = "sentence-transformers CrossEncoder.predict"
RANKWISE = "rankwise CrossEncoderReranker"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=False, default=None,
                   help="cross-encoder name or path (default: one made from all-MiniLM-L6-v2 in a temp folder)")
    p.add_argument("--dataset", default="scifact")
    p.add_argument("--pairs", type=int, default=512)
    p.add_argument("--per-query", type=int, default=10, help="BM25 top documents per query")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json-out")
    args = p.parse_args()

    import tempfile

    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder

    from rankwise.eval.datasets import resolve_dataset
    from rankwise.retrieval.cached import bm25_index
    from rankwise.rerank.cross_encoder import CrossEncoderReranker, init_cross_encoder
    from rankwise.retrieval.bm25 import BM25Retriever

    tmp = tempfile.TemporaryDirectory(prefix="rankwise-ce-bench-")
    model = args.model or str(init_cross_encoder("sentence-transformers/all-MiniLM-L6-v2", Path(tmp.name) / "ce",
                                                 max_length=args.max_length))
    data = resolve_dataset(args.dataset, progress=False)
    queries = data.queries("test")
    n_queries = -(-args.pairs // args.per_query)
    queries = dict(list(queries.items())[:n_queries])
    run = BM25Retriever(bm25_index(data.corpus, name=data.name, progress=False)).search(queries, k=args.per_query, progress=False)
    docs = data.corpus.lookup({d for q in run for d, _ in run[q]})
    pairs = [(queries[q], docs[d].full_text) for q in run for d, _ in run[q]][: args.pairs]

    ours = CrossEncoderReranker(model, batch_size=args.batch_size, max_length=args.max_length, device="cpu")
    plain = CrossEncoder(ours.path, device="cpu", max_length=args.max_length)
    variants = {
        BASELINE: lambda: np.asarray(plain.predict(pairs, batch_size=args.batch_size, activation_fn=torch.nn.Identity(),
                                                   show_progress_bar=False), dtype=np.float64),
        RANKWISE: lambda: np.asarray(ours.score_pairs(pairs), dtype=np.float64),
    }
    for fn in variants.values():  # warm-up
        fn()
    names = list(variants)
    rates: dict[str, list[float]] = {n: [] for n in names}
    outputs, others = {}, []
    for r in range(args.rounds):
        for name in names[r % 2:] + names[: r % 2]:
            with CpuShare() as share:
                t0 = time.perf_counter()
                outputs[name] = variants[name]()
                dt = time.perf_counter() - t0
            others.append(share.others)
            rates[name].append(len(pairs) / dt)
            log(f"round {r + 1}/{args.rounds} {name:<44} {len(pairs) / dt:8.1f} pairs/s (others {share.others:.0%})")
    ratio = median(rates[RANKWISE]) / median(rates[BASELINE])
    diff = float(np.abs(outputs[RANKWISE] - outputs[BASELINE]).max())
    result = {"command": command_line(), "machine": machine(), "pairs": len(pairs), "batch_size": args.batch_size,
              "max_length": args.max_length, "pairs_per_s": {n: median(v) for n, v in rates.items()},
              "ratio": ratio, "max_abs_diff": diff, "other_cpu_max": max(others)}
    print(f"command: {result['command']}\nmachine: {machine_line(result['machine'])}")
    print(f"{len(pairs)} (query, BM25 document) pairs of {args.dataset} test; batch {args.batch_size}; "
          f"max_length {args.max_length}; {args.rounds} alternating rounds; other processes max {max(others):.0%} CPU")
    print("| variant | pairs/s (median) | ratio |\n|---|---:|---:|")
    for name in names:
        print(f"| {name} | {median(rates[name]):.1f} | {median(rates[name]) / median(rates[BASELINE]):.3f} |")
    print(f"rankwise / CrossEncoder.predict = {ratio:.3f} ({'meets' if ratio >= 1.0 else 'BELOW'} target >= 1.0); "
          f"max abs score diff {diff:.2e}")
    write_json(args.json_out, result)
    tmp.cleanup()


if __name__ == "__main__":
    main()
