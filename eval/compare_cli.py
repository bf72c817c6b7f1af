"""``rankwise compare RUN...``: compare TREC run files on one qrels (tables, per-query values, plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rankwise.retrieval.errors import InputError
from rankwise.eval.options import (Baseline, Correction, Format, OptionalMeasures, PerQuery, PlotFolder, SelfHits,
                                   Significance, Split, Test)
from rankwise.retrieval.options import Qrels, Seed



def emit(table: Any, *, fmt: str, title: str, files: dict[str, str] | None = None) -> None:
    """Print a comparison ``table`` in ``fmt`` (stdout), then the files written (stderr)."""
    from rich.console import Console

    from rankwise.eval.compare import render

    rendered = render(table, fmt, title=title)
    if fmt == "table":
        console = Console()
        wide = Console(width=max(console.width, console.measure(rendered, options=console.options.update_width(1000)).maximum))  # never squeeze the numbers
        wide.print(rendered)
    else:
        typer.echo(rendered, nl=not rendered.endswith("\n"))
    for what, path in (files or {}).items():
        typer.echo(f"{what.replace('_', ' ')}: {path}", err=True)


def _check_plotting(plot: Path | None) -> None:
    if plot is not None:  # before any run is read or retrieved, not after the table is printed
        from rankwise.retrieval.extras import requires

        requires("matplotlib", "experiments", "Plotting")


def _named_run_files(runs: list[str]) -> dict[str, Path]:
    named: dict[str, Path] = {}
    for item in runs:
        name, eq, path = item.partition("=")
        if not eq or Path(item).exists():
            path, name = item, Path(item).name
            for suffix in (".gz", ".trec", ".run", ".txt", ".tsv"):
                name = name.removesuffix(suffix)
        if name in named:
            raise InputError(f"two runs are named {name!r} ({named[name]} and {path}); name them NAME=PATH",
                             path=path, field="run")
        named[name] = Path(path)
    return named


def compare_command(
    runs: Annotated[list[str], typer.Argument(help="TREC run files (NAME=PATH to name one; else the file name)")],
    qrels: Qrels,
    baseline: Baseline = None,
    measures: OptionalMeasures = None,
    test: Test = "t",
    correction: Correction = "holm",
    significance: Significance = 0.05,
    seed: Seed = 0,
    split: Split = "test",
    per_query: PerQuery = None,
    fmt: Format = "table",
    plot: PlotFolder = None,
    results: Annotated[Optional[Path], typer.Option("--results", help="results.json of rankwise beir: timings "
                                                                      "for the quality-cost plot")] = None,
    self_hits: SelfHits = None,
) -> None:
    """Compare TREC runs on the same qrels: measures, deltas, paired tests (corrected), win/tie/loss."""
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.eval.experiment import Experiment
    from rankwise.retrieval.run import Run

    _check_plotting(plot)
    named = _named_run_files(runs)
    if baseline is not None and baseline not in named:
        by_path = [n for n, p in named.items() if Path(baseline).exists() and p.resolve() == Path(baseline).resolve()]
        if not by_path:
            raise InputError(f"the baseline {baseline!r} is not one of the runs ({', '.join(named)})", field="baseline")
        baseline = by_path[0]
    source = resolve_dataset(qrels, download=False)  # a qrels file, or a dataset's qrels of --split
    loaded = [Run.read(path) for path in named.values()]
    result = Experiment([Run(run, name=name) for name, run in zip(named, loaded)], source,
                        [m.strip() for m in measures.split(",") if m.strip()] if measures else None,
                        baseline=baseline, test=test, correction=correction, alpha=significance, seed=seed,
                        split=split, names=list(named), drop_self_hits=self_hits, progress=False).run()
    if result.drop_self_hits:
        typer.echo("retrieved documents whose id is the query's are dropped before scoring (BEIR's rule; "
                   "--keep-self-hits keeps them)", err=True)
    files: dict[str, str] = {}
    if per_query is not None:
        result.write_per_query(per_query)
        files["per_query"] = str(per_query)
    title = f"{len(named)} runs on {Path(qrels).name}"
    if plot is not None:
        from rankwise.eval.experiment import read_query_seconds
        from rankwise.eval.plots import comparison_plots

        costs = read_query_seconds(results) if results is not None else None
        files.update(comparison_plots(result.comparison, result.per_query, plot, costs=costs, title=title))
    emit(result.comparison, fmt=fmt, title=title, files=files)


def register(app: typer.Typer) -> None:
    """Add ``rankwise compare`` to the app."""
    app.command("compare")(compare_command)
