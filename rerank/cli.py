"""``rankwise rerank``: rerank a TREC run with any reranker spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rankwise.retrieval.options import ChunkSize, Corpus, Force, Int8, Queries, RerankBackend, out_file
from rankwise.rerank.options import Depth, FirstStageWeight, RerankerSpec
from rankwise.retrieval.values import positive_int


def rerank(
    run_file: Annotated[Path, typer.Argument(help="TREC run to rerank")],
    queries: Queries,
    corpus: Corpus,
    model: RerankerSpec,
    out: Annotated[Path, out_file("TREC run file to write")],
    depth: Depth = 100,
    batch_size: Annotated[Optional[int], positive_int.option(help="model batch size")] = None,
    backend: RerankBackend = None,
    int8: Int8 = False,
    first_stage_weight: FirstStageWeight = 0.0,
    save_reasoning: Annotated[Optional[Path], out_file(
        "with listwise mode=reason: write each window's reasoning to this JSONL file", "--save-reasoning")] = None,
    chunk_size: ChunkSize = 256,
    force: Force = False,
) -> None:
    """Rerank the top --depth documents of each query of a run.

    Resumable, and under torchrun (`torchrun --nproc_per_node N -m rankwise rerank ...`) each process
    reranks its share of the --chunk-size chunks of queries; the file is the one one process writes.
    """
    from rankwise.rerank.job import rerank_file
    from rankwise.rerank.served import served_usage
    from rankwise.retrieval.distributed import world

    result = rerank_file(run_file, queries, corpus, model, out, depth=depth, batch_size=batch_size, backend=backend,
                         int8=int8, first_stage_weight=first_stage_weight, save_reasoning=save_reasoning,
                         chunk_size=chunk_size, force=force)
    if world()[0] != 0:
        return
    c = result.counts
    reranker = result.reranker
    window = getattr(reranker, "max_length", None)
    cut = f"{c['truncated']} truncated" + (f" at max_length={window} (override: max_length= in the spec)" if window else "")
    usage = served_usage(reranker) if reranker is not None else None
    served = f"; {usage.summary()}" if usage is not None else ""
    kept = f"; {result.kept_chunks} of {result.chunks} chunks kept from an earlier run" if result.kept_chunks else ""
    typer.echo(f"{out}: {result.queries} queries reranked ({c['passages']} passages, {cut}, "
               f"{c['forward_passes']} forward passes{served}{kept})", err=True)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the ``rankwise`` app."""
    app.command("rerank")(rerank)
    from rankwise.rerank.server.cli import serve

    app.command("serve")(serve)
