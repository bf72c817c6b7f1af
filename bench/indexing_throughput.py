"""Indexing throughput: rankwise ``Encoder.encode_docs`` against plain ``SentenceTransformer.encode``.

Same model, same texts (``Document.full_text`` of the first N documents of a corpus), same batch
size, same thread count, same process. The variants alternate (the order rotates every round) for
R rounds; the median docs/s of each is reported, and every figure as a ratio against the baseline
measured in this run. ``--index`` adds the full ``build_dense_index`` path (corpus read and
fingerprint, encoding, chunk files, FAISS flat add, index write) as a third, separate variant.

    RANKWISE_MODELS=/work/models HF_HUB_OFFLINE=1 python bench/indexing_throughput.py --index

Progress goes to stderr; results to stdout, and as JSON to ``--json-out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (SHARED, CpuShare, command_line, log, machine, machine_line, median,  # noqa: E402
                     wait_until_quiet, write_json)

BASELINE = "sentence-transformers encode"
ENCODE = "rankwise Encoder.encode_docs"
INDEX = "rankwise build_dense_index (flat)"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="model name or path, resolved through $RANKWISE_MODELS (retrieval.models.resolve_model)")
    p.add_argument("--corpus", default=str(SHARED / "data" / "beir" / "scifact" / "corpus.jsonl"),
                   help="BEIR corpus.jsonl (default: ../shared/data/beir/scifact/corpus.jsonl)")
    p.add_argument("--docs", type=int, default=512, help="first N documents of the corpus (default 512)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size of both encoders (default 64)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's default)")
    p.add_argument("--index", action="store_true", help="also time the full build_dense_index path (flat index)")
    p.add_argument("--chunk-size", type=int, default=8192, help="build_dense_index chunk size (default 8192)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to SECONDS for other processes to leave the CPU idle (default: don't wait)")
    p.add_argument("--json-out", default=None, help="also write the results to this JSON file")
    return p.parse_args()


def padded_tokens(lengths, order, batch_size: int) -> int:
    """Token positions the model computes when batches follow ``order`` (each padded to its longest text)."""
    total = 0
    for start in range(0, len(order), batch_size):
        batch = lengths[order[start:start + batch_size]]
        total += len(batch) * int(batch.max())
    return total


def main() -> int:
    args = parse_args()
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus
    from rankwise.retrieval.index import IndexConfig, build_dense_index
    from rankwise.retrieval.models import resolve_model

    cmd = command_line()
    mach = machine()
    log(f"command: {cmd}")
    log(f"machine: {machine_line(mach)}")

    docs = []
    for doc in Corpus(args.corpus):
        docs.append(doc)
        if len(docs) == args.docs:
            break
    texts = [d.full_text for d in docs]
    n = len(texts)
    path = resolve_model(args.model)
    log(f"{n} documents from {args.corpus}; model {args.model} -> {path}; batch size {args.batch_size}")

    encoder = Encoder(args.model, batch_size=args.batch_size, device="cpu")
    plain = SentenceTransformer(path, device="cpu")
    if encoder.model.max_seq_length != plain.max_seq_length:
        raise SystemExit("the two models truncate differently")

    # Padding each ordering implies (diagnostic: what the token-length sort buys).
    tok = plain.tokenizer
    lengths = np.array([len(x) for x in tok(texts, truncation=True, max_length=plain.max_seq_length)["input_ids"]])
    char_order = np.argsort([-len(t) for t in texts])
    token_order = np.argsort(-lengths, kind="stable")
    pad = {
        "real_tokens": int(lengths.sum()),
        "padded_tokens_char_sort": padded_tokens(lengths, char_order, args.batch_size),
        "padded_tokens_token_sort": padded_tokens(lengths, token_order, args.batch_size),
    }

    tmp = tempfile.TemporaryDirectory(prefix="rankwise-bench-")
    corpus_file = Path(tmp.name) / "corpus.jsonl"
    with open(corpus_file, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n")

    outputs: dict[str, np.ndarray] = {}
    builds = 0

    def run_baseline(sample):
        return plain.encode(sample, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    def run_encode(sample):
        return encoder.encode_docs(sample)

    def run_index(_sample):
        import faiss

        nonlocal builds
        builds += 1
        out = Path(tmp.name) / f"index-{builds}"
        build_dense_index(Corpus(corpus_file), encoder, out, IndexConfig(type="flat"), chunk_size=args.chunk_size,
                          progress=False)
        index = faiss.read_index(str(out / "index.faiss"))
        return index.reconstruct_n(0, index.ntotal)

    variants = {BASELINE: run_baseline, ENCODE: run_encode}
    if args.index:
        variants[INDEX] = run_index
    names = list(variants)

    log("warm-up (one batch each, not timed)")
    for name in (BASELINE, ENCODE):
        variants[name](texts[:args.batch_size])

    if args.wait_quiet:
        wait_until_quiet(args.wait_quiet)
    times: dict[str, list[float]] = {name: [] for name in names}
    others: list[float] = []
    steal: list[float] = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            with CpuShare() as share:
                t0 = time.perf_counter()
                vectors = variants[name](texts)
                dt = time.perf_counter() - t0
            others.append(share.others)
            steal.append(share.steal)
            times[name].append(dt)
            outputs[name] = np.asarray(vectors, dtype=np.float32)
            log(f"round {r + 1}/{args.rounds}  {name:<36} {dt:8.3f} s  {n / dt:8.1f} docs/s  "
                f"(other processes {share.others:.0%} of the CPU, steal {share.steal:.0%})")
    tmp.cleanup()

    base = outputs[BASELINE]
    rates = {name: [n / t for t in ts] for name, ts in times.items()}
    base_med = median(rates[BASELINE])
    results = []
    for name in names:
        # Per-round ratios too: each against the baseline of its own round.
        per_round = [rate / b for rate, b in zip(rates[name], rates[BASELINE])]
        results.append({
            "variant": name,
            "docs_per_s_median": median(rates[name]),
            "docs_per_s_rounds": rates[name],
            "seconds_rounds": times[name],
            "ratio_vs_baseline": median(rates[name]) / base_med,
            "ratio_per_round_median": median(per_round),
            "max_abs_diff_vs_baseline": float(np.abs(outputs[name] - base).max()),
        })

    print(f"command: {cmd}")
    print(f"machine: {machine_line(mach)}")
    print(f"model: {args.model} ({path}), dim {encoder.dim}, max_seq_length {encoder.max_length}; "
          f"{n} docs of {args.corpus}; batch size {args.batch_size}; {args.rounds} alternating rounds")
    print(f"padding: {pad['real_tokens']} real tokens; batches compute {pad['padded_tokens_char_sort']} positions "
          f"sorted by characters (sentence-transformers), {pad['padded_tokens_token_sort']} sorted by tokens (rankwise)")
    quiet = max(others) < 0.10
    print(f"CPU used by other processes during the timed runs: max {max(others):.0%}, median {median(others):.0%} "
          f"of {CpuShare().cores} cores; hypervisor steal max {max(steal):.0%}"
          + ("" if quiet else "  ** NOT A QUIET MACHINE: the figures are distorted **"))
    print()
    print(f"| {'variant':<36} | docs/s (median) | ratio vs baseline | per-round ratio (median) | max abs diff |")
    print(f"|{'-' * 38}|----------------:|------------------:|-------------------------:|-------------:|")
    for res in results:
        print(f"| {res['variant']:<36} | {res['docs_per_s_median']:15.1f} | {res['ratio_vs_baseline']:17.3f} | "
              f"{res['ratio_per_round_median']:24.3f} | {res['max_abs_diff_vs_baseline']:12.2e} |")
    enc = next(r for r in results if r["variant"] == ENCODE)
    print()
    print(f"encode_docs / SentenceTransformer.encode = {enc['ratio_vs_baseline']:.3f} "
          f"({'meets' if enc['ratio_vs_baseline'] >= 1.0 else 'BELOW'} target >= 1.0); "
          f"max abs diff {enc['max_abs_diff_vs_baseline']:.2e} ({'OK' if enc['max_abs_diff_vs_baseline'] < 1e-5 else 'TOO LARGE'})")

    write_json(args.json_out, {
        "benchmark": "indexing_throughput",
        "command": cmd,
        "machine": mach,
        "settings": {"model": args.model, "model_path": path, "corpus": args.corpus, "docs": n,
                     "batch_size": args.batch_size, "rounds": args.rounds, "chunk_size": args.chunk_size,
                     "dim": encoder.dim, "max_seq_length": encoder.max_length},
        "padding": pad,
        "cpu_share_of_other_processes": others,
        "cpu_steal": steal,
        "quiet": quiet,
        "baseline": BASELINE,
        "results": results,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
