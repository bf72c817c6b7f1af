"""The OpenVINO runtime: exported ONNX graphs compiled by OpenVINO, int8 by NNCF post-training quantization.

``openvino`` compiles the export's plain fp32 graph (:func:`plain_graph`: ONNX Runtime's fused contrib
operators are left out, OpenVINO fuses the graph itself) for the CPU with float32 inference precision
(OpenVINO's default on CPUs with bfloat16 units is bfloat16, which misses the fp32 parity tolerance by ten
times). ``openvino-bf16`` compiles the same graph with bfloat16 inference precision, on CPUs with AMX or
AVX512-BF16 only (:func:`check_runtime`): its vectors are its own (an index fingerprint of their own), within
a cosine of 0.9999 of torch's. ``openvino-int8`` quantizes that graph with NNCF's post-training static
quantization (``nncf.quantize``, transformer preset: SmoothQuant, activation ranges from calibration inputs,
fast bias correction; Nagel et al., 2021, "A White Paper on Neural Network Quantization"), with calibration
inputs drawn from the collection being indexed
(:func:`rankwise.retrieval.backend.calibration.corpus_calibration`) or, for rerankers, a bundled set; the
result is saved as OpenVINO IR (``.xml`` + ``.bin``) in the export folder under a name keyed by the
calibration texts (:func:`int8_files`).

``openvino`` and ``nncf`` are imported only here and only when an OpenVINO backend is chosen; a
missing package is one line naming the ``openvino`` extra (:func:`require`, exit status 2).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.retrieval.backend.value import Backend
from rankwise.retrieval.errors import InputError

PLAIN_FILE = "model.plain.onnx"  # the unfused fp32 graph OpenVINO compiles, when model.onnx is ONNX Runtime-fused
INT8_IR_PREFIX = "model.openvino-int8-"


def require(package: str = "openvino") -> Any:
    """The imported ``openvino`` (or ``nncf``) module, or the one line naming the ``openvino`` extra
    (:class:`rankwise.retrieval.extras.MissingExtraError`)."""
    from rankwise.retrieval.extras import requires

    return requires(package, "openvino", "The OpenVINO backend")


class OpenVinoModel:
    """One graph (ONNX or OpenVINO IR) compiled for the CPU: ``model(feed) -> first output`` as float32
    (inputs the graph lacks are dropped), the same call as :class:`rankwise.retrieval.backend.session.OnnxSession`."""

    provider = "CPU"
    chunked = 0

    def __init__(self, path: str | Path, *, threads: int | None = None, bf16: bool = False) -> None:
        from rankwise.retrieval.backend.session import default_threads

        ov = require("openvino")
        self.path = Path(path)
        # f32 unless asked: OpenVINO's own default on CPUs with AMX or AVX512-BF16 is bf16
        config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": threads or default_threads()}
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses: name the file
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"OpenVINO cannot compile the model: {first}", path=path) from None
        # each input's own type: token ids int64, a causal LM's attention mask (``allowed``) bool
        self.inputs = {i.get_any_name(): i.get_element_type().to_dtype() for i in self.compiled.inputs}
        self.request = self.compiled.create_infer_request()

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        ready = {name: np.ascontiguousarray(feed[name], dtype=dtype) for name, dtype in self.inputs.items()}
        return np.array(self.request.infer(ready)[0], dtype=np.float32)  # a copy: the request reuses its buffer


def int8_files(key: str) -> tuple[str, str]:
    """The IR file names of the int8 graph calibrated on the texts of ``key``
    (:func:`rankwise.retrieval.backend.calibration.calibration_key`)."""
    return f"{INT8_IR_PREFIX}{key}.xml", f"{INT8_IR_PREFIX}{key}.bin"


def quantize_int8(src: Path, folder: Path, key: str, feeds: list[dict[str, np.ndarray]]) -> list[str]:
    """NNCF's static int8 quantization of the graph ``src`` on calibration ``feeds`` (one input each), saved
    as OpenVINO IR in ``folder`` (the caller's temporary export folder, swapped in whole by
    :func:`rankwise.retrieval.backend.cache.openvino_graph`); returns the two file names."""
    ov = require("openvino")
    nncf = require("nncf")
    import logging

    model = ov.Core().read_model(str(src))
    names = [i.get_any_name() for i in model.inputs]
    dataset = nncf.Dataset(feeds, lambda feed: {n: np.ascontiguousarray(feed[n], dtype=np.int64) for n in names})
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: never into a command's output
            quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds))
    except Exception as err:  # noqa: BLE001 - NNCF raises its own types: name the graph
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"NNCF cannot quantize the graph: {type(err).__name__}: {first}", path=src) from None
    finally:
        nncf_log.setLevel(level)
    xml, binary = int8_files(key)
    ov.save_model(quantized, str(folder / xml), compress_to_fp16=False)
    return [xml, binary]


def plain_graph(prepared: Any, export_folder: Path, fused: bool) -> tuple[Path, list[str]]:
    """The fp32 graph OpenVINO compiles: ``model.onnx`` when it is the exporter's plain graph, else
    :data:`PLAIN_FILE`, exported here without ONNX Runtime's fused operators (which OpenVINO and NNCF
    cannot read), and the new file names. A BERT-family transformer is exported as for ONNX Runtime's
    fusions (TorchScript, eager attention), any other kind (a causal LM, whose ``model.onnx`` holds
    ``GroupQueryAttention``) as the dynamo exporter's plain graph, whose attention OpenVINO fuses itself."""
    from rankwise.retrieval.backend.build import FP32_FILE, export_plain
    from rankwise.retrieval.backend.export import attention_implementation, export_graph

    if not fused:
        return export_folder / FP32_FILE, []
    out = export_folder / PLAIN_FILE
    if prepared.hf_model is None:
        export_plain(prepared, out)
        return out, [PLAIN_FILE]
    with attention_implementation(prepared.hf_model, "eager"):
        export_graph(prepared.graph, prepared.inputs, prepared.dynamic, prepared.output, out, prepared.what,
                     legacy=True)
    return out, [PLAIN_FILE]


