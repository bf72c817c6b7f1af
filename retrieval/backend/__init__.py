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
  by OpenVINO, int8 by NNCF static quantization on calibration texts (``openvino``, ``openvino-int8``);
- :mod:`~retrieval.backend.value`: the :class:`Backend` value; :mod:`~retrieval.backend.kind`: the
  :class:`ModelKind` object each export and engine is given.

Where the ONNX and OpenVINO code of each model kind lives: the encoder's and the cross-encoder's here,
the causal LM's in :mod:`rankwise.rerank.onnx` (``tests/test_layers.py`` checks it).
"""

from __future__ import annotations

from rankwise.retrieval.backend.kind import ModelKind
from rankwise.retrieval.backend.value import Backend

__all__ = ["Backend", "ModelKind"]
