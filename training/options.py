"""Command-line options of the trainers, declared once (typer ``Annotated`` aliases and option sets).

The :class:`~rankwise.training.settings.TrainSettings` knobs (budget, optimiser, checkpoints, curriculum,
memory) and PG-Rank's (:class:`~rankwise.training.settings.PGRankSettings`) are each one *option set*: a
table of options that :func:`expand` adds to a command's signature, and a builder that turns their values
into the settings object the command receives. A ``rankwise train`` command names the set, the fields it
offers and its own defaults::

    @TRAIN_SETTINGS.expand("settings", fields=LLM_FIELDS, batch_size=2, lr=1e-4)
    def train_listwise_cmd(model: StartingModel, ..., settings: TrainSettings) -> None: ...

so a flag, its help and its range are written once for all five trainers.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rankwise.retrieval.options import MaxLength, MaxTokens, Seed, Workers
from rankwise.retrieval.values import Range, one_of, positive_float, positive_int
from rankwise.training.settings import CURRICULA, PG_BASELINES, PGRankSettings, TrainSettings


@dataclass(frozen=True)
class OptionSet:
    """Options that together build one settings object: ``options`` maps a parameter name to its
    ``(annotation, default)``; ``build(**values)`` makes the object from the values given."""

    options: dict[str, tuple[Any, Any]]
    build: Callable[..., Any]

    def expand(self, target: str, *, fields: Sequence[str] | None = None,
               **defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A decorator: the command gets ``fields`` (default: all) as options, with ``defaults`` overriding
        the set's own, in place of its ``target`` parameter, which receives the built object."""
        chosen = list(self.options) if fields is None else list(fields)
        unknown = [n for n in [*chosen, *defaults] if n not in self.options]
        if unknown or not set(defaults) <= set(chosen):
            raise ValueError(f"unknown or unoffered options {unknown or sorted(set(defaults) - set(chosen))}")

        def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
            signature = inspect.signature(command, eval_str=True)
            names = list(signature.parameters)
            if target not in names:
                raise ValueError(f"{command.__name__} has no parameter {target!r}")
            added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=self.options[name][0],
                                       default=defaults.get(name, self.options[name][1])) for name in chosen]
            # the options stand where the target parameter stood (so --help lists them there); all keyword-only,
            # as typer calls a command
            keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()]
            at = names.index(target)

            @functools.wraps(command)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                values = {name: kwargs.pop(name) for name in chosen if name in kwargs}
                return command(*args, **kwargs, **{target: self.build(**values)})

            params = [*keyword[:at], *added, *keyword[at + 1:]]
            wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
            wrapper.__annotations__ = {p.name: p.annotation for p in params}
            return wrapper

        return decorate


def _train_settings(*, max_steps: int | None = None, gradient_accumulation: int = 1,
                    curriculum_run: Path | None = None, **values: Any) -> TrainSettings:
    return TrainSettings(max_steps=-1 if max_steps is None else max_steps,
                         gradient_accumulation_steps=gradient_accumulation,
                         curriculum_run=str(curriculum_run) if curriculum_run else None, **values)


