"""``TrainSettings``: the knobs every trainer shares (budget, optimiser, checkpoints, curriculum)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from rankwise.retrieval.errors import InputError

CURRICULA = ("none", "bm25", "teacher")
# the LLM trainers' choices, here so that the command line lists them without importing the trainers
LISTWISE_LOSSES = ("first",)  # rankwise.training.listwise
LISTWISE_ORDERS = ("retrieved", "shuffled")  # rankwise.training.listwise: the order of a training window
GROUPWISE_LOSSES = ("listnet", "pg-rank")  # rankwise.training.groupwise


@dataclass
class TrainSettings:
    """Budget and optimiser settings; :meth:`identity` is what must match for a run to resume.

    ``epochs`` or ``max_steps`` (``max_steps > 0`` wins) set the budget; checkpoints every
    ``save_steps`` steps (keeping ``save_total_limit``) let an interrupted run continue where it
    stopped. ``curriculum`` picks the difficulty heuristic of :mod:`rankwise.training.curriculum`
    (``none`` = off), annealed to uniform weights by ``curriculum_fraction`` of training;
    ``curriculum_run`` (a TREC run of the training queries) gives the ``bm25`` heuristic its ranks.
    ``workers``: DataLoader worker processes that collate (tokenize, pad) batches (None:
    :func:`rankwise.retrieval.batching.default_workers`); they change where collation runs, not the batches,
    so they are not part of the identity and a run may resume with another number.
    ``max_tokens``: padded tokens per forward pass; a step of ``batch_size`` samples is split into
    micro-batches whose gradients accumulate (:func:`rankwise.training.memory.plan_batches`).
    ``gradient_checkpointing``: recompute each layer's activations in the backward pass (less
    memory, about a third more compute). Both are checked against the memory available before any
    data loads (:func:`rankwise.training.memory.preflight`).
    """

    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    max_length: int | None = None
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 10
    curriculum: str = "none"
    curriculum_fraction: float = 0.5
    curriculum_run: str | None = None
    gradient_accumulation_steps: int = 1
    workers: int | None = None
    max_tokens: int | None = None
    gradient_checkpointing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.curriculum not in CURRICULA:
            raise InputError(f"unknown curriculum {self.curriculum!r}; choose from {', '.join(CURRICULA)}",
                             field="curriculum")
        checks = {"max_steps": self.max_steps == -1 or self.max_steps >= 1,  # -1: epochs decide
                  "batch_size": self.batch_size >= 1, "lr": self.lr > 0, "epochs": self.epochs > 0,
                  "save_steps": self.save_steps >= 1, "logging_steps": self.logging_steps >= 1,
                  "warmup_ratio": 0 <= self.warmup_ratio < 1,
                  "curriculum_fraction": 0 < self.curriculum_fraction <= 1,
                  "gradient_accumulation_steps": self.gradient_accumulation_steps >= 1,
                  "workers": self.workers is None or self.workers >= 0,
                  "max_tokens": self.max_tokens is None or self.max_tokens >= 1}
        for name, ok in checks.items():
            if not ok:
                raise InputError(f"invalid value {getattr(self, name)!r}", field=name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def dataloader_workers(self) -> int:
        """``workers``, or :func:`rankwise.retrieval.batching.default_workers` when not set."""
        from rankwise.retrieval.batching import default_workers

        return default_workers() if self.workers is None else self.workers

    def identity(self, **inputs: Any) -> str:
        """A hash of everything that determines the trained weights except the checkpoint cadence.

        Gradient checkpointing recomputes the same activations, so it is left out (a run may resume with or
        without it); ``max_tokens`` counts only when set, so runs from before it existed keep their hash."""
        keep = {k: v for k, v in self.to_dict().items() if k not in ("save_steps", "save_total_limit", "logging_steps",
                                                                   "workers", "gradient_checkpointing")}
        if keep.get("max_tokens") is None:
            keep.pop("max_tokens", None)
        blob = json.dumps({"settings": keep, "inputs": inputs}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


PG_BASELINES = ("loo", "none")


@dataclass(frozen=True)
class PGRankSettings:
    """PG-Rank's knobs (:mod:`rankwise.training.losses.pg_rank`): rankings sampled per query, the reward metric
    (``ndcg@K`` or ``ndcg``), the Plackett-Luce temperature and the baseline (``loo`` or ``none``)."""

    samples: int = 8
    reward: str = "ndcg@10"
    temperature: float = 1.0
    baseline: str = "loo"

    def __post_init__(self) -> None:
        if self.baseline not in PG_BASELINES:
            raise InputError(f"unknown baseline {self.baseline!r}; choose from {', '.join(PG_BASELINES)}",
                             field="baseline")
        least = 2 if self.baseline == "loo" else 1
        if self.samples < least:
            raise InputError(f"{self.samples} samples; the {self.baseline} baseline needs at least {least}",
                             field="samples")
        if not self.temperature > 0:
            raise InputError(f"temperature must be positive, got {self.temperature}", field="temperature")
        self.cutoff  # noqa: B018 -- validates the reward name

    @property
    def cutoff(self) -> int | None:
        """The reward's cutoff: ``"ndcg@10"`` -> 10, ``"ndcg"`` -> None (the whole list)."""
        match = re.fullmatch(r"ndcg(?:@(\d+))?", self.reward.strip().lower())
        if not match or (match.group(1) is not None and int(match.group(1)) < 1):
            raise InputError(f"unknown reward {self.reward!r}; use ndcg@K (e.g. ndcg@10) or ndcg", field="reward")
        return int(match.group(1)) if match.group(1) else None
