"""``rankwise serve`` under load: dynamic batching against one request at a time, in the same run.

64 concurrent clients (closed loop: each sends its next request when the last is answered), each
request a SciFact test query with 20 SciFact documents to rerank, against two servers of the same
cross-encoder on the CPU: one with dynamic batching (``--max-batch-documents 160``: 8 requests per
model call) and one that runs one request per model call (``--max-batch-documents 1 --max-batch-delay 0``). The
one-at-a-time server is measured for half of ``--baseline-duration`` before the batched run and
half after it; the batched one for ``--duration`` s without a break, after ``--warmup`` s of the same load (ONNX
Runtime's memory arena grows over the first full batches), with its RSS sampled every 5 s.
Reported: requests/s of each and their ratio (target >= 2), p50/p99 latency, errors, the batched
server's RSS at the start and end of its run, and its mean requests per model call.

No pretrained cross-encoder is available here: the default model is all-MiniLM-L6-v2 with a fresh
one-label head (``CrossEncoder(path, num_labels=1)`` through :func:`rankwise.rerank.init_cross_encoder`).
Throughput does not depend on what the head learned, only on the architecture and the inputs.

    RANKWISE_DATA=../shared/data/beir RANKWISE_MODELS=~/.cache/rankwise/models HF_HUB_OFFLINE=1 \\
        python bench/serve_load.py --duration 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, _cpu_ticks, command_line, log, machine, machine_line, write_json  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def start_server(spec: str, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rankwise", "serve", "--reranker", spec, "--port", str(port), *extra]
    log("starting:", " ".join(cmd))
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600.0) -> None:
    import httpx

    start = time.perf_counter()
    async with httpx.AsyncClient() as client:
        while time.perf_counter() - start < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {proc.stderr.read()[-2000:]}")
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1.0)
    raise RuntimeError(f"{url} did not answer /health within {timeout} s")


async def load(url: str, requests: list[dict], clients: int, duration: float,
               on_tick=None) -> dict:
    """``clients`` closed-loop clients for ``duration`` s; what was answered within that time."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + duration

    async def client(c: int, http: httpx.AsyncClient) -> None:
        rnd = random.Random(c)
        while time.perf_counter() < stop:
            body = requests[rnd.randrange(len(requests))]
            t = time.perf_counter()
            try:
                r = await http.post(f"{url}/v1/rerank", json=body)
            except httpx.HTTPError as err:
                errors.append(f"{type(err).__name__}: {err}")
                continue
            if time.perf_counter() > stop:
                return  # answered after the end: not counted
            if r.status_code != 200 or len(r.json()["results"]) != len(body["documents"]):
                errors.append(f"{r.status_code}: {r.text[:200]}")
            else:
                latencies.append(time.perf_counter() - t)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(None)) as http:
        tasks = [asyncio.create_task(client(c, http)) for c in range(clients)]
        started = time.perf_counter()
        while time.perf_counter() < stop:
            await asyncio.sleep(min(5.0, max(0.0, stop - time.perf_counter())))
            if on_tick is not None:
                on_tick(time.perf_counter() - started)
        for t in tasks:  # requests still waiting are withdrawn (the clients disconnect)
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        wall = time.perf_counter() - started
    return {"seconds": round(wall, 1), "requests": len(latencies), "errors": len(errors),
            "first_errors": errors[:3], "requests_per_s": len(latencies) / wall,
            "p50_s": percentile(latencies, 50), "p99_s": percentile(latencies, 99)}


async def drained(url: str) -> None:
    """Wait until the server's queue is empty (withdrawn requests dropped, the running call done)."""
    import httpx

    async with httpx.AsyncClient() as client:
        while sum((await client.get(f"{url}/health")).json()["queue"].values()) > 0:
            await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)


def batch_stats(url: str) -> dict:
    import httpx

    text = httpx.get(f"{url}/metrics").text
    values = {}
    for line in text.splitlines():
        for key in ("rankwise_batch_requests_count", "rankwise_batch_requests_sum",
                    "rankwise_batch_documents_sum"):
            if line.startswith(key + "{"):
                values[key] = float(line.rsplit(" ", 1)[1])
    calls = values.get("rankwise_batch_requests_count", 0.0)
    return {"model_calls": int(calls),
            "mean_requests_per_call": values.get("rankwise_batch_requests_sum", 0.0) / calls if calls else 0.0}