def feeds_of(tokenizer: Any, calibration: Sequence[Any], max_length: int | None) -> list[dict[str, np.ndarray]]:
    """Calibration inputs, one text (or ``(query, document)`` pair) each."""
    from rankwise.retrieval.backend.features import text_features

    feeds = []
    for item in calibration:
        if isinstance(item, (tuple, list)):
            feeds.append(text_features(tokenizer, [item[0]], max_length, [item[1]]))
        else:
            feeds.append(text_features(tokenizer, [item], max_length))
    return feeds


Calibration = Sequence[Any] | Callable[[], Sequence[Any]] | str | None


def resolve_calibration(calibration: Calibration, default: Callable[[], Sequence[Any]]) -> Sequence[Any] | str:
    """Calibration texts (or pairs) from what a caller passed: texts, a function returning them (called
    only here, so only an int8 OpenVINO engine reads a collection for them), the key of a calibration
    already in the export, or None (``default()``)."""
    if calibration is None:
        return list(default())
    if isinstance(calibration, str):
        return calibration
    texts = list(calibration() if callable(calibration) else calibration)
    if not texts:
        raise InputError("no calibration texts for openvino-int8 (an empty collection?)", field="calibration")
    return texts



def check_runtime(device: str | None, backend: Backend, *, instead: str = "openvino or openvino-int8") -> None:
    """The OpenVINO engines run on the CPU, with NNCF for the quantized graph and bf16 only on a CPU that
    computes it (AMX or AVX512-BF16: elsewhere OpenVINO would run fp32 under the bf16 name; ``instead``: the
    backends the message offers); a missing package names its extra."""
    if device not in (None, "cpu"):
        raise InputError(f"the openvino backends run on the CPU, not {device!r}", field="device")
    ov = require("openvino")
    if backend.int8:
        require("nncf")
    if backend.bf16 and "BF16" not in cpu_capabilities(ov):
        raise InputError(f"this CPU has no bfloat16 instructions (AMX or AVX512-BF16): use {instead}",
                         field="backend")


def cpu_capabilities(ov: Any) -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (``BF16``, ``INT8``, ``FP32``, ...)."""
    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


__all__ = ["Calibration", "OpenVinoModel", "PLAIN_FILE", "check_runtime", "cpu_capabilities", "feeds_of",
           "int8_files", "plain_graph", "quantize_int8", "require", "resolve_calibration"]
