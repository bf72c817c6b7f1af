"""``rankwise compare RUN...`` and ``rankwise beir DATASET --systems ...``: comparison tables and plots."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.options import out_file, out_folder
from rankwise.retrieval.values import non_negative_int, open_unit_interval

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
DELTA_PNG = "per-query-delta.png"
COST_PNG = "quality-cost.png"


def file_label(name: str) -> str:
    """A system name as a file name (``bm25>>cross-encoder:./ce`` -> ``bm25_cross-encoder_._ce``)."""
    return _SAFE.sub("_", name).strip("_") or "run"


def emit(table: Any, values: Any, *, fmt: str, title: str, per_query: Path | None, plot: Path | None,
         costs: dict[str, float] | None = None) -> dict[str, str]:
    """Print ``table`` in ``fmt``, write the per-query CSV and the plots; return the files written."""
    from rich.console import Console

    from rankwise.eval.compare import render
    from rankwise.retrieval.files import atomic_open

    written: dict[str, str] = {}
    if per_query is not None:
        with atomic_open(per_query) as fh:
            values.to_csv(fh, index=False, lineterminator="\n", float_format="%.10g")
        written["per_query"] = str(per_query)
    if plot is not None:
        from rankwise.eval import plots

        measure = str(values["measure"].iloc[0])
        baseline = table.attrs["baseline"]
        if len(table) > 1:
            written["per_query_delta"] = str(plots.per_query_delta(values, plot / DELTA_PNG, baseline=baseline,
                                                                   measure=measure, title=title))
        queries = table.attrs["queries"]
        points = {s: (float(table.loc[s, (measure, "mean")]), queries / costs[s])
                  for s in table.index if costs and costs.get(s)}
        if points:
            written["quality_cost"] = str(plots.quality_cost(points, plot / COST_PNG, measure=measure, title=title))
    rendered = render(table, fmt, title=title)
    if fmt == "table":
        console = Console()
        wide = Console(width=max(console.width, console.measure(rendered, options=console.options.update_width(1000)).maximum))  # never squeeze the numbers
        wide.print(rendered)
    else:
        typer.echo(rendered, nl=not rendered.endswith("\n"))
    for what, path in written.items():
        typer.echo(f"{what.replace('_', ' ')}: {path}", err=True)
    return written


def _check_choices(test: str, correction: str, fmt: str, plot: Path | None = None) -> None:
    from rankwise.eval.compare import CORRECTIONS, FORMATS, TESTS

    for value, allowed, field in ((test, TESTS, "test"), (correction, CORRECTIONS, "correction"), (fmt, FORMATS, "format")):
        if value not in allowed:
            raise InputError(f"unknown {field} {value!r}; choose from {', '.join(allowed)}", field=field)
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


def _timings_from(results: Path) -> dict[str, float]:
    """System name -> query seconds from a ``results.json`` of ``rankwise beir`` (one dataset)."""
    from rankwise.eval.systems import query_seconds

    try:
        doc = json.loads(results.read_text(encoding="utf-8"))
        datasets = doc["datasets"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"not a results.json of rankwise beir ({type(err).__name__}: {err})", path=results) from None
    out: dict[str, float] = {}
    for entry in datasets.values():
        if "systems" in entry:
            for name, system in entry["systems"].items():
                out[name] = query_seconds(system.get("timings", {}))
                out[file_label(name)] = out[name]
        elif "timings" in entry:  # one system: its run file is <label>.trec
            from rankwise.eval.pipeline import PipelineSettings

            fields = {f.name for f in dataclasses.fields(PipelineSettings)}
            settings = {k: v for k, v in doc.get("settings", {}).items() if k in fields}
            settings["measures"] = tuple(settings.get("measures") or ())
            out[PipelineSettings(**settings).label] = query_seconds(entry["timings"])
    return out


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
    from rankwise.eval.compare import compare_per_query, per_query_values
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.retrieval.formats import read_qrels
    from rankwise.retrieval.run import Run

    _check_choices(test, correction, fmt, plot)
    named = _named_run_files(runs)
    from rankwise.eval.pipeline import drops_self_hits

    if Path(qrels).is_file():  # a plain qrels file: query and document ids are not known to share a numbering
        judgements, official = read_qrels(qrels), None
        identical = bool(self_hits)
    else:
        dataset = resolve_dataset(qrels, download=False)
        judgements, official = dataset.qrels(split), dataset.official_measures(split)
        identical = drops_self_hits(dataset, self_hits)
    chosen = [m.strip() for m in measures.split(",") if m.strip()] if measures else list(official or ())
    loaded = {name: Run.read(path) for name, path in named.items()}
    if baseline is not None and baseline not in loaded:
        by_path = [n for n, p in named.items() if Path(baseline).exists() and p.resolve() == Path(baseline).resolve()]
        if not by_path:
            raise InputError(f"the baseline {baseline!r} is not one of the runs ({', '.join(loaded)})", field="baseline")
        baseline = by_path[0]
    from rankwise.eval.metrics import DEFAULT_MEASURES

    values = per_query_values(loaded, judgements, chosen or DEFAULT_MEASURES, ignore_identical_ids=identical)
    table = compare_per_query(values, baseline=baseline, test=test, correction=correction, alpha=significance,
                              seed=seed)
    costs = _timings_from(results) if results is not None else None
    if identical:
        typer.echo("retrieved documents whose id is the query's are dropped before scoring (BEIR's rule; "
                   "--keep-self-hits keeps them)", err=True)
    emit(table, values, fmt=fmt, title=f"{len(loaded)} runs on {Path(qrels).name}", per_query=per_query,
         plot=plot, costs=costs)


def beir_systems(datasets: list[str], systems: str, base: Any, *, first_stage_weight: float, baseline: str | None,
                 test: str, correction: str, significance: float, seed: int, per_query: Path | None, fmt: str,
                 plot: Path | None, out: Path | None, k_given: bool) -> None:
    """``rankwise beir DATASET --systems ...``: run every system on each dataset, then compare them."""
    from rankwise.eval.compare import compare_per_query, flat_rows, per_query_values
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.eval.pipeline import drops_self_hits
    from rankwise.eval.provenance import provenance
    from rankwise.eval.systems import parse_systems, query_seconds, run_systems, system_settings
    from rankwise.retrieval.files import write_json

    from rankwise.eval.metrics import parse_measures

    _check_choices(test, correction, fmt, plot)
    if base.measures:
        parse_measures(base.measures)  # an unknown measure fails before any work
    specs = parse_systems(systems)
    for spec in specs:
        system_settings(spec, base, first_stage_weight)  # a bad spec fails before any work
    if baseline is not None and baseline not in specs:
        raise InputError(f"the baseline {baseline!r} is not one of the systems ({', '.join(specs)})", field="baseline")
    resolved = [resolve_dataset(name) for name in datasets]
    if not k_given:
        base = dataclasses.replace(base, k=auto_depth(base.measures, resolved, base.split))
    document: dict[str, Any] = {"provenance": provenance(), "settings": dataclasses.asdict(base),
                                "systems": {s: dataclasses.asdict(system_settings(s, base, first_stage_weight))
                                            for s in specs},
                                "datasets": {}}
    for dataset in resolved:
        results = run_systems(dataset, specs, base, first_stage_weight=first_stage_weight)
        measures = list(base.measures or dataset.official_measures(base.split))
        qrels = dataset.qrels(base.split)
        identical = drops_self_hits(dataset, base.drop_self_hits)
        values = per_query_values({s: r.run for s, r in results.items()}, qrels, measures,
                                  ignore_identical_ids=identical)
        table = compare_per_query(values, baseline=baseline or specs[0], test=test, correction=correction,
                                  alpha=significance, seed=seed)
        costs = {s: query_seconds(r.timings) for s, r in results.items()}
        several = len(resolved) > 1
        label_dir = file_label(dataset.label)
        written = emit(table, values, fmt=fmt, title=f"{dataset.label} ({base.split})",
                       per_query=_per_dataset(per_query, label_dir, several),
                       plot=(plot / label_dir if several else plot) if plot is not None else None, costs=costs)
        entry = {"queries": len(qrels), "measures": measures, "drop_self_hits": identical,
                 "comparison": flat_rows(table),
                 "test": test, "correction": correction, "significance": significance, "baseline": table.attrs["baseline"],
                 "files": written,
                 "systems": {s: {"label": r.run.name, "metrics": r.metrics, "components": r.components,
                                 "timings": r.timings, "query_seconds": costs[s], "rerank_stats": r.rerank_stats,
                                 "models": r.models} for s, r in results.items()}}
        document["datasets"][dataset.label] = entry
        if out is not None:
            for spec, result in results.items():
                result.run.write(out / dataset.label / f"{file_label(spec)}.trec", tag=f"rankwise-{file_label(spec)}")
            write_json(out / "results.json", document)
    if out is not None:
        typer.echo(f"runs and results.json written to {out}", err=True)


def _per_dataset(path: Path | None, label: str, several: bool) -> Path | None:
    if path is None or not several:
        return path
    return path.with_name(f"{path.stem}-{label}{path.suffix}")


def auto_depth(measures: tuple[str, ...], datasets: list[Any], split: str) -> int:
    """Documents per query when ``-k`` is not given: 100, or the deepest cut-off of the measures
    used (1000 for TREC DL's R(rel=2)@1000)."""
    from rankwise.eval.metrics import parse_measures

    depth = 100
    for dataset in datasets:
        for measure in parse_measures(measures or dataset.official_measures(split)):
            cutoff = measure.params.get("cutoff")
            if isinstance(cutoff, int):
                depth = max(depth, cutoff)
    return depth


def register(app: typer.Typer) -> None:
    """Add ``rankwise compare`` to the app."""
    app.command("compare")(compare_command)
