"""``rankwise position-bias DATASET --systems ...``: the position-bias probe of :mod:`rankwise.eval.position_bias`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.json_output import dumps
from rankwise.eval.options import PlotFile, Split, Systems, format_option
from rankwise.rerank.options import Depth
from rankwise.retrieval.options import Encoder, EncoderBatchSize, K, Passages, Stride, out_file
from rankwise.retrieval.values import positive_int

FORMATS = ("table", "markdown", "csv", "json")


def render(table: Any, summary: dict[str, dict[str, Any]], fmt: str) -> str:
    """The nDCG@10 by bucket table, with each system's overall nDCG@10, query seconds and passages per doc."""
    from rankwise.eval.position_bias import MEASURE, wide

    frame = wide(table).round(4)
    frame.insert(0, "pairs", [int(table[(table.system == s) & (table.bucket == 0)]["pairs"].iloc[0])
                              for s in frame.index])
    frame["nDCG@10 (queries)"] = [round(summary[s]["metrics"].get(MEASURE, float("nan")), 4) for s in frame.index]
    frame["query s"] = [round(summary[s]["query_s"], 1) for s in frame.index]
    per_doc = [summary[s]["passages_per_doc"] for s in frame.index]
    frame["passages/doc"] = [None if v is None else round(v, 2) for v in per_doc]
    if fmt == "csv":
        return frame.to_csv(lineterminator="\n")
    if fmt == "markdown":
        header = "| system | " + " | ".join(str(c) for c in frame.columns) + " |"
        lines = [header, "|---" + "|---:" * len(frame.columns) + "|"]
        lines += ["| " + " | ".join([str(s)] + ["" if v is None else f"{v}" for v in row]) + " |"
                  for s, row in zip(frame.index, frame.itertuples(index=False))]
        return "\n".join(lines) + "\n"
    return frame.to_string() + "\n"


def position_bias_command(
    dataset: Annotated[str, typer.Argument(help="a BEIR name or folder with a positions.tsv (SciFact-long)")],
    systems: Systems = "bm25,dense",
    positions: Annotated[Optional[Path], typer.Option(help="positions file (default: DATASET/positions.tsv)")] = None,
    model: Encoder = DEFAULT_ENCODER,
    k: K = 100,
    depth: Depth = 10,
    buckets: Annotated[int, positive_int.option(help="position buckets")] = 8,
    passages: Passages = 128,
    stride: Stride = None,
    batch_size: EncoderBatchSize = 64,
    split: Split = "test",
    fmt: format_option(FORMATS) = "table",
    plot: PlotFile = None,
    out: Annotated[Optional[Path], out_file("JSON with the table, the summaries and the runs' settings")] = None,
) -> None:
    """nDCG@10 and the relevant document's rank by where its abstract sits (docs/long-documents.md)."""
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.eval.experiment import write_results
    from rankwise.eval.position_bias import plot as plot_table
    from rankwise.eval.position_bias import probe_pipelines, read_positions, run_position_bias
    from rankwise.eval.systems import parse_systems

    pipelines = probe_pipelines(parse_systems(systems), model=model, depth=depth, passages=passages, stride=stride,
                                batch_size=batch_size)  # every spec checked before any work
    data = resolve_dataset(dataset)
    where = read_positions(positions or data.root / "positions.tsv")
    result, table, summary = run_position_bias(data, pipelines, where, k=k, buckets=buckets, split=split)
    if fmt == "json":
        typer.echo(dumps({"table": table.to_dict(orient="records"), "systems": summary}, indent=1, default=str))
    else:
        typer.echo(render(table, summary, fmt), nl=False)
    for spec, s in summary.items():
        if s.get("truncated"):
            typer.echo(f"{spec}: {s['truncated']} reranker inputs were cut to the model's window", err=True)
    if plot is not None:
        typer.echo(f"plot: {plot_table(table, plot, title=f'{data.label}: {k} retrieved, top {depth} reranked')}",
                   err=True)
    if out is not None:
        write_results(out, [result], position_bias={"passages": passages, "stride": stride, "buckets": buckets,
                                                    "table": table.to_dict(orient="records"), "systems": summary})
        typer.echo(f"results: {out}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``position-bias`` to the ``rankwise`` app."""
    app.command("position-bias")(position_bias_command)
