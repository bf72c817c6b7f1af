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
``bce``, ``lce`` and ``margin-mse`` (MacAvaney et al. 2020; :mod:`rankwise.training.curriculum`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.models import resolve_model
from rankwise.training.columns import cross_encoder_rows
from rankwise.training.data import TrainingInput
from rankwise.training.flow import ModelKind, check_run, train_sentence_model
from rankwise.training.losses.registry import CROSS_ENCODER, LossContext, losses_for
from rankwise.training.runner import TrainResult
from rankwise.training.settings import PGRankSettings, TrainSettings

CROSS_ENCODER_LOSSES = losses_for(CROSS_ENCODER)


def _kind() -> ModelKind:
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    return ModelKind(CROSS_ENCODER, CrossEncoderTrainer, CrossEncoderTrainingArguments, cross_encoder_rows,
                     no_negatives_message=lambda loss: "cross-encoder training needs negatives: triples or n-tuples, "
                                                       "not pairs")


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
    The losses are the registry's (:mod:`rankwise.training.losses.registry`); the flow is :mod:`rankwise.training.flow`'s.
    """
    from sentence_transformers.cross_encoder import CrossEncoder

    settings = settings or TrainSettings()
    kind = _kind()
    checked = check_run(kind, data, loss, negatives, settings, model=model)
    from transformers import set_seed

    set_seed(settings.seed)  # a new classification head starts from the run's seed: equal settings, equal weights
    try:
        ce = CrossEncoder(resolve_model(model), num_labels=1, max_length=settings.max_length)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a model: {str(err).splitlines()[0]}", path=model) from None
    result = train_sentence_model(kind, checked, ce, model, data, out, settings=settings, pg_rank=pg_rank,
                                  context=LossContext(ce, teacher_labels=data.teacher is not None), force=force,
                                  progress=progress, callbacks=callbacks, save_model=lambda path: ce.save(str(path)))
    logging.getLogger("rankwise.training").info(window_note(out, ce.max_seq_length))
    return result


def window_note(out: str | Path, max_length: int) -> str:
    """The line that tells what window a trained reranker keeps and how to override it."""
    return (f"this model reranks with max_length={max_length}: longer (query, document) pairs are cut to "
            f"{max_length} tokens; override with max_length= in the spec (cross-encoder:{out},max_length=512)")
