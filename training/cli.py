"""``rankwise mine`` (hard-negative triples and teacher scores) and ``rankwise train
bi-encoder|cross-encoder|listwise|groupwise|idcm-selector``."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.json_output import dumps
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.options import Corpus as CorpusOption
from rankwise.retrieval.options import (ChunkSize, IndexFolder, OptionalCorpus, OptionalQrels, OptionalQueries, Passages, Stride,
                                        Encoder, EncoderBatchSize, Force, Fusion, IndexBackend, IndexType, Json,
                                        Retriever, Seed, out_file, out_folder)
from rankwise.retrieval.values import Range, non_negative_float, non_negative_int, one_of, positive_float, positive_int
from rankwise.rerank.permutation import LABELS
from rankwise.training.mining import SAMPLINGS
from rankwise.training.options import (BI_ENCODER_FIELDS, CROSS_ENCODER_FIELDS, IDCM_SELECTOR_FIELDS, LLM_DEFAULTS,
                                       LLM_FIELDS, PG_RANK, TRAIN_SETTINGS, Candidates, GroupByQuery, Lora, LoraR,
                                       MaxPassageTokens, OptionalTriples, OptionSet, StartingModel, TeacherScores,
                                       Triples)
from rankwise.training.settings import (GROUPWISE_LOSSES, LISTWISE_LOSSES, LISTWISE_ORDERS, PGRankSettings,
                                        TrainSettings)

if TYPE_CHECKING:
    from rankwise.training.candidates import CandidateSource
    from rankwise.training.runner import TrainResult


Queries = OptionalQueries
Corpus = OptionalCorpus
_NEGATIVES_HELP = "hard negatives per sample, a (query, positive) pair (train: default all the sample has)"
Negatives = Annotated[int, positive_int.option(help=_NEGATIVES_HELP)]
OptionalNegatives = Annotated[Optional[int], positive_int.option(help=_NEGATIVES_HELP)]
Runs = Annotated[Optional[Path], typer.Option(help="TREC run of the training queries: its top --candidates documents "
                                                   "are the candidates")]
Qrels = OptionalQrels


def _beir_defaults(corpus: Path, queries: Path | None, qrels: Path | None) -> tuple[Path, Path]:
    """``--queries`` / ``--qrels`` default to a BEIR folder's ``queries.jsonl`` and ``qrels/train.tsv``."""
    if corpus.is_dir():
        if queries is None:
            queries = next((corpus / n for n in ("queries.jsonl", "queries.tsv") if (corpus / n).is_file()), None)
            if queries is None:
                raise InputError("no queries.jsonl in this folder; pass --queries", path=corpus, field="queries")
        if qrels is None:
            qrels = corpus / "qrels" / "train.tsv"
            if not qrels.is_file():
                raise InputError("no qrels/train.tsv in this folder; pass --qrels", path=corpus, field="qrels")
    if queries is None:
        raise InputError("--queries is needed when --corpus is a file", field="queries")
    if qrels is None:
        raise InputError("--qrels is needed when --corpus is a file", field="qrels")
    return queries, qrels


def _rank_window(text: str) -> str:
    """``--rank-window`` checked while the command line is parsed (one line naming the option)."""
    from rankwise.training.mining import parse_rank_window

    try:
        parse_rank_window(text)
    except InputError as err:
        raise typer.BadParameter(err.message) from None
    return text


