"""The ONNX Runtime and OpenVINO backends shared by bi-encoders, cross-encoders and causal LMs.

Kept apart from the models (as sentence-transformers keeps its ``backend/`` package): the models
call :func:`rankwise.retrieval.backend.cache.exported` for a checked export of their weights and
:class:`rankwise.retrieval.backend.session.OnnxSession` to run it. One module per step:

- :mod:`~retrieval.backend.sources`: loading the torch model of each kind, fingerprinting its files;
- :mod:`~retrieval.backend.graphs`: the modules exported (pooling and normalization inside the
  encoder graph, the score inside the cross-encoder graph, gathered logits for causal LMs);
- :mod:`~retrieval.backend.export`: ``torch.onnx`` export with dynamic axes;
- :mod:`~retrieval.backend.optimize` / :mod:`~retrieval.backend.quantize`: ONNX Runtime graph
  optimization and dynamic int8 quantization;
- :mod:`~retrieval.backend.features`: model inputs as NumPy arrays (tokenization, masks);
- :mod:`~retrieval.backend.parity`: the parity check run at export time;
- :mod:`~retrieval.backend.session`: ``InferenceSession`` with the CUDA provider (fp16) when present;
- :mod:`~retrieval.backend.cache`: exports cached per model fingerprint, checked before loading;
- :mod:`~retrieval.backend.openvino` / :mod:`~retrieval.backend.calibration`: the same exports compiled
  by OpenVINO, int8 by NNCF static quantization on calibration texts (``openvino``, ``openvino-int8``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

KINDS = ("encoder", "cross-encoder", "causal-lm")
# kind -> prepare(model, max_length): :mod:`rankwise.retrieval.backend.build` adds encoder and cross-encoder,
# :mod:`rankwise.rerank.onnx` the causal LM (whose specifics live with the rerankers that run it)
PREPARE: dict[str, Callable[[str, int | None], Any]] = {}


def register_kind(kind: str, prepare: Callable[[str, int | None], Any]) -> None:
    """Add the export preparation of a model kind (a higher layer registers its own models here)."""
    PREPARE[kind] = prepare
from rankwise.retrieval.backend.value import Backend  # noqa: E402  (the backend value, parsed once)

BACKENDS = Backend.NAMES
