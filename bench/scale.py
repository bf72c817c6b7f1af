"""Indexing at MS MARCO shape on the CPU: the shared data path (retrieval/batching.py) against the old loop.

An MS MARCO-shaped synthetic corpus (passage lengths drawn from a log-normal with a mean of about
55 words, like MS MARCO's passages; seeded) is indexed with the tiny encoder (rankwise/testing.py;
data-path bound, the CPU stand-in for a GPU) through ``build_dense_index`` as flat and as IVF-PQ,
each build in a child process whose peak RSS (``VmHWM``) is read. In the same run it measures:

- docs/s of the new path (tokenize once, token-budget batches, prefetch) and of the old loop
  (tokenize for the sort, ``preprocess`` again per batch, fixed batch size) on the same texts;
- tokenizing the same texts alone with the fast tokenizer's batch call on all cores (the
  baseline), and through ``rankwise.retrieval.batching.tokenize`` (the Rust ``encode_batch_fast`` the path uses);
- index size, search queries/s, and IVF-PQ recall@10 against the flat index.

    HF_HUB_OFFLINE=1 python bench/scale.py --docs 100000

Progress goes to stderr; results to stdout, and as JSON to ``--json-out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # the batch call's Rust threads, on all cores
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, command_line, log, machine, machine_line, write_json  # noqa: E402

MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=100_000, help="synthetic passages (default 100000)")
    p.add_argument("--queries", type=int, default=500, help="synthetic queries for search and recall (default 500)")
    p.add_argument("--compare-docs", type=int, default=20_000,
                   help="passages on which the old loop and the new path are timed side by side (default 20000)")
    p.add_argument("--batch-size", type=int, default=256, help="new path: texts per batch, at most (default 256)")
    p.add_argument("--max-tokens", type=int, default=16384, help="new path: padded tokens per batch (default 16384)")
    p.add_argument("--old-batch-size", type=int, default=64, help="old loop: texts per batch (default 64)")
    p.add_argument("--chunk-size", type=int, default=8192)
    p.add_argument("--model", default=None, help="encoder (default: the tiny BERT of rankwise/testing.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="folder for corpus, model and indexes (default: a temp dir)")
    p.add_argument("--json-out", default=None)
    p.add_argument("--_child", nargs=4, metavar=("CORPUS", "OUT", "TYPE", "RESULT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def passage_words(rnd: random.Random) -> int:
    """A passage length in words: log-normal, mean about 55 (MS MARCO passages: mean ~56, median ~50)."""
    return max(4, min(250, round(rnd.lognormvariate(3.93, 0.38))))


def synthetic_texts(n: int, seed: int, words: int | None = None) -> list[str]:
    """``n`` seeded passages over the tiny tokenizer's vocabulary (``words`` fixed, or MS MARCO-shaped)."""
    from rankwise.testing import WORDS

    rnd = random.Random(seed)
    return [" ".join(rnd.choices(WORDS, k=words or passage_words(rnd))) for _ in range(n)]


