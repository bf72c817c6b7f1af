"""Cross-encoder training: pointwise BCE, Margin-MSE, listwise ListNet, Plackett-Luce ListMLE and PG-Rank.

sentence-transformers' ``CrossEncoderTrainer`` and its losses do the work:

=========== ================================================================= =====================
loss        what it is                                                        data
=========== ================================================================= =====================
bce         pointwise binary cross-entropy, positive 1 / negatives 0          triples / n-tuples
            (Nogueira & Cho 2019, monoBERT)
lce         localized contrastive estimation: softmax cross-entropy of the    triples / n-tuples
            positive against its hard negatives (Gao et al. 2021, "Rethink
            Training of BERT Rerankers in Multi-Stage Retrieval Pipeline")
margin-mse  Margin-MSE to a teacher's margins (Hofstätter et al. 2020)        triples + teacher
listnet     ListNet: softmax cross-entropy between score and label lists      n-tuples [+ teacher]
            (Cao et al. 2007)
plistmle    position-aware ListMLE, the Plackett-Luce likelihood of the       n-tuples [+ teacher]
            label order (Lan et al. 2014; Xia et al. 2008)
listmle     ListMLE, the same likelihood unweighted (Xia et al. 2008)          n-tuples [+ teacher]
pg-rank     Plackett-Luce policy gradient of nDCG@k over the query's          n-tuples [+ teacher]
            documents (Gao et al. 2023, :class:`~training.losses.CrossEncoderPGRankLoss`)
=========== ================================================================= =====================

A model without a sequence-classification head (e.g. the all-MiniLM-L6-v2 bi-encoder) starts
with a new one-logit head. A curriculum (``settings.curriculum``) weights the per-sample losses of
``bce``, ``lce`` and ``margin-mse`` (MacAvaney et al. 2020; :mod:`training.curriculum`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrieval.errors import InputError
from retrieval.models import resolve_model
from training.columns import cross_encoder_rows, to_dataset
from training.curriculum import difficulty_for
from training.data import TrainingInput
from training.runner import TrainResult, prepare_out, run_identity, run_training, training_arguments, with_loss_logs
from training.settings import PGRankSettings, TrainSettings

CROSS_ENCODER_LOSSES = ("bce", "lce", "margin-mse", "listnet", "plistmle", "listmle", "pg-rank")
_CURRICULUM_LOSSES = ("bce", "lce", "margin-mse")


def train_cross_encoder(
    model: str,
    data: TrainingInput,
    out: str | Path,
    *,
    loss: str = "bce",
    negatives: int | None = None,
    settings: TrainSettings | None = None,
    pg_rank: PGRankSettings | None = None,
    force: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train a sentence-transformers ``CrossEncoder`` (one relevance logit) on ``data``; saved in ``out``.

    ``negatives``: negatives used per sample (default: the fewest any sample has). For listwise
    losses use n-tuples (``data.group_by_query`` merges mined triples); labels are the teacher's
    scores when ``data.teacher`` is given, else 1 for the positive and 0 for the negatives.
    ``pg_rank``: PG-Rank's samples, reward, temperature and baseline (teacher scores are linear gains).
    """
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments

    settings = settings or TrainSettings()
    if loss not in CROSS_ENCODER_LOSSES:
        raise InputError(f"unknown cross-encoder loss {loss!r}; choose from {', '.join(CROSS_ENCODER_LOSSES)}",
                         field="loss")
    if settings.curriculum != "none" and loss not in _CURRICULUM_LOSSES:
        raise InputError(f"a curriculum weights per-sample losses: use it with bce, lce or margin-mse, not {loss}",
                         field="curriculum")
    if loss == "margin-mse" and data.teacher is None:
        raise InputError("margin-mse distills a teacher: give its scores (--teacher-scores)", field="teacher_scores")
    summary = data.check()
    k = data.negatives_to_use(summary, negatives)
    if k < 1:
        raise InputError("cross-encoder training needs negatives: triples or n-tuples, not pairs", path=data.triples)
    out = Path(out)
    try:
        ce = CrossEncoder(resolve_model(model), num_labels=1, max_length=settings.max_length)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a model: {str(err).splitlines()[0]}", path=model) from None
    description = {"kind": "cross-encoder", "model": model, "loss": loss, "negatives": k,
                   "settings": settings.to_dict(), "data": {k_: str(v) for k_, v in vars(data).items()},
                   "input": summary}
    pg_rank = pg_rank or PGRankSettings()
    if loss == "pg-rank":
        description["pg_rank"] = vars(pg_rank)
    identity = run_identity(settings, description, data.signature())
    prepare_out(out, identity, description, force=force)
    args = training_arguments(CrossEncoderTrainingArguments, settings, out, progress=progress)
    extra_callbacks = list(callbacks)
    with args.main_process_first():
        difficulty = difficulty_for(settings, data)
        dataset = to_dataset(lambda: cross_encoder_rows(data.samples(), loss, k, difficulty),
                             out / "checkpoints" / "dataset", identity)
    loss_fn = _loss(ce, loss, teacher_labels=data.teacher is not None, pg_rank=pg_rank)
    if difficulty is not None:
        from training.losses.curriculum import with_curriculum

        loss_fn = with_curriculum(loss_fn, settings.curriculum_fraction, extra_callbacks)
    trainer = with_loss_logs(CrossEncoderTrainer)(model=ce, args=args, train_dataset=dataset, loss=loss_fn, callbacks=extra_callbacks)
    return run_training(trainer, out, save_model=lambda path: ce.save(str(path)), description=description)


def _loss(ce: Any, loss: str, teacher_labels: bool = False, pg_rank: PGRankSettings | None = None) -> Any:
    """The sentence-transformers loss; (P)ListMLE sorts by the labels when they are a teacher's scores
    (the gold order otherwise is the input order: the positive first)."""
    from sentence_transformers.cross_encoder import losses

    if loss == "bce":
        return losses.BinaryCrossEntropyLoss(ce)
    if loss == "lce":
        from training.losses.lce import LCELoss

        return LCELoss(ce)
    if loss == "margin-mse":
        return losses.MarginMSELoss(ce)
    if loss == "listnet":
        return losses.ListNetLoss(ce)
    if loss == "pg-rank":
        from training.losses.pg_rank import CrossEncoderPGRankLoss

        return CrossEncoderPGRankLoss(ce, pg_rank, gain="linear" if teacher_labels else "exp")
    if loss == "listmle":
        return losses.ListMLELoss(ce, respect_input_order=not teacher_labels)
    return losses.PListMLELoss(ce, respect_input_order=not teacher_labels)
