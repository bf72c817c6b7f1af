"""Dynamic int8 quantization with ``onnxruntime.quantization``: int8 weights, activations quantized per batch.

Only MatMuls with a constant weight (``MatMulConstBOnly``), embedding lookups (``Gather``) and, in
a fused BERT graph, the fused Attention's input projection (``QAttention``; scores and softmax stay
in float) and embedding layer are quantized, weights per output channel; a causal LM's
``GroupQueryAttention`` stays float. Quantizing the activation-by-activation MatMuls of attention
(Q.K^T, P.V) costs far more accuracy than it saves time (min cosine to torch 0.65-0.90 on
all-MiniLM-L6-v2 SciFact documents, against 0.99 without them); quantizing the embedding table
(Gather) is what brings the file to about a quarter of fp32 and costs almost nothing (mean cosine
0.9936 against 0.9938). ``reduce_range`` (7-bit weights) is what ONNX Runtime advises for CPUs
without VNNI, whose u8 x s8 kernels can saturate; measured here (AVX2, no VNNI) it lowered the
cosine to torch (mean 0.9924 against 0.9936) and was no faster, so it is off by default.
"""

from __future__ import annotations

import logging
from pathlib import Path

from retrieval.files import atomic_path

OP_TYPES = ("MatMul", "Gather", "Attention", "EmbedLayerNormalization")


def quantize_int8(src: Path, dst: Path, *, reduce_range: bool = False, per_channel: bool = True) -> Path:
    """Write the dynamically int8-quantized ``src`` to ``dst`` (atomically)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing" warnings on every call
    try:
        with atomic_path(dst) as tmp:
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=reduce_range, op_types_to_quantize=list(OP_TYPES),
                             extra_options={"MatMulConstBOnly": True,
                                            # the fused contrib ops' outputs have no inferred type: float
                                            "DefaultTensorType": 1})
    finally:
        root.setLevel(level)
    return dst