def write_corpus(path: Path, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")


def legacy_encode(encoder, texts: list[str], batch_size: int):
    """The loop before retrieval/batching.py: tokenize for the sort, ``preprocess`` again per fixed-size batch."""
    import numpy as np

    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    order = np.argsort(-encoder._token_lengths(texts, encoder.doc_prompt), kind="stable")
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        out[idx] = encoder.engine.forward_texts([texts[i] for i in idx], encoder.doc_prompt, "document")
    return out


def proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def child(args: argparse.Namespace) -> None:
    """Build one index through ``build_dense_index`` and write its time and peak RSS."""
    from rankwise.retrieval.batching import BatchingConfig
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus
    from rankwise.retrieval.index import IndexConfig, build_dense_index

    corpus, out, kind, result = args._child
    encoder = Encoder(args.model, batch_size=args.batch_size, device="cpu",
                      batching=BatchingConfig(max_tokens=args.max_tokens))
    baseline = proc_status("VmRSS")
    t0 = time.perf_counter()
    manifest = build_dense_index(Corpus(corpus), encoder, out, IndexConfig(type=kind), chunk_size=args.chunk_size,
                                 progress=False)
    Path(result).write_text(json.dumps({"seconds": time.perf_counter() - t0, "count": manifest["count"],
                                        "peak_rss": proc_status("VmHWM"), "baseline_rss": baseline}))


def build(args: argparse.Namespace, corpus: Path, out: Path, kind: str) -> dict:
    result = out.with_suffix(".json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", str(corpus), str(out), kind, str(result),
           "--model", args.model, "--batch-size", str(args.batch_size), "--max-tokens", str(args.max_tokens),
           "--chunk-size", str(args.chunk_size)]
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    record = json.loads(result.read_text())
    record["index_bytes"] = (out / "index.faiss").stat().st_size
    return record


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args._child:
        child(args)
        return {}
    import numpy as np

    sys.path.insert(0, str(REPO))
    from rankwise.retrieval.batching import BatchingConfig
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.index import DenseIndex

    work = Path(args.workdir or tempfile.mkdtemp(prefix="rankwise-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        from rankwise.testing import build_tiny_encoder

        args.model = str(work / "tiny-encoder")
        if not Path(args.model).exists():
            build_tiny_encoder(Path(args.model))
    texts = synthetic_texts(args.docs, args.seed)
    words = [t.count(" ") + 1 for t in texts]
    log(f"{args.docs} passages, {np.mean(words):.1f} words on average (median {np.median(words):.0f})")
    corpus = work / "corpus.jsonl"
    write_corpus(corpus, texts)

    encoder = Encoder(args.model, batch_size=args.batch_size, device="cpu",
                      batching=BatchingConfig(max_tokens=args.max_tokens))
    sample = texts[:args.compare_docs]
    from rankwise.retrieval.batching import tokenize

    t0 = time.perf_counter()
    encoder.tokenizer(sample, truncation=True, max_length=encoder.max_length)
    tok_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokenize(encoder.tokenizer, sample, max_length=encoder.max_length)
    fast_tok_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = np.concatenate([encoder.encode_docs(sample[s:s + args.chunk_size])
                          for s in range(0, len(sample), args.chunk_size)])
    new_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    old = np.concatenate([legacy_encode(encoder, sample[s:s + args.chunk_size], args.old_batch_size)
                          for s in range(0, len(sample), args.chunk_size)])
    old_s = time.perf_counter() - t0
    max_diff = float(np.abs(new - old).max())
    log(f"side by side on {len(sample)}: new {len(sample) / new_s:.0f} docs/s, old {len(sample) / old_s:.0f}, "
        f"tokenize alone {len(sample) / tok_s:.0f} (fast path {len(sample) / fast_tok_s:.0f}); "
        f"max |new - old| {max_diff:.1e}")

    builds = {kind: build(args, corpus, work / f"index-{kind}", kind) for kind in ("flat", "ivfpq")}
    queries = encoder.encode_queries(synthetic_texts(args.queries, args.seed + 1, words=6))
    search = {}
    for kind in builds:
        index = DenseIndex.load(work / f"index-{kind}", gpu=False)
        t0 = time.perf_counter()
        _, pos = index.search(queries, 10)
        search[kind] = {"qps": len(queries) / (time.perf_counter() - t0), "pos": pos}
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(search["flat"]["pos"], search["ivfpq"]["pos"])]))

    flat = builds["flat"]
    result = {
        "command": command_line(), "machine": machine(), "docs": args.docs, "mean_words": float(np.mean(words)),
        "compare_docs": len(sample), "new_docs_per_s": len(sample) / new_s, "old_docs_per_s": len(sample) / old_s,
        "tokenize_docs_per_s": len(sample) / tok_s, "speedup": old_s / new_s, "share_of_tokenize": tok_s / new_s,
        "tokenize_fast_docs_per_s": len(sample) / fast_tok_s, "share_of_tokenize_fast": fast_tok_s / new_s,
        "max_abs_diff_new_old": max_diff,
        "builds": {k: {key: v[key] for key in ("seconds", "count", "peak_rss", "baseline_rss", "index_bytes")}
                   | {"docs_per_s": v["count"] / v["seconds"]} for k, v in builds.items()},
        "search_qps": {k: v["qps"] for k, v in search.items()}, "ivfpq_recall_at_10": recall,
        "rss_within_index_plus_1gb": flat["peak_rss"] <= flat["index_bytes"] + 1024 * MIB,
    }
    print(f"command: {result['command']}")
    print(f"machine: {machine_line(result['machine'])}")
    print(f"corpus: {args.docs} MS MARCO-shaped passages, {result['mean_words']:.1f} words on average")
    print(f"side by side ({len(sample)} passages): new path {result['new_docs_per_s']:.0f} docs/s, old loop "
          f"{result['old_docs_per_s']:.0f} docs/s -> {result['speedup']:.2f}x (target 3x); tokenize alone "
          f"{result['tokenize_docs_per_s']:.0f} docs/s -> new path at {result['share_of_tokenize']:.2f} of it "
          f"(target 0.85); max |new - old| {max_diff:.1e}")
    print(f"tokenize alone through retrieval.batching.tokenize (encode_batch_fast): "
          f"{result['tokenize_fast_docs_per_s']:.0f} docs/s -> new path at {result['share_of_tokenize_fast']:.2f} of it")
    for kind, b in result["builds"].items():
        print(f"build {kind}: {b['count']} docs in {b['seconds']:.1f} s ({b['docs_per_s']:.0f} docs/s), peak RSS "
              f"{b['peak_rss'] / MIB:.0f} MiB, index {b['index_bytes'] / MIB:.1f} MiB, "
              f"search {result['search_qps'][kind]:.0f} q/s")
    print(f"IVF-PQ recall@10 vs flat: {recall:.3f}; flat peak RSS <= index + 1 GiB: {result['rss_within_index_plus_1gb']}")
    write_json(args.json_out, result)
    return result


if __name__ == "__main__":
    main()
