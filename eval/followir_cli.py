"""``rankwise followir FOLDER`` and ``rankwise screening FOLDER``: instruction following (p-MRR)
and screening prioritisation (WSS@95, Recall@10%, LastRel); see docs/followir-screening.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.json_output import dumps
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.eval.options import Measures, MissingJudged, PerQuery, Systems
from rankwise.rerank.options import Depth
from rankwise.retrieval.options import Backend, Encoder, EncoderBatchSize, Json, K, OptionalK, out_folder

OutOpt = Annotated[Optional[Path], out_folder("folder for the runs and results.json")]


def _print(rows: dict[str, dict[str, float]], *, title: str, json_output: bool, out: Path | None) -> None:
    from rich.console import Console

    from rankwise.eval.report import metrics_table

    if json_output:
        typer.echo(dumps(rows))
    else:
        Console().print(metrics_table(rows, title=title))
        if out is not None:
            typer.echo(f"runs and results.json written to {out}", err=True)


def followir(
    folder: Annotated[Path, typer.Argument(help="FollowIR folder: corpus.jsonl, queries.jsonl, qrels/og.tsv, "
                                                "qrels/changed.tsv")],
    systems: Systems = "bm25",
    model: Encoder = DEFAULT_ENCODER,
    k: K = 1000,
    depth: Depth = 100,
    batch_size: EncoderBatchSize = 64,
    backend: Backend = "torch",
    json_output: Json = False,
    out: OutOpt = None,
    missing_judged: MissingJudged = "error",
) -> None:
    """p-MRR (Weller et al. 2024) of each system, beside nDCG@5 and MAP@1000 of the original queries."""
    from rankwise.eval.followir import FollowIRDataset, run_followir
    from rankwise.eval.systems import parse_system, parse_systems

    if not folder.is_dir():
        raise InputError("not a folder", path=folder)
    pipelines = [parse_system(spec, model=model, depth=depth, batch_size=batch_size, backend=backend)
                 for spec in parse_systems(systems)]  # every spec checked before any work
    dataset = FollowIRDataset(folder.resolve().name, folder, missing_judged)
    result = run_followir(dataset, pipelines, k=k)
    if out is not None:
        result.write(out)
    _print(result.rows(), title=f"FollowIR {dataset.name}: p-MRR, original-query nDCG@5 / AP@1000",
           json_output=json_output, out=out)


def screening(
    folder: Annotated[Path, typer.Argument(help="CLEF TAR folder: topics/, qrels.txt, corpus.jsonl")],
    systems: Systems = "bm25",
    model: Encoder = DEFAULT_ENCODER,
    measures: Measures = "Recall@10%,WSS@95,LastRel",
    k: OptionalK = None,
    batch_size: EncoderBatchSize = 64,
    backend: Backend = "torch",
    per_query: PerQuery = None,
    json_output: Json = False,
    out: OutOpt = None,
    missing_judged: MissingJudged = "error",
) -> None:
    """Rank each topic's candidates with each system and report the screening measures (without -k, the first
    stage ranks the whole corpus)."""
    from rankwise.eval.metrics import parse_measures
    from rankwise.eval.screening import ScreeningDataset, read_tar, run_screening
    from rankwise.eval.systems import parse_system, parse_systems

    chosen = [m.strip() for m in measures.split(",") if m.strip()]
    parse_measures(chosen)
    pipelines = [parse_system(spec, model=model, batch_size=batch_size, backend=backend)
                 for spec in parse_systems(systems)]
    tar = read_tar(folder, missing_judged)
    dataset = ScreeningDataset(folder.resolve().name, tar)
    result = run_screening(dataset, pipelines, measures=chosen, k=k)
    if per_query is not None:
        result.write_per_query(per_query)
    if out is not None:
        result.save(out)
    _print({name: r.metrics for name, r in result.systems.items()},
           title=f"screening {dataset.name} ({len(tar.topics)} topics)", json_output=json_output, out=out)


def register(app: typer.Typer) -> None:
    """Add ``followir`` and ``screening`` to the ``rankwise`` app."""
    app.command("followir")(followir)
    app.command("screening")(screening)
