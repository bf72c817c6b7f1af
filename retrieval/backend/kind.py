"""A model kind: what exporting and running one kind of model takes, as one object passed explicitly.

A :class:`ModelKind` bundles the kind's name (recorded in an export's manifest), ``prepare`` -- load the torch
model and wrap the module to export, with its probe inputs (:class:`rankwise.retrieval.backend.build.Prepared`)
-- and ``engine``, the factory of the object that runs a forward pass on each backend. The kinds are
module-level values of the layer that owns the model, and every export, cache lookup and engine receives
the one it is for; nothing registers itself on import:

- :data:`rankwise.retrieval.engines.ENCODER` and :data:`rankwise.retrieval.engines.CROSS_ENCODER` (their ONNX
  and OpenVINO code in :mod:`rankwise.retrieval.backend`);
- :data:`rankwise.rerank.lm_engines.CAUSAL_LM` (its ONNX code in :mod:`rankwise.rerank.onnx`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelKind:
    """One model kind: ``name`` (``encoder``, ``cross-encoder``, ``causal-lm``), ``prepare(model, max_length)``
    (load and graph: what :func:`rankwise.retrieval.backend.build.build` exports and checks) and
    ``engine(backend, model, path, **options)`` (the engine that runs it)."""

    name: str
    prepare: Callable[[str, int | None], Any]
    engine: Callable[..., Any]

    def __str__(self) -> str:
        return self.name
