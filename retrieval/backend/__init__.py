"""The ONNX Runtime backend shared by bi-encoders, cross-encoders and causal LMs.

Kept apart from the models (as sentence-transformers keeps its ``backend/`` package): the models
call :func:`retrieval.backend.cache.exported` for a checked export of their weights and
:class:`retrieval.backend.session.OnnxSession` to run it. One module per step:

- :mod:`~retrieval.backend.sources`: loading the torch model of each kind, fingerprinting its files;
- :mod:`~retrieval.backend.graphs`: the modules exported (pooling and normalization inside the
  encoder graph, the score inside the cross-encoder graph, gathered logits for causal LMs);
- :mod:`~retrieval.backend.export`: ``torch.onnx`` export with dynamic axes;
- :mod:`~retrieval.backend.optimize` / :mod:`~retrieval.backend.quantize`: ONNX Runtime graph
  optimization and dynamic int8 quantization;
- :mod:`~retrieval.backend.features`: model inputs as NumPy arrays (tokenization, masks);
- :mod:`~retrieval.backend.parity`: the parity check run at export time;
- :mod:`~retrieval.backend.session`: ``InferenceSession`` with the CUDA provider (fp16) when present;
- :mod:`~retrieval.backend.cache`: exports cached per model fingerprint, checked before loading.
"""

from __future__ import annotations

KINDS = ("encoder", "cross-encoder", "causal-lm")
BACKENDS = ("torch", "onnx")


def check_backend(backend: str, int8: bool) -> None:
    """Refuse an unknown backend, or int8 without ONNX (an :class:`~retrieval.errors.InputError`)."""
    from retrieval.errors import InputError

    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}", field="backend")
    if int8 and backend != "onnx":
        raise InputError("int8 needs backend='onnx'", field="int8")