def build_requests(n: int, per_request: int, seed: int = 0) -> list[dict]:
    from rankwise.eval.datasets import resolve_dataset

    data = resolve_dataset("scifact", progress=False)
    queries = list(data.queries("test").values())
    docs = [doc.full_text for doc in data.corpus]
    rnd = random.Random(seed)
    return [{"query": rnd.choice(queries), "documents": rnd.sample(docs, per_request)} for _ in range(n)]


def longest_requests(n: int, per_request: int) -> list[dict]:
    from rankwise.eval.datasets import resolve_dataset

    data = resolve_dataset("scifact", progress=False)
    docs = sorted((doc.full_text for doc in data.corpus), key=len, reverse=True)[:n * per_request]
    return [{"query": "warm-up", "documents": docs[i * per_request:(i + 1) * per_request]} for i in range(n)]


def default_model(max_length: int) -> str:
    from rankwise.rerank.cross_encoder import init_cross_encoder
    from rankwise.retrieval.models import resolve_model
    from rankwise.retrieval.paths import cache_root

    folder = cache_root() / "bench" / f"minilm-cross-encoder-{max_length}"
    if not (folder / "config.json").is_file():
        init_cross_encoder(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), folder, seed=0,
                           max_length=max_length)
    return str(folder)


async def main_async(args: argparse.Namespace) -> dict:
    spec = args.reranker or f"cross-encoder:{default_model(args.max_length)},backend=onnx"
    requests = build_requests(256, args.documents)
    common = ["--queue-size", str(max(256, args.clients * 2))]
    ports = {"batched": free_port(), "one-at-a-time": free_port()}
    flags = {"batched": ["--max-batch-delay", str(args.max_batch_delay),
                         "--max-batch-documents", str(args.max_batch_documents)],
             "one-at-a-time": ["--max-batch-delay", "0", "--max-batch-documents", "1"]}
    urls = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    servers: dict[str, subprocess.Popen] = {}
    try:
        for name in flags:  # one after the other: the first start may export the model to ONNX
            servers[name] = start_server(spec, ports[name], common + flags[name])
            await wait_ready(urls[name], servers[name])
        import httpx

        async with httpx.AsyncClient(timeout=None) as http:  # the same scores from both servers
            answers = [(await http.post(f"{u}/v1/rerank", json=requests[0])).json()["results"] for u in urls.values()]
            # warm-up: a full model batch of the longest documents, so that ONNX Runtime's memory arena
            # reaches its working size before the batched server's RSS is first read
            longest = longest_requests(2, args.documents)
            await asyncio.gather(*(http.post(f"{urls['batched']}/v1/rerank", json=r) for r in longest))
        same_order = [r["index"] for r in answers[0]] == [r["index"] for r in answers[1]]
        max_diff = max(abs(a["relevance_score"] - b["relevance_score"]) for a, b in zip(answers[0], answers[1]))
        pids = [p.pid for p in servers.values()]
        busy0, _ = _cpu_ticks()
        own0 = sum(cpu_seconds(p) for p in pids)
        t0 = time.perf_counter()
        half = args.baseline_duration / 2
        log(f"one-at-a-time, first half: {half:.0f} s")
        base1 = await load(urls["one-at-a-time"], requests, args.clients, half)
        await drained(urls["one-at-a-time"])
        pid = servers["batched"].pid
        if args.warmup > 0:  # ONNX Runtime's memory arena grows over the first model calls of full batches
            log(f"batched, warm-up: {args.warmup:.0f} s (RSS {rss_mib(pid):.0f} MiB)")
            await load(urls["batched"], requests, args.clients, args.warmup)
            await drained(urls["batched"])
        rss = [(0.0, rss_mib(pid))]
        log(f"batched: {args.duration:.0f} s; RSS {rss[0][1]:.0f} MiB")

        def tick(t: float) -> None:
            rss.append((round(t, 1), rss_mib(pid)))

        batched = await load(urls["batched"], requests, args.clients, args.duration, on_tick=tick)
        rss.append((batched["seconds"], rss_mib(pid)))
        log(f"batched: {batched['requests_per_s']:.3f} req/s; RSS {rss[0][1]:.0f} -> {rss[-1][1]:.0f} MiB")
        await drained(urls["batched"])
        log(f"one-at-a-time, second half: {half:.0f} s")
        base2 = await load(urls["one-at-a-time"], requests, args.clients, half)
        busy1, _ = _cpu_ticks()
        wall = time.perf_counter() - t0
        servers_cpu = sum(cpu_seconds(p) for p in pids) - own0
        import resource

        me = resource.getrusage(resource.RUSAGE_SELF)
        others = max(0.0, (busy1 - busy0) / os.sysconf("SC_CLK_TCK") - servers_cpu - (me.ru_utime + me.ru_stime))
        n = base1["requests"] + base2["requests"]
        base = {"seconds": base1["seconds"] + base2["seconds"], "requests": n,
                "errors": base1["errors"] + base2["errors"],
                "requests_per_s": n / (base1["seconds"] + base2["seconds"]),
                "halves_requests_per_s": [base1["requests_per_s"], base2["requests_per_s"]],
                "p50_s": max(base1["p50_s"], base2["p50_s"]) if n else float("nan"),
                "p99_s": max(base1["p99_s"], base2["p99_s"]) if n else float("nan")}
        stats = batch_stats(urls["batched"])
    finally:
        for proc in servers.values():
            proc.terminate()
        for proc in servers.values():
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"spec": spec, "clients": args.clients, "documents_per_request": args.documents,
            "same_order_both_servers": same_order, "max_score_difference": max_diff,
            "one_at_a_time": base, "batched": batched, "batched_model_calls": stats,
            "ratio": batched["requests_per_s"] / base["requests_per_s"] if base["requests_per_s"] else float("inf"),
            "rss_mib": {"start": rss[0][1], "end": rss[-1][1], "max": max(r for _, r in rss), "samples": rss},
            "other_processes_cpu_share": others / (wall * (len(os.sched_getaffinity(0))))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reranker", help="reranker spec (default: the MiniLM cross-encoder, ONNX fp32)")
    p.add_argument("--max-length", type=int, default=512, help="max tokens of the default cross-encoder")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--documents", type=int, default=20, help="documents per request")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of the batched run")
    p.add_argument("--baseline-duration", type=float, default=180.0,
                   help="seconds of the one-at-a-time run (half before, half after the batched one)")
    p.add_argument("--warmup", type=float, default=90.0,
                   help="seconds of load on the batched server before its RSS is first read (not timed)")
    p.add_argument("--max-batch-delay", type=float, default=5.0, help="ms (the batched server)")
    p.add_argument("--max-batch-documents", type=int, default=160,
                   help="the batched server's budget (8 requests of 20: model calls short enough to count them "
                        "finely in a 5-minute run on 2 cores)")
    p.add_argument("--json-out")
    args = p.parse_args()
    m = machine()
    result = asyncio.run(main_async(args))
    b, o = result["batched"], result["one_at_a_time"]
    print(f"command: {command_line()}")
    print(f"machine: {machine_line(m)}")
    print(f"reranker: {result['spec']}; {args.clients} clients x {args.documents} SciFact documents per request")
    print(f"one request at a time: {o['requests_per_s']:.3f} req/s ({o['requests']} in {o['seconds']:.0f} s; "
          f"halves {o['halves_requests_per_s'][0]:.3f} / {o['halves_requests_per_s'][1]:.3f}), "
          f"p50 {o['p50_s']:.1f} s, p99 {o['p99_s']:.1f} s, errors {o['errors']}")
    print(f"dynamic batching:      {b['requests_per_s']:.3f} req/s ({b['requests']} in {b['seconds']:.0f} s), "
          f"p50 {b['p50_s']:.1f} s, p99 {b['p99_s']:.1f} s, errors {b['errors']}; "
          f"{result['batched_model_calls']['mean_requests_per_call']:.1f} requests per model call")
    print(f"throughput ratio batched / one-at-a-time: {result['ratio']:.2f}x (target >= 2.0)")
    r = result["rss_mib"]
    print(f"batched server RSS: start {r['start']:.0f} MiB, end {r['end']:.0f} MiB, max {r['max']:.0f} MiB")
    print(f"same ranking from both servers: {result['same_order_both_servers']} "
          f"(largest score difference {result['max_score_difference']:.2e})")
    print(f"other processes used {result['other_processes_cpu_share']:.0%} of the CPU during the run")
    write_json(args.json_out, {"command": command_line(), "machine": m, **result})


if __name__ == "__main__":
    main()
