"""ONNX Runtime against torch, measured in the same run: encoding, cross-encoder, listwise window, MFU, size, RSS.

- Encoding the SciFact corpus (first ``--docs``) with all-MiniLM-L6-v2: docs/s of the torch
  backend, ONNX fp32 and ONNX int8 (``Encoder(backend=...)``, same sorted-by-length batches). Each
  variant runs in its own child process, alternating over ``--rounds``, so its peak RSS
  (``VmHWM``) is its own; the export is made (or found in the cache) before any timing.
- Model FLOPs utilization: the encoder's FLOPs (2 x linear weights x real tokens, plus attention's
  4 x layers x hidden x tokens^2 per text) per second, against the float32 peak of a 4096^3 torch
  matmul measured in the same run.
- int8 / fp32 ONNX file size.
- Cross-encoder pairs/s (SciFact test queries with corpus documents): torch vs ONNX int8 (and fp32).
- SmolLM2-135M-Instruct listwise window latency (FIRST: one forward pass over a ``--window``-passage
  prompt): torch vs ONNX fp32 and int8 and, where OpenVINO is installed, the OpenVINO engine in fp32 and
  (on CPUs with AMX or AVX512-BF16) bf16 -- the measurement that decides which OpenVINO variants the LLM
  rerankers are offered (``--unchunked``: also the ONNX graphs without the CPU's chunked attention, in
  the same rotation).

    RANKWISE_DATA=../shared/data/beir RANKWISE_MODELS=/work/models HF_HUB_OFFLINE=1 \\
        python bench/onnx_speed.py --docs 5183 --ce-model /work/exp/ce-lce128-e6

Dense nDCG@10 with ONNX is measured by the pipeline itself (printed at the end):
``rankwise beir scifact --retriever dense --backend onnx|onnx-int8``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import CpuShare, alternate, command_line, log, machine, machine_line, median, write_json  # noqa: E402

ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
LLM = "SmolLM2-135M-Instruct"
VARIANTS = {"torch": "torch", "onnx fp32": "onnx", "onnx int8": "onnx-int8"}  # variant -> backend


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=5183, help="SciFact documents to encode (default: all 5183)")
    p.add_argument("--model", default=ENCODER)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds per figure (median reported)")
    p.add_argument("--ce-model", default=None, help="cross-encoder path (default: made from all-MiniLM-L6-v2)")
    p.add_argument("--pairs", type=int, default=512)
    p.add_argument("--llm", default=LLM)
    p.add_argument("--window", type=int, default=20, help="passages in the listwise window")
    p.add_argument("--windows", type=int, default=3, help="listwise windows (a different test query and passages each), each timed once per backend")
    p.add_argument("--unchunked", action="store_true",
                   help="listwise: also time the ONNX graphs without the CPU's chunked attention")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: encode, ce, llm")
    p.add_argument("--json-out")
    p.add_argument("--_encode", nargs=3, metavar=("VARIANT", "TEXTS", "RESULT"), help=argparse.SUPPRESS)
    return p.parse_args()


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def encode_child(args: argparse.Namespace) -> None:
    """In a child: load the encoder of one variant, encode the texts, write docs/s and peak RSS."""
    from rankwise.retrieval.encoder import Encoder

    variant, texts_file, result = args._encode
    backend = VARIANTS[variant]
    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))
    encoder = Encoder(args.model, backend=backend, batch_size=args.batch_size)
    encoder.encode_docs(texts[: args.batch_size])  # warm-up
    with CpuShare() as share:
        t = time.perf_counter()
        vectors = encoder.encode_docs(texts)
        seconds = time.perf_counter() - t
    out = Path(result)
    import numpy as np

    np.save(out.with_suffix(".npy"), vectors)
    out.write_text(json.dumps({"docs_per_s": len(texts) / seconds, "seconds": seconds, "peak_rss": peak_rss(),
                               "others": share.others}), encoding="utf-8")


def matmul_peak(n: int = 4096, repeats: int = 3) -> float:
    """float32 GFLOP/s of an ``n``^3 torch matmul (best of ``repeats``)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def encoder_flops(model: str, texts: list[str], batch_size: int) -> float:
    """FLOPs of encoding ``texts``: 2 x linear weights x real tokens + attention (4 x layers x hidden x T^2)."""
    from transformers import AutoConfig, AutoTokenizer

    from rankwise.retrieval.backend.sources import local_folder

    folder = local_folder(model)
    config, tokenizer = AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    linear = layers * (4 * h * h + 2 * h * inter)
    lengths = [len(x) for x in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    return float(sum(2 * linear * n + 4 * layers * h * n * n for n in lengths))


def bench_encoding(args: argparse.Namespace, result: dict) -> None:
    import tempfile

    import numpy as np

    from rankwise.eval.datasets import resolve_dataset
    from rankwise.retrieval.encoder import Encoder

    data = resolve_dataset("scifact", progress=False)
    texts = [doc.full_text for _, doc in zip(range(args.docs), data.corpus)]
    for backend in VARIANTS.values():  # exports made (or found) before any timing
        if backend != "torch":
            encoder = Encoder(args.model, backend=backend)
    files = encoder.export.manifest["files"]
    size_ratio = files["model.int8.onnx"]["bytes"] / files["model.onnx"]["bytes"]
    peak = matmul_peak()
    flops = encoder_flops(args.model, texts, args.batch_size)
    log(f"float32 matmul peak {peak:.1f} GFLOP/s; encoding {len(texts)} docs = {flops / 1e12:.2f} TFLOP")
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="rankwise-onnx-bench-") as tmp:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        names = list(VARIANTS)
        vectors = {}
        for r in range(args.rounds):
            for name in names[r % 3:] + names[: r % 3]:
                out = Path(tmp) / f"{name.replace(' ', '-')}.json"
                cmd = [sys.executable, __file__, "--model", args.model, "--batch-size", str(args.batch_size),
                       "--_encode", name, str(texts_file), str(out)]
                subprocess.run(cmd, check=True)
                runs[name].append(json.loads(out.read_text()))
                vectors[name] = np.load(out.with_suffix(".npy"))
                log(f"round {r + 1} {name:<10} {runs[name][-1]['docs_per_s']:7.1f} docs/s, peak RSS "
                    f"{runs[name][-1]['peak_rss'] / 2**20:.0f} MiB (others {runs[name][-1]['others']:.0%})")
    base = median([x["docs_per_s"] for x in runs["torch"]])
    rows = {}
    for name in names:
        rate = median([x["docs_per_s"] for x in runs[name]])
        cos = (vectors["torch"] * vectors[name]).sum(1)
        rows[name] = {"docs_per_s": rate, "ratio": rate / base, "mfu": flops / len(texts) * rate / (peak * 1e9),
                      "peak_rss_mib": max(x["peak_rss"] for x in runs[name]) / 2**20,
                      "max_abs_diff": float(np.abs(vectors["torch"] - vectors[name]).max()),
                      "min_cosine": float(cos.min())}
    result["encoding"] = {"docs": len(texts), "matmul_peak_gflops": peak, "int8_size_ratio": size_ratio,
                          "variants": rows}
    print(f"\nSciFact corpus encoding, {len(texts)} docs, {args.model}, batch {args.batch_size}; "
          f"float32 matmul peak {peak:.1f} GFLOP/s")
    print("| variant | docs/s | ratio | MFU | peak RSS MiB | RSS ratio | max abs diff | min cosine |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['docs_per_s']:.1f} | {row['ratio']:.2f} | {row['mfu']:.1%} | {row['peak_rss_mib']:.0f} "
              f"| {row['peak_rss_mib'] / rows['torch']['peak_rss_mib']:.2f} | {row['max_abs_diff']:.1e} "
              f"| {row['min_cosine']:.4f} |")
    print(f"int8 / fp32 file size: {size_ratio:.3f} (target <= 0.30); fp32 ratio target >= 1.1, int8 >= 2.5")


