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
from rankwise.retrieval.cached import KINDS
from rankwise.retrieval.hybrid import FUSIONS
from rankwise.retrieval.options import EncoderBatchSize, IndexBackend, IndexType, Workers, out_file, out_folder
from rankwise.retrieval.values import (Range, non_negative_float, non_negative_int, one_of, positive_float,
                                       positive_int)
from rankwise.rerank.permutation import LABELS
from rankwise.training.mining import SAMPLINGS
from rankwise.training.settings import CURRICULA, GROUPWISE_LOSSES, LISTWISE_LOSSES, LISTWISE_ORDERS, PG_BASELINES

if TYPE_CHECKING:
    from rankwise.training.candidates import CandidateSource
    from rankwise.training.runner import TrainResult
    from rankwise.training.settings import PGRankSettings, TrainSettings


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


def mine(
    corpus: Annotated[Path, typer.Option(help="BEIR folder, corpus.jsonl or collection.tsv")],
    out: Annotated[Path, out_file("triples file to write (query_id, pos_id, neg_id)")],
    queries: Annotated[Optional[Path], typer.Option(help="queries file (default: the BEIR folder's queries.jsonl)")] = None,
    qrels: Annotated[Optional[Path], typer.Option(help="qrels file (default: the BEIR folder's qrels/train.tsv)")] = None,
    retriever: Annotated[one_of(KINDS), typer.Option(help="first-stage retriever")] = "dense",
    model: Annotated[str, typer.Option(help="encoder name or path (dense, hybrid)")] = DEFAULT_ENCODER,
    depth: Annotated[str, typer.Option(help="rank window A:B to draw negatives from (ranked[A:B], 0-based)")] = "10:100",
    negatives: Annotated[int, positive_int.option(help="negatives per (query, positive)")] = 8,
    sampling: Annotated[one_of(SAMPLINGS), typer.Option(help="random (seeded) or top")] = "random",
    teacher: Annotated[Optional[str], typer.Option(help="reranker spec PARADIGM:MODEL[,key=value...] scoring the "
                                                        "candidates, e.g. cross-encoder:PATH")] = None,
    margin: Annotated[Optional[float], Range(float).option(help="drop a negative when teacher(neg) > teacher(pos) - MARGIN")]
    = None,
    teacher_pool: Annotated[int, non_negative_int.option(help="the teacher scores POOL x NEGATIVES candidates per "
                                                              "query (0: the whole window, the slowest)")] = 4,
    text: Annotated[bool, typer.Option("--text", help="write texts (query, positive, negative) instead of ids")] = False,
    scores: Annotated[Optional[Path], out_file("teacher scores file (Margin-MSE format)", "--scores")] = None,
    seed: Annotated[int, non_negative_int.option(help="random seed of the sampling")] = 0,
    force: Annotated[bool, typer.Option("--force", help="discard an unfinished run made with other settings")] = False,
    chunk_size: Annotated[int, positive_int.option(help="queries per resumable chunk")] = 256,
    index_type: IndexType = "flat",
    fusion: Annotated[one_of(FUSIONS), typer.Option(help="hybrid fusion")] = "rrf",
    batch_size: EncoderBatchSize = 64,
    backend: IndexBackend = None,
    index: Annotated[Optional[Path], typer.Option("--index", help="search this `rankwise index` folder of CORPUS "
                                                                  "instead of a cached index")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the statistics as one JSON object to stdout")]
    = False,
) -> None:
    """Mine hard negatives from the --depth window of a retriever's ranking (resumable); write triples."""
    from rankwise.retrieval.cached import KINDS, cached_retriever
    from rankwise.retrieval.formats import Corpus
    from rankwise.training.mining import mine_negatives, parse_depth

    window = parse_depth(depth)
    if retriever not in KINDS:
        raise InputError(f"unknown retriever {retriever!r}; choose from {', '.join(KINDS)}", field="retriever")
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

Triples = Annotated[Path, typer.Option(help="text triples/n-tuples TSV, id triples (with --queries and --corpus) "
                                            "or a BEIR folder (its qrels pairs)")]
Out = Annotated[Path, out_folder("folder for the trained model (checkpoints in OUT/checkpoints)")]
# options every trainer shares (TrainSettings, whose own checks these ranges repeat at the edge)
Epochs = Annotated[float, positive_float.option(help="passes over the training data (unless --max-steps)")]
MaxSteps = Annotated[Optional[int], positive_int.option(help="stop after N optimizer steps (default: --epochs "
                                                            "decides)")]
BatchSize = Annotated[int, positive_int.option(help="per-process batch size")]
LearningRate = Annotated[float, positive_float.option()]
WarmupRatio = Annotated[float, Range(float, min=0.0, below=1.0).option()]
Seed = Annotated[int, non_negative_int.option()]
SaveSteps = Annotated[int, positive_int.option(help="checkpoint every N steps")]
LoggingSteps = Annotated[int, positive_int.option()]
CurriculumFraction = Annotated[float, Range(float, above=0.0, max=1.0).option(
    help="weights are uniform from this fraction on")]
GradientAccumulation = Annotated[int, positive_int.option()]
# memory (training.memory): checked against the memory available before any data loads
MaxTokens = Annotated[Optional[int], positive_int.option(help="padded tokens per forward pass: each step is split into "
                                                              "micro-batches whose gradients accumulate (same "
                                                              "effective batch)")]
GradientCheckpointing = Annotated[bool, typer.Option("--gradient-checkpointing", help="recompute activations in the "
                                                     "backward pass: less memory, about 1/3 more compute")]
Force = Annotated[bool, typer.Option("--force", help="discard checkpoints of a run with other settings")]
JsonOutput = Annotated[bool, typer.Option("--json", help="print the summary as JSON to stdout")]
Queries = Annotated[Optional[Path], typer.Option(help="queries file (id triples, --runs)")]
TeacherScores = Annotated[Optional[Path], typer.Option(help="teacher scores, Margin-MSE format")]
GroupByQuery = Annotated[bool, typer.Option("--group-by-query", help="merge consecutive triples of a query and "
                                                                    "positive into n-tuples")]
# PG-Rank (training.losses.pg_rank)
Samples = Annotated[int, positive_int.option(help="pg-rank: rankings sampled per query")]
Reward = Annotated[str, typer.Option(help="pg-rank: reward metric, ndcg@K or ndcg")]
Temperature = Annotated[float, positive_float.option(help="pg-rank: Plackett-Luce temperature")]
Baseline = Annotated[one_of(PG_BASELINES), typer.Option(help="pg-rank: loo (leave-one-out) or none")]
# LLM rerankers (training.llm)
Lora = Annotated[bool, typer.Option("--lora/--no-lora", help="LoRA adapters (merged when saved) or full fine-tuning")]
LoraR = Annotated[int, positive_int.option(help="LoRA rank")]
MaxPassageTokens = Annotated[int, positive_int.option(help="tokens kept per passage (as the reranker at inference)")]


def _settings(epochs: float, max_steps: int | None, batch_size: int, lr: float, warmup_ratio: float, seed: int,
              max_length: int | None, save_steps: int, logging_steps: int, curriculum: str,
              curriculum_fraction: float, gradient_accumulation: int,
              curriculum_run: Path | None = None, workers: int | None = None, max_tokens: int | None = None,
              gradient_checkpointing: bool = False) -> "TrainSettings":
    from rankwise.training.settings import TrainSettings

    return TrainSettings(epochs=epochs, max_steps=-1 if max_steps is None else max_steps, batch_size=batch_size, lr=lr, warmup_ratio=warmup_ratio,
                         seed=seed, max_length=max_length, save_steps=save_steps, logging_steps=logging_steps,
                         curriculum=curriculum, curriculum_fraction=curriculum_fraction,
                         curriculum_run=str(curriculum_run) if curriculum_run else None,
                         gradient_accumulation_steps=gradient_accumulation, workers=workers, max_tokens=max_tokens,
                         gradient_checkpointing=gradient_checkpointing)


def _pg_rank(samples: int, reward: str, temperature: float, baseline: str) -> "PGRankSettings":
    from rankwise.training.settings import PGRankSettings

    return PGRankSettings(samples=samples, reward=reward, temperature=temperature, baseline=baseline)


def _candidates(triples: Path | None, runs: Path | None, qrels: Path | None, queries: Path | None,
                corpus: Path | None, teacher: Path | None, group_by_query: bool, depth: int) -> "CandidateSource":
    """The LLM trainers' input: triples (as the other trainers read them) or a run with qrels."""
    from rankwise.training.candidates import RunInput
    from rankwise.training.data import TrainingInput

    if (triples is None) == (runs is None):
        raise InputError("give either --triples or --runs (a TREC run, with --qrels, --queries and --corpus)",
                         field="triples")
    if triples is not None:
        return TrainingInput(triples, queries=queries, corpus=corpus, teacher=teacher, group_by_query=group_by_query)
    if corpus is None:
        raise InputError("--runs needs --corpus (a BEIR folder, or a corpus file with --queries and --qrels)",
                         field="corpus")
    queries, qrels = _beir_defaults(corpus, queries, qrels)
    return RunInput(runs, qrels, queries, corpus, depth=depth)


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
def train_bi_encoder_cmd(
    model: Annotated[str, typer.Option(help="starting model: sentence-transformers name or path")],
    triples: Triples,
    out: Out,
    loss: Annotated[str, typer.Option(help="contrastive, star, adore, margin-mse, kl or pg-rank")] = "contrastive",
    queries: Annotated[Optional[Path], typer.Option(help="queries file (id triples)")] = None,
    corpus: Annotated[Optional[Path], typer.Option(help="corpus (id triples; ADORE's index; bm25 curriculum)")] = None,
    teacher_scores: TeacherScores = None,
    group_by_query: GroupByQuery = False,
    negatives: Annotated[Optional[int], positive_int.option(help="hard negatives per sample (default: all)")] = None,
    scale: Annotated[Optional[float], positive_float.option(help="similarity scale (default 20 cosine, 1 dot)")] = None,
    index: Annotated[Optional[Path], typer.Option(help="ADORE: fixed dense index built by --model")] = None,
    adore_depth: Annotated[int, positive_int.option(help="ADORE: documents re-retrieved per query and step")] = 200,
    adore_metric: Annotated[str, typer.Option(help="ADORE: mrr or ndcg pair weights")] = "mrr",
    epochs: Epochs = 1.0,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = 32,
    lr: LearningRate = 2e-5,
    warmup_ratio: WarmupRatio = 0.1,
    seed: Seed = 0,
    max_length: Annotated[Optional[int], positive_int.option(help="max tokens per text")] = None,
    save_steps: SaveSteps = 500,
    logging_steps: LoggingSteps = 10,
    curriculum: Annotated[one_of(CURRICULA), typer.Option(help="difficulty heuristic (teacher: margin-mse)")] = "none",
    curriculum_fraction: CurriculumFraction = 0.5,
    gradient_accumulation: GradientAccumulation = 1,
    workers: Workers = None,
    max_tokens: MaxTokens = None,
    gradient_checkpointing: GradientCheckpointing = False,
    samples: Samples = 8,
    reward: Reward = "ndcg@10",
    temperature: Temperature = 1.0,
    baseline: Baseline = "loo",
    force: Force = False,
    json_output: JsonOutput = False,
) -> None:
    """Train a bi-encoder (resumes from OUT/checkpoints; data-parallel under torchrun)."""
    from rankwise.training.bi_encoder import train_bi_encoder
    from rankwise.training.data import TrainingInput

    settings = _settings(epochs, max_steps, batch_size, lr, warmup_ratio, seed, max_length, save_steps,
                         logging_steps, curriculum, curriculum_fraction, gradient_accumulation,
                         workers=workers, max_tokens=max_tokens, gradient_checkpointing=gradient_checkpointing)
    data = TrainingInput(triples, queries=queries, corpus=corpus, teacher=teacher_scores,
                         group_by_query=group_by_query)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout keeps --json clean
        result = train_bi_encoder(model, data, out, loss=loss, negatives=negatives, settings=settings, scale=scale,
                                  index=index, adore_depth=adore_depth, adore_metric=adore_metric, force=force,
                                  pg_rank=_pg_rank(samples, reward, temperature, baseline))
    _report(result, json_output)


@train_app.command("cross-encoder")
def train_cross_encoder_cmd(
    model: Annotated[str, typer.Option(help="starting model: a cross-encoder, or an encoder (new head)")],
    triples: Triples,
    out: Out,
    loss: Annotated[str, typer.Option(help="bce, lce, margin-mse, listnet, plistmle, listmle or pg-rank")] = "bce",
    queries: Annotated[Optional[Path], typer.Option(help="queries file (id triples)")] = None,
    corpus: Annotated[Optional[Path], typer.Option(help="corpus (id triples; bm25 curriculum)")] = None,
    teacher_scores: TeacherScores = None,
    group_by_query: GroupByQuery = False,
    negatives: Annotated[Optional[int], positive_int.option(help="negatives per sample (default: all)")] = None,
    epochs: Epochs = 1.0,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = 32,
    lr: LearningRate = 2e-5,
    warmup_ratio: WarmupRatio = 0.1,
    seed: Seed = 0,
    max_length: Annotated[Optional[int], positive_int.option(help="max tokens per (query, document) pair")] = None,
    save_steps: SaveSteps = 500,
    logging_steps: LoggingSteps = 10,
    curriculum: Annotated[one_of(CURRICULA), typer.Option(help="difficulty heuristic (teacher: bce, margin-mse)")] = "none",
    curriculum_fraction: CurriculumFraction = 0.5,
    curriculum_run: Annotated[Optional[Path], typer.Option(
        help="bm25 curriculum: ranks from this TREC run of the training queries, not the corpus's BM25 index")] = None,
    gradient_accumulation: GradientAccumulation = 1,
    workers: Workers = None,
    max_tokens: MaxTokens = None,
    gradient_checkpointing: GradientCheckpointing = False,
    samples: Samples = 8,
    reward: Reward = "ndcg@10",
    temperature: Temperature = 1.0,
    baseline: Baseline = "loo",
    force: Force = False,
    json_output: JsonOutput = False,
) -> None:
    """Train a cross-encoder reranker (resumes from OUT/checkpoints; data-parallel under torchrun)."""
    from rankwise.training.cross_encoder import train_cross_encoder
    from rankwise.training.data import TrainingInput

    settings = _settings(epochs, max_steps, batch_size, lr, warmup_ratio, seed, max_length, save_steps,
                         logging_steps, curriculum, curriculum_fraction, gradient_accumulation, curriculum_run,
                         workers=workers, max_tokens=max_tokens, gradient_checkpointing=gradient_checkpointing)
    data = TrainingInput(triples, queries=queries, corpus=corpus, teacher=teacher_scores,
                         group_by_query=group_by_query)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout keeps --json clean
        result = train_cross_encoder(model, data, out, loss=loss, negatives=negatives, settings=settings, force=force,
                                     pg_rank=_pg_rank(samples, reward, temperature, baseline))
    _report(result, json_output)


Model = Annotated[str, typer.Option(help="causal LM: name, folder or .gguf file")]
OptionalTriples = Annotated[Optional[Path], typer.Option(help="text triples/n-tuples TSV or id triples (with "
                                                              "--queries and --corpus)")]
Runs = Annotated[Optional[Path], typer.Option(help="TREC run of the training queries (candidates, labels from --qrels)")]
Qrels = Annotated[Optional[Path], typer.Option(help="qrels of --runs (default: the BEIR folder's qrels/train.tsv)")]
Corpus = Annotated[Optional[Path], typer.Option(help="corpus or BEIR folder (id triples, --runs)")]
Depth = Annotated[int, positive_int.option(help="--runs: candidates per query (the top DEPTH)")]


def _train_llm(train: Any, model: str, source: "CandidateSource", out: Path, settings: "TrainSettings", lora: bool,
               lora_r: int, force: bool, json_output: bool, **options: Any) -> None:
    from rankwise.training.llm import LoRASettings

    lora_settings = LoRASettings(enabled=lora, r=lora_r)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout keeps --json clean
        result = train(model, source, out, settings=settings, lora=lora_settings, force=force, **options)
    _report(result, json_output)


@train_app.command("listwise")
def train_listwise_cmd(
    model: Model,
    out: Out,
    triples: OptionalTriples = None,
    runs: Runs = None,
    qrels: Qrels = None,
    queries: Queries = None,
    corpus: Corpus = None,
    teacher_scores: TeacherScores = None,
    group_by_query: GroupByQuery = False,
    depth: Depth = 20,
    loss: Annotated[one_of(LISTWISE_LOSSES), typer.Option(help="first: LM loss on the gold ranking + weighted "
                                                                "RankNet")] = "first",
    window: Annotated[int, Range(int, min=2, max=len(LABELS)).option(help="passages per training window")] = 20,
    rank_weight: Annotated[float, non_negative_float.option(help="lambda of L_LM + lambda * L_rank")] = 1.0,
    order: Annotated[one_of(LISTWISE_ORDERS), typer.Option(help="window order: retrieved (as at inference) or "
                                                                 "shuffled")] = "retrieved",
    max_passage_tokens: MaxPassageTokens = 100,
    lora: Lora = True,
    lora_r: LoraR = 16,
    epochs: Epochs = 1.0,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = 2,
    lr: LearningRate = 1e-4,
    warmup_ratio: WarmupRatio = 0.1,
    seed: Seed = 0,
    save_steps: SaveSteps = 50,
    logging_steps: LoggingSteps = 5,
    gradient_accumulation: GradientAccumulation = 1,
    workers: Workers = None,
    force: Force = False,
    json_output: JsonOutput = False,
) -> None:
    """Train a causal LM as a FIRST listwise reranker (resumes from OUT/checkpoints); loads as listwise:OUT."""
    from rankwise.training.listwise import train_listwise

    settings = _settings(epochs, max_steps, batch_size, lr, warmup_ratio, seed, None, save_steps, logging_steps,
                         "none", 0.5, gradient_accumulation, workers=workers)
    source = _candidates(triples, runs, qrels, queries, corpus, teacher_scores, group_by_query, depth)
    _train_llm(train_listwise, model, source, out, settings, lora, lora_r, force, json_output, loss=loss,
               window=window, rank_weight=rank_weight, max_passage_tokens=max_passage_tokens, order=order)


@train_app.command("groupwise")
def train_groupwise_cmd(
    model: Model,
    out: Out,
    triples: OptionalTriples = None,
    runs: Runs = None,
    qrels: Qrels = None,
    queries: Queries = None,
    corpus: Corpus = None,
    teacher_scores: TeacherScores = None,
    group_by_query: GroupByQuery = False,
    depth: Depth = 20,
    loss: Annotated[one_of(GROUPWISE_LOSSES), typer.Option(help="training loss")] = "listnet",
    group_size: Annotated[int, Range(int, min=2, max=len(LABELS)).option(
        help="documents per group (use the same at inference)")] = 5,
    levels: Annotated[int, Range(int, min=1, max=99).option(
        help="score scale 0..LEVELS (use the same at inference)")] = 10,
    max_passage_tokens: MaxPassageTokens = 100,
    samples: Samples = 8,
    reward: Reward = "ndcg@10",
    temperature: Temperature = 1.0,
    baseline: Baseline = "loo",
    lora: Lora = True,
    lora_r: LoraR = 16,
    epochs: Epochs = 1.0,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = 1,
    lr: LearningRate = 1e-4,
    warmup_ratio: WarmupRatio = 0.1,
    seed: Seed = 0,
    save_steps: SaveSteps = 50,
    logging_steps: LoggingSteps = 5,
    gradient_accumulation: GradientAccumulation = 1,
    workers: Workers = None,
    force: Force = False,
    json_output: JsonOutput = False,
) -> None:
    """Train a causal LM as a groupwise reranker (resumes from OUT/checkpoints); loads as groupwise:OUT."""
    from rankwise.training.groupwise import train_groupwise

    settings = _settings(epochs, max_steps, batch_size, lr, warmup_ratio, seed, None, save_steps, logging_steps,
                         "none", 0.5, gradient_accumulation, workers=workers)
    source = _candidates(triples, runs, qrels, queries, corpus, teacher_scores, group_by_query, depth)
    _train_llm(train_groupwise, model, source, out, settings, lora, lora_r, force, json_output, loss=loss,
               group_size=group_size, levels=levels, max_passage_tokens=max_passage_tokens,
               pg_rank=_pg_rank(samples, reward, temperature, baseline))


@train_app.command("idcm-selector")
def train_idcm_selector_cmd(
    corpus: Annotated[Path, typer.Option(help="BEIR folder or corpus.jsonl of long documents")],
    scorer: Annotated[str, typer.Option(help="the teacher: a cross-encoder name or path (cross-encoder:PATH too), "
                                             "the SCORER of idcm:SELECTOR>>SCORER")],
    out: Out,
    model: Annotated[str, typer.Option(help="the student bi-encoder: sentence-transformers name or path")]
    = DEFAULT_ENCODER,
    queries: Annotated[Optional[Path], typer.Option(help="queries file (default: the BEIR folder's queries.jsonl)")]
    = None,
    runs: Annotated[Optional[Path], typer.Option(help="TREC run of the training queries: candidates (default: BM25 "
                                                      "top --depth over the corpus)")] = None,
    qrels: Annotated[Optional[Path], typer.Option(help="use only the queries these qrels judge (default: the BEIR "
                                                       "folder's qrels/train.tsv when there is one)")] = None,
    depth: Annotated[int, positive_int.option(help="candidate documents per query")] = 20,
    max_queries: Annotated[Optional[int], positive_int.option(help="keep the first N training queries")] = None,
    passages: Annotated[int, positive_int.option(help="words per passage (as the idcm reranker's passages=N)")] = 128,
    stride: Annotated[Optional[int], positive_int.option(help="words between passage starts (default: --passages)")]
    = None,
    max_passages: Annotated[int, positive_int.option(help="passages per document at most (a seeded sample beyond)")]
    = 64,
    temperature: Annotated[float, positive_float.option(help="softmax temperature of teacher and student")] = 1.0,
    scale: Annotated[Optional[float], positive_float.option(help="student similarity scale (default 20 cosine, "
                                                                 "1 dot)")] = None,
    teacher_batch_size: Annotated[int, positive_int.option(help="teacher (query, passage) pairs per batch")] = 32,
    teacher_max_length: Annotated[Optional[int], positive_int.option(help="teacher max tokens per pair "
                                                                   "(default: the model's)")] = None,
    epochs: Epochs = 1.0,
    max_steps: MaxSteps = None,
    batch_size: Annotated[int, positive_int.option(help="(query, document) lists per step")] = 8,
    lr: LearningRate = 2e-5,
    warmup_ratio: WarmupRatio = 0.1,
    seed: Seed = 0,
    max_length: Annotated[Optional[int], positive_int.option(help="student max tokens per text")] = None,
    save_steps: SaveSteps = 500,
    logging_steps: LoggingSteps = 10,
    gradient_accumulation: GradientAccumulation = 1,
    force: Force = False,
    json_output: JsonOutput = False,
) -> None:
    """Distill a cross-encoder's passage scores into a bi-encoder passage selector (IDCM, Hofstätter et al. 2021);
    loads as idcm:dense:OUT>>SCORER."""
    from rankwise.training.idcm_selector import SelectorInput, train_idcm_selector

    if corpus.is_dir():
        if queries is None:
            queries = next((corpus / n for n in ("queries.jsonl", "queries.tsv") if (corpus / n).is_file()), None)
        if qrels is None and (corpus / "qrels" / "train.tsv").is_file():
            qrels = corpus / "qrels" / "train.tsv"
    if queries is None:
        raise InputError("--queries is needed (no queries.jsonl beside the corpus)", path=corpus, field="queries")
    settings = _settings(epochs, max_steps, batch_size, lr, warmup_ratio, seed, max_length, save_steps,
                         logging_steps, "none", 0.5, gradient_accumulation)
    data = SelectorInput(corpus, queries, run=runs, qrels=qrels, depth=depth, max_queries=max_queries)
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
