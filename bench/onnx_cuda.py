"""ONNX Runtime's CUDA provider against torch on the same GPU, measured in the same run.

- Encoding the SciFact corpus (first ``--docs``) with all-MiniLM-L6-v2: docs/s of the torch backend
  (fp16 under ``torch.autocast``, as :class:`rankwise.retrieval.encoder.Encoder` runs on a GPU) and of the ONNX
  graph on the CUDA provider (fp16 weights, :mod:`rankwise.retrieval.backend.session`), alternating over
  ``--rounds``; max abs diff and min cosine of the ONNX embeddings against torch's.
- Cross-encoder pairs/s (SciFact test queries with corpus documents), torch vs ONNX on CUDA, and the
  largest score difference.

Needs a GPU and ``onnxruntime-gpu`` (the CUDA provider); says so and exits 2 otherwise. The CPU
figures are bench/onnx_speed.py's.

    RANKWISE_DATA=../shared/data/beir RANKWISE_MODELS=~/.cache/rankwise/models HF_HUB_OFFLINE=1 \\
        python bench/onnx_cuda.py [--ce-model DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import alternate, command_line, log, machine, machine_line, write_json  # noqa: E402

ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=5183, help="SciFact documents to encode (default: all 5183)")
    p.add_argument("--model", default=ENCODER)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per figure (median reported)")
    p.add_argument("--ce-model", default=None, help="cross-encoder path (default: made from all-MiniLM-L6-v2)")
    p.add_argument("--pairs", type=int, default=4096)
    p.add_argument("--json-out")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    import torch

    from rankwise.retrieval.backend.session import cuda_available

    if not torch.cuda.is_available() or not cuda_available():
        log("needs a GPU that torch sees and onnxruntime-gpu's CUDAExecutionProvider "
            f"(torch.cuda: {torch.cuda.is_available()}, ONNX Runtime CUDA provider: {cuda_available()})")
        return 2
    import onnxruntime as ort

    from rankwise.eval.datasets import resolve_dataset
    from rankwise.rerank.cross_encoder import CrossEncoderReranker, init_cross_encoder
    from rankwise.retrieval.encoder import Encoder

    m = machine()
    gpu = torch.cuda.get_device_name(0)
    print(f"command: {command_line()}")
    print(f"machine: {gpu}; {machine_line(m)}; onnxruntime {ort.__version__}")
    sync = torch.cuda.synchronize
    data = resolve_dataset("scifact", progress=False)
    docs = [doc.full_text for _, doc in zip(range(max(args.docs, args.pairs)), data.corpus)]
    result: dict = {"command": command_line(), "machine": {**m, "gpu": gpu, "onnxruntime": ort.__version__}}

    encoders = {"torch": Encoder(args.model, device="cuda", batch_size=args.batch_size),
                "onnx cuda": Encoder(args.model, backend="onnx", device="cuda", batch_size=args.batch_size)}
    log(f"onnx encoder provider: {encoders['onnx cuda'].session.provider}")
    texts = docs[: args.docs]
    rates, vectors = alternate({n: (lambda e=e: e.encode_docs(texts)) for n, e in encoders.items()},
                               args.rounds, len(texts), "docs/s", sync)
    ref = np.asarray(vectors["torch"], dtype=np.float32)
    got = np.asarray(vectors["onnx cuda"], dtype=np.float32)
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    result["encoding"] = {"docs": len(texts), "docs_per_s": rates, "ratio": rates["onnx cuda"] / rates["torch"],
                          "max_abs_diff": float(np.abs(ref - got).max()), "min_cosine": float(cos.min())}
    print(f"\nSciFact corpus encoding on {gpu}, {len(texts)} docs, {args.model}, batch {args.batch_size}")
    print("| variant | docs/s | ratio |\n|---|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} | {rate / rates['torch']:.2f} |")
    print(f"onnx cuda vs torch: max abs diff {result['encoding']['max_abs_diff']:.1e}, "
          f"min cosine {result['encoding']['min_cosine']:.5f}")

    import tempfile

    with tempfile.TemporaryDirectory(prefix="rankwise-onnx-cuda-ce-") as tmp:
        model = args.ce_model or str(init_cross_encoder(args.model, Path(tmp) / "ce", max_length=256))
        queries = list(data.queries("test").values())
        pairs = [(queries[i % len(queries)], d) for i, d in enumerate(docs[: args.pairs])]
        rerankers = {"torch": CrossEncoderReranker(model, device="cuda", batch_size=args.batch_size),
                     "onnx cuda": CrossEncoderReranker(model, backend="onnx", device="cuda",
                                                       batch_size=args.batch_size)}
        rates, scores = alternate({n: (lambda r=r: r.score_pairs(pairs)) for n, r in rerankers.items()},
                                  args.rounds, len(pairs), "pairs/s", sync)
    diff = float(np.abs(np.asarray(scores["torch"]) - np.asarray(scores["onnx cuda"])).max())
    result["cross_encoder"] = {"pairs": len(pairs), "model": model, "pairs_per_s": rates,
                               "ratio": rates["onnx cuda"] / rates["torch"], "max_abs_score_diff": diff}
    print(f"\nCross-encoder on {gpu}, {len(pairs)} SciFact (query, document) pairs, {model}")
    print("| variant | pairs/s | ratio |\n|---|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} | {rate / rates['torch']:.2f} |")
    print(f"onnx cuda vs torch: max abs score diff {diff:.1e}")
    if args.json_out:
        write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
