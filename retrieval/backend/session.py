"""``InferenceSession``: the CUDA provider in fp16 when ONNX Runtime sees a GPU, the CPU provider otherwise.

A ``rewrite`` changes the graph in memory when a CPU session loads it (a causal LM's runs with one
prompt's attention in query chunks, :mod:`rankwise.rerank.onnx.chunked_attention`).

Threads: ``$RANKWISE_ONNX_THREADS``, else the cores this process may use (one inter-op thread:
the graphs are sequential). int8 graphs always run on the CPU provider (its int8 kernels are the
point of quantizing; the CUDA provider lacks most of them).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.retrieval.backend.value import ONNX, ONNX_INT8, Backend
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.extras import requires

_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def default_threads() -> int:
    """``$RANKWISE_ONNX_THREADS`` or the number of cores this process may run on."""
    env = os.environ.get("RANKWISE_ONNX_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def cuda_available() -> bool:
    ort = requires("onnxruntime", "onnx", "The ONNX backend")

    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxSession:
    """One ONNX file ready to run: ``session(feed) -> first output`` (inputs the graph lacks are dropped)."""

    def __init__(self, path: str | Path, *, device: str | None = None, threads: int | None = None,
                 backend: Backend = ONNX, rewrite: Callable[[Any], int] | None = None) -> None:
        ort = requires("onnxruntime", "onnx", "The ONNX backend")

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        use_cuda = device != "cpu" and not backend.int8 and cuda_available()
        if device == "cuda" and not use_cuda:
            raise InputError(f"the CUDA provider is not available (or the backend is {ONNX_INT8}, which runs on the CPU)",
                             field="device")
        self.path = Path(path)
        self.provider = "CUDAExecutionProvider" if use_cuda else "CPUExecutionProvider"
        source: str | bytes = str(path)
        self.chunked = 0  # nodes ``rewrite`` rewrote (a causal LM's attention in query chunks)
        if use_cuda:
            _preload_cuda_libraries()
            source = _fp16(self.path)
        elif rewrite is not None:
            source, self.chunked = _rewritten(self.path, rewrite)
        try:
            self.session = ort.InferenceSession(source, options, providers=[self.provider])
        except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own types: name the file
            raise InputError(f"ONNX Runtime cannot load the model: {str(err).splitlines()[0]}", path=path) from None
        if self.session.get_providers()[0] != self.provider:  # ORT falls back to the CPU when CUDA cannot start
            raise InputError(f"ONNX Runtime could not start the {self.provider} (CUDA or cuDNN libraries missing?); "
                             "pass device='cpu' to run on the CPU", path=path, field="device")
        self.inputs = {i.name: _INT_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.output = self.session.get_outputs()[0].name

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        ready = {name: np.ascontiguousarray(feed[name], dtype=dtype) for name, dtype in self.inputs.items()}
        return np.asarray(self.session.run([self.output], ready)[0], dtype=np.float32)


def _preload_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries of the nvidia-* wheels (torch's), as onnxruntime-gpu >= 1.21 can."""
    ort = requires("onnxruntime", "onnx", "The ONNX backend")

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception:  # noqa: BLE001 - best effort: the session start below says what is missing
            pass


def _rewritten(path: Path, rewrite: Callable[[Any], int]) -> tuple[str | bytes, int]:
    """The graph as ``rewrite`` changes it in memory, and how many nodes it rewrote
    (the file itself, and 0, for a graph it leaves alone or with its weights in a side file)."""
    onnx = requires("onnx", "onnx", "The ONNX backend")

    if Path(f"{path}.data").exists():  # over protobuf's 2 GB: it cannot be handed over in memory
        return str(path), 0
    model = onnx.load(str(path))
    rewritten = rewrite(model)
    return (model.SerializeToString(), rewritten) if rewritten else (str(path), 0)


def _fp16(path: Path) -> bytes:
    """The model with float16 weights and float32 inputs/outputs, for the CUDA provider."""
    onnx = requires("onnx", "onnx", "The ONNX backend")
    requires("onnxruntime", "onnx", "The ONNX backend")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    return model.SerializeToString()