def mine(
    corpus: CorpusOption,
    out: Annotated[Path, out_file("triples file to write (query_id, pos_id, neg_id)")],
    queries: Queries = None,
    qrels: Qrels = None,
    retriever: Retriever = "dense",
    model: Encoder = DEFAULT_ENCODER,
    rank_window: Annotated[str, typer.Option("--rank-window", callback=_rank_window, help="rank window A:B to draw "
                                                   "negatives from (ranked[A:B], 0-based)")] = "10:100",
    negatives: Negatives = 8,
    sampling: Annotated[one_of(SAMPLINGS), typer.Option(help="random (seeded) or top")] = "random",
    teacher: Annotated[Optional[str], typer.Option(help="reranker spec PARADIGM:MODEL[,key=value...] scoring the "
                                                        "candidates, e.g. cross-encoder:PATH")] = None,
    margin: Annotated[Optional[float], Range(float).option(help="drop a negative when teacher(neg) > teacher(pos) - MARGIN")]
    = None,
    teacher_pool: Annotated[int, non_negative_int.option(help="the teacher scores POOL x NEGATIVES candidates per "
                                                              "query (0: the whole window, the slowest)")] = 4,
    text: Annotated[bool, typer.Option("--text", help="write texts (query, positive, negative) instead of ids")] = False,
    scores: Annotated[Optional[Path], out_file("teacher scores file (Margin-MSE format)", "--scores")] = None,
    seed: Seed = 0,
    force: Force = False,
    chunk_size: ChunkSize = 256,
    index_type: IndexType = "flat",
    fusion: Fusion = "rrf",
    batch_size: EncoderBatchSize = 64,
    backend: IndexBackend = None,
    index: IndexFolder = None,
    json_output: Json = False,
) -> None:
    """Mine hard negatives from the --rank-window window of a retriever's ranking (resumable); write triples."""
    from rankwise.retrieval.cached import cached_retriever
    from rankwise.retrieval.formats import Corpus
    from rankwise.training.mining import mine_negatives, parse_rank_window

    window = parse_rank_window(rank_window)
    queries, qrels = _beir_defaults(corpus, queries, qrels)
    docs = Corpus(corpus)

    def open_first_stage() -> Any:
        if index is None:
            return cached_retriever(docs, retriever, model, index_type=index_type, fusion=fusion,
                                    batch_size=batch_size, backend=backend or "torch")
        from rankwise.retrieval.open import open_retriever

        return open_retriever(index, backend=backend, batch_size=batch_size, corpus=docs)

    stats = mine_negatives(
        docs, queries, qrels, open_first_stage,
        window=window, negatives=negatives, sampling=sampling, seed=seed, teacher=teacher, margin=margin,
        teacher_pool=teacher_pool,
        out=out, scores_out=scores, text=text, chunk_size=chunk_size, force=force,
    )
    from rankwise.retrieval.distributed import world

    if world()[0] != 0:  # under torchrun, rank 0 reports the whole job
        return
    typer.echo(f"{out}: {stats.triples} triples from {stats.queries} queries ({stats.positives} positives; "
               f"{stats.no_positives} queries without positives, {stats.short} with fewer than {negatives} "
               f"negatives for a positive, {stats.teacher_dropped} candidates dropped by the teacher)"
               + (f"; teacher scores in {scores}" if scores else ""), err=True)
    if json_output:
        typer.echo(dumps(stats.as_dict(), sort_keys=True))


train_app = typer.Typer(help="Train bi-encoders and rerankers on triples, n-tuples or BEIR qrels.",
                        no_args_is_help=True)

Out = Annotated[Path, out_folder("folder for the trained model (checkpoints in OUT/checkpoints)")]
def _candidates(*, triples: Path | None, runs: Path | None, qrels: Path | None, queries: Path | None,
                corpus: Path | None, teacher_scores: Path | None, group_by_query: bool,
                candidates: int) -> "CandidateSource":
    """The LLM trainers' input: triples (as the other trainers read them) or a run with qrels (the values of
    :data:`LLM_INPUT`, whose table holds the defaults)."""
    from rankwise.training.candidates import RunInput
    from rankwise.training.data import TrainingInput

    if (triples is None) == (runs is None):
        raise InputError("give either --triples or --runs (a TREC run, with --qrels, --queries and --corpus)",
                         field="triples")
    if triples is not None:
        return TrainingInput(triples, queries=queries, corpus=corpus, teacher=teacher_scores,
                             group_by_query=group_by_query)
    if corpus is None:
        raise InputError("--runs needs --corpus (a BEIR folder, or a corpus file with --queries and --qrels)",
                         field="corpus")
    queries, qrels = _beir_defaults(corpus, queries, qrels)
    return RunInput(runs, qrels, queries, corpus, depth=candidates)


# the LLM trainers' input options, declared once: triples, or a run with its qrels, queries and corpus
LLM_INPUT = OptionSet({
    "triples": (OptionalTriples, None), "runs": (Runs, None), "qrels": (Qrels, None), "queries": (Queries, None),
    "corpus": (Corpus, None), "teacher_scores": (TeacherScores, None), "group_by_query": (GroupByQuery, False),
    "candidates": (Candidates, 20),
}, lambda **values: _candidates(**values))


def _report(result: "TrainResult", json_output: bool) -> None:
    import os

    import torch

    if int(os.environ.get("RANK", "0")) != 0:
        return
    summary = {"out": str(result.out), "steps": result.steps, "samples": result.samples,
               "seconds": round(result.seconds, 2), "samples_per_second": round(result.samples_per_second, 3),
               "final_loss": result.final_loss, "resumed_from": result.resumed_from,
               "device": "cuda" if torch.cuda.is_available() else "cpu"}
    summary["already_finished"] = result.already_finished
    if result.already_finished and not json_output:
        typer.echo(f"{result.out} already holds this finished run ({result.steps} steps): nothing trained", err=True)
        return
    typer.echo(dumps(summary) if json_output else
               f"trained {result.steps} steps ({result.samples_per_second:.1f} samples/s, final loss "
               f"{result.final_loss}); model in {result.out}", err=not json_output)


