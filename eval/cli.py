"""``rankwise beir``: evaluate a whole pipeline on one or many BEIR datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rankwise.eval.metrics import DEFAULT_MEASURES
from rankwise.eval import compare_cli
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import MISSING_JUDGED
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.cached import KINDS
from rankwise.retrieval.hybrid import FUSIONS
from rankwise.retrieval.options import BackendName, EncoderBatchSize, IndexType, backend_option, out_file, out_folder
from rankwise.retrieval.values import Range, non_negative_int, one_of, open_unit_interval, positive_int, unit_interval

# The qid == docid rule: drop a retrieved document whose id is the query's (BEIR's evaluation does);
# default: on for BEIR datasets, off for other qrels (MS MARCO, TREC, plain qrels files).
SelfHits = Annotated[Optional[bool], typer.Option(
    "--drop-self-hits/--keep-self-hits",
    help="drop a retrieved document whose id equals the query id before scoring (default: drop for BEIR datasets, "
         "as BEIR does; keep for other qrels)")]
FirstStageWeight = Range(float, min=0.0, below=1.0)


def beir(
    datasets: Annotated[str, typer.Argument(help="DATASET[,DATASET...]: BEIR names or folders")],
    retriever: Annotated[one_of(KINDS), typer.Option(help="first-stage retriever")] = "bm25",
    model: Annotated[str, typer.Option(help="encoder name or path (dense, hybrid)")] = DEFAULT_ENCODER,
    out: Annotated[Optional[Path], out_folder("folder for the runs and results.json")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object, nothing else, to stdout")] = False,
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    k: Annotated[Optional[int], positive_int.option("-k", help="documents per query in the run (default: 100, or "
                                                               "the deepest measure cut-off)")] = None,
    index_type: IndexType = "flat",
    fusion: Annotated[one_of(FUSIONS), typer.Option(help="hybrid fusion")] = "rrf",
    alpha: Annotated[float, unit_interval.option(help="interpolation weight of BM25")] = 0.5,
    measures: Annotated[Optional[str], typer.Option(help="comma-separated ir-measures names (default: the dataset's "
                                                         f"official ones; BEIR: {','.join(DEFAULT_MEASURES)})")] = None,
    batch_size: EncoderBatchSize = 64,
    backend: Annotated[BackendName, backend_option(help="the encoder's backend (and the reranker's, unless its spec "
                                                        "names one)")] = "torch",
    reranker: Annotated[Optional[str], typer.Option(help="rerank with PARADIGM:MODEL[,key=value...]")] = None,
    depth: Annotated[int, positive_int.option(help="documents reranked per query")] = 100,
    first_stage_weight: Annotated[float, FirstStageWeight.option(
        help="with --reranker: rank by W x first-stage + (1 - W) x reranker score (min-max per query)")] = 0.0,
    systems: Annotated[Optional[str], typer.Option(help="compare systems: FIRST[>>RERANKER],... e.g. "
                                                        "bm25,dense,hybrid,bm25>>cross-encoder:MODEL")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="with --systems: the baseline (default: the first)")] = None,
    test: Annotated[str, typer.Option(help="with --systems: t or randomization")] = "t",
    correction: Annotated[str, typer.Option(help="with --systems: holm, bonferroni or none")] = "holm",
    significance: Annotated[float, open_unit_interval.option(help="with --systems: significance level of the "
                                                                  "markers")] = 0.05,
    seed: Annotated[int, non_negative_int.option(help="with --systems: seed of the randomization test")] = 0,
    per_query: Annotated[Optional[Path], out_file("with --systems: per-query CSV", "--per-query")] = None,
    fmt: Annotated[str, typer.Option("--format", help="with --systems: table, markdown, latex, csv or json")] = "table",
    plot: Annotated[Optional[Path], out_folder("with --systems: folder for per-query-delta.png and quality-cost.png",
                                               "--plot")] = None,
    self_hits: SelfHits = None,
    missing_judged: Annotated[one_of(MISSING_JUDGED), typer.Option(
        "--missing-judged", help="a qrels line naming a document that is not in the corpus: warn (count them in one "
        "warning and keep them, as BEIR does; some collections judge documents their corpus lacks) or error "
        "(refuse the file, naming its line)")] = "warn",
) -> None:
    """Index (cached), retrieve and evaluate on BEIR, MS MARCO or irds: datasets; print a table (or --json).

    With --systems, run several systems on the same queries and print their comparison (see
    docs/evaluation-compare.md).
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
        from rankwise.eval.compare import FORMATS
        from rankwise.eval.compare_cli import emit

        fmt = "json" if json_output else fmt
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}", field="format")
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
