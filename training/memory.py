"""Memory-aware training: a token budget per step, and a pre-flight estimate of peak memory.

**Token budget.** ``max_tokens`` bounds the padded tokens one forward pass holds: a step of
``batch_size`` samples of ``texts`` texts each, padded to at most ``max_length`` tokens, is split
into micro-batches of ``micro`` samples (``micro x texts x max_length <= max_tokens``, ``micro``
dividing ``batch_size``) whose gradients are accumulated, so the effective batch (and the
optimizer's trajectory, for losses that see one sample at a time) stays what was asked
(:func:`plan_batches`). Losses with in-batch negatives (bi-encoder ``contrastive``, ``star``,
``pg-rank``) see fewer in-batch negatives per micro-batch.

**Estimate.** :func:`estimate_peak` adds, in bytes:

* the runtime: the Python process with torch, transformers and sentence-transformers loaded
  (:data:`RUNTIME_BYTES`, measured by ``bench/training_memory.py``);
* the model state: fp32 weights, gradients and AdamW's two moments, 16 bytes per parameter
  (parameters counted from the model's config on torch's ``meta`` device: nothing is loaded);
* activations kept for the backward pass, per layer and per padded token
  ``4 x (9 h + 2 i)`` bytes for a transformer layer of width ``h`` and feed-forward width ``i``
  (the count of Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
  Models", at 4-byte floats), plus ``9 a s`` bytes per token for the ``a`` attention maps of a
  sequence of ``s`` tokens (softmax output, dropout mask and output), and one layer's worth again
  for the gradients of the layer the backward pass is in. With gradient checkpointing (Chen et al.
  2016) only each layer's input is kept, plus one layer recomputed at a time and its gradients.

:func:`available_memory` is ``RANKWISE_MEMORY_LIMIT`` when set (e.g. ``16G``), else the lesser of
the cgroup's limit less its usage and ``MemAvailable`` of ``/proc/meminfo``. :func:`preflight` compares the two
and refuses (:class:`~rankwise.retrieval.errors.InputError`, exit 2 from the command) with the
settings that would fit, before any data or model is loaded.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from rankwise.retrieval.errors import InputError

if TYPE_CHECKING:
    from rankwise.training.settings import TrainSettings

__all__ = ["BatchPlan", "MemoryEstimate", "ModelShape", "available_memory", "check_training_memory", "estimate_peak",
           "model_shape", "parse_bytes", "plan_batches", "preflight", "texts_per_sample"]

ENV_LIMIT = "RANKWISE_MEMORY_LIMIT"
RUNTIME_BYTES = 900 * 2**20  # Python + torch + transformers + sentence-transformers + datasets, measured
STATE_BYTES_PER_PARAM = 16  # fp32 weights, gradients, AdamW exp_avg and exp_avg_sq
MARGIN = 0.9  # use at most 90% of what is available


def parse_bytes(text: str) -> int:
    """``"16G"``, ``"512M"``, ``"2.5GB"`` or a number of bytes -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise InputError(f"not a memory size: {text!r} (e.g. 16G, 512M)", field=ENV_LIMIT)
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2)]
    return int(float(match.group(1)) * scale)


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a model: parameters, layers, widths, heads, the longest input."""

    parameters: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    max_length: int


def model_shape(model: str | Path, kind: str = "cross-encoder") -> ModelShape:
    """The shape of ``model`` (a folder or hub name) from its config, without loading its weights.

    ``max_length`` is the length the trainer truncates to by default: sentence-transformers'
    ``max_seq_length`` for a bi-encoder, the position embeddings for a cross-encoder.
    """
    import torch
    from transformers import AutoConfig, AutoModel

    from rankwise.retrieval.models import resolve_model

    path = resolve_model(str(model))
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the model's config: {str(err).splitlines()[0]}", path=model) from None
    with torch.device("meta"):
        parameters = sum(p.numel() for p in AutoModel.from_config(config).parameters())
    hidden = int(getattr(config, "hidden_size", 768))
    max_length = int(getattr(config, "max_position_embeddings", 512))
    st_config = Path(path) / "sentence_bert_config.json"
    if kind == "bi-encoder" and st_config.is_file():
        max_length = int(json.loads(st_config.read_text()).get("max_seq_length") or max_length)
    return ModelShape(parameters=parameters, layers=int(getattr(config, "num_hidden_layers", 12)), hidden=hidden,
                      intermediate=int(getattr(config, "intermediate_size", 4 * hidden)),
                      heads=int(getattr(config, "num_attention_heads", 12)), max_length=max_length)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak resident memory of a training step, in bytes, by part."""

    runtime: int
    state: int
    activations: int

    @property
    def total(self) -> int:
        return self.runtime + self.state + self.activations


def estimate_peak(shape: ModelShape, *, sequences: int, max_length: int,
                  gradient_checkpointing: bool = False) -> MemoryEstimate:
    """Peak memory of one forward/backward pass over ``sequences`` texts padded to ``max_length`` tokens."""
    s, h, i, a = max_length, shape.hidden, shape.intermediate, shape.heads
    per_layer = sequences * s * (4 * (9 * h + 2 * i) + 9 * a * s)
    if gradient_checkpointing:  # layer inputs kept, one layer's activations rebuilt at a time
        activations = shape.layers * sequences * s * 4 * h + 2 * per_layer
    else:  # every layer's activations, and one layer's gradients while the backward pass runs through it
        activations = (shape.layers + 1) * per_layer
    return MemoryEstimate(RUNTIME_BYTES, STATE_BYTES_PER_PARAM * shape.parameters, activations)


