"""Reranker specs for the command line: ``PARADIGM:MODEL[,key=value...]``.

=================  ===================================  ==========================================
paradigm           class                                options (key=value)
=================  ===================================  ==========================================
``cross-encoder``  :class:`CrossEncoderReranker`        batch_size, max_length
``pointwise-llm``  :class:`LLMPointwiseReranker`        mode (yesno|erank), levels, max_passage_tokens, batch_size
``listwise``       :class:`ListwiseReranker`            mode (first|generate), window, stride, max_passage_tokens, batch_size
``groupwise``      :class:`GroupwiseReranker`           group_size, rounds, levels, max_passage_tokens, batch_size, seed
=================  ===================================  ==========================================

Every paradigm also takes ``backend`` (``torch``, ``onnx`` or ``onnx-int8``; ``int8=true`` with ``onnx``
is the older spelling of ``onnx-int8``), which each reranker class takes as it is.

MODEL is a hub name, a local folder, or a ``.gguf`` file (or a folder holding one). Examples:
``cross-encoder:cross-encoder/ms-marco-MiniLM-L-6-v2``,
``listwise:HuggingFaceTB/SmolLM2-135M-Instruct,window=20,stride=10``,
``pointwise-llm:./SmolLM2-135M-Instruct,mode=erank``, ``cross-encoder:./my-ce,backend=onnx,int8=true``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from rerank.base import Reranker
from retrieval.errors import InputError

BACKEND_OPTIONS = ("backend", "int8")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
PARADIGMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cross-encoder": ("rerank.cross_encoder", "CrossEncoderReranker", ("batch_size", "max_length")),
    "pointwise-llm": ("rerank.pointwise", "LLMPointwiseReranker",
                      ("mode", "levels", "max_passage_tokens", "batch_size")),
    "listwise": ("rerank.listwise", "ListwiseReranker",
                 ("mode", "window", "stride", "max_passage_tokens", "batch_size")),
    "groupwise": ("rerank.groupwise", "GroupwiseReranker",
                  ("group_size", "rounds", "levels", "max_passage_tokens", "batch_size", "seed")),
}


@dataclass(frozen=True)
class RerankerSpec:
    """A parsed spec: paradigm, model, and constructor options."""

    paradigm: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return ",".join([f"{self.paradigm}:{self.model}"] + [f"{k}={v}" for k, v in self.options.items()])


def _value(text: str, key: str = "") -> Any:
    if key == "int8":
        if text.lower() not in _BOOLS:
            raise InputError(f"int8={text!r} is not true or false", field="reranker")
        return _BOOLS[text.lower()]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> RerankerSpec:
    """Parse ``PARADIGM:MODEL[,key=value...]``; a spec that does not parse is an :class:`InputError`."""
    paradigm, sep, rest = spec.partition(":")
    if not sep or paradigm not in PARADIGMS:
        raise InputError(f"reranker spec {spec!r} must start with one of {', '.join(p + ':' for p in PARADIGMS)}",
                         field="reranker")
    model, *pairs = rest.split(",")
    if not model:
        raise InputError(f"reranker spec {spec!r} names no model", field="reranker")
    allowed = PARADIGMS[paradigm][2] + BACKEND_OPTIONS
    options: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in allowed:
            raise InputError(f"option {pair!r} of {paradigm} is not one of {', '.join(k + '=' for k in allowed)}",
                             field="reranker")
        options[key] = _value(value.strip(), key)
    return RerankerSpec(paradigm, model, options)


def load_reranker(spec: str | RerankerSpec, **overrides: Any) -> Reranker:
    """Build the reranker a spec names (``overrides`` fill options the spec leaves out)."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    module, cls, allowed = PARADIGMS[parsed.paradigm]
    allowed += BACKEND_OPTIONS
    options = {k: v for k, v in overrides.items() if k in allowed and v is not None}
    options.update(parsed.options)
    reranker_class = getattr(importlib.import_module(module), cls)
    try:
        return reranker_class(parsed.model, **options)
    except TypeError as err:
        raise InputError(f"bad option for {parsed.paradigm}: {err}", field="reranker") from None