# TrainSettings as options; TrainSettings' own checks repeat these ranges for Python callers
TRAIN_SETTINGS = OptionSet({
    "epochs": (Annotated[float, positive_float.option(help="passes over the training data (unless --max-steps)")],
               1.0),
    "max_steps": (Annotated[Optional[int], positive_int.option(help="stop after N optimizer steps (default: "
                                                                    "--epochs decides)")], None),
    "batch_size": (Annotated[int, positive_int.option(help="per-process training batch size (samples per step; "
                                                          "idcm-selector: (query, document) lists)")], 32),
    "lr": (Annotated[float, positive_float.option(help="peak learning rate")], 2e-5),
    "warmup_ratio": (Annotated[float, Range(float, min=0.0, below=1.0).option(
        help="fraction of the steps the learning rate warms up over")], 0.1),
    "seed": (Seed, 0),
    "max_length": (MaxLength, None),
    "save_steps": (Annotated[int, positive_int.option(help="checkpoint every N steps")], 500),
    "logging_steps": (Annotated[int, positive_int.option(help="log the loss every N steps")], 10),
    "curriculum": (Annotated[one_of(CURRICULA), typer.Option(help="difficulty heuristic weighting the samples "
                                                                   "(teacher: needs --teacher-scores)")], "none"),
    "curriculum_fraction": (Annotated[float, Range(float, above=0.0, max=1.0).option(
        help="curriculum: weights are uniform from this fraction of the steps on")], 0.5),
    "curriculum_run": (Annotated[Optional[Path], typer.Option(
        help="bm25 curriculum: ranks from this TREC run of the training queries, not the corpus's BM25 index")], None),
    "gradient_accumulation": (Annotated[int, positive_int.option(help="optimizer step every N batches")], 1),
    "workers": (Workers, None),
    "max_tokens": (MaxTokens, None),
    "gradient_checkpointing": (Annotated[bool, typer.Option("--gradient-checkpointing", help="recompute activations "
                                                            "in the backward pass: less memory, about 1/3 more "
                                                            "compute")], False),
}, _train_settings)
# what each trainer offers
BUDGET = ("epochs", "max_steps", "batch_size", "lr", "warmup_ratio", "seed")
CADENCE = ("save_steps", "logging_steps", "gradient_accumulation")
MEMORY = ("workers", "max_tokens", "gradient_checkpointing")
CURRICULUM = ("curriculum", "curriculum_fraction")
BI_ENCODER_FIELDS = (*BUDGET, "max_length", *CADENCE, *CURRICULUM, *MEMORY)
CROSS_ENCODER_FIELDS = (*BUDGET, "max_length", *CADENCE, *CURRICULUM, "curriculum_run", *MEMORY)
LLM_FIELDS = (*BUDGET, *CADENCE, "workers")
IDCM_SELECTOR_FIELDS = (*BUDGET, "max_length", *CADENCE)
# the LLM trainers' defaults (small batches, a higher learning rate, frequent checkpoints)
LLM_DEFAULTS = dict(lr=1e-4, save_steps=50, logging_steps=5)

# PG-Rank (training.losses.pg_rank): the options of the pg-rank loss, prefixed --pg-
PG_RANK = OptionSet({
    "pg_samples": (Annotated[int, positive_int.option("--pg-samples", help="pg-rank: rankings sampled per query")], 8),
    "pg_reward": (Annotated[str, typer.Option("--pg-reward", help="pg-rank: reward metric, ndcg@K or ndcg")],
                  "ndcg@10"),
    "pg_temperature": (Annotated[float, positive_float.option("--pg-temperature",
                                                              help="pg-rank: Plackett-Luce temperature")], 1.0),
    "pg_baseline": (Annotated[one_of(PG_BASELINES), typer.Option("--pg-baseline", help="pg-rank: loo "
                                                                                        "(leave-one-out) or none")],
                    "loo"),
}, lambda pg_samples=8, pg_reward="ndcg@10", pg_temperature=1.0, pg_baseline="loo": PGRankSettings(
    samples=pg_samples, reward=pg_reward, temperature=pg_temperature, baseline=pg_baseline))

# the model training starts from (a checkpoint name or path); each command's description says which kind
StartingModel = Annotated[str, typer.Option("--model", help="starting model: a name or path (listwise, groupwise: a "
                                                             "causal LM, also a .gguf file)")]
# candidates per query read from --runs (the top N of each query's ranking)
Candidates = Annotated[int, positive_int.option(help="--runs: candidates per query (the top N of its ranking)")]
Triples = Annotated[Path, typer.Option(help="text triples/n-tuples TSV, id triples (with --queries and --corpus) "
                                            "or a BEIR folder (its qrels pairs)")]
OptionalTriples = Annotated[Optional[Path], typer.Option(help="text triples/n-tuples TSV, id triples (with --queries "
                                                              "and --corpus) or a BEIR folder (its qrels pairs)")]
TeacherScores = Annotated[Optional[Path], typer.Option(help="teacher scores, Margin-MSE format")]
GroupByQuery = Annotated[bool, typer.Option("--group-by-query", help="merge consecutive triples of a query and "
                                                                    "positive into n-tuples")]
Lora = Annotated[bool, typer.Option("--lora/--no-lora", help="LoRA adapters (merged when saved) or full fine-tuning")]
LoraR = Annotated[int, positive_int.option(help="LoRA rank")]
MaxPassageTokens = Annotated[int, positive_int.option(help="tokens kept per passage (as the reranker at inference)")]
