"""Bi-encoder training: contrastive, STAR, ADORE, Margin-MSE and KL distillation on one trainer.

sentence-transformers' ``SentenceTransformerTrainer`` (the Hugging Face Trainer: DDP under
torchrun, checkpoints, resume) does the training; the losses are sentence-transformers' own where
it has them and :mod:`rankwise.training.losses` where it does not:

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

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.models import resolve_model
from rankwise.training.columns import bi_encoder_rows, to_dataset
from rankwise.training.data import TrainingInput
from rankwise.training.flow import ModelKind, check_run, train_sentence_model
from rankwise.training.losses.registry import BI_ENCODER, LossContext, ScaledSimilarity, losses_for
from rankwise.training.runner import TrainResult
from rankwise.training.settings import PGRankSettings, TrainSettings

BI_ENCODER_LOSSES = losses_for(BI_ENCODER)
__all__ = ["BI_ENCODER_LOSSES", "ScaledSimilarity", "train_bi_encoder"]


def _kind(description: dict[str, Any]) -> ModelKind:
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    return ModelKind(BI_ENCODER, SentenceTransformerTrainer, SentenceTransformerTrainingArguments, bi_encoder_rows,
                     argument_options=lambda entry: {"batch_sampler": BatchSamplers.NO_DUPLICATES if entry.in_batch
                                                     else BatchSamplers.BATCH_SAMPLER},
                     description=description)


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
    An interrupted run resumes from its last checkpoint in ``out/checkpoints``. The losses are the
    registry's (:mod:`rankwise.training.losses.registry`); the flow is :mod:`rankwise.training.flow`'s.
    """
    from sentence_transformers import SentenceTransformer

    settings = settings or TrainSettings()
    description: dict[str, Any] = {}
    kind = _kind(description)
    checked = check_run(kind, data, loss, negatives, settings, model=model)
    st = _load(SentenceTransformer, model)
    if settings.max_length:
        st.max_seq_length = settings.max_length
    cosine = (st.similarity_fn_name or "cosine") == "cosine"
    scale = (20.0 if cosine else 1.0) if scale is None else scale
    description["scale"] = scale
    if loss == "adore":
        description.update(adore_depth=adore_depth, adore_metric=adore_metric, index=str(index) if index else None)

    def adore(out_dir: Path, identity: str) -> tuple[Any, Any]:
        return _adore(st, model, data, out_dir, identity, index, adore_depth, adore_metric, scale)

    def save(path: Path) -> None:
        (_with_document_encoder(st, model) if loss == "adore" else st).save(str(path))

    return train_sentence_model(kind, checked, st, model, data, out, settings=settings, pg_rank=pg_rank,
                                context=LossContext(st, scale=scale, cosine=cosine),
                                force=force, progress=progress, callbacks=callbacks, save_model=save,
                                custom=adore if loss == "adore" else None)


def _load(cls: type, model: str) -> Any:
    try:
        return cls(resolve_model(model), device=None)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a model: {str(err).splitlines()[0]}", path=model) from None


def _adore(st: Any, model: str, data: TrainingInput, out: Path, identity: str, index: str | Path | None,
           depth: int, metric: str, scale: float) -> tuple[Any, Any]:
    """ADORE's dataset (one row per query: its text and number) and loss over the fixed index."""
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.index import DenseIndex
    from rankwise.training.losses.adore import ADORELoss

    encoder = Encoder(model)
    if index is None:
        from rankwise.retrieval.cached import dense_index
        from rankwise.retrieval.formats import Corpus

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
