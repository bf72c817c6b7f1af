"""``rankwise rerank``: rerank a TREC run with any reranker spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rankwise.retrieval.options import Int8, RerankBackend, out_file
from rankwise.retrieval.values import Range, positive_int


def rerank(
    run_file: Annotated[Path, typer.Argument(help="TREC run to rerank")],
    queries: Annotated[Path, typer.Option(help="queries.jsonl, queries.tsv or a BEIR folder")],
    corpus: Annotated[Path, typer.Option(help="BEIR folder, corpus.jsonl or collection.tsv")],
    model: Annotated[str, typer.Option("--model", help="reranker spec PARADIGM:MODEL[,key=value...] (see README)")],
    out: Annotated[Path, out_file("TREC run file to write")],
    depth: Annotated[int, positive_int.option(help="documents reranked per query")] = 100,
    batch_size: Annotated[Optional[int], positive_int.option(help="model batch size")] = None,
    backend: RerankBackend = None,
    int8: Int8 = False,
    first_stage_weight: Annotated[float, Range(float, min=0.0, below=1.0).option(
        help="rank by W x first-stage + (1 - W) x reranker score (min-max normalized per query); 0: reranker alone")] = 0.0,
    save_reasoning: Annotated[Optional[Path], out_file(
        "with listwise mode=reason: write each window's reasoning to this JSONL file", "--save-reasoning")] = None,
) -> None:
    """Rerank the top --depth documents of each query of a run."""
    from rankwise.rerank.served import served_usage
    from rankwise.rerank.spec import load_reranker, parse_spec
    from rankwise.retrieval.formats import Corpus, read_queries
    from rankwise.retrieval.run import Run

    spec = parse_spec(model)  # a bad spec fails before anything is loaded
    if save_reasoning is not None and (spec.paradigm, spec.options.get("mode")) != ("listwise", "reason"):
        from rankwise.retrieval.errors import InputError

        raise InputError("--save-reasoning needs a listwise:MODEL,mode=reason reranker", field="save-reasoning")
    run = Run.read(run_file)
    texts = read_queries(queries)
    docs = Corpus(corpus)
    reranker = load_reranker(spec, batch_size=batch_size, backend=backend, int8=int8 or None)
    reranked = reranker.rerank_run(run, texts, docs, depth=depth, first_stage_weight=first_stage_weight)
    reranked.write(out, tag=f"rankwise-{spec.paradigm}")
    if save_reasoning is not None:
        from rankwise.rerank.reasoning import write_reasoning

        write_reasoning(save_reasoning, reranker.records, texts)
    s = reranker.stats
    window = getattr(reranker, "max_length", None)
    cut = f"{s.truncated} truncated" + (f" at max_length={window} (override: max_length= in the spec)" if window else "")
    served = f"; {served_usage(reranker).summary()}" if served_usage(reranker) is not None else ""
    typer.echo(f"{out}: {len(reranked)} queries reranked ({s.passages} passages, {cut}, "
               f"{s.forward_passes} forward passes{served})", err=True)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the ``rankwise`` app."""
    app.command("rerank")(rerank)
    from rankwise.rerank.server.cli import serve

    app.command("serve")(serve)
