"""Accelerator check: encoding docs/s and MFU, cross-encoder pairs/s, cross-encoder training samples/s,
FAISS flat search q/s, ST reference, and the GPU's busy share while encoding and training.

One command for a GPU machine (``--device cuda``, all-MiniLM-L6-v2 and the MiniLM cross-encoder by
default); ``--device cpu`` with small ``--docs`` is the smoke mode tests run with tiny models.
MFU = achieved model FLOP/s (2 x parameters x tokens, Kaplan et al., 2020) over the matmul peak
measured here (fp16 on CUDA, fp32 on CPU). Training is rankwise's cross-encoder trainer
(``bench/training_throughput.py``'s run: LCE over a positive and one negative per query, fp16 on
CUDA) on triples cut from the same passages. The busy share is NVML's ``utilization.gpu`` sampled
while a phase runs (``_common.GpuBusy``); "n/a" on the CPU.

    python bench/gpu.py --device cuda
    python bench/gpu.py --device cpu --docs 64 --encoder PATH --cross-encoder PATH --vectors 10000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import GpuBusy, command_line, machine, machine_line, write_json  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda or cpu (smoke mode)")
    p.add_argument("--encoder", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--cross-encoder", default="cross-encoder/ms-marco-MiniLM-L-6-v2")
    p.add_argument("--docs", type=int, default=20_000, help="MS MARCO-shaped passages to encode")
    p.add_argument("--pairs", type=int, default=None, help="cross-encoder pairs (default: --docs)")
    p.add_argument("--vectors", type=int, default=1_000_000, help="vectors in the FAISS flat index")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=65536)
    p.add_argument("--train-steps", type=int, default=50, help="cross-encoder training steps (0: skip)")
    p.add_argument("--train-batch-size", type=int, default=64)
    p.add_argument("--train-max-length", type=int, default=256)
    p.add_argument("--workers", type=int, default=None, help="training DataLoader workers (default: rankwise's)")
    p.add_argument("--json-out", default=None)
    return p.parse_args(argv)


def matmul_peak(device: str) -> float:
    """Measured dense matmul FLOP/s (fp16 on CUDA, fp32 on CPU)."""
    import torch

    n = 4096 if device.startswith("cuda") else 512
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 20 if device.startswith("cuda") else 5
    a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def write_triples(texts: list[str], path: Path) -> Path:
    """(query, positive, negative) rows from passages: a passage's first words ask for it against the next one."""
    with path.open("w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(f"{' '.join(text.split()[:8])}\t{text}\t{texts[(i + 1) % len(texts)]}\n")
    return path


def train_figure(args: argparse.Namespace, texts: list[str]) -> tuple[float, GpuBusy]:
    """Cross-encoder training samples/s (``training_throughput.cross_encoder_run``) and the GPU's busy share."""
    import tempfile

    from training_throughput import cross_encoder_run

    with tempfile.TemporaryDirectory() as tmp:
        triples = write_triples(texts, Path(tmp) / "triples.tsv")
        with GpuBusy(args.device) as busy:
            sps = cross_encoder_run(args.cross_encoder, triples, "lce", args.train_batch_size, args.train_steps,
                                    args.train_max_length, Path(tmp) / "out", workers=args.workers)
    return sps, busy


def main(argv: list[str] | None = None) -> dict:
    import numpy as np

    from rankwise.rerank.cross_encoder import CrossEncoderReranker
    from rankwise.retrieval.batching import BatchingConfig
    from rankwise.retrieval.encoder import Encoder
    from scale import synthetic_texts

    args = parse_args(argv)
    peak = matmul_peak(args.device)
    texts = synthetic_texts(args.docs, 0)
    encoder = Encoder(args.encoder, device=args.device, batch_size=args.batch_size,
                      batching=BatchingConfig(max_tokens=args.max_tokens))
    encoder.encode_docs(texts[: min(256, len(texts))])  # warm-up
    with GpuBusy(args.device) as enc_busy:
        t0 = time.perf_counter()
        vectors = encoder.encode_docs(texts)
        enc_s = time.perf_counter() - t0
    tokens = int(sum(len(x) for x in encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"]))
    params = sum(p.numel() for p in encoder.model.parameters())
    mfu = 2 * params * tokens / enc_s / peak
    t0 = time.perf_counter()
    encoder.model.encode(texts, batch_size=min(args.batch_size, 128), convert_to_numpy=True)
    st_s = time.perf_counter() - t0

    reranker = CrossEncoderReranker(args.cross_encoder, device=args.device, batch_size=args.batch_size,
                                    batching=BatchingConfig(max_tokens=args.max_tokens))
    n_pairs = args.pairs or args.docs
    pairs = [("what is the airflow over a wing", t) for t in texts[:n_pairs]]
    t0 = time.perf_counter()
    reranker.score_pairs(pairs)
    ce_s = time.perf_counter() - t0

    import faiss

    rng = np.random.default_rng(0)
    base = rng.standard_normal((args.vectors, vectors.shape[1]), dtype=np.float32)
    index = faiss.IndexFlatIP(base.shape[1])
    on_gpu = args.device.startswith("cuda") and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    if on_gpu:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(base)
    queries = vectors[: min(len(vectors), 10_000)]
    t0 = time.perf_counter()
    index.search(queries, 10)
    faiss_qps = len(queries) / (time.perf_counter() - t0)
    train_sps, train_busy = train_figure(args, texts) if args.train_steps > 0 else (None, GpuBusy("cpu"))

    result = {
        "command": command_line(), "machine": machine(), "device": args.device, "matmul_peak_flops": peak,
        "encode_docs_per_s": len(texts) / enc_s, "encode_mfu": mfu, "st_encode_docs_per_s": len(texts) / st_s,
        "cross_encoder_pairs_per_s": n_pairs / ce_s, "faiss_flat_qps": faiss_qps, "faiss_on_gpu": on_gpu,
        "faiss_vectors": args.vectors, "encode_gpu_busy": enc_busy.share,
        "train_samples_per_s": train_sps, "train_gpu_busy": train_busy.share, "train_steps": args.train_steps,
        "train_batch_size": args.train_batch_size,
    }
    print(f"command: {result['command']}")
    print(f"machine: {machine_line(result['machine'])}; device {args.device}; matmul peak {peak / 1e12:.2f} TFLOP/s")
    print("| figure | value |\n|---|---|")
    print(f"| encoding (rankwise) | {result['encode_docs_per_s']:.0f} docs/s, MFU {mfu:.1%}, GPU busy "
          f"{enc_busy.text()} |")
    print(f"| encoding (SentenceTransformer.encode) | {result['st_encode_docs_per_s']:.0f} docs/s |")
    print(f"| cross-encoder | {result['cross_encoder_pairs_per_s']:.0f} pairs/s |")
    print(f"| FAISS flat search, {args.vectors} vectors{' (GPU)' if on_gpu else ''} | {faiss_qps:.0f} q/s |")
    if train_sps is not None:
        print(f"| cross-encoder training, batch {args.train_batch_size}, {args.train_steps} steps | "
              f"{train_sps:.1f} samples/s, GPU busy {train_busy.text()} |")
    write_json(args.json_out, result)
    return result


if __name__ == "__main__":
    main()