def bench_cross_encoder(args: argparse.Namespace, result: dict) -> None:
    import tempfile

    from rankwise.eval.datasets import resolve_dataset
    from rankwise.rerank.cross_encoder import CrossEncoderReranker, init_cross_encoder

    tmp = tempfile.TemporaryDirectory(prefix="rankwise-onnx-ce-")
    model = args.ce_model or str(init_cross_encoder(ENCODER, Path(tmp.name) / "ce", max_length=256))
    data = resolve_dataset("scifact", progress=False)
    queries = list(data.queries("test").values())
    docs = [doc.full_text for _, doc in zip(range(args.pairs), data.corpus)]
    pairs = [(queries[i % len(queries)], d) for i, d in enumerate(docs)]
    rerankers = {"torch": CrossEncoderReranker(model, device="cpu"),
                 "onnx fp32": CrossEncoderReranker(model, backend="onnx"),
                 "onnx int8": CrossEncoderReranker(model, backend="onnx-int8")}
    rates, _ = alternate({n: (lambda r=r: r.score_pairs(pairs)) for n, r in rerankers.items()}, args.rounds,
                         len(pairs), "pairs/s")
    result["cross_encoder"] = {"pairs": len(pairs), "model": model, "pairs_per_s": rates,
                               "ratio": {n: v / rates["torch"] for n, v in rates.items()}}
    print(f"\nCross-encoder, {len(pairs)} SciFact (query, document) pairs, {model}")
    print("| variant | pairs/s | ratio |\n|---|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / rates['torch']:.2f} |")
    print("target: int8 >= 2.5x torch")
    tmp.cleanup()


