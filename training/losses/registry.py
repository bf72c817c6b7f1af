"""The loss registry: every bi- and cross-encoder loss, what it needs, and how it is built.

One entry per ``(kind, name)``: the paper it comes from, whether it needs a teacher's scores, hard
negatives or duplicate-free in-batch negatives, whether a curriculum may weight it, and a builder
that returns the sentence-transformers loss module. :func:`rankwise.training.flow.train_sentence_model`
checks a run against its entry before anything is loaded, so a loss is declared once, here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rankwise.retrieval.errors import InputError

BI_ENCODER = "bi-encoder"
CROSS_ENCODER = "cross-encoder"
IDCM_SELECTOR = "idcm-selector"  # a bi-encoder taught to pick passages (training.idcm_selector)


@dataclass(frozen=True)
class LossContext:
    """What a builder may use: the model, the student's similarity scale and the PG-Rank settings."""

    model: Any
    scale: float = 1.0
    cosine: bool = True
    pg_rank: Any = None
    teacher_labels: bool = False  # labels are a teacher's scores (not 1/0)
    temperature: float = 1.0  # softmax temperature of the distillation losses that take one


def _distributed() -> bool:
    """Whether torch.distributed runs: asked when the loss is built, after the TrainingArguments set it up."""
    import torch

    return torch.distributed.is_available() and torch.distributed.is_initialized()


@dataclass(frozen=True)
class LossEntry:
    """A registered loss: ``build(context)`` makes the loss module."""

    kind: str
    name: str
    build: Callable[[LossContext], Any]
    paper: str
    needs_teacher: bool = False
    needs_negatives: bool = False
    in_batch: bool = False
    curriculum: bool = False


REGISTRY: dict[tuple[str, str], LossEntry] = {}


def register(kind: str, name: str, paper: str, **needs: bool) -> Callable[[Callable[[LossContext], Any]], Callable]:
    """Decorator: register ``build`` as the ``name`` loss of ``kind``."""

    def wrap(build: Callable[[LossContext], Any]) -> Callable[[LossContext], Any]:
        if (kind, name) in REGISTRY:
            raise ValueError(f"{kind} loss {name!r} is registered twice")
        REGISTRY[kind, name] = LossEntry(kind, name, build, paper, **needs)
        return build

    return wrap


def losses_for(kind: str) -> tuple[str, ...]:
    """The loss names of ``kind``, in registration order."""
    return tuple(name for k, name in REGISTRY if k == kind)


def get_loss(kind: str, name: str) -> LossEntry:
    """The entry of ``name``; an unknown name is an :class:`InputError` listing the choices."""
    entry = REGISTRY.get((kind, name))
    if entry is None:
        raise InputError(f"unknown {kind} loss {name!r}; choose from {', '.join(losses_for(kind))}", field="loss")
    return entry


