"""Losses sentence-transformers does not have, one family per file.

Contrastive (in-batch + hard negatives), Margin-MSE, KL distillation, BCE, ListNet and
Plackett-Luce ListMLE come from sentence-transformers itself (see :mod:`training.recipes`);
these modules add what it lacks: STAR (:mod:`.star`), ADORE (:mod:`.adore`), LCE (:mod:`.lce`) and per-sample
curriculum weighting (:mod:`.curriculum`).
"""

from training.losses.adore import ADORELoss
from training.losses.curriculum import CurriculumLoss, CurriculumSchedule
from training.losses.lce import LCELoss
from training.losses.star import STARLoss

__all__ = ["ADORELoss", "CurriculumLoss", "CurriculumSchedule", "LCELoss", "STARLoss"]
