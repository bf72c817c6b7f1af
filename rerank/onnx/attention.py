"""A causal LM's attention exported as ONNX Runtime's fused ``GroupQueryAttention`` (com.microsoft).

The plain export writes attention as ``MatMul -> Add(mask) -> Softmax -> MatMul`` over the full
``seq x seq`` score matrix of every head: on a 2,233-token FIRST window of SmolLM2-135M that is
about half of ONNX Runtime's time (92 ms a layer against 45 ms for torch's causal SDPA). The fused
operator computes causal attention without materialising the masked half, reads the grouped K/V
heads without repeating them, and takes our mask as ``attention_bias``: every mask the runtime
builds (left padding, the shared-prefix tails of :meth:`rankwise.rerank.llm.CausalLM.iter_tail_logits`) only
ever removes keys from the causal set, so causal attention plus that bias is exactly the model's
attention.

How: a torch custom op ``rankwise::gqa_attention`` (torch's SDPA inside, so tracing and parity use
the same maths) is installed as the model's attention implementation for the export, and the dynamo
exporter translates it to the contrib operator. A model whose attention needs what the operator
lacks here (sliding windows, logit soft-capping, attention sinks, dropout, a different key and value
width) raises :class:`Unsupported` during the trace, and the export falls back to the plain graph.

On the CPU a session runs this graph with one prompt's queries in chunks
(:mod:`rankwise.rerank.onnx.chunked_attention`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from rankwise.rerank.onnx.chunked_attention import OP_TYPE  # one name for the operator, kept beside the CPU rewrite
from rankwise.retrieval.extras import requires

IMPLEMENTATION = "rankwise_gqa"


class Unsupported(ValueError):
    """The model's attention cannot be written as ``GroupQueryAttention``."""


@torch.library.custom_op("rankwise::gqa_attention", mutates_args=())
def gqa_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor,
                  num_heads: int, kv_heads: int, scale: float) -> torch.Tensor:
    """Grouped-query attention: ``query [b, s, heads*d]``, ``key``/``value [b, s, kv_heads*d]``, additive
    ``bias [b, 1, s, s]`` -> ``[b, s, heads*d]`` (the contrib operator's layout)."""
    b, s, _ = query.shape
    q = query.view(b, s, num_heads, -1).transpose(1, 2)
    k = key.view(b, s, kv_heads, -1).transpose(1, 2)
    v = value.view(b, s, kv_heads, -1).transpose(1, 2)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale,
                                                           enable_gqa=kv_heads != num_heads)
    return out.transpose(1, 2).reshape(b, s, -1).contiguous()


@gqa_attention.register_fake
def _(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor,
      num_heads: int, kv_heads: int, scale: float) -> torch.Tensor:
    return torch.empty_like(query)


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                      **kwargs: Any) -> tuple[torch.Tensor, None]:
    """A Hugging Face attention implementation (``query [b, heads, s, d]``, ``key/value [b, kv_heads, s, d]``)
    that calls :func:`gqa_attention`; raises :class:`Unsupported` for what the operator cannot do."""
    for name in ("sliding_window", "softcap", "s_aux"):
        if kwargs.get(name) is not None:
            raise Unsupported(f"attention with {name}")
    if dropout:
        raise Unsupported("attention dropout")
    if attention_mask is None or attention_mask.dim() != 4 or attention_mask.shape[1] != 1:
        raise Unsupported("no [batch, 1, seq, seq] attention mask")
    if key.shape[-1] != query.shape[-1] or value.shape[-1] != query.shape[-1]:
        raise Unsupported("query, key and value widths differ")
    b, heads, s, d = query.shape
    kv_heads = key.shape[1]
    if heads % kv_heads:
        raise Unsupported(f"{heads} query heads over {kv_heads} key/value heads")
    scale = float(scaling) if scaling is not None else d ** -0.5
    flat = [t.transpose(1, 2).reshape(b, s, -1) for t in (query, key, value)]
    out = torch.ops.rankwise.gqa_attention(*flat, attention_mask.to(query.dtype), heads, kv_heads, scale)
    return out.view(b, s, heads, d), None


def _schema() -> Any:
    """The contrib operator's signature, which onnx itself does not know (its inputs in order)."""
    requires("onnx", "onnx", "The ONNX backend")
    from onnx.defs import OpSchema

    param, optional = OpSchema.FormalParameter, OpSchema.FormalParameterOption.Optional
    inputs = [("query", "T", False), ("key", "T", False), ("value", "T", False), ("past_key", "T", True),
              ("past_value", "T", True), ("seqlens_k", "M", False), ("total_sequence_length", "M", False),
              ("cos_cache", "T", True), ("sin_cache", "T", True), ("position_ids", "P", True),
              ("attention_bias", "T", True)]
    return OpSchema(
        OP_TYPE, "com.microsoft", 1,
        inputs=[param(n, t, param_option=optional) if opt else param(n, t) for n, t, opt in inputs],
        outputs=[param("output", "T"), param("present_key", "T"), param("present_value", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], ""),
                          ("P", ["tensor(int64)"], "")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, ""),
                    OpSchema.Attribute("kv_num_heads", OpSchema.AttrType.INT, ""),
                    OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "")])


def translations() -> dict[Any, Any]:
    """The dynamo exporter's ``custom_translation_table`` entry for :func:`gqa_attention`."""
    onnxscript = requires("onnxscript", "onnx", "The ONNX backend")
    from onnxscript import opset18 as op

    gqa = onnxscript.values.Op(onnxscript.values.Opset("com.microsoft", 1), OP_TYPE, _schema())

    def gqa_onnx(query: Any, key: Any, value: Any, bias: Any, num_heads: int, kv_heads: int, scale: float) -> Any:
        shape = op.Shape(query)
        batch, seq = op.Slice(shape, [0], [1]), op.Slice(shape, [1], [2])
        total = op.Cast(op.Squeeze(seq, [0]), to=6)  # int32 scalar
        seqlens_k = op.Cast(op.Expand(op.Sub(seq, [1]), batch), to=6)  # no past: every row holds seq keys
        out, _, _ = gqa(query, key, value, None, None, seqlens_k, total, None, None, None, bias,
                        num_heads=num_heads, kv_num_heads=kv_heads, scale=scale)
        return out

    return {torch.ops.rankwise.gqa_attention.default: gqa_onnx}


@contextlib.contextmanager
def attention_implementation(model: Any, name: str) -> Iterator[None]:
    """:func:`rankwise.retrieval.backend.export.attention_implementation`, with :data:`IMPLEMENTATION` registered
    with transformers first when that is the one asked for."""
    from rankwise.retrieval.backend.export import attention_implementation as use

    if name == IMPLEMENTATION:
        from transformers import AttentionInterface

        AttentionInterface.register(IMPLEMENTATION, attention_forward)
    with use(model, name):
        yield
