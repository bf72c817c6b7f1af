"""Listwise reranking on a served LLM (``backend=api``): throughput at concurrency 1 and 8, and agreement
with the in-process model on the same prompts, in one run.

Starts llama-cpp-python's server (``bench/llama_cpp_server.py``) on a free loopback port with the SmolLM2 GGUF (or uses
``--base-url``), takes Cranfield's BM25 top-``depth`` of the first ``--queries`` judged queries, and

1. reranks them with FIRST (sliding windows) through the server at ``concurrency=1`` and at
   ``concurrency=8``, alternating for ``--rounds`` rounds (cache off): windows/s and requests/s of
   each, and their ratio;
2. reads every window of those lists (the same prompts, not reordered between windows) in-process
   (torch, the GGUF dequantized) and through the server, FIRST and greedy generation: the mean
   Kendall tau of each window's two orders, the share of windows whose whole order, and whose top
   passage, agree.

    RANKWISE_DATA=../shared/data/beir RANKWISE_MODELS=~/.cache/rankwise/models HF_HUB_OFFLINE=1 \\
        python bench/served_llm.py --queries 8 --depth 20
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CpuShare, command_line, log, machine, machine_line, median, write_json  # noqa: E402


def start_server(gguf: Path, threads: int, log_file: Path) -> tuple[subprocess.Popen, str]:
    """A llama.cpp server on a free loopback port, and its ``/v1`` URL once it answers."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log_file, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "llama_cpp_server.py"),
                                 "--model", str(gguf), "--host", "127.0.0.1",
                                 "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads)],
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/models", timeout=5):
                return proc, base
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the llama.cpp server did not start: {log_file.read_text(errors='replace')[-2000:]}")


