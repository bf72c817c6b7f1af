"""Bi-encoder training: contrastive, STAR, ADORE, Margin-MSE and KL distillation on one trainer.

sentence-transformers' ``SentenceTransformerTrainer`` (the Hugging Face Trainer: DDP under
torchrun, checkpoints, resume) does the training; the losses are sentence-transformers' own where
it has them and :mod:`training.losses` where it does not:

========== ================================================================ =====================
loss       what it is                                                       data
========== ================================================================ =====================
contrastive InfoNCE over in-batch + hard negatives (MultipleNegativesRanking- triples / n-tuples /
           Loss; Karpukhin et al. 2020), negatives gathered across processes BEIR pairs
star       STAR: static hard + random in-batch negatives, pairwise          triples / n-tuples
           (Zhan et al. 2021, :class:`~training.losses.STARLoss`)
adore      ADORE: query encoder only, against a fixed document index,       id triples / BEIR
           negatives re-retrieved each step (Zhan et al. 2021)              pairs + dense index
margin-mse Margin-MSE distillation from a teacher's score margins           triples + teacher
           (Hofstätter et al. 2020, MarginMSELoss)                          scores
kl         KL divergence to the teacher's score distribution                n-tuples + teacher
           (DistillKLDivLoss)                                               scores
pg-rank    Plackett-Luce policy gradient of nDCG@k over in-batch + mined    triples / n-tuples /
           negatives (Gao et al. 2023, :class:`~training.losses.PGRankLoss`) BEIR pairs
========== ================================================================ =====================

Student scores for the distillation losses are the model's similarity times ``scale`` (cosine
lies in [-1, 1]; a teacher's logit margins are larger). ADORE's output keeps the trained query
encoder and the original document encoder together in one sentence-transformers ``Router``
model, so it loads back with sentence-transformers and rankwise and encodes documents exactly
as the fixed index did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrieval.errors import InputError
from retrieval.models import resolve_model
from training.columns import bi_encoder_rows, to_dataset
from training.curriculum import difficulty_for
from training.data import TrainingInput
from training.runner import TrainResult, prepare_out, run_identity, run_training, training_arguments, with_loss_logs
from training.settings import PGRankSettings, TrainSettings

BI_ENCODER_LOSSES = ("contrastive", "star", "adore", "margin-mse", "kl", "pg-rank")
_NEEDS_NEGATIVES = ("star", "margin-mse", "kl")
_NEEDS_TEACHER = ("margin-mse", "kl")
_IN_BATCH = ("contrastive", "star", "pg-rank")


class ScaledSimilarity:
    """Pairwise student score: ``scale * cos(a, b)`` (or the dot product for dot-product models)."""

    def __init__(self, scale: float, cosine: bool) -> None:
        self.scale, self.cosine = scale, cosine

    def __call__(self, a: Any, b: Any) -> Any:
        from sentence_transformers.util import pairwise_cos_sim, pairwise_dot_score

        return self.scale * (pairwise_cos_sim(a, b) if self.cosine else pairwise_dot_score(a, b))


def train_bi_encoder(
    model: str,
    data: TrainingInput,
    out: str | Path,
    *,
    loss: str = "contrastive",
    negatives: int | None = None,
    settings: TrainSettings | None = None,
    scale: float | None = None,
    index: str | Path | None = None,
    adore_depth: int = 200,
    adore_metric: str = "mrr",
    pg_rank: PGRankSettings | None = None,
    force: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train a sentence-transformers bi-encoder on ``data`` with ``loss``; the model is saved in ``out``.

    ``negatives``: hard negatives used per sample (default: the fewest any sample has). ``scale``:
    similarity multiplier of the in-batch and distillation losses (default 20 for cosine models, 1
    for dot product). ``index``: ADORE's fixed document index (default: the cached flat index of the
    corpus built with ``model``). ``pg_rank``: PG-Rank's samples, reward, temperature and baseline.
    An interrupted run resumes from its last checkpoint in
    ``out/checkpoints``.
    """
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.training_args import BatchSamplers

    settings = settings or TrainSettings()
    if loss not in BI_ENCODER_LOSSES:
        raise InputError(f"unknown bi-encoder loss {loss!r}; choose from {', '.join(BI_ENCODER_LOSSES)}", field="loss")
    if settings.curriculum != "none" and loss != "margin-mse":
        raise InputError(f"a curriculum weights per-sample losses: use it with margin-mse, not {loss}",
                         field="curriculum")
    if loss in _NEEDS_TEACHER and data.teacher is None:
        raise InputError(f"{loss} distills a teacher: give its scores (--teacher-scores)", field="teacher_scores")
    summary = data.check()
    k = data.negatives_to_use(summary, negatives)
    if loss in _NEEDS_NEGATIVES and k < 1:
        raise InputError(f"{loss} needs hard negatives: triples or n-tuples, not pairs", path=data.triples)
    out = Path(out)
    st = _load(SentenceTransformer, model)
    if settings.max_length:
        st.max_seq_length = settings.max_length
    cosine = (st.similarity_fn_name or "cosine") == "cosine"
    scale = (20.0 if cosine else 1.0) if scale is None else scale
    description = {"kind": "bi-encoder", "model": model, "loss": loss, "negatives": k, "scale": scale,
                   "settings": settings.to_dict(), "data": {k_: str(v) for k_, v in vars(data).items()},
                   "input": summary}
    if loss == "adore":
        description.update(adore_depth=adore_depth, adore_metric=adore_metric, index=str(index) if index else None)
    pg_rank = pg_rank or PGRankSettings()
    if loss == "pg-rank":
        description["pg_rank"] = vars(pg_rank)
    identity = run_identity(settings, description, data.signature())
    prepare_out(out, identity, description, force=force)
    args = training_arguments(SentenceTransformerTrainingArguments, settings, out, progress=progress,
                              batch_sampler=BatchSamplers.NO_DUPLICATES if loss in _IN_BATCH
                              else BatchSamplers.BATCH_SAMPLER)
    extra_callbacks = list(callbacks)
    document_model = None
    with args.main_process_first():
        if loss == "adore":
            dataset, loss_fn = _adore(st, model, data, out, identity, index, adore_depth, adore_metric, scale)
            document_model = model
        else:
            difficulty = difficulty_for(settings, data)
            dataset = to_dataset(lambda: bi_encoder_rows(data.samples(), loss, k, difficulty),
                                 out / "checkpoints" / "dataset", identity)
            loss_fn = _loss(st, loss, scale, cosine, pg_rank)
            if difficulty is not None:
                from training.losses.curriculum import with_curriculum

                loss_fn = with_curriculum(loss_fn, settings.curriculum_fraction, extra_callbacks)
    trainer = with_loss_logs(SentenceTransformerTrainer)(model=st, args=args, train_dataset=dataset, loss=loss_fn,
                                         callbacks=extra_callbacks)

    def save(path: Path) -> None:
        (_with_document_encoder(st, document_model) if document_model else st).save(str(path))

    return run_training(trainer, out, save_model=save, description=description)