@train_app.command("bi-encoder")
@PG_RANK.expand("pg_rank")
@TRAIN_SETTINGS.expand("settings", fields=BI_ENCODER_FIELDS)
def train_bi_encoder_cmd(
    model: StartingModel,
    triples: Triples,
    out: Out,
    settings: "TrainSettings",
    pg_rank: "PGRankSettings",
    loss: Annotated[str, typer.Option(help="contrastive, star, adore, margin-mse, kl or pg-rank")] = "contrastive",
    queries: Queries = None,
    corpus: Corpus = None,
    teacher_scores: TeacherScores = None,
    group_by_query: GroupByQuery = False,
    negatives: OptionalNegatives = None,
    scale: Annotated[Optional[float], positive_float.option(help="similarity scale (default 20 cosine, 1 dot)")] = None,
    index: IndexFolder = None,
    adore_depth: Annotated[int, positive_int.option(help="ADORE: documents re-retrieved per query and step")] = 200,
    adore_metric: Annotated[str, typer.Option(help="ADORE: mrr or ndcg pair weights")] = "mrr",
    force: Force = False,
    json_output: Json = False,
) -> None:
    """Train a bi-encoder (resumes from OUT/checkpoints; data-parallel under torchrun).

    --model: the sentence-transformers model to start from (a name or path)."""
    from rankwise.training.bi_encoder import train_bi_encoder
    from rankwise.training.data import TrainingInput

    data = TrainingInput(triples, queries=queries, corpus=corpus, teacher=teacher_scores,
                         group_by_query=group_by_query)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout keeps --json clean
        result = train_bi_encoder(model, data, out, loss=loss, negatives=negatives, settings=settings, scale=scale,
                                  index=index, adore_depth=adore_depth, adore_metric=adore_metric, force=force,
                                  pg_rank=pg_rank)
    _report(result, json_output)


@train_app.command("cross-encoder")
@PG_RANK.expand("pg_rank")
@TRAIN_SETTINGS.expand("settings", fields=CROSS_ENCODER_FIELDS)
def train_cross_encoder_cmd(
    model: StartingModel,
    triples: Triples,
    out: Out,
    settings: "TrainSettings",
    pg_rank: "PGRankSettings",
    loss: Annotated[str, typer.Option(help="bce, lce, margin-mse, listnet, plistmle, listmle or pg-rank")] = "bce",
    queries: Queries = None,
    corpus: Corpus = None,
    teacher_scores: TeacherScores = None,
    group_by_query: GroupByQuery = False,
    negatives: OptionalNegatives = None,
    force: Force = False,
    json_output: Json = False,
) -> None:
    """Train a cross-encoder reranker (resumes from OUT/checkpoints; data-parallel under torchrun).

    --model: a cross-encoder, or an encoder (a new head) to start from."""
    from rankwise.training.cross_encoder import train_cross_encoder
    from rankwise.training.data import TrainingInput

    data = TrainingInput(triples, queries=queries, corpus=corpus, teacher=teacher_scores,
                         group_by_query=group_by_query)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout keeps --json clean
        result = train_cross_encoder(model, data, out, loss=loss, negatives=negatives, settings=settings, force=force,
                                     pg_rank=pg_rank)
    _report(result, json_output)


def _train_llm(train: Any, model: str, source: "CandidateSource", out: Path, settings: "TrainSettings", lora: bool,
               lora_r: int, force: bool, json_output: bool, **options: Any) -> None:
    from rankwise.training.llm import LoRASettings

    lora_settings = LoRASettings(enabled=lora, r=lora_r)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout keeps --json clean
        result = train(model, source, out, settings=settings, lora=lora_settings, force=force, **options)
    _report(result, json_output)


@train_app.command("listwise")
@LLM_INPUT.expand("source")
@TRAIN_SETTINGS.expand("settings", fields=LLM_FIELDS, batch_size=2, **LLM_DEFAULTS)
def train_listwise_cmd(
    model: StartingModel,
    out: Out,
    source: "CandidateSource",
    settings: "TrainSettings",
    loss: Annotated[one_of(LISTWISE_LOSSES), typer.Option(help="first: LM loss on the gold ranking + weighted "
                                                                "RankNet")] = "first",
    window: Annotated[int, Range(int, min=2, max=len(LABELS)).option(help="passages per training window")] = 20,
    rank_weight: Annotated[float, non_negative_float.option(help="lambda of L_LM + lambda * L_rank")] = 1.0,
    order: Annotated[one_of(LISTWISE_ORDERS), typer.Option(help="window order: retrieved (as at inference) or "
                                                                 "shuffled")] = "retrieved",
    max_passage_tokens: MaxPassageTokens = 100,
    lora: Lora = True,
    lora_r: LoraR = 16,
    force: Force = False,
    json_output: Json = False,
) -> None:
    """Train a causal LM as a FIRST listwise reranker (resumes from OUT/checkpoints); loads as listwise:OUT.

    --model: the causal LM to start from (a name, folder or .gguf file)."""
    from rankwise.training.listwise import train_listwise

    _train_llm(train_listwise, model, source, out, settings, lora, lora_r, force, json_output, loss=loss,
               window=window, rank_weight=rank_weight, max_passage_tokens=max_passage_tokens, order=order)


