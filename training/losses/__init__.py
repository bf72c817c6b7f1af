"""Losses sentence-transformers does not have, one family per file.

Contrastive (in-batch + hard negatives), Margin-MSE, KL distillation, BCE, ListNet and
Plackett-Luce (P)ListMLE for cross-encoders come from sentence-transformers itself; these modules
add what it lacks: STAR (:mod:`.star`), ADORE (:mod:`.adore`), LCE (:mod:`.lce`), per-sample
curriculum weighting (:mod:`.curriculum`), the Plackett-Luce policy gradient of PG-Rank
(:mod:`.pg_rank`), FIRST's combined listwise objective (:mod:`.first`), ListNet on score tensors
for the groupwise LLM reranker (:mod:`.listnet`) and IDCM's passage-selector distillation
(:mod:`.idcm`).
"""

from rankwise.training.runner import require_training

require_training()  # the losses subclass sentence-transformers' trainer-side classes

from rankwise.training.losses.adore import ADORELoss  # noqa: E402
from rankwise.training.losses.curriculum import CurriculumLoss, CurriculumSchedule  # noqa: E402
from rankwise.training.losses.first import first_loss, first_rank_loss  # noqa: E402
from rankwise.training.losses.idcm import IDCMSelectorLoss, selector_kl  # noqa: E402
from rankwise.training.losses.lce import LCELoss  # noqa: E402
from rankwise.training.losses.listnet import listnet_loss  # noqa: E402
from rankwise.training.losses.pg_rank import CrossEncoderPGRankLoss, PGRankLoss, pg_rank_objective  # noqa: E402
from rankwise.training.losses.star import STARLoss  # noqa: E402

__all__ = ["ADORELoss", "CrossEncoderPGRankLoss", "CurriculumLoss", "CurriculumSchedule", "IDCMSelectorLoss", "LCELoss",
           "PGRankLoss", "STARLoss", "first_loss", "first_rank_loss", "listnet_loss", "pg_rank_objective",
           "selector_kl"]