def _load(cls: type, model: str) -> Any:
    try:
        return cls(resolve_model(model), device=None)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a model: {str(err).splitlines()[0]}", path=model) from None


def _loss(st: Any, loss: str, scale: float, cosine: bool, pg_rank: PGRankSettings) -> Any:
    import torch
    from sentence_transformers import losses

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if loss == "contrastive":
        return losses.MultipleNegativesRankingLoss(st, scale=scale, gather_across_devices=distributed)
    if loss == "star":
        from training.losses.star import STARLoss

        return STARLoss(st, scale=scale, gather_across_devices=distributed)
    if loss == "pg-rank":
        from training.losses.pg_rank import PGRankLoss

        return PGRankLoss(st, pg_rank, scale=scale)
    if loss == "margin-mse":
        return losses.MarginMSELoss(st, similarity_fct=ScaledSimilarity(scale, cosine))
    return losses.DistillKLDivLoss(st, similarity_fct=ScaledSimilarity(scale, cosine))


def _adore(st: Any, model: str, data: TrainingInput, out: Path, identity: str, index: str | Path | None,
           depth: int, metric: str, scale: float) -> tuple[Any, Any]:
    """ADORE's dataset (one row per query: its text and number) and loss over the fixed index."""
    from retrieval.encoder import Encoder
    from retrieval.index import DenseIndex
    from training.losses.adore import ADORELoss

    encoder = Encoder(model)
    if index is None:
        from retrieval.cached import dense_index
        from retrieval.formats import Corpus

        if data.corpus is None and not Path(data.triples).is_dir():
            raise InputError("ADORE needs the corpus (--corpus) or a fixed index (--index)", field="index")
        corpus = Corpus(data.corpus if data.corpus is not None else data.triples)
        index = dense_index(corpus, encoder)
    fixed = DenseIndex.load(index, gpu=False)
    if fixed.manifest.get("encoder", {}).get("fingerprint") != encoder.fingerprint:
        raise InputError("was built by another encoder; ADORE's fixed document index must be built by the model "
                         "it starts from", path=index)
    rows_of = {doc_id: row for row, doc_id in enumerate(fixed.doc_ids)}
    queries: dict[str, tuple[str, set[int]]] = {}
    for sample in data.samples():
        if sample.positive_id is None:
            raise InputError("ADORE needs document ids: id triples (--queries, --corpus) or a BEIR folder",
                             path=sample.source[0], line=sample.source[1])
        if sample.positive_id not in rows_of:
            raise InputError(f"positive {sample.positive_id!r} is not in the index", path=sample.source[0],
                             line=sample.source[1], field="positive_id")
        key = sample.query_id or sample.query
        queries.setdefault(key, (sample.query, set()))[1].add(rows_of[sample.positive_id])
    texts = [text for text, _ in queries.values()]
    positives = [sorted(rows) for _, rows in queries.values()]
    dataset = to_dataset(lambda: ({"query": t, "label": n} for n, t in enumerate(texts)),
                         out / "checkpoints" / "dataset", identity)
    return dataset, ADORELoss(st, fixed, positives, depth=depth, metric=metric, scale=scale)


def _with_document_encoder(query_model: Any, document_model: str) -> Any:
    """One ``Router`` model: the trained query encoder and the (fixed) document encoder it was trained against."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Router

    docs = SentenceTransformer(resolve_model(document_model), device="cpu")
    router = Router.for_query_document(query_modules=list(query_model.to("cpu")), document_modules=list(docs))
    combined = SentenceTransformer(modules=[router], device="cpu", similarity_fn_name=query_model.similarity_fn_name,
                                   prompts=query_model.prompts or None)
    return combined
