"""Building an export folder: load the torch model, export, quantize, optimize, check parity.

Each :class:`~rankwise.retrieval.backend.kind.ModelKind`'s ``prepare`` gives ``(graph module, example inputs, dynamic axes, settings, probe
runner)``; :func:`build` does the rest the same way for all three. The folder gets ``model.onnx``
(fp32), ``model.int8.onnx`` when asked, the tokenizer files and the settings the runtime needs;
:mod:`rankwise.retrieval.backend.cache` writes the manifest last.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.retrieval.backend.kind import ModelKind
from rankwise.retrieval.backend.value import ONNX, ONNX_INT8, Backend
from rankwise.retrieval.backend.export import export_graph
from rankwise.retrieval.backend.features import text_features
from rankwise.retrieval.backend.parity import PROBE_QUERIES, PROBE_TEXTS, compare, require
from rankwise.retrieval.backend.session import OnnxSession
from rankwise.retrieval.errors import InputError

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclasses.dataclass
class Prepared:
    """What one kind hands to :func:`build`."""

    graph: Any
    tokenizer: Any
    inputs: dict[str, Any]  # example inputs (torch tensors)
    dynamic: dict[str, tuple[int, ...]]
    output: str
    settings: dict[str, Any]
    probe: dict[str, np.ndarray]  # the parity inputs
    reference: np.ndarray  # what torch gives on them
    vectors: bool  # outputs are embeddings (cosine parity for int8)
    scores: Callable[[np.ndarray], np.ndarray]  # outputs -> score rows for ranking agreement
    what: str
    hf_model: Any = None  # the Hugging Face transformer inside, when ONNX Runtime can fuse its layers
    # a fused fp32 export of this kind's own (its operator counts; raises ValueError when it fails)
    fused_export: Callable[[Prepared, Path], dict[str, int]] | None = None
    # a rewrite of the graph a CPU session runs (returns how many nodes it rewrote); parity then also runs
    # each probe row alone, as the runtime does, and records the count under ``rewrite_name``
    session_rewrite: Callable[[Any], int] | None = None
    rewrite_name: str = "rewritten"
    batch_inputs: tuple[str, ...] = ()  # the probe inputs that are sliced per row when run alone
    keep_float: tuple[str, ...] = ()  # module-path suffixes whose MatMuls int8 leaves in float
    int8_ops: tuple[str, ...] | None = None  # the op types int8 quantizes (None: quantize.OP_TYPES)


def _torch_inputs(features: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in features.items()}


def _check_tokenization(st_features: dict[str, Any], ours: dict[str, np.ndarray], what: str) -> None:
    for name in ("input_ids", "attention_mask"):
        if not np.array_equal(np.asarray(st_features[name]), ours[name]):
            raise InputError(f"cannot export {what}: its sentence-transformers preprocessing is not plain "
                             f"tokenization ({name} differ), which the ONNX backend reproduces", field="model")


def prepare_encoder(model: str, max_length: int | None) -> Prepared:
    """A sentence-transformers bi-encoder: pooling and normalization inside the graph."""
    import torch

    from rankwise.retrieval.backend.graphs import EncoderGraph
    from rankwise.retrieval.backend.sources import DOC_PROMPTS, load_encoder, model_fingerprint

    st = load_encoder(model, max_length)
    fingerprint = model_fingerprint(st)  # before any tokenization: a call changes the tokenizer's padding state
    modules = [type(m).__name__ for m in st]
    what = f"encoder {model!r}"
    first = st[0]
    if not hasattr(first, "auto_model") or getattr(st, "tokenizer", None) is None or "Router" in modules:
        raise InputError(f"cannot export {what}: part {modules[0]!r} (modules {', '.join(modules)}): only a "
                         f"Hugging Face transformer followed by pooling/dense/normalize modules exports", field="model")
    prompts = st.prompts or {}
    if prompts and any(getattr(m, "include_prompt", True) is False for m in st):
        raise InputError(f"cannot export {what}: part 'Pooling' excludes prompt tokens, which needs "
                         f"sentence-transformers' own preprocessing", field="model")
    similarity = st.similarity_fn_name or "cosine"
    graph = EncoderGraph(st, normalize=similarity == "cosine").eval()
    tokenizer = st.tokenizer
    limit = st.max_seq_length
    probe = text_features(tokenizer, PROBE_TEXTS, limit)
    _check_tokenization(st.preprocess(PROBE_TEXTS), probe, what)
    with torch.inference_mode():
        reference = graph(**_torch_inputs(probe)).numpy()
    n_q = len(PROBE_QUERIES)
    settings = {
        "dim": int(st.get_embedding_dimension()), "similarity": similarity, "max_length": limit,
        "query_prompt": prompts.get("query"),
        "doc_prompt": next((prompts[p] for p in DOC_PROMPTS if p in prompts), None),
        "torch_fingerprint": fingerprint, "modules": modules,
    }
    return Prepared(graph, tokenizer, _torch_inputs(text_features(tokenizer, PROBE_TEXTS[:2], limit)),
                    {k: (0, 1) for k in probe}, "sentence_embedding_out", settings, probe, reference, True,
                    lambda out: out[:n_q] @ out[n_q:].T, what, getattr(first, "auto_model", None))


def prepare_cross_encoder(model: str, max_length: int | None) -> Prepared:
    """A sentence-transformers ``CrossEncoder``: the pair score inside the graph."""
    import torch

    from rankwise.retrieval.backend.graphs import CrossEncoderGraph
    from rankwise.retrieval.backend.sources import load_cross_encoder

    ce = load_cross_encoder(model, max_length)
    what = f"cross-encoder {model!r}"
    graph = CrossEncoderGraph(ce).eval()
    tokenizer = ce.tokenizer
    limit = int(ce.max_length) if ce.max_length else None
    docs = PROBE_TEXTS[len(PROBE_QUERIES):]
    pairs = [(q, d) for q in PROBE_QUERIES for d in docs]
    probe = text_features(tokenizer, [q for q, _ in pairs], limit, [d for _, d in pairs])
    _check_tokenization(ce.preprocess(pairs), probe, what)
    with torch.inference_mode():
        reference = graph(**_torch_inputs(probe)).numpy()
    labels = int(getattr(ce, "num_labels", 1) or 1)
    settings = {"max_length": limit, "num_labels": labels}
    example = _torch_inputs(text_features(tokenizer, PROBE_QUERIES[:2], limit, docs[:2]))
    return Prepared(graph, tokenizer, example, {k: (0, 1) for k in probe}, "score_out", settings, probe, reference,
                    False, lambda out: out.reshape(len(PROBE_QUERIES), len(docs)), what, getattr(ce, "model", None))


def build(model: str, kind: ModelKind, folder: Path, *, backend: Backend = ONNX, optimize: bool = False,
          max_length: int | None = None, reduce_range: bool = False) -> dict[str, Any]:
    """Export ``model`` into ``folder``; returns ``{"settings", "parity", "files"}`` for the manifest.

    Parity failures raise :class:`InputError` before anything is recorded, so a folder whose graph
    does not reproduce the model never gets a manifest and is never loaded.
    """
    from rankwise.retrieval.backend.optimize import optimize_graph

    prepared = kind.prepare(model, max_length)
    folder.mkdir(parents=True, exist_ok=True)
    files = [FP32_FILE] + ([INT8_FILE] if backend.int8 else [])
    fused, checked = export_fp32(prepared, folder / FP32_FILE)
    if backend.int8:
        quantize(prepared, folder / FP32_FILE, folder / INT8_FILE, reduce_range=reduce_range)
    if optimize:
        for name in files:
            optimize_graph(folder / name, folder / name)
    parity = {}
    for name in files:
        reuse = name == FP32_FILE and checked is not None and not optimize  # the fused graph, checked as is
        record = checked if reuse else check_parity(prepared, folder / name, ONNX_INT8 if name == INT8_FILE else ONNX)
        parity[record["variant"]] = record
    files += save_tokenizer(prepared.tokenizer, folder)
    return {"settings": prepared.settings, "parity": parity, "files": files, "optimized": optimize,
            "reduce_range": reduce_range, "fused": fused}


def quantize(prepared: Prepared, src: Path, dst: Path, *, reduce_range: bool = False) -> Path:
    """The int8 graph of ``src`` as this kind wants it (:mod:`rankwise.retrieval.backend.quantize`)."""
    from rankwise.retrieval.backend.quantize import OP_TYPES, quantize_int8

    return quantize_int8(src, dst, reduce_range=reduce_range, op_types=prepared.int8_ops or OP_TYPES,
                         keep_float=prepared.keep_float)


def check_parity(prepared: Prepared, file: Path, backend: Backend, *,
                 runtime: Callable[[Path], Callable[[dict[str, np.ndarray]], np.ndarray]] | None = None
                 ) -> dict[str, Any]:
    """The parity record of the graph in ``file`` against torch on the probe inputs; raises when it fails.

    ``runtime`` loads the graph for another runtime than ONNX Runtime (OpenVINO:
    :class:`rankwise.retrieval.backend.openvino.OpenVinoModel`).

    A kind with a ``session_rewrite`` (a causal LM's chunked attention, :mod:`rankwise.rerank.onnx`) is checked
    as its runtime runs it on the CPU: each probe row alone, through the rewritten graph; the fp32
    graph also as one padded batch, which keeps the graph as exported.
    """
    rewrite = prepared.session_rewrite
    if runtime is not None:
        rewrite = None
        session: Any = runtime(file)
    else:
        session = OnnxSession(file, device="cpu", backend=backend, rewrite=rewrite)
    if rewrite is not None:
        rows = prepared.batch_inputs
        alone = np.concatenate([session({k: v[i:i + 1] if k in rows else v for k, v in prepared.probe.items()})
                                for i in range(len(prepared.reference))])
        # fp32: the worse of the two ways through
        ways = [alone] if backend.precision != "fp32" else [alone, session(prepared.probe)]
        got = max(ways, key=lambda out: np.abs(out - prepared.reference).max())
    else:
        got = session(prepared.probe)
    record = compare(prepared.reference, got, precision=backend.precision, vectors=prepared.vectors,
                     scores=(prepared.scores(prepared.reference), prepared.scores(got)))
    if rewrite is not None:
        record[prepared.rewrite_name] = session.chunked
    require(record, prepared.what)
    return record


def export_fp32(prepared: Prepared, out: Path) -> tuple[dict[str, int], dict[str, Any] | None]:
    """Export the fp32 graph to ``out``; returns the fused operator counts (empty when not fused) and,
    for a fused graph, its parity record (checked here to decide the fallback).

    - A BERT-family transformer is exported by the TorchScript exporter with eager attention and
      fused by ONNX Runtime's transformer optimizer (the fused graph encodes about 1.2x faster than
      the plain one on a 2-core AVX2 CPU and quantizes to QAttention).
    - A kind with a ``fused_export`` of its own (a causal LM's ``GroupQueryAttention``, :mod:`rankwise.rerank.onnx`)
      uses it.

    Any other model -- or a fusion that fails or does not reproduce torch within the fp32 tolerance --
    gets the dynamo exporter's plain graph.
    """
    import logging

    from rankwise.retrieval.backend.export import attention_implementation
    from rankwise.retrieval.backend.optimize import fusable, fuse_transformer

    fusion = fusable(getattr(prepared.hf_model, "config", None))
    try:
        if fusion is not None:
            with attention_implementation(prepared.hf_model, "eager"):
                export_graph(prepared.graph, prepared.inputs, prepared.dynamic, prepared.output, out, prepared.what,
                             legacy=True)
            counts = fuse_transformer(out, out, fusion)
            return counts, check_parity(prepared, out, ONNX)
        if prepared.fused_export is not None:
            counts = prepared.fused_export(prepared, out)
            return counts, check_parity(prepared, out, ONNX)
    except (InputError, ValueError) as err:
        logging.getLogger(__name__).warning("%s: fused export failed (%s); exporting the plain graph",
                                            prepared.what, err)
    export_plain(prepared, out)
    return {}, None


def export_plain(prepared: Prepared, out: Path) -> Path:
    """The dynamo exporter's plain fp32 graph of ``prepared`` (no fused operators) in ``out``."""
    return export_graph(prepared.graph, prepared.inputs, prepared.dynamic, prepared.output, out, prepared.what)


def save_tokenizer(tokenizer: Any, folder: Path) -> list[str]:
    """Save the tokenizer beside the graph (each file moved in by rename); returns the file names."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=".tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        names = sorted(p.name for p in Path(tmp).iterdir() if p.is_file())
        for name in names:
            shutil.move(str(Path(tmp) / name), folder / name)
    return names