def _either(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_loss(entry: LossEntry, *, teacher: bool, curriculum: str) -> None:
    """Refuse a curriculum the loss cannot take and a distillation loss without a teacher."""
    if curriculum != "none" and not entry.curriculum:
        allowed = tuple(n for n in losses_for(entry.kind) if REGISTRY[entry.kind, n].curriculum)
        raise InputError(f"a curriculum weights per-sample losses: use it with {_either(allowed)}, not {entry.name}",
                         field="curriculum")
    if entry.needs_teacher and not teacher:
        raise InputError(f"{entry.name} distills a teacher: give its scores (--teacher-scores)", field="teacher_scores")


# --- bi-encoders ---------------------------------------------------------------------------------------


class ScaledSimilarity:
    """Pairwise student score: ``scale * cos(a, b)`` (or the dot product for dot-product models)."""

    def __init__(self, scale: float, cosine: bool) -> None:
        self.scale, self.cosine = scale, cosine

    def __call__(self, a: Any, b: Any) -> Any:
        from sentence_transformers.util import pairwise_cos_sim, pairwise_dot_score

        return self.scale * (pairwise_cos_sim(a, b) if self.cosine else pairwise_dot_score(a, b))


@register(BI_ENCODER, "contrastive", "InfoNCE over in-batch and hard negatives (MultipleNegativesRankingLoss)",
          in_batch=True)
def _contrastive(c: LossContext) -> Any:
    from sentence_transformers import losses

    return losses.MultipleNegativesRankingLoss(c.model, scale=c.scale, gather_across_devices=_distributed())


@register(BI_ENCODER, "star", "STAR, Zhan et al. 2021", needs_negatives=True, in_batch=True)
def _star(c: LossContext) -> Any:
    from rankwise.training.losses.star import STARLoss

    return STARLoss(c.model, scale=c.scale, gather_across_devices=_distributed())


@register(BI_ENCODER, "adore", "ADORE, Zhan et al. 2021 (built over the fixed index by training.bi_encoder)")
def _adore(c: LossContext) -> Any:
    raise InputError("adore's loss is built over its fixed document index by train_bi_encoder", field="loss")


@register(BI_ENCODER, "margin-mse", "Margin-MSE, Hofstätter et al. 2020", needs_teacher=True, needs_negatives=True,
          curriculum=True)
def _bi_margin_mse(c: LossContext) -> Any:
    from sentence_transformers import losses

    return losses.MarginMSELoss(c.model, similarity_fct=ScaledSimilarity(c.scale, c.cosine))


@register(BI_ENCODER, "kl", "KL divergence to the teacher's score distribution", needs_teacher=True,
          needs_negatives=True)
def _kl(c: LossContext) -> Any:
    from sentence_transformers import losses

    return losses.DistillKLDivLoss(c.model, similarity_fct=ScaledSimilarity(c.scale, c.cosine))


@register(BI_ENCODER, "pg-rank", "Neural PG-Rank, Gao et al. 2023", in_batch=True)
def _bi_pg_rank(c: LossContext) -> Any:
    from rankwise.training.losses.pg_rank import PGRankLoss

    return PGRankLoss(c.model, c.pg_rank, scale=c.scale)


# --- cross-encoders ------------------------------------------------------------------------------------


@register(CROSS_ENCODER, "bce", "pointwise BCE, Nogueira & Cho 2019", needs_negatives=True, curriculum=True)
def _bce(c: LossContext) -> Any:
    from sentence_transformers.cross_encoder import losses

    return losses.BinaryCrossEntropyLoss(c.model)


@register(CROSS_ENCODER, "lce", "localized contrastive estimation, Gao et al. 2021", needs_negatives=True,
          curriculum=True)
def _lce(c: LossContext) -> Any:
    from rankwise.training.losses.lce import LCELoss

    return LCELoss(c.model)


@register(CROSS_ENCODER, "margin-mse", "Margin-MSE, Hofstätter et al. 2020", needs_teacher=True,
          needs_negatives=True, curriculum=True)
def _ce_margin_mse(c: LossContext) -> Any:
    from sentence_transformers.cross_encoder import losses

    return losses.MarginMSELoss(c.model)


@register(CROSS_ENCODER, "listnet", "ListNet, Cao et al. 2007", needs_negatives=True)
def _listnet(c: LossContext) -> Any:
    from sentence_transformers.cross_encoder import losses

    return losses.ListNetLoss(c.model)


@register(CROSS_ENCODER, "plistmle", "position-aware ListMLE, Lan et al. 2014", needs_negatives=True)
def _plistmle(c: LossContext) -> Any:
    from sentence_transformers.cross_encoder import losses

    # the gold order is the input order (positive first) unless the labels are a teacher's scores
    return losses.PListMLELoss(c.model, respect_input_order=not c.teacher_labels)


@register(CROSS_ENCODER, "listmle", "ListMLE, Xia et al. 2008", needs_negatives=True)
def _listmle(c: LossContext) -> Any:
    from sentence_transformers.cross_encoder import losses

    return losses.ListMLELoss(c.model, respect_input_order=not c.teacher_labels)


@register(CROSS_ENCODER, "pg-rank", "Neural PG-Rank, Gao et al. 2023", needs_negatives=True)
def _ce_pg_rank(c: LossContext) -> Any:
    from rankwise.training.losses.pg_rank import CrossEncoderPGRankLoss

    return CrossEncoderPGRankLoss(c.model, c.pg_rank, gain="linear" if c.teacher_labels else "exp")


# --- IDCM passage selectors ----------------------------------------------------------------------------


@register(IDCM_SELECTOR, "kl", "IDCM, Hofstätter et al. 2021 (listwise KL over a document's passages)",
          needs_teacher=True)
def _idcm_kl(c: LossContext) -> Any:
    from rankwise.training.losses.idcm import IDCMSelectorLoss

    return IDCMSelectorLoss(c.model, scale=c.scale, temperature=c.temperature, cosine=c.cosine)
