"""``rankwise compare RUN...``: compare TREC run files on one qrels (tables, per-query values, plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.options import out_file, out_folder
from rankwise.retrieval.values import non_negative_int, open_unit_interval



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


def _check_choices(test: str, correction: str, fmt: str, plot: Path | None = None) -> None:
    if plot is not None:  # before any run is read or retrieved, not after the table is printed
        from rankwise.retrieval.extras import requires

        requires("matplotlib", "experiments", "Plotting")
    from rankwise.eval.compare import CORRECTIONS, FORMATS, TESTS

    for value, allowed, field in ((test, TESTS, "test"), (correction, CORRECTIONS, "correction"), (fmt, FORMATS, "format")):
        if value not in allowed:
            raise InputError(f"unknown {field} {value!r}; choose from {', '.join(allowed)}", field=field)


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
    qrels: Annotated[str, typer.Option("--qrels", help="a qrels file, or a dataset (BEIR name or folder, MS MARCO "
                                                       "folder, irds:NAME) whose qrels and official measures to use")],
    baseline: Annotated[Optional[str], typer.Option(help="the run the others are compared with (default: the first)")] = None,
    measures: Annotated[Optional[str], typer.Option(help="comma-separated ir-measures names (default: the dataset's "
                                                         "official measures, else nDCG@10,R@100,RR@10,AP@100)")] = None,
    test: Annotated[str, typer.Option(help="paired test: t (Student's paired t-test) or randomization (Fisher)")] = "t",
    correction: Annotated[str, typer.Option(help="multiple-comparison correction: holm, bonferroni or none")] = "holm",
    significance: Annotated[float, open_unit_interval.option(help="significance level of the markers")] = 0.05,
    seed: Annotated[int, non_negative_int.option(help="seed of the randomization test")] = 0,
    split: Annotated[str, typer.Option(help="qrels split when --qrels names a dataset")] = "test",
    per_query: Annotated[Optional[Path], out_file("write per-query values to this CSV", "--per-query")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, markdown, latex, csv or json")] = "table",
    plot: Annotated[Optional[Path], out_folder("write per-query-delta.png (and quality-cost.png with --results) into "
                                               "this folder", "--plot")] = None,
    results: Annotated[Optional[Path], typer.Option("--results", help="results.json of rankwise beir: timings "
                                                                      "for the quality-cost plot")] = None,
    self_hits: Annotated[Optional[bool], typer.Option(
        "--drop-self-hits/--keep-self-hits",
        help="drop a retrieved document whose id equals the query id before scoring (default: drop when --qrels "
             "names a BEIR dataset, as BEIR does; keep for a qrels file and other datasets)")] = None,
) -> None:
    """Compare TREC runs on the same qrels: measures, deltas, paired tests (corrected), win/tie/loss."""
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.eval.experiment import Experiment
    from rankwise.retrieval.run import Run

    _check_choices(test, correction, fmt, plot)
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
