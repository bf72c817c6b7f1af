"""The CPU backends side by side in one run: torch, onnx, onnx-int8, openvino, openvino-int8, openvino-bf16.

- Encoder (all-MiniLM-L6-v2, ``Encoder(backend=...)``): docs/s on the first ``--docs`` SciFact
  documents (the same length-sorted batches for every backend), and each backend's min and mean
  cosine to torch's vectors and its top-10 agreement with torch (share of torch's top 10 of each
  test query, over those documents, that the backend also ranks in its top 10).
- Cross-encoder (``CrossEncoderReranker(backend=...)``; no trained cross-encoder exists here, so
  the all-MiniLM-L6-v2 weights with a fresh classification head, ``init_cross_encoder``, seeded):
  pairs/s on SciFact test queries with their BM25 top ``--per-query`` documents, the largest score
  difference to torch and the ranking agreement (share of document pairs of each query ordered as
  torch orders them).

Every backend is built (exported, quantized: NNCF calibrates ``openvino-int8`` on the first 128
documents of the collection, as ``rankwise index`` does; the cross-encoder on the bundled
calibration pairs) before any timing; the variants then alternate over ``--rounds`` rounds and the
median rate is reported with its ratio to torch. nDCG@10 on the full collection comes from
``rankwise beir scifact --retriever dense --backend B`` (see BENCHMARKS.md).

    RANKWISE_DATA=../shared/data/beir RANKWISE_MODELS=~/.cache/rankwise/models HF_HUB_OFFLINE=1 \\
        python bench/cpu_backends.py --docs 256 --pairs 320
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

import numpy as np  # noqa: E402

from _common import CpuShare, alternate, command_line, log, machine, machine_line, write_json  # noqa: E402

from rankwise.retrieval.backend.value import Backend  # noqa: E402

BACKENDS = Backend.NAMES
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def top10_agreement(reference: np.ndarray, got: np.ndarray) -> float:
    """Mean share of each row's top 10 (by ``reference``) that ``got`` also puts in its top 10."""
    k = min(10, reference.shape[1])
    ref = np.argsort(-reference, axis=1)[:, :k]
    new = np.argsort(-got, axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref, new)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="scifact")
    p.add_argument("--docs", type=int, default=256, help="documents encoded per round (the first of the corpus)")
    p.add_argument("--pairs", type=int, default=320, help="cross-encoder pairs scored per round")
    p.add_argument("--per-query", type=int, default=10, help="BM25 top documents per query (cross-encoder)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256, help="the cross-encoder's max_length")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--skip-encoder", action="store_true")
    p.add_argument("--skip-cross-encoder", action="store_true")
    p.add_argument("--json-out")
    args = p.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if backends[0] != "torch":
        p.error("--backends must start with torch (the baseline)")

    import tempfile

    from rankwise.eval.datasets import resolve_dataset
    from rankwise.retrieval.backend.calibration import corpus_calibration
    from rankwise.retrieval.backend.parity import ranking_agreement

    data = resolve_dataset(args.dataset, progress=False)
    queries = data.queries("test")
    result: dict = {"command": command_line(), "machine": machine(), "backends": backends}
    try:
        import openvino

        from rankwise.retrieval.backend.openvino import cpu_capabilities

        result["machine"]["openvino"] = openvino.__version__
        if "BF16" not in cpu_capabilities(openvino) and "openvino-bf16" in backends:
            backends.remove("openvino-bf16")
            log("openvino-bf16 left out: this CPU has no bfloat16 instructions")
    except ImportError:
        pass

    if not args.skip_encoder:
        from rankwise.retrieval.encoder import Encoder

        docs = [d.full_text for _, d in zip(range(args.docs), data.corpus)]
        qtexts = list(queries.values())
        encoders, build_s = {}, {}
        for b in backends:
            t = time.perf_counter()
            encoders[b] = Encoder(ENCODER, backend=b, batch_size=args.batch_size, device="cpu",
                                  calibration=lambda: corpus_calibration(data.corpus))
            build_s[b] = time.perf_counter() - t
            log(f"encoder {b}: ready in {build_s[b]:.1f} s")
        with CpuShare() as share:
            rates, outputs = alternate({b: (lambda e=e: e.encode_docs(docs)) for b, e in encoders.items()},
                                       args.rounds, len(docs), "docs/s")
        ref = outputs["torch"]
        qvecs = {b: e.encode_queries(qtexts) for b, e in encoders.items()}
        rows = {}
        for b in backends:
            cos = (ref * outputs[b]).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(outputs[b], axis=1))
            rows[b] = {"docs_per_s": rates[b], "ratio": rates[b] / rates["torch"], "min_cosine": float(cos.min()),
                       "mean_cosine": float(cos.mean()),
                       "top10_agreement": top10_agreement(qvecs["torch"] @ ref.T, qvecs[b] @ outputs[b].T),
                       "build_s": build_s[b]}
        result["encoder"] = {"docs": len(docs), "queries": len(qtexts), "rows": rows, "other_cpu": share.others}
        del encoders

    if not args.skip_cross_encoder:
        from rankwise.retrieval.cached import bm25_index
        from rankwise.rerank.cross_encoder import CrossEncoderReranker, init_cross_encoder
        from rankwise.retrieval.bm25 import BM25Retriever

        tmp = tempfile.TemporaryDirectory(prefix="rankwise-cpu-backends-")
        model = str(init_cross_encoder(ENCODER, Path(tmp.name) / "ce", seed=0, max_length=args.max_length))
        n_queries = -(-args.pairs // args.per_query)
        chosen = dict(list(queries.items())[:n_queries])
        run = BM25Retriever(bm25_index(data.corpus, name=data.name, progress=False)).search(chosen, k=args.per_query, progress=False)
        looked = data.corpus.lookup({d for q in run for d, _ in run[q]})
        pairs = [(chosen[q], looked[d].full_text) for q in run for d, _ in run[q]][: args.pairs]
        rerankers, build_s = {}, {}
        for b in backends:
            t = time.perf_counter()
            rerankers[b] = CrossEncoderReranker(model, batch_size=args.batch_size, max_length=args.max_length,
                                                backend=b, device="cpu")
            build_s[b] = time.perf_counter() - t
            log(f"cross-encoder {b}: ready in {build_s[b]:.1f} s")
        with CpuShare() as share:
            rates, outputs = alternate({b: (lambda r=r: np.asarray(r.score_pairs(pairs), dtype=np.float64))
                                        for b, r in rerankers.items()}, args.rounds, len(pairs), "pairs/s")
        ref = outputs["torch"]
        usable = len(pairs) // args.per_query * args.per_query
        rows = {}
        for b in backends:
            agree = ranking_agreement(ref[:usable].reshape(-1, args.per_query),
                                      outputs[b][:usable].reshape(-1, args.per_query))
            rows[b] = {"pairs_per_s": rates[b], "ratio": rates[b] / rates["torch"],
                       "max_abs_diff": float(np.abs(outputs[b] - ref).max()), "ranking_agreement": agree,
                       "build_s": build_s[b]}
        result["cross_encoder"] = {"pairs": len(pairs), "rows": rows, "other_cpu": share.others}
        del rerankers
        tmp.cleanup()

    print(f"command: {result['command']}\nmachine: {machine_line(result['machine'])}"
          + (f", openvino {result['machine']['openvino']}" if "openvino" in result["machine"] else ""))
    if "encoder" in result:
        enc = result["encoder"]
        print(f"\nencoder {ENCODER}: first {enc['docs']} {args.dataset} documents, batch {args.batch_size}, "
              f"{args.rounds} alternating rounds (other processes {enc['other_cpu']:.0%} of the CPU)")
        print("| backend | docs/s | vs torch | min cosine | mean cosine | top-10 agreement | ready in (s) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for b, r in enc["rows"].items():
            print(f"| {b} | {r['docs_per_s']:.1f} | {r['ratio']:.2f}x | {r['min_cosine']:.4f} | {r['mean_cosine']:.4f} "
                  f"| {r['top10_agreement']:.3f} | {r['build_s']:.0f} |")
    if "cross_encoder" in result:
        ce = result["cross_encoder"]
        print(f"\ncross-encoder (all-MiniLM-L6-v2 + fresh head): {ce['pairs']} (query, BM25 top-{args.per_query}) "
              f"pairs, batch {args.batch_size}, max_length {args.max_length}, {args.rounds} alternating rounds "
              f"(other processes {ce['other_cpu']:.0%} of the CPU)")
        print("| backend | pairs/s | vs torch | max abs score diff | ranking agreement | ready in (s) |")
        print("|---|---:|---:|---:|---:|---:|")
        for b, r in ce["rows"].items():
            print(f"| {b} | {r['pairs_per_s']:.1f} | {r['ratio']:.2f}x | {r['max_abs_diff']:.2e} "
                  f"| {r['ranking_agreement']:.3f} | {r['build_s']:.0f} |")
    write_json(args.json_out, result)


if __name__ == "__main__":
    main()