def bench_listwise(args: argparse.Namespace, result: dict) -> None:
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.rerank.listwise import ListwiseReranker
    from rankwise.rerank.llm import CausalLM

    data = resolve_dataset("scifact", progress=False)
    queries = list(data.queries("test").values())
    docs = [doc.full_text for _, doc in zip(range(args.window * args.windows), data.corpus)]
    lms = {"torch": CausalLM(args.llm, device="cpu", batch_size=1), "onnx fp32": CausalLM(args.llm, backend="onnx"),
           "onnx int8": CausalLM(args.llm, backend="onnx-int8")}
    if args.unchunked:  # the same graphs with the single attention operator (no query chunks on the CPU)
        from rankwise.retrieval.backend.session import OnnxSession

        for name in ("onnx fp32", "onnx int8"):
            lm = CausalLM(args.llm, backend=lms[name].backend)
            lm.engine.session = OnnxSession(lm.export.file(lm.backend), device="cpu", backend=lm.backend)
            lms[f"{name} unchunked"] = lm
    lms.update(_openvino_lms(args.llm))
    reranker = ListwiseReranker(lms["torch"], window=args.window, stride=min(10, args.window))
    # window i: test query i over corpus documents [i * window, (i + 1) * window)
    prompts = [reranker.window_prompt(queries[i], docs[i * args.window:(i + 1) * args.window])
               for i in range(args.windows)]
    ids = reranker.label_ids
    tokens = [lms["torch"].n_tokens(p) for p in prompts]
    for lm in lms.values():
        lm.next_token_logits([prompts[0]], ids)  # warm-up
    seconds: dict[str, list[float]] = {n: [] for n in lms}
    logits: dict[str, list[np.ndarray]] = {n: [] for n in lms}
    names = list(lms)
    for w, prompt in enumerate(prompts):
        for name in names[w % len(names):] + names[: w % len(names)]:  # each variant first in turn
            start = time.perf_counter()
            logits[name].append(lms[name].next_token_logits([prompt], ids)[0])
            seconds[name].append(time.perf_counter() - start)
            log(f"window {w + 1} {name:<10} {seconds[name][-1]:6.2f} s")
    latency = {n: median(v) for n, v in seconds.items()}
    # FIRST ranks each window by these identifier logits: how far each backend's order is from torch's
    agreement = {n: float(np.mean([_kendall_tau(a, b) for a, b in zip(logits["torch"], v)])) for n, v in logits.items()}
    top1 = {n: int(sum(np.argmax(a) == np.argmax(b) for a, b in zip(logits["torch"], v))) for n, v in logits.items()}
    result["listwise"] = {"model": args.llm, "window": args.window, "windows": args.windows,
                          "prompt_tokens": tokens, "latency_s": latency,
                          "speedup": {n: latency["torch"] / v for n, v in latency.items()},
                          "kendall_tau_vs_torch": agreement, "same_first_vs_torch": top1}
    print(f"\nListwise (FIRST) windows of {args.window} passages, {args.windows} windows of "
          f"{min(tokens)}-{max(tokens)} prompt tokens, {args.llm}")
    print("| variant | median latency s | speed-up | mean Kendall tau of the window order vs torch | same first |")
    print("|---|---:|---:|---:|---|")
    for name, value in latency.items():
        print(f"| {name} | {value:.2f} | {latency['torch'] / value:.2f} | {agreement[name]:.3f} "
              f"| {top1[name]} of {args.windows} |")
    print("target: onnx >= 1.5x torch")


