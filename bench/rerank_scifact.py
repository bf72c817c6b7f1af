"""Rerankers side by side on SciFact test: BM25 top-``depth``, then each LLM paradigm on the same lists.

nDCG@10 and wall time of BM25, pointwise-LLM (yes/no and ERank), listwise FIRST, listwise generation
groupwise, IRanker elimination (worst / best, top-``--k``) and ReasonRank reason-then-rank with one causal LM (default SmolLM2-135M-Instruct, loaded once and shared), on the
first ``--queries`` judged test queries in queries.jsonl order (a fixed, documented subset; 0 = all).
FIRST and generation rerank the same windows, so their wall-time ratio is the speed-up of
single-token decoding (FIRST, Reddy et al., 2024, reports about 50% faster inference).

    RANKWISE_DATA=../shared/data/beir RANKWISE_MODELS=~/.cache/rankwise/models HF_HUB_OFFLINE=1 \\
        python bench/rerank_scifact.py --queries 50 --depth 20
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

from _common import command_line, log, machine, machine_line, write_json  # noqa: E402

from rankwise.retrieval.backend.value import Backend  # noqa: E402

SYSTEMS = ("pointwise-yesno", "pointwise-erank", "listwise-first", "listwise-generate", "groupwise",
           "eliminate-worst", "eliminate-best", "listwise-reason")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="scifact")
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--queries", type=int, default=50, help="first N judged test queries (0 = all)")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--backend", choices=Backend.NAMES, default="torch", help="the LLM's inference backend")
    p.add_argument("--max-passage-tokens", type=int, default=100, help="listwise modes: tokens kept per passage")
    p.add_argument("--k", type=int, default=10, help="eliminate: stop once the top-k is fixed")
    p.add_argument("--max-reasoning-tokens", type=int, default=128, help="listwise-reason: reasoning budget")
    p.add_argument("--json-out")
    args = p.parse_args()

    from rankwise.eval.datasets import resolve_dataset
    from rankwise.eval.metrics import evaluate
    from rankwise.retrieval.cached import bm25_index
    from rankwise.rerank.elimination import EliminationReranker
    from rankwise.rerank.groupwise import GroupwiseReranker
    from rankwise.rerank.listwise import ListwiseReranker
    from rankwise.rerank.llm import CausalLM
    from rankwise.rerank.pointwise import LLMPointwiseReranker
    from rankwise.rerank.reasoning import ReasoningReranker
    from rankwise.retrieval.bm25 import BM25Retriever

    data = resolve_dataset(args.dataset)
    qrels = data.qrels("test")
    queries = data.queries("test")
    if args.queries:
        queries = dict(list(queries.items())[: args.queries])
    qrels = {q: qrels[q] for q in queries}
    t = time.perf_counter()
    first = BM25Retriever(bm25_index(data.corpus, name=data.name)).search(queries, k=args.depth, progress=False)
    bm25_s = time.perf_counter() - t
    lm = CausalLM(args.model, batch_size=args.batch_size, backend=args.backend)
    builders = {
        "pointwise-yesno": lambda: LLMPointwiseReranker(lm, mode="yesno", max_passage_tokens=100, batch_size=args.batch_size),
        "pointwise-erank": lambda: LLMPointwiseReranker(lm, mode="erank", max_passage_tokens=100, batch_size=args.batch_size),
        "listwise-first": lambda: ListwiseReranker(lm, mode="first", window=20, stride=10, max_passage_tokens=args.max_passage_tokens),
        "listwise-generate": lambda: ListwiseReranker(lm, mode="generate", window=20, stride=10,
                                                        max_passage_tokens=args.max_passage_tokens),
        "groupwise": lambda: GroupwiseReranker(lm, group_size=5, rounds=2),
        "eliminate-worst": lambda: EliminationReranker(lm, eliminate="worst", k=args.k, window=20, stride=10,
                                                     max_passage_tokens=args.max_passage_tokens),
        "eliminate-best": lambda: EliminationReranker(lm, eliminate="best", k=args.k, window=20, stride=10,
                                                     max_passage_tokens=args.max_passage_tokens),
        "listwise-reason": lambda: ReasoningReranker(lm, max_reasoning_tokens=args.max_reasoning_tokens,
                                                     window=20, stride=10, max_passage_tokens=args.max_passage_tokens),
    }
    rows = {"bm25": {**evaluate(first, qrels, ["nDCG@10"]), "wall_s": bm25_s}}
    for name in args.systems.split(","):
        reranker = builders[name]()
        t = time.perf_counter()
        run = reranker.rerank_run(first, queries, data.corpus, depth=args.depth, progress=True)
        wall = time.perf_counter() - t
        rows[name] = {**evaluate(run, qrels, ["nDCG@10"]), "wall_s": wall, "s_per_query": wall / len(queries),
                      "forward_passes": reranker.stats.forward_passes, "truncated": reranker.stats.truncated,
                      "passages": reranker.stats.passages,
                      "passes_per_query": reranker.stats.forward_passes / len(queries), **reranker.stats.extra}
        log(f"{name}: {rows[name]}")
    result = {"command": command_line(), "machine": machine(), "queries": len(queries), "depth": args.depth,
              "model": args.model, "backend": args.backend, "systems": rows}
    if "listwise-first" in rows and "listwise-generate" in rows:
        result["first_speedup_vs_generate"] = rows["listwise-generate"]["wall_s"] / rows["listwise-first"]["wall_s"]
    print(f"command: {result['command']}\nmachine: {machine_line(result['machine'])}")
    print(f"{args.dataset} test, first {len(queries)} judged queries, BM25 top-{args.depth}, model {args.model}, backend {result['backend']}")
    print(f"{'system':20} {'nDCG@10':>8} {'wall s':>8} {'s/query':>8} {'passes':>7} {'passes/q':>8}")
    for name, r in rows.items():
        print(f"{name:20} {r['nDCG@10']:8.4f} {r['wall_s']:8.1f} {r.get('s_per_query', 0):8.2f} "
              f"{r.get('forward_passes', 0):7d} {r.get('passes_per_query', 0):8.1f}")
    if "first_speedup_vs_generate" in result:
        print(f"FIRST single-token speed-up over generation on the same windows: "
              f"{result['first_speedup_vs_generate']:.2f}x")
    write_json(args.json_out, result)


if __name__ == "__main__":
    main()
