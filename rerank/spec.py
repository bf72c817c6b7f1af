"""Reranker specs for the command line: ``PARADIGM:MODEL[,key=value...]``.

=================  ===================================  ==========================================
paradigm           class                                options (key=value)
=================  ===================================  ==========================================
``cross-encoder``  :class:`CrossEncoderReranker`        batch_size, max_length
``pointwise-llm``  :class:`LLMPointwiseReranker`        mode (yesno|erank), levels, max_passage_tokens, batch_size
``listwise``       :class:`ListwiseReranker`            mode (first|generate|eliminate|reason), window, stride, max_passage_tokens, batch_size
                   mode=eliminate: EliminationReranker  eliminate (worst|best), k
                   mode=reason: ReasoningReranker       max_reasoning_tokens
``groupwise``      :class:`GroupwiseReranker`           group_size, rounds, levels, max_passage_tokens, batch_size, seed
``idcm``           :class:`IDCMReranker`                select, passages, stride, batch_size, max_length
=================  ===================================  ==========================================

Every paradigm but ``idcm`` also takes ``passages=N[,stride=S][,agg=firstp|maxp|sump|kmaxavg:K]``:
documents are split into passages of N words (:class:`rankwise.rerank.passages.PassageReranker`); where the
paradigm has a ``stride`` of its own (listwise), the passage stride is ``passage_stride=S``.
``idcm:SELECTOR>>SCORER`` (SELECTOR ``bm25`` or ``dense:ENCODER``, SCORER a cross-encoder model)
scores only the ``select`` passages the selector ranks best (:mod:`rankwise.rerank.idcm`).

Every paradigm also takes ``backend`` (a :class:`~rankwise.retrieval.backend.value.Backend` name: ``torch``,
``onnx``, ``onnx-int8``, ``openvino``, ``openvino-int8``, ``openvino-bf16``; the LLM paradigms take
``openvino-bf16`` of the OpenVINO ones), which each reranker class parses. The LLM paradigms
(``pointwise-llm``, ``listwise``, ``groupwise``) also take ``backend=api``: the model is asked through an
OpenAI-compatible server, with the options of :class:`rankwise.rerank.served.ServedConfig` (``base_url``,
``endpoint``, ``served_model``, ``tokenizer``, ``concurrency``, ``timeout``, ``max_retries``,
``top_logprobs``, ``no_logprobs``, ``cache``, ``price_in``, ``price_out``, ``api_key_env``), which
:func:`load_reranker` gathers into one config passed as the ``backend``. The API key is read from an
environment variable, never from the spec.

MODEL is a hub name, a local folder, or a ``.gguf`` file (or a folder holding one). Examples:
``cross-encoder:cross-encoder/ms-marco-MiniLM-L-6-v2``,
``listwise:HuggingFaceTB/SmolLM2-135M-Instruct,window=20,stride=10``,
``pointwise-llm:./SmolLM2-135M-Instruct,mode=erank``, ``cross-encoder:./my-ce,backend=onnx-int8``,
``listwise:castorini/first_mistral,backend=api,base_url=http://127.0.0.1:8000/v1,concurrency=16``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from rankwise.rerank.base import Reranker
from rankwise.rerank.permutation import LABELS
from rankwise.rerank.served import ENDPOINTS, NO_LOGPROBS
from rankwise.rerank.served import OPTIONS as API_OPTIONS
from rankwise.retrieval.backend.value import Backend
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.values import (Range, check_choice, non_negative_float, non_negative_int, positive_float,
                                       positive_int)

BACKEND_OPTIONS = ("backend",)
PASSAGE_OPTIONS = ("passages", "stride", "agg", "passage_stride")  # a paradigm's own option of the name wins
LLM_PARADIGMS = ("pointwise-llm", "listwise", "groupwise")  # those that take backend=api and API_OPTIONS
PARADIGMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cross-encoder": ("rankwise.rerank.cross_encoder", "CrossEncoderReranker", ("batch_size", "max_length")),
    "pointwise-llm": ("rankwise.rerank.pointwise", "LLMPointwiseReranker",
                      ("mode", "levels", "max_passage_tokens", "batch_size")),
    "listwise": ("rankwise.rerank.listwise", "ListwiseReranker",
                 ("mode", "window", "stride", "max_passage_tokens", "batch_size", "eliminate", "k",
                  "max_reasoning_tokens")),
    "groupwise": ("rankwise.rerank.groupwise", "GroupwiseReranker",
                  ("group_size", "rounds", "levels", "max_passage_tokens", "batch_size", "seed")),
    "idcm": ("rankwise.rerank.idcm", "IDCMReranker", ("select", "passages", "stride", "batch_size", "max_length")),
}
# listwise modes served by their own class, and the options only that mode takes
LISTWISE_MODES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "eliminate": ("rankwise.rerank.elimination", "EliminationReranker", ("eliminate", "k")),
    "reason": ("rankwise.rerank.reasoning", "ReasoningReranker", ("max_reasoning_tokens",)),
}


# The values of the numeric and named keys, checked when the spec is parsed (before any model loads),
# with the ranges the command-line options use (rankwise.retrieval.values); each class checks the rest.
_LABELLED = Range(int, min=1, max=len(LABELS))  # passages in one prompt, each behind an identifier
KEY_VALUES: dict[str, Range | tuple[str, ...]] = {
    "batch_size": positive_int, "max_length": positive_int, "max_passage_tokens": positive_int,
    "max_reasoning_tokens": positive_int, "window": _LABELLED, "stride": positive_int, "k": positive_int,
    "group_size": Range(int, min=2, max=len(LABELS)), "rounds": positive_int, "levels": Range(int, min=1, max=99),
    "seed": non_negative_int, "select": positive_int, "passages": positive_int, "passage_stride": positive_int,
    "backend": Backend.NAMES + ("api",),  # api: the LLM paradigms only (parse_spec)
    # backend=api (rankwise.rerank.served.ServedConfig)
    "concurrency": positive_int, "top_logprobs": positive_int, "max_retries": non_negative_int,
    "timeout": positive_float, "price_in": non_negative_float, "price_out": non_negative_float,
    "endpoint": ENDPOINTS, "no_logprobs": NO_LOGPROBS,
}


def _mode_class(paradigm: str, options: dict[str, Any]) -> tuple[str, str] | None:
    """The (module, class) of a listwise mode with its own class; an option of another mode is an InputError."""
    if paradigm != "listwise":
        return None
    mode = options.get("mode", "first")
    for name, (_, _, own) in LISTWISE_MODES.items():
        stray = [key for key in own if key in options and mode != name]
        if stray:
            raise InputError(f"option {stray[0]}= of listwise needs mode={name}, not mode={mode}", field="reranker")
    return LISTWISE_MODES[mode][:2] if mode in LISTWISE_MODES else None


@dataclass(frozen=True)
class RerankerSpec:
    """A parsed spec: paradigm, model, and constructor options."""

    paradigm: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return ",".join([f"{self.paradigm}:{self.model}"] + [f"{k}={v}" for k, v in self.options.items()])

    def __hash__(self) -> int:  # equal specs share one loaded model in an experiment
        return hash((self.paradigm, self.model, tuple(sorted((k, str(v)) for k, v in self.options.items()))))

    def __mod__(self, depth: int) -> Any:
        """``spec % depth``: a pipeline stage reranking the top ``depth``."""
        return self.as_stage(depth)

    def as_stage(self, depth: int = 100) -> Any:
        from rankwise.rerank.stage import Rerank

        return Rerank(self, depth)

    def load(self, **overrides: Any) -> Reranker:
        """The reranker this spec names (:func:`load_reranker`; ``overrides`` fill options it leaves out)."""
        return load_reranker(self, batch_size=None, **overrides)


def _value(text: str, key: str = "") -> Any:
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
    own = PARADIGMS[paradigm][2]
    allowed = own + BACKEND_OPTIONS + (tuple(k for k in PASSAGE_OPTIONS if k not in own) if paradigm != "idcm" else ()) \
        + (API_OPTIONS if paradigm in LLM_PARADIGMS else ())
    options: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in allowed:  # the key only: a value may be a secret put in the wrong place
            raise InputError(f"option {key + '=' if eq else repr(pair)} of {paradigm} is not one of "
                             f"{', '.join(k + '=' for k in allowed)}", field="reranker")
        allowed_values = KEY_VALUES.get(key)
        if isinstance(allowed_values, Range):
            options[key] = allowed_values.check(value.strip(), key)
        elif allowed_values is not None:
            options[key] = check_choice(value.strip(), allowed_values, key)
        else:
            options[key] = value.strip() if key == "agg" else _value(value.strip(), key)
    passage_only = {"agg", "passage_stride"} | ({"stride"} - set(own))
    if paradigm != "idcm" and "passages" not in options and passage_only & set(options):
        raise InputError(f"reranker spec {spec!r}: stride=, passage_stride= and agg= need passages=N", field="reranker")
    served = [k for k in API_OPTIONS if k in options]
    if served and options.get("backend") != "api":
        raise InputError(f"option {served[0]}= of {paradigm} needs backend=api", field="reranker")
    if options.get("backend") == "api" and paradigm not in LLM_PARADIGMS:
        raise InputError(f"backend=api serves the LLM rerankers ({', '.join(LLM_PARADIGMS)}), not {paradigm}",
                         field="reranker")
    _mode_class(paradigm, options)
    return RerankerSpec(paradigm, model, options)


def load_reranker(spec: str | RerankerSpec, **overrides: Any) -> Reranker:
    """Build the reranker a spec names (``overrides`` fill options the spec leaves out)."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    module, cls, allowed = PARADIGMS[parsed.paradigm]
    allowed += BACKEND_OPTIONS
    # device: the caller's choice (cuda:LOCAL_RANK under torchrun), never a spec key
    options = {k: v for k, v in overrides.items() if (k in allowed or k == "device") and v is not None}
    options.update(parsed.options)
    split = {k: options.pop(k) for k in PASSAGE_OPTIONS if k in options and k not in allowed} \
        if parsed.paradigm != "idcm" else {}
    if "passage_stride" in split:
        split["stride"] = split.pop("passage_stride")
    module, cls = _mode_class(parsed.paradigm, options) or (module, cls)
    served = {k: options.pop(k) for k in API_OPTIONS if k in options}
    if options.get("backend") == "api":
        if parsed.paradigm not in LLM_PARADIGMS:
            raise InputError(f"backend=api serves the LLM rerankers ({', '.join(LLM_PARADIGMS)}), not "
                             f"{parsed.paradigm}", field="backend")
        from rankwise.rerank.served import ServedConfig

        options["backend"] = ServedConfig.from_options(served)
    reranker_class = getattr(importlib.import_module(module), cls)
    try:
        reranker = reranker_class(parsed.model, **options)
    except TypeError as err:
        raise InputError(f"bad option for {parsed.paradigm}: {err}", field="reranker") from None
    if not split:
        return reranker
    from rankwise.rerank.passages import PassageReranker

    try:
        return PassageReranker(reranker, **split)
    except TypeError as err:
        raise InputError(f"bad option for {parsed.paradigm}: {err}", field="reranker") from None
