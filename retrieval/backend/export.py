"""``torch.onnx`` export with dynamic batch and sequence axes.

The dynamo exporter serves every model. BERT-family encoders and cross-encoders also go through
the TorchScript exporter (``legacy=True``) with eager attention: its graph is the one ONNX
Runtime's transformer optimizer recognises (fused Attention, SkipLayerNormalization,
EmbedLayerNormalization), see :func:`rankwise.retrieval.backend.optimize.fuse_transformer`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.extras import requires
from rankwise.retrieval.files import atomic_path

OPSET = 20
LEGACY_OPSET = 17  # what ONNX Runtime's transformer fusions are written against
_EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit: bigger models keep weights in a side file


def export_graph(module: torch.nn.Module, inputs: dict[str, torch.Tensor], dynamic: dict[str, tuple[int, ...]],
                 output: str, out: Path, what: str, *, legacy: bool = False,
                 translations: dict[Any, Any] | None = None) -> Path:
    """Export ``module(**inputs)`` to ``out`` (written atomically); ``dynamic`` names each input's dynamic axes.

    ``what`` names the model and the part for the error message when export fails (an unsupported
    op, a data-dependent shape, ...). ``legacy`` uses the TorchScript exporter (see the module doc);
    ``translations`` maps custom torch ops to their ONNX functions (dynamo exporter only).
    """
    requires("onnx", "onnx", "The ONNX backend")  # torch.onnx writes with onnx; the dynamo exporter needs onnxscript
    if legacy:
        return _export_legacy(module, inputs, dynamic, output, out, what)
    requires("onnxscript", "onnx", "The ONNX backend")
    shapes = {name: {axis: torch.export.Dim.DYNAMIC for axis in dynamic.get(name, ())} for name in inputs}
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:  # "torchvision is not installed", every initializer merged, ...
        lg.setLevel(logging.ERROR)
    chatter = io.StringIO()  # the exporter's progress lines; shown only when it fails
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), torch.inference_mode(False), \
                torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module.eval(), (), kwargs=inputs, input_names=list(inputs),
                                        output_names=[output], dynamic_shapes=shapes, dynamo=True, optimize=True,
                                        opset_version=OPSET, verbose=False,
                                        custom_translation_table=translations)
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; name the model, part, cause
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        sys.stderr.write(chatter.getvalue())
        raise InputError(f"cannot export {what} to ONNX: {type(err).__name__}: {first}", field="model") from None
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    if program is None:
        raise InputError(f"cannot export {what} to ONNX: the exporter returned nothing", field="model")
    if size > _EXTERNAL_DATA_BYTES:
        program.save(str(out), external_data=True)  # model.onnx + model.onnx.data
    else:
        with atomic_path(out) as tmp:
            program.save(str(tmp), external_data=False)
    return out


_AXIS_NAMES = ("batch", "sequence", "key")


def _export_legacy(module: torch.nn.Module, inputs: dict[str, torch.Tensor], dynamic: dict[str, tuple[int, ...]],
                   output: str, out: Path, what: str) -> Path:
    import inspect

    order = [n for n in inspect.signature(module.forward).parameters if n in inputs]  # positional, in forward's order
    inputs = {name: inputs[name] for name in order}
    axes = {name: {axis: _AXIS_NAMES[axis] for axis in dynamic.get(name, ())} for name in inputs}
    axes[output] = {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), atomic_path(out) as tmp:
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), tuple(inputs.values()), str(tmp), input_names=list(inputs),
                              output_names=[output], dynamic_axes=axes, opset_version=LEGACY_OPSET, dynamo=False)
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; name the model, part, cause
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot export {what} to ONNX (TorchScript exporter): {type(err).__name__}: {first}",
                         field="model") from None
    return out


@contextlib.contextmanager
def attention_implementation(model: Any, name: str) -> Iterator[None]:
    """Run ``model`` (a Hugging Face transformer) with the attention implementation ``name`` inside the
    block (``"eager"``: the pattern ONNX Runtime's BERT fusions match)."""
    config = model.config
    before = getattr(config, "_attn_implementation", None)
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before
