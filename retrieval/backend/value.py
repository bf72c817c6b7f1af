"""The backend a model runs on, one value parsed once: ``torch``, ``onnx``, ``onnx-int8``, ``openvino``,
``openvino-int8``, ``openvino-bf16``.

``Backend.parse("onnx-int8")`` is ``Backend(runtime="onnx", int8=True)`` and ``Backend.parse("openvino-bf16")``
``Backend(runtime="openvino", bf16=True)``; ``str()`` gives the spelling back,
which is also what a manifest stores (one field, ``"backend": "onnx-int8"``). :meth:`Backend.from_record`
also reads the older manifests that split it into ``"backend": "onnx"`` and ``"int8": true``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rankwise.retrieval.errors import InputError

RUNTIMES = ("torch", "onnx", "openvino")
QUANTIZED_RUNTIMES = ("onnx", "openvino")  # the runtimes with an int8 variant
BF16_RUNTIMES = ("openvino",)  # the runtimes with a bfloat16 variant (CPUs with AMX or AVX512-BF16)
INT8_SUFFIX = "-int8"
BF16_SUFFIX = "-bf16"


@dataclass(frozen=True)
class Backend:
    """One backend: the ``runtime`` that runs the model, whether it runs the ``int8`` graph (ONNX
    Runtime: dynamic quantization; OpenVINO: NNCF static quantization) or computes in ``bf16``
    (OpenVINO's bfloat16 inference of the fp32 graph, on CPUs that have it)."""

    runtime: str = "torch"
    int8: bool = False
    bf16: bool = False

    NAMES: ClassVar[tuple[str, ...]] = tuple(
        runtime + suffix for runtime in RUNTIMES
        for suffix in ("", *((INT8_SUFFIX,) if runtime in QUANTIZED_RUNTIMES else ()),
                       *((BF16_SUFFIX,) if runtime in BF16_RUNTIMES else ())))

    def __post_init__(self) -> None:
        if (self.runtime not in RUNTIMES or (self.int8 and self.runtime not in QUANTIZED_RUNTIMES)
                or (self.bf16 and self.runtime not in BF16_RUNTIMES) or (self.int8 and self.bf16)):
            spelled = self.runtime + (INT8_SUFFIX if self.int8 else "") + (BF16_SUFFIX if self.bf16 else "")
            raise InputError(f"unknown backend {spelled!r}; choose from {', '.join(self.NAMES)}", field="backend")

    @classmethod
    def parse(cls, value: Backend | str, field: str = "backend") -> Backend:
        """The backend ``value`` names (a :class:`Backend` passes as it is); an unknown name raises the
        :class:`~rankwise.retrieval.errors.InputError` that names ``field`` and the choices."""
        if isinstance(value, Backend):
            return value
        name = str(value).strip()
        if name not in cls.NAMES:
            raise InputError(f"unknown backend {value!r}; choose from {', '.join(cls.NAMES)}", field=field)
        if name.endswith(INT8_SUFFIX):
            return cls(name[:-len(INT8_SUFFIX)], int8=True)
        if name.endswith(BF16_SUFFIX):
            return cls(name[:-len(BF16_SUFFIX)], bf16=True)
        return cls(name)

    @classmethod
    def from_record(cls, record: dict[str, Any], field: str = "backend") -> Backend:
        """The backend a manifest record stores: ``{"backend": "onnx-int8"}``, or the older two fields
        ``{"backend": "onnx", "int8": true}`` (a record without either: torch)."""
        backend = cls.parse(record.get("backend") or "torch", field)
        if record.get("int8") and not backend.int8:  # the older shape
            return cls(backend.runtime, True)
        return backend

    @property
    def name(self) -> str:
        """The spelling: ``onnx-int8``."""
        return self.runtime + (INT8_SUFFIX if self.int8 else BF16_SUFFIX if self.bf16 else "")

    @property
    def precision(self) -> str:
        """What the model computes in: ``fp32`` (torch's outputs within 1e-4), ``int8`` or ``bf16`` (outputs
        of their own: an index of such vectors has a fingerprint of its own)."""
        return "int8" if self.int8 else "bf16" if self.bf16 else "fp32"

    @property
    def exported(self) -> bool:
        """Runs an exported graph (ONNX Runtime or OpenVINO), not the torch model."""
        return self.runtime != "torch"

    def __str__(self) -> str:
        return self.name


TORCH = Backend()
ONNX = Backend("onnx")
ONNX_INT8 = Backend("onnx", True)
OPENVINO = Backend("openvino")
OPENVINO_INT8 = Backend("openvino", True)
OPENVINO_BF16 = Backend("openvino", bf16=True)
