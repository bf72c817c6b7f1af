"""``rankwise beir``: evaluate a whole pipeline on one or many BEIR datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rankwise.eval import compare_cli
from rankwise.eval.options import (Baseline, Correction, Format, MissingJudged, OptionalMeasures, OptionalSystems,
                                   PerQuery, PlotFolder, SelfHits, Significance, Split, Test)
from rankwise.rerank.options import Depth, FirstStageWeight, OptionalRerankerSpec
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.options import (BackendName, Encoder, EncoderBatchSize, Fusion, IndexType, Json, OptionalK,
                                        Retriever, Seed, backend_option, out_folder)
from rankwise.retrieval.values import unit_interval

def beir(
    datasets: Annotated[str, typer.Argument(help="DATASET[,DATASET...]: BEIR names or folders")],
    retriever: Retriever = "bm25",
    model: Encoder = DEFAULT_ENCODER,
    out: Annotated[Optional[Path], out_folder("folder for the runs and results.json")] = None,
    json_output: Json = False,
    split: Split = "test",
    k: OptionalK = None,
    index_type: IndexType = "flat",
    fusion: Fusion = "rrf",
    alpha: Annotated[float, unit_interval.option(help="interpolation weight of BM25")] = 0.5,
    measures: OptionalMeasures = None,
    batch_size: EncoderBatchSize = 64,
    backend: Annotated[BackendName, backend_option(help="the encoder's backend (and the reranker's, unless its spec "
                                                        "names one)")] = "torch",
    reranker: OptionalRerankerSpec = None,
    depth: Depth = 100,
    first_stage_weight: FirstStageWeight = 0.0,
    systems: OptionalSystems = None,
    baseline: Baseline = None,
    test: Test = "t",
    correction: Correction = "holm",
    significance: Significance = 0.05,
    seed: Seed = 0,
    per_query: PerQuery = None,
    fmt: Format = "table",
    plot: PlotFolder = None,
    self_hits: SelfHits = None,
    missing_judged: MissingJudged = "warn",
) -> None:
    """Index (cached), retrieve and evaluate on BEIR, MS MARCO or irds: datasets; print a table (or --json).

    With --systems, run several systems on the same queries and print their comparison (see
    docs/evaluation-compare.md). Without -k, each run holds 100 documents per query, or as many as the
    deepest measure cut-off.
    """
    from rich.console import Console

    from rankwise.eval.experiment import run_datasets
    from rankwise.eval.report import metrics_json, metrics_table
    from rankwise.eval.systems import parse_system, parse_systems, single_system
    from rankwise.retrieval.distributed import world

    lead = world()[0] == 0  # under torchrun every rank reranks its share; rank 0 alone writes and prints
    if not lead:
        out = plot = per_query = None
    chosen = tuple(m.strip() for m in (measures or "").split(",") if m.strip())  # none: each dataset's official
    names = list(dict.fromkeys(d.strip() for d in datasets.split(",") if d.strip()))  # each dataset once
    first = dict(model=model, index_type=index_type, fusion=fusion, alpha=alpha, backend=backend,
                 batch_size=batch_size)
    options = dict(measures=chosen or None, split=split, k=k, test=test, correction=correction, alpha=significance,
                   seed=seed, drop_self_hits=self_hits, missing_judged=missing_judged)
    if systems is None:  # the reranker spec is parsed here, once, before the first stage runs
        pipeline = single_system(retriever, reranker, depth=depth, first_stage_weight=first_stage_weight, **first)
        results = run_datasets([pipeline], names, out=out, **options)
        for result in results if lead else ():  # truncation is never silent
            stats = result.systems[pipeline.name].stats.get("rerank", {})
            if stats.get("truncated"):
                typer.echo(f"{result.dataset}: {stats['truncated']} of {stats['passages']} reranker inputs were cut to "
                           "the model's window (split long documents: passages=N in the reranker spec)", err=True)
            if stats.get("served"):  # a served LLM: requests, tokens, cost
                from rankwise.rerank.served import ServedUsage

                typer.echo(f"{result.dataset}: {ServedUsage.from_dict(stats['served']).summary()}", err=True)
        rows = {r.dataset: r.systems[pipeline.name].metrics for r in results}
        if not lead:
            pass
        elif json_output:
            typer.echo(metrics_json(rows))
        else:
            Console().print(metrics_table(rows, title=f"{pipeline.name} ({split})"))
    else:
        if reranker:
            raise InputError("with --systems, name rerankers in the systems (bm25>>cross-encoder:M)", field="reranker")
        from rankwise.eval.compare_cli import emit

        fmt = "json" if json_output else fmt
        pipelines = [parse_system(spec, depth=depth, first_stage_weight=first_stage_weight, **first)
                     for spec in parse_systems(systems)]
        run_datasets(pipelines, names, out=out, plot=plot, per_query=per_query, baseline=baseline, **options,
                     on_result=lambda r: lead and emit(r.comparison, fmt=fmt, title=f"{r.dataset} ({split})",
                                                       files=r.files))
    if out is not None:
        typer.echo(f"runs and results.json written to {out}", err=True)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the ``rankwise`` app."""
    app.command("beir")(beir)
    compare_cli.register(app)
    from rankwise.eval import followir_cli, position_bias_cli

    position_bias_cli.register(app)
    followir_cli.register(app)
