"""Curriculum weighting: hard samples down-weighted at first, weights annealed to uniform.

MacAvaney, Nardini, Perego, Tonellotto, Goharian and Frieder, "Training Curricula for Open
Domain Answer Re-Ranking", SIGIR 2020. Each training sample gets a difficulty ``d`` in [0, 1]
from a heuristic (e.g. the BM25 rank of its documents, or a teacher's margin; see
:mod:`rankwise.training.curriculum`); its loss is multiplied by

    w(d, t) = 1 - d * max(0, 1 - t / (fraction * T))

at step ``t`` of ``T``: an easy sample (``d = 0``) always counts fully, a hard one (``d = 1``)
starts at weight 0, and from ``fraction`` of training on every sample weighs 1 (the paper's
linear anneal to uniform). The wrapped loss must be one whose per-sample values can be read:
the wrapper switches its criterion to ``reduction="none"`` (sentence-transformers' BCE and
Margin-MSE losses, for cross-encoders and bi-encoders, and LCE's cross-entropy). The difficulty travels as the last
column of the ``label`` tensor, so the data pipeline needs no extra input column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

# attribute names of the per-sample criterion inside sentence-transformers' losses
_CRITERIA = ("bce_with_logits_loss", "loss_fct", "cross_entropy_loss")


@dataclass
class CurriculumSchedule:
    """``w(d, t) = 1 - d * max(0, 1 - t / (fraction * T))``; :attr:`progress` is ``t / T``, set by a callback."""

    fraction: float = 0.5
    progress: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"curriculum fraction must be in (0, 1], got {self.fraction}")

    def weights(self, difficulty: Tensor) -> Tensor:
        remaining = max(0.0, 1.0 - self.progress / self.fraction)
        return 1.0 - difficulty.clamp(0.0, 1.0) * remaining


class CurriculumLoss(nn.Module):
    """Wraps a loss with a per-sample criterion; weights each sample by :class:`CurriculumSchedule`."""

    def __init__(self, loss: nn.Module, schedule: CurriculumSchedule) -> None:
        super().__init__()
        criterion = next((getattr(loss, a) for a in _CRITERIA if isinstance(getattr(loss, a, None), nn.Module)), None)
        if criterion is None or not hasattr(criterion, "reduction"):
            raise ValueError(f"{type(loss).__name__} has no per-sample criterion: curriculum weighting needs "
                             "a BCE, LCE or Margin-MSE loss")
        criterion.reduction = "none"
        self.loss = loss
        self.model = loss.model
        self.schedule = schedule

    def forward(self, inputs: Any, labels: Tensor | list[Tensor], **kwargs: Any) -> Tensor:
        if isinstance(labels, list):
            labels = torch.stack(labels)
        if labels.dim() == 1:  # the difficulty alone: the wrapped loss takes no label (LCE)
            difficulty, inner = labels.float(), labels
        else:
            difficulty = labels[:, -1].float()
            inner = labels[:, :-1]
            if inner.shape[1] == 1:
                inner = inner[:, 0]
        per_sample = self.loss(inputs, inner, **kwargs)
        per_sample = per_sample.reshape(difficulty.shape[0], -1).mean(dim=1)
        return (self.schedule.weights(difficulty).to(per_sample.device) * per_sample).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": type(self.loss).__name__, "fraction": self.schedule.fraction}

    @property
    def citation(self) -> str:
        return "MacAvaney et al., Training Curricula for Open Domain Answer Re-Ranking, SIGIR 2020"


def curriculum_callback(schedule: CurriculumSchedule) -> Any:
    """A ``transformers.TrainerCallback`` that keeps ``schedule.progress`` at ``global_step / max_steps``."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            schedule.progress = state.global_step / max(1, state.max_steps)

    return _Progress()


__all__ = ["CurriculumLoss", "CurriculumSchedule", "curriculum_callback", "with_curriculum"]


def with_curriculum(loss: nn.Module, fraction: float, callbacks: list[Any]) -> CurriculumLoss:
    """``loss`` wrapped in :class:`CurriculumLoss`; the callback that advances its schedule is appended to ``callbacks``."""
    schedule = CurriculumSchedule(fraction)
    callbacks.append(curriculum_callback(schedule))
    return CurriculumLoss(loss, schedule)
