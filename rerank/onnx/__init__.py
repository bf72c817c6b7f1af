"""ONNX Runtime specifics of the causal-LM kind (:data:`rankwise.rerank.lm_engines.CAUSAL_LM`), on top of the
shared :mod:`rankwise.retrieval.backend`.

- :mod:`~rerank.onnx.causal_lm`: loading, probe, settings and calibration prompts of the ``causal-lm`` export;
- :mod:`~rerank.onnx.graph`: the exported module (logits gathered at given positions and token ids);
- :mod:`~rerank.onnx.features`: the graph's inputs (left-padded prompts, per-position attention masks);
- :mod:`~rerank.onnx.attention`: attention exported as the fused ``GroupQueryAttention``;
- :mod:`~rerank.onnx.chunked_attention`: one prompt's attention in query chunks on the CPU;
- :mod:`~rerank.onnx.smooth`: SmoothQuant (Xiao et al., 2023) before int8 quantization.
"""