def _openvino_lms(model: str) -> dict:
    """The OpenVINO causal-LM engine in fp32, with NNCF's int8 weights (``nncf.compress_weights``, INT8_ASYM:
    the int8 that needs no calibration) and, where the CPU computes it, in bf16 (none without the openvino
    extra). Only bf16 is offered to the rerankers, so the other engines replace an ONNX one's here."""
    try:
        import nncf
        import openvino
    except ImportError:
        return {}
    from rankwise.rerank.llm import CausalLM
    from rankwise.rerank.lm_engines import OpenVinoLMEngine
    from rankwise.retrieval.backend.openvino import OpenVinoModel, cpu_capabilities
    from rankwise.retrieval.backend.value import OPENVINO

    fp32 = CausalLM(model, backend="onnx")
    fp32.engine = OpenVinoLMEngine(model, OPENVINO)
    weights = copy.copy(fp32)  # the same model and tokenizer; an engine of its own with the compressed graph
    weights.engine = copy.copy(fp32.engine)
    compressed = nncf.compress_weights(openvino.Core().read_model(str(fp32.engine.session.path)),
                                       mode=nncf.CompressWeightsMode.INT8_ASYM)
    with tempfile.TemporaryDirectory() as tmp:
        openvino.save_model(compressed, f"{tmp}/model.xml", compress_to_fp16=False)
        weights.engine.session = OpenVinoModel(f"{tmp}/model.xml")
    lms = {"openvino fp32": fp32, "openvino int8 weights": weights}
    if "BF16" in cpu_capabilities(openvino):
        lms["openvino bf16"] = CausalLM(model, backend="openvino-bf16")
    return lms


def _kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau between two score vectors (ties count as disagreement)."""
    i, j = np.triu_indices(len(a), k=1)
    return float(np.mean(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])))


def main() -> None:
    args = parse_args()
    if args._encode:
        encode_child(args)
        return
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    result: dict = {"command": command_line(), "machine": machine()}
    print(f"command: {result['command']}\nmachine: {machine_line(result['machine'])}")
    if "encode" not in skip:
        bench_encoding(args, result)
    if "ce" not in skip:
        bench_cross_encoder(args, result)
    if "llm" not in skip:
        bench_listwise(args, result)
    print("\nDense nDCG@10 on SciFact (run separately; compare with torch's 0.6451):")
    for flags in ("", " --backend onnx", " --backend onnx-int8", " --backend openvino-bf16"):
        print(f"  rankwise beir scifact --retriever dense{flags} --json")
    write_json(args.json_out, result)


if __name__ == "__main__":
    main()
