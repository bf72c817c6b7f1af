"""ONNX Runtime graph optimization, saved to a file (ONNX Runtime would otherwise redo it at every load).

``basic`` (constant folding, redundant-node removal) keeps the graph portable to any execution
provider; ``extended`` adds ONNX Runtime's fusions (LayerNorm, GELU, MatMul+Add, attention where
it matches), which are tied to the provider they were made for -- here the CPU provider.
"""

from __future__ import annotations

from pathlib import Path

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.files import atomic_path
from rankwise.retrieval.extras import requires

LEVELS = ("basic", "extended")


def optimize_graph(src: Path, dst: Path, level: str = "extended") -> Path:
    """Write ``src`` optimized at ``level`` to ``dst`` (atomically) for the CPU provider."""
    ort = requires("onnxruntime", "onnx", "The ONNX backend")

    if level not in LEVELS:
        raise InputError(f"unknown optimization level {level!r}; choose from {', '.join(LEVELS)}", field="optimize")
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if level == "basic"
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    with atomic_path(dst) as tmp:
        options.optimized_model_filepath = str(tmp.with_suffix(".onnx"))
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        Path(options.optimized_model_filepath).replace(tmp)
    return dst


# Hugging Face model types whose encoder layers ONNX Runtime's BERT fusions recognise.
FUSABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert"}


def fusable(config: object) -> tuple[str, int, int] | None:
    """``(optimizer model type, heads, hidden size)`` for a config ONNX Runtime's transformer optimizer fuses."""
    kind = FUSABLE.get(getattr(config, "model_type", ""))
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    return (kind, int(heads), int(hidden)) if kind and heads and hidden else None


def fuse_transformer(src: Path, dst: Path, fusion: tuple[str, int, int]) -> dict[str, int]:
    """Write ``src`` with ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization,
    EmbedLayerNormalization, BiasGelu) to ``dst`` atomically; returns the fused operator counts.

    The fused operators are ONNX Runtime contrib ops with CPU and CUDA kernels, so the graph stays
    portable across both providers. Raises ``ValueError`` when no attention was fused (the caller
    keeps the plain graph then).
    """
    import logging

    requires("onnxruntime", "onnx", "The ONNX backend")
    from onnxruntime.transformers.optimizer import optimize_model

    kind, heads, hidden = fusion
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # shape-inference chatter
    try:
        model = optimize_model(str(src), model_type=kind, num_heads=heads, hidden_size=hidden, use_gpu=False)
    finally:
        root.setLevel(level)
    counts = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    if not counts.get("Attention"):
        raise ValueError(f"no attention fused ({counts})")
    with atomic_path(dst) as tmp:
        model.save_model_to_file(str(tmp))
    return counts


def count_ops(path: Path, op_types: tuple[str, ...]) -> dict[str, int]:
    """How many nodes of each of ``op_types`` the graph in ``path`` has (those present)."""
    onnx = requires("onnx", "onnx", "The ONNX backend")

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    counts = {op: sum(n.op_type == op for n in nodes) for op in op_types}
    return {op: n for op, n in counts.items() if n}
