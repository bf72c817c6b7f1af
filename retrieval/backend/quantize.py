"""Dynamic int8 quantization with ``onnxruntime.quantization``: int8 weights, activations quantized per batch.

Only MatMuls with a constant weight (``MatMulConstBOnly``), embedding lookups (``Gather``) and, in
a fused BERT graph, the fused Attention's input projection (``QAttention``; scores and softmax stay
in float) and embedding layer are quantized, weights per output channel; a causal LM's
``GroupQueryAttention`` stays float. Quantizing the activation-by-activation MatMuls of attention
(Q.K^T, P.V) costs far more accuracy than it saves time (min cosine to torch 0.65-0.90 on
all-MiniLM-L6-v2 SciFact documents, against 0.99 without them); quantizing the embedding table
(Gather) is what brings the file to about a quarter of fp32 and costs almost nothing (mean cosine
0.9936 against 0.9938). ``reduce_range`` (7-bit weights) is what ONNX Runtime advises for CPUs
without VNNI, whose u8 x s8 kernels can saturate; measured here (2-core AMD EPYC) it lowered the
cosine to torch (mean 0.9924 against 0.9936) and was no faster, so it is off by default.

A causal LM quantizes its MatMuls only (``op_types``, :data:`rankwise.rerank.onnx.causal_lm.OP_TYPES`): its output head is usually
tied to the embedding table, and the graph reads the identifier or score-token logits through a
Gather of that table, so quantizing Gather rounds the very logits the rerankers compare (per tensor,
over a 49k-token vocabulary). On 20 SciFact FIRST windows of SmolLM2-135M it put the top
identifier where torch puts it in 15% of windows, against 100% without it. ``keep_float`` leaves
MatMuls in float by the torch module they came from (the dynamo exporter's
``pkg.torch.onnx.name_scopes`` node metadata): a causal LM's MLP down projections
(:mod:`rankwise.rerank.onnx.smooth`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from rankwise.retrieval.files import atomic_path
from rankwise.retrieval.extras import requires

OP_TYPES = ("MatMul", "Gather", "Attention", "EmbedLayerNormalization")


def quantize_int8(src: Path, dst: Path, *, reduce_range: bool = False, per_channel: bool = True,
                  op_types: tuple[str, ...] = OP_TYPES, keep_float: tuple[str, ...] = ()) -> Path:
    """Write the dynamically int8-quantized ``src`` to ``dst`` (atomically): nodes of ``op_types``, except
    the MatMuls of modules whose path ends with one of ``keep_float``."""
    requires("onnxruntime", "onnx", "The ONNX backend")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = nodes_of_modules(src, keep_float) if keep_float else []
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing" warnings on every call
    try:
        with atomic_path(dst) as tmp:
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=reduce_range, op_types_to_quantize=list(op_types),
                             nodes_to_exclude=excluded,
                             extra_options={"MatMulConstBOnly": True,
                                            # the fused contrib ops' outputs have no inferred type: float
                                            "DefaultTensorType": 1})
    finally:
        root.setLevel(level)
    return dst


def nodes_of_modules(path: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Names of the MatMul nodes in ``path`` exported from a torch module whose path ends with one of ``suffixes``."""
    import ast

    onnx = requires("onnx", "onnx", "The ONNX backend")

    graph = onnx.load(str(path), load_external_data=False).graph
    names = []
    for node in graph.node:
        value = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if node.op_type != "MatMul" or value is None:
            continue
        scopes = ast.literal_eval(value)  # the module paths from the root down, e.g. [..., 'decoder.layers.0.mlp.down_proj', 'linear_6']
        if any(s == suffix or s.endswith("." + suffix) for s in scopes for suffix in suffixes):
            names.append(node.name)
    return names
