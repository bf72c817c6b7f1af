"""ONNX Runtime graph optimization, saved to a file (ONNX Runtime would otherwise redo it at every load).

``basic`` (constant folding, redundant-node removal) keeps the graph portable to any execution
provider; ``extended`` adds ONNX Runtime's fusions (LayerNorm, GELU, MatMul+Add, attention where
it matches), which are tied to the provider they were made for -- here the CPU provider.
"""

from __future__ import annotations

from pathlib import Path

from retrieval.errors import InputError
from retrieval.files import atomic_path

LEVELS = ("basic", "extended")


def optimize_graph(src: Path, dst: Path, level: str = "extended") -> Path:
    """Write ``src`` optimized at ``level`` to ``dst`` (atomically) for the CPU provider."""
    import onnxruntime as ort

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