@train_app.command("groupwise")
@LLM_INPUT.expand("source")
@PG_RANK.expand("pg_rank")
@TRAIN_SETTINGS.expand("settings", fields=LLM_FIELDS, batch_size=1, **LLM_DEFAULTS)
def train_groupwise_cmd(
    model: StartingModel,
    out: Out,
    source: "CandidateSource",
    settings: "TrainSettings",
    pg_rank: "PGRankSettings",
    loss: Annotated[one_of(GROUPWISE_LOSSES), typer.Option(help="training loss")] = "listnet",
    group_size: Annotated[int, Range(int, min=2, max=len(LABELS)).option(
        help="documents per group (use the same at inference)")] = 5,
    levels: Annotated[int, Range(int, min=1, max=99).option(
        help="score scale 0..LEVELS (use the same at inference)")] = 10,
    max_passage_tokens: MaxPassageTokens = 100,
    lora: Lora = True,
    lora_r: LoraR = 16,
    force: Force = False,
    json_output: Json = False,
) -> None:
    """Train a causal LM as a groupwise reranker (resumes from OUT/checkpoints); loads as groupwise:OUT.

    --model: the causal LM to start from (a name, folder or .gguf file)."""
    from rankwise.training.groupwise import train_groupwise

    _train_llm(train_groupwise, model, source, out, settings, lora, lora_r, force, json_output, loss=loss,
               group_size=group_size, levels=levels, max_passage_tokens=max_passage_tokens, pg_rank=pg_rank)


@train_app.command("idcm-selector")
@TRAIN_SETTINGS.expand("settings", fields=IDCM_SELECTOR_FIELDS, batch_size=8)
def train_idcm_selector_cmd(
    corpus: CorpusOption,
    scorer: Annotated[str, typer.Option(help="the teacher: a cross-encoder name or path (cross-encoder:PATH too), "
                                             "the SCORER of idcm:SELECTOR>>SCORER")],
    out: Out,
    settings: "TrainSettings",
    model: StartingModel = DEFAULT_ENCODER,
    queries: Queries = None,
    runs: Runs = None,
    qrels: Qrels = None,
    candidates: Candidates = 20,
    max_queries: Annotated[Optional[int], positive_int.option(help="keep the first N training queries")] = None,
    passages: Passages = 128,
    stride: Stride = None,
    max_passages: Annotated[int, positive_int.option(help="passages per document at most (a seeded sample beyond)")]
    = 64,
    temperature: Annotated[float, positive_float.option(help="softmax temperature of teacher and student")] = 1.0,
    scale: Annotated[Optional[float], positive_float.option(help="similarity scale (default 20 cosine, 1 dot)")] = None,
    teacher_batch_size: Annotated[int, positive_int.option(help="teacher (query, passage) pairs per batch")] = 32,
    teacher_max_length: Annotated[Optional[int], positive_int.option(help="teacher max tokens per pair "
                                                                   "(default: the model's)")] = None,
    force: Force = False,
    json_output: Json = False,
) -> None:
    """Distill a cross-encoder's passage scores into a bi-encoder passage selector (IDCM, Hofstätter et al. 2021),
    starting from the bi-encoder --model; loads as idcm:dense:OUT>>SCORER.

    The candidates are the top --candidates documents of --runs, or of BM25 over the corpus without it; only
    the queries --qrels judges are used when qrels are given or the BEIR folder has qrels/train.tsv."""
    from rankwise.training.idcm_selector import SelectorInput, train_idcm_selector

    if corpus.is_dir():
        if queries is None:
            queries = next((corpus / n for n in ("queries.jsonl", "queries.tsv") if (corpus / n).is_file()), None)
        if qrels is None and (corpus / "qrels" / "train.tsv").is_file():
            qrels = corpus / "qrels" / "train.tsv"
    if queries is None:
        raise InputError("--queries is needed (no queries.jsonl beside the corpus)", path=corpus, field="queries")
    data = SelectorInput(corpus, queries, run=runs, qrels=qrels, depth=candidates, max_queries=max_queries)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout keeps --json clean
        result = train_idcm_selector(data, out, scorer=scorer, model=model, passages=passages, stride=stride,
                                     max_passages=max_passages, temperature=temperature, scale=scale,
                                     settings=settings, teacher_batch_size=teacher_batch_size,
                                     teacher_max_length=teacher_max_length, force=force)
    _report(result, json_output)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the ``rankwise`` app."""
    app.command("mine")(mine)
    app.add_typer(train_app, name="train")
