"""Peak memory of indexing a large synthetic corpus through ``build_dense_index`` (flat index).

The real path: a streaming ``corpus.jsonl`` written to a temporary folder, read in chunks, chunk
vectors saved as they finish (resumable), then added to a FAISS flat index. The build runs in a
child process; its peak RSS (``VmHWM``, cross-checked with ``getrusage(RUSAGE_CHILDREN)``) is set
against its own RSS just after imports and model load (the baseline, measured in the same child),
and the check is ``peak - baseline <= index.faiss size + margin`` (and the same for the absolute
peak). The encoder is a tiny BERT built with ``rankwise.testing.build_tiny_encoder`` unless
``--model`` is given, so a million documents take minutes on two cores.

    HF_HUB_OFFLINE=1 python bench/indexing_memory.py --docs 1000000

Progress goes to stderr; results to stdout, and as JSON to ``--json-out``. Exit status 1 on FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, CpuShare, command_line, log, machine, machine_line, wait_until_quiet, write_json  # noqa: E402

MIB = 2**20


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=1_000_000, help="synthetic documents (default 1000000)")
    p.add_argument("--chunk-size", type=int, default=8192, help="build_dense_index chunk size (default 8192)")
    p.add_argument("--words", default="8-32", help="document length range in words, MIN-MAX (default 8-32)")
    p.add_argument("--batch-size", type=int, default=64, help="encoder batch size (default 64, Encoder's default)")
    p.add_argument("--model", default=None, help="encoder name or path (default: a tiny BERT built into the temp dir)")
    p.add_argument("--margin-mib", type=int, default=1024, help="allowed peak above the index size, MiB (default 1024)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="folder for corpus, model and index (default: a temp dir, removed)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to SECONDS for other processes to leave the CPU idle (default: don't wait)")
    p.add_argument("--json-out", default=None, help="also write the results to this JSON file")
    p.add_argument("--_child", nargs=5, metavar=("CORPUS", "MODEL", "OUT", "CHUNK", "RESULT"), help=argparse.SUPPRESS)
    p.add_argument("--_make-model", dest="make_model", default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def proc_status(key: str) -> int:
    """A ``/proc/self/status`` memory field in bytes (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


# ---------------------------------------------------------------------------------------------
# Child: load the encoder, measure the baseline, build the index.


def child(corpus: str, model: str, out: str, chunk_size: int, result: str, batch_size: int) -> None:
    import torch  # noqa: F401  (imports first: they belong to the baseline)

    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus
    from rankwise.retrieval.index import IndexConfig, build_dense_index

    encoder = Encoder(model, batch_size=batch_size, device="cpu")
    baseline = proc_status("VmRSS")
    load_hwm = proc_status("VmHWM")
    log(f"[child] baseline RSS after imports and model load: {baseline / MIB:.0f} MiB (HWM so far {load_hwm / MIB:.0f} MiB)")

    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:  # a coarse RSS timeline: where in the build the memory goes
        while not stop.is_set():
            samples.append((round(time.perf_counter() - t0, 1), proc_status("VmRSS")))
            stop.wait(2.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    manifest = build_dense_index(Corpus(corpus), encoder, out, IndexConfig(type="flat"), chunk_size=chunk_size,
                                 progress=True)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    peak = proc_status("VmHWM")
    after = proc_status("VmRSS")
    top = max(samples, key=lambda s: s[1]) if samples else (None, None)
    Path(result).write_text(json.dumps({
        "baseline_rss": baseline, "load_hwm": load_hwm, "peak_rss": peak, "rss_after_build": after,
        "build_seconds": wall, "count": manifest["count"], "dim": encoder.dim, "max_seq_length": encoder.max_length,
        "sampled_peak_rss": top[1], "sampled_peak_at_s": top[0],
        "timeline": samples[:: max(1, len(samples) // 60)],
    }))


# ---------------------------------------------------------------------------------------------
# Parent: synthetic corpus, tiny model, spawn the child, report.


def write_corpus(path: Path, n: int, lo: int, hi: int, seed: int) -> int:
    from rankwise.testing import WORDS  # the vocabulary the tiny tokenizer was trained on

    rnd = random.Random(seed)
    choices, randint = rnd.choices, rnd.randint
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            text = " ".join(choices(WORDS, k=randint(lo, hi)))
            fh.write(f'{{"_id": "d{i}", "title": "", "text": "{text}"}}\n')
            if i and i % 200_000 == 0:
                log(f"  corpus: {i} documents written")
    return path.stat().st_size


def main() -> int:
    args = parse_args()
    if args.make_model:
        from rankwise.testing import build_tiny_encoder

        build_tiny_encoder(Path(args.make_model), seed=args.seed)
        return 0
    if args._child:
        corpus, model, out, chunk, result = args._child
        child(corpus, model, out, int(chunk), result, args.batch_size)
        return 0

    lo, hi = (int(x) for x in args.words.split("-"))
    cmd = command_line()
    log(f"command: {cmd}")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rankwise-membench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        # The parent stays free of torch: its own RSS would otherwise leak into RUSAGE_CHILDREN at exec.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        if args.model:
            model = args.model
        else:
            model = str(work / "tiny-encoder")
            log("building the tiny encoder (rankwise.testing.build_tiny_encoder)")
            subprocess.run([sys.executable, __file__, "--_make-model", model, "--seed", str(args.seed)], check=True, env=env)
        corpus = work / "corpus.jsonl"
        log(f"writing {args.docs} synthetic documents of {lo}-{hi} words to {corpus}")
        t = time.perf_counter()
        corpus_bytes = write_corpus(corpus, args.docs, lo, hi, args.seed)
        log(f"  {corpus_bytes / MIB:.0f} MiB in {time.perf_counter() - t:.0f} s")

        out = work / "index"
        result = work / "child.json"
        if args.wait_quiet:
            wait_until_quiet(args.wait_quiet)
        log("building the index in a child process")
        t = time.perf_counter()
        with CpuShare() as share:
            subprocess.run([sys.executable, __file__, "--batch-size", str(args.batch_size),
                            "--_child", str(corpus), model, str(out), str(args.chunk_size), str(result)],
                           check=True, env=env)
        child_wall = time.perf_counter() - t
        ru_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
        r = json.loads(result.read_text())
        index_bytes = (out / "index.faiss").stat().st_size
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    mach = machine()
    margin = args.margin_mib * MIB
    peak, base = r["peak_rss"], r["baseline_rss"]
    delta = peak - base
    delta_ok = delta <= index_bytes + margin
    abs_ok = peak <= index_bytes + margin
    docs_s = r["count"] / r["build_seconds"]

    print(f"command: {cmd}")
    print(f"machine: {machine_line(mach)}")
    print(f"corpus: {r['count']} synthetic docs, {lo}-{hi} words, {corpus_bytes / MIB:.0f} MiB jsonl; "
          f"encoder {'tiny BERT (rankwise.testing)' if not args.model else args.model}, dim {r['dim']}, "
          f"max_seq_length {r['max_seq_length']}; flat index; chunk size {args.chunk_size}; batch size {args.batch_size}")
    print(f"CPU used by other processes during the build: {share.others:.0%} of {share.cores} cores; "
          f"hypervisor steal {share.steal:.0%}"
          + ("" if share.others < 0.10 else "  ** NOT A QUIET MACHINE: the timing is distorted (memory is not) **"))
    print()
    print("| figure | value |")
    print("|---|---:|")
    print(f"| build wall time | {r['build_seconds']:.1f} s |")
    print(f"| throughput | {docs_s:,.0f} docs/s |")
    print(f"| baseline RSS (after imports + model load) | {base / MIB:,.0f} MiB |")
    print(f"| peak RSS (VmHWM) | {peak / MIB:,.0f} MiB |")
    print(f"| peak RSS (getrusage RUSAGE_CHILDREN) | {ru_maxrss / MIB:,.0f} MiB |")
    print(f"| peak - baseline | {delta / MIB:,.0f} MiB |")
    print(f"| index.faiss size | {index_bytes / MIB:,.0f} MiB |")
    print(f"| (peak - baseline) / index size | {delta / index_bytes:.2f} |")
    print(f"| peak / baseline | {peak / base:.2f} |")
    print(f"| RSS after the build returned | {r['rss_after_build'] / MIB:,.0f} MiB |")
    print()
    limit = (index_bytes + margin) / MIB
    print(f"{'PASS' if delta_ok else 'FAIL'}: peak - baseline = {delta / MIB:,.0f} MiB <= index size + {args.margin_mib} MiB "
          f"= {limit:,.0f} MiB")
    print(f"{'PASS' if abs_ok else 'FAIL'}: peak = {peak / MIB:,.0f} MiB <= index size + {args.margin_mib} MiB "
          f"= {limit:,.0f} MiB (absolute, baseline included)")

    write_json(args.json_out, {
        "benchmark": "indexing_memory",
        "command": cmd,
        "machine": mach,
        "settings": {"docs": args.docs, "words": [lo, hi], "chunk_size": args.chunk_size, "batch_size": args.batch_size,
                     "model": args.model or "tiny (rankwise.testing.build_tiny_encoder)", "index_type": "flat",
                     "margin_bytes": margin, "seed": args.seed},
        "corpus_bytes": corpus_bytes,
        "index_bytes": index_bytes,
        "ru_maxrss_children_bytes": ru_maxrss,
        "child_wall_seconds": child_wall,
        "cpu_share_of_other_processes": share.others,
        "cpu_steal": share.steal,
        "docs_per_s": docs_s,
        "peak_minus_baseline_bytes": delta,
        "pass_peak_minus_baseline": delta_ok,
        "pass_absolute_peak": abs_ok,
        **r,
    })
    return 0 if delta_ok else 1


if __name__ == "__main__":
    sys.exit(main())