def agreement(a: list[list[int]], b: list[list[int]]) -> dict[str, float]:
    from scipy.stats import kendalltau

    taus = [kendalltau(x, y).statistic if len(x) > 1 else 1.0 for x, y in zip(a, b)]
    return {"windows": len(a), "kendall_tau": float(sum(taus) / len(taus)),
            "exact_order": sum(x == y for x, y in zip(a, b)) / len(a),
            "same_top": sum(x[0] == y[0] for x, y in zip(a, b)) / len(a)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cranfield")
    p.add_argument("--gguf", default=None, help="default: $RANKWISE_MODELS/SmolLM2-135M-Instruct/*.Q4_1.gguf")
    p.add_argument("--base-url", default=None, help="an already running server (default: start llama.cpp's)")
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--stride", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--generate-windows", type=int, default=8, help="windows compared in generate mode")
    p.add_argument("--threads", type=int, default=2, help="the llama.cpp server's threads")
    p.add_argument("--json-out")
    args = p.parse_args()

    from rankwise.eval.datasets import resolve_dataset
    from rankwise.retrieval.cached import bm25_index
    from rankwise.rerank.listwise import ListwiseReranker, window_schedule
    from rankwise.rerank.served import ServedConfig
    from rankwise.retrieval.bm25 import BM25Retriever

    gguf = Path(args.gguf or Path(os.environ["RANKWISE_MODELS"]) / "SmolLM2-135M-Instruct"
                / "SmolLM2-135M-Instruct.Q4_1.gguf")
    data = resolve_dataset(args.dataset)
    qrels = data.qrels("test")
    queries = {q: t for q, t in data.queries("test").items() if q in qrels}
    queries = dict(list(queries.items())[: args.queries])
    first = BM25Retriever(bm25_index(data.corpus, name=data.name)).search(queries, k=args.depth, progress=False)
    docs = data.corpus.lookup({d for q in first for d, _ in first[q]})
    lists = [(queries[q], [docs[d].full_text for d, _ in first[q]]) for q in queries]

    scratch = Path(tempfile.mkdtemp(prefix="served-bench-"))
    proc = None
    base = args.base_url
    if base is None:
        proc, base = start_server(gguf, args.threads, scratch / "server.log")
        log(f"llama.cpp server at {base}")
    try:
        def served(concurrency: int, mode: str = "first", cache: str = "off") -> ListwiseReranker:
            config = ServedConfig(base_url=base, concurrency=concurrency, cache=cache)
            return ListwiseReranker(str(gguf), mode=mode, window=args.window, stride=args.stride, backend=config)

        # 1. throughput: the same sliding-window reranking at concurrency 1 and 8, alternating
        rates: dict[str, dict[str, list[float]]] = {}
        for r in range(args.rounds):
            for c in ((1, 8) if r % 2 == 0 else (8, 1)):
                reranker = served(c)
                with CpuShare(pids=(proc.pid,) if proc is not None else ()) as share:  # the server is part of it
                    t = time.perf_counter()
                    reranker.score(lists)
                    wall = time.perf_counter() - t
                windows = reranker.stats.extra["windows"]
                usage = reranker.lm.engine.usage
                row = rates.setdefault(f"concurrency={c}", {"windows_s": [], "requests_s": [], "others": []})
                row["windows_s"].append(windows / wall)
                row["requests_s"].append(usage.requests / wall)
                row["others"].append(share.others)
                log(f"round {r + 1} concurrency={c}: {windows} windows, {usage.requests} requests in {wall:.1f} s "
                    f"({windows / wall:.2f} windows/s; other processes {share.others:.0%} of the CPU)")
        throughput = {k: {"windows_s": median(v["windows_s"]), "requests_s": median(v["requests_s"]),
                          "others_cpu": max(v["others"])} for k, v in rates.items()}

        # 2. agreement on the same prompts: every window of every list, in its first-stage order
        windows = [(q, d[a:b]) for q, d in lists for a, b in window_schedule(len(d), args.window, args.stride)]
        local = ListwiseReranker(str(gguf), window=args.window, stride=args.stride)
        remote = served(8, cache=str(scratch / "cache"))

        def orders(reranker: ListwiseReranker, items: list) -> list[list[int]]:
            scores = reranker.score(items)
            return [sorted(range(len(s)), key=lambda i: (-s[i], i)) for s in scores]

        t = time.perf_counter()
        first_local = orders(local, windows)
        local_s = time.perf_counter() - t
        first_remote = orders(remote, windows)
        gen = windows[: args.generate_windows]
        local.mode = remote.mode = "generate"
        gen_local, gen_remote = orders(local, gen), orders(remote, gen)
        agree = {"first": agreement(first_local, first_remote), "generate": agreement(gen_local, gen_remote)}
        usage = remote.lm.engine.usage.as_dict()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)

    ratio = throughput["concurrency=8"]["windows_s"] / throughput["concurrency=1"]["windows_s"]
    result = {"command": command_line(), "machine": machine(), "dataset": args.dataset, "queries": len(lists),
              "depth": args.depth, "window": args.window, "stride": args.stride, "server": "llama-cpp-python "
              f"{__import__('llama_cpp').__version__}" if args.base_url is None else args.base_url,
              "throughput": throughput, "speedup_8_vs_1": ratio, "agreement": agree,
              "in_process_first_windows_s": len(windows) / local_s, "usage_agreement_run": usage}
    print(f"command: {result['command']}\nmachine: {machine_line(result['machine'])}")
    print(f"{args.dataset}: BM25 top-{args.depth} of {len(lists)} queries, FIRST window {args.window} stride "
          f"{args.stride}, {gguf.name} on {result['server']}")
    for name, row in throughput.items():
        print(f"  {name:15} {row['windows_s']:6.2f} windows/s {row['requests_s']:6.2f} requests/s "
              f"(others used up to {row['others_cpu']:.0%} of the CPU)")
    print(f"  concurrency 8 / 1: {ratio:.2f}x; in-process torch FIRST: "
          f"{result['in_process_first_windows_s']:.2f} windows/s")
    for mode, a in agree.items():
        print(f"  in-process vs served, {mode}: {a['windows']} windows, Kendall tau {a['kendall_tau']:.3f}, "
              f"exact order {a['exact_order']:.0%}, same top passage {a['same_top']:.0%}")
    write_json(args.json_out, result)


if __name__ == "__main__":
    main()
