"""ONNX Runtime specifics of the causal-LM rerankers, on top of the shared :mod:`rankwise.retrieval.backend`.

- :mod:`~rerank.onnx.causal_lm`: the ``causal-lm`` export kind (probe, settings, calibration prompts);
- :mod:`~rerank.onnx.attention`: attention exported as the fused ``GroupQueryAttention``;
- :mod:`~rerank.onnx.chunked_attention`: one prompt's attention in query chunks on the CPU;
- :mod:`~rerank.onnx.smooth`: SmoothQuant (Xiao et al., 2023) before int8 quantization.

Importing this package registers the ``causal-lm`` kind with :func:`rankwise.retrieval.backend.register_kind`.
"""

from __future__ import annotations

from typing import Any

from rankwise.retrieval.backend import register_kind


def _prepare_causal_lm(model: str, max_length: int | None) -> Any:
    from rankwise.rerank.onnx.causal_lm import prepare_causal_lm  # torch and transformers only when exporting

    return prepare_causal_lm(model, max_length)


register_kind("causal-lm", _prepare_causal_lm)
