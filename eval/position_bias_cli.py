"""``rankwise position-bias DATASET --systems ...``: the position-bias probe of :mod:`rankwise.eval.position_bias`."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.json_output import dumps
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.options import out_file
from rankwise.retrieval.values import one_of, positive_int

DENSE_PASSAGES = "dense-passages"
FORMATS = ("table", "markdown", "csv", "json")


def run_probe_systems(dataset: Any, specs: list[str], base: Any, *, passages: int, stride: int | None,
                      progress: bool = True) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Run ``specs`` on ``dataset``: ``{system: Run}`` and ``{system: summary}`` (metrics, seconds, passages)."""
    from rankwise.eval.metrics import evaluate
    from rankwise.eval.systems import query_seconds, run_systems, system_settings

    plain = [s for s in specs if not s.startswith(DENSE_PASSAGES)]
    for spec in plain:
        system_settings(spec, base)  # every spec checked before any work
    for spec in specs:
        if spec.startswith(DENSE_PASSAGES) and spec != DENSE_PASSAGES and not spec.startswith(DENSE_PASSAGES + ":"):
            raise InputError(f"system {spec!r}: write dense-passages or dense-passages:MODEL", field="systems")
    runs: dict[str, Any] = {}
    summary: dict[str, dict[str, Any]] = {}
    results = run_systems(dataset, plain, base, progress=progress) if plain else {}
    qrels = dataset.qrels(base.split)
    for spec in specs:
        if spec in results:
            r = results[spec]
            extra = r.rerank_stats.get("extra", {}) if r.rerank_stats else {}
            docs = extra.get("documents") or (r.rerank_stats or {}).get("passages")
            scored = extra.get("passages_scored", (r.rerank_stats or {}).get("passages"))
            summary[spec] = {"metrics": r.metrics, "query_s": query_seconds(r.timings), "timings": r.timings,
                             "passages_per_doc": (scored / docs) if docs and scored is not None else None,
                             "truncated": (r.rerank_stats or {}).get("truncated")}
            runs[spec] = r.run
            continue
        from rankwise.retrieval.encoder import Encoder
        from rankwise.retrieval.passage_index import PassageDenseRetriever
        from rankwise.retrieval.passages import Splitter

        encoder = Encoder(spec.partition(":")[2] or base.model, batch_size=base.batch_size, backend=base.backend,
                          int8=base.int8)
        t = time.perf_counter()
        retriever = PassageDenseRetriever(dataset.corpus, encoder, Splitter(passages, stride), name=dataset.name,
                                          progress=progress)
        index_s = time.perf_counter() - t
        t = time.perf_counter()
        run = retriever.search(dataset.queries(base.split), k=base.k, progress=progress)
        search_s = time.perf_counter() - t
        run.name = spec
        runs[spec] = run
        measures = base.measures or dataset.official_measures(base.split)
        summary[spec] = {"metrics": evaluate(run, qrels, measures, ignore_identical_ids=dataset.ignore_identical_ids),
                         "query_s": search_s, "timings": {"index_s": index_s, "search_s": search_s},
                         "passages_per_doc": retriever.counts["passages"] / max(1, retriever.counts["documents"]),
                         "truncated": None}
    return runs, summary


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
    systems: Annotated[str, typer.Option(help="FIRST[>>RERANKER],... as in beir --systems, plus "
                                              "dense-passages[:MODEL]")] = "bm25,dense",
    positions: Annotated[Optional[Path], typer.Option(help="positions file (default: DATASET/positions.tsv)")] = None,
    model: Annotated[str, typer.Option(help="encoder of dense systems")] = DEFAULT_ENCODER,
    k: Annotated[int, positive_int.option("-k", "--k", help="documents per query in each run")] = 100,
    depth: Annotated[int, positive_int.option(help="documents reranked per query")] = 10,
    buckets: Annotated[int, positive_int.option(help="position buckets")] = 8,
    passages: Annotated[int, positive_int.option(help="dense-passages: words per passage")] = 128,
    stride: Annotated[Optional[int], positive_int.option(help="dense-passages: words between passage starts")] = None,
    batch_size: Annotated[int, positive_int.option(help="encoder batch size")] = 64,
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    fmt: Annotated[one_of(FORMATS), typer.Option("--format", help="output format")] = "table",
    plot: Annotated[Optional[Path], out_file("PNG of nDCG@10 by position, one line per system", "--plot")] = None,
    out: Annotated[Optional[Path], out_file("JSON with the table, the summaries and the runs' settings")] = None,
) -> None:
    """nDCG@10 and the relevant document's rank by where its abstract sits (docs/long-documents.md)."""
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.eval.pipeline import PipelineSettings
    from rankwise.eval.position_bias import plot as plot_table
    from rankwise.eval.position_bias import position_table, read_positions
    from rankwise.eval.systems import parse_systems
    from rankwise.retrieval.files import write_json

    data = resolve_dataset(dataset)
    where = read_positions(positions or data.root / "positions.tsv")
    specs = parse_systems(systems)
    base = PipelineSettings(model=model, split=split, k=k, depth=depth, batch_size=batch_size, measures=("nDCG@10",))
    runs, summary = run_probe_systems(data, specs, base, passages=passages, stride=stride)
    table = position_table(runs, data.qrels(split), where, buckets=buckets)
    if fmt == "json":
        typer.echo(dumps({"table": table.to_dict(orient="records"), "systems": summary}, indent=1, default=str))
    else:
        typer.echo(render(table, summary, fmt), nl=False)
    for spec, s in summary.items():
        if s.get("truncated"):
            typer.echo(f"{spec}: {s['truncated']} reranker inputs were cut to the model's window", err=True)
    if plot is not None:
        typer.echo(f"plot: {plot_table(table, plot, title=f'{data.label}: {base.k} retrieved, top {depth} reranked')}",
                   err=True)
    if out is not None:
        write_json(out, {"settings": dataclasses.asdict(base), "passages": passages, "stride": stride,
                         "table": table.to_dict(orient="records"), "systems": summary})
        typer.echo(f"results: {out}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``position-bias`` to the ``rankwise`` app."""
    app.command("position-bias")(position_bias_command)