def texts_per_sample(kind: str, loss: str, negatives: int) -> int:
    """Sequences one training sample puts through the model: a cross-encoder's (query, document) pairs
    (one for ``bce``, whose rows are single pairs), a bi-encoder's query and documents (the query alone
    for ``adore``, whose documents sit in a fixed index)."""
    if kind == "cross-encoder":
        return 1 if loss == "bce" else 1 + negatives
    return 1 if loss == "adore" else 2 + negatives


def plan_batches(batch_size: int, texts: int, max_length: int, max_tokens: int | None) -> tuple[int, int]:
    """``(samples per micro-batch, micro-batches accumulated per step)`` under a budget of ``max_tokens``
    padded tokens per forward pass; the product is ``batch_size``. ``None``: the whole batch at once."""
    if max_tokens is None:
        return batch_size, 1
    if max_tokens < 1:
        raise InputError(f"must be positive, got {max_tokens}", field="max-tokens")
    fits = max(1, max_tokens // max(1, texts * max_length))
    micro = max(d for d in range(1, min(fits, batch_size) + 1) if batch_size % d == 0)
    return micro, batch_size // micro


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_available() -> int | None:
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(0, int(limit) - usage)
        return None
    return None


def available_memory() -> tuple[int, str]:
    """``(bytes, where the figure comes from)``: $RANKWISE_MEMORY_LIMIT when set (it replaces detection: plan
    for another machine, or for memory other jobs will free), else the lesser of the cgroup's room and
    /proc/meminfo's MemAvailable."""
    if os.environ.get(ENV_LIMIT):
        return parse_bytes(os.environ[ENV_LIMIT]), ENV_LIMIT
    candidates = []
    for value, source in ((_cgroup_available(), "cgroup limit"), (_meminfo_available(), "MemAvailable")):
        if value is not None:
            candidates.append((value, source))
    if not candidates:
        return 2**62, "unknown"
    return min(candidates)


@dataclass(frozen=True)
class BatchPlan:
    """How a step runs: ``micro`` samples per forward pass, ``accumulation`` passes, the estimate."""

    micro: int
    accumulation: int
    max_length: int
    estimate: MemoryEstimate
    available: int
    source: str

    def describe(self) -> str:
        return (f"memory: about {_gb(self.estimate.total)} at peak of {_gb(self.available)} available "
                f"({self.source}); {self.micro} samples per pass x {self.accumulation} passes per step, "
                f"{self.max_length} tokens per text at most")


def check_training_memory(model: str | Path, kind: str, loss: str, negatives: int, settings: "TrainSettings",
                          shape: ModelShape | None = None) -> BatchPlan:
    """:func:`preflight` for a sentence-transformers trainer's settings (``negatives`` per sample)."""
    shape = shape or model_shape(model, kind)
    texts = texts_per_sample(kind, loss, negatives)
    estimate, micro, accumulation = preflight(shape, batch_size=settings.batch_size, texts=texts,
                                              max_length=settings.max_length, max_tokens=settings.max_tokens,
                                              gradient_checkpointing=settings.gradient_checkpointing)
    available, source = available_memory()
    return BatchPlan(micro, accumulation, min(settings.max_length or shape.max_length, shape.max_length), estimate,
                     available, source)


def preflight(shape: ModelShape, *, batch_size: int, texts: int, max_length: int | None, max_tokens: int | None,
              gradient_checkpointing: bool, what: str = "training") -> tuple[MemoryEstimate, int, int]:
    """Check that a step fits in memory; returns ``(estimate, micro-batch, accumulation)`` or raises
    :class:`InputError` naming the settings that would fit."""
    length = min(max_length or shape.max_length, shape.max_length)
    micro, accumulation = plan_batches(batch_size, texts, length, max_tokens)
    estimate = estimate_peak(shape, sequences=micro * texts, max_length=length,
                             gradient_checkpointing=gradient_checkpointing)
    available, source = available_memory()
    budget = int(available * MARGIN)
    if estimate.total <= budget:
        return estimate, micro, accumulation

    def fits(sequences: int, n: int, checkpointing: bool = gradient_checkpointing) -> bool:
        return estimate_peak(shape, sequences=sequences, max_length=n,
                             gradient_checkpointing=checkpointing).total <= budget

    hints = []
    shorter = next((n for n in range(length - length % 32, 31, -32) if fits(micro * texts, n)), None)
    if shorter:
        hints.append(f"--max-length {shorter}")
    per_step = next((m for m in range(micro - 1, 0, -1) if batch_size % m == 0 and fits(m * texts, length)), None)
    if per_step:
        hints.append(f"--max-tokens {per_step * texts * length} ({per_step} samples x {texts} texts x {length} tokens "
                     f"per pass, {batch_size // per_step} passes per step)")
    if not gradient_checkpointing and fits(micro * texts, length, True):
        hints.append("--gradient-checkpointing")
    advice = "; settings that fit: " + ", or ".join(hints) if hints else "; no batch or length fits: use a smaller model"
    raise InputError(f"{what} needs about {_gb(estimate.total)} at peak ({micro} samples x {texts} texts x {length} "
                     f"tokens per pass, {shape.parameters / 1e6:.1f}M parameters) but {_gb(available)} is available "
                     f"({source}){advice}", field="max-length")
