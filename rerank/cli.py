"""``rankwise export`` (ONNX export of any model kind) and ``rankwise rerank`` (rerank a TREC run with any
reranker spec)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rankwise.rerank.lm_engines import CAUSAL_LM
from rankwise.retrieval.backend.value import ONNX, ONNX_INT8
from rankwise.retrieval.engines import CROSS_ENCODER, ENCODER
from rankwise.rerank.options import Depth, FirstStageWeight, RerankerSpec
from rankwise.retrieval.options import (ChunkSize, Corpus, Force, MaxLength, Queries, RerankBackend, backend_option,
                                        out_file)
from rankwise.retrieval.values import one_of, positive_int

KINDS = {kind.name: kind for kind in (ENCODER, CROSS_ENCODER, CAUSAL_LM)}  # what ``rankwise export`` exports


def export(
    model: Annotated[str, typer.Argument(help="model name or path (a .gguf file for causal LMs too)")],
    out_dir: Annotated[Path, typer.Argument(help="folder to write model.onnx, the tokenizer and manifest.json to")],
    kind: Annotated[one_of(tuple(KINDS)), typer.Option(help="model kind")] = "encoder",
    backend: Annotated[one_of((ONNX.name, ONNX_INT8.name)), backend_option(
        help="onnx-int8: also write the dynamically quantized model.int8.onnx")] = ONNX.name,
    optimize: Annotated[bool, typer.Option("--optimize", help="save ONNX Runtime's optimized graph (CPU provider)")]
    = False,
    max_length: MaxLength = None,
    reduce_range: Annotated[bool, typer.Option("--reduce-range", help="7-bit quantized weights (for CPUs without "
                                                                       "VNNI whose 8-bit kernels saturate)")] = False,
) -> None:
    """Export a model to ONNX, check parity with torch, and write a manifest (checksums, parity)."""
    from rankwise.retrieval.backend.cache import export_model

    exported = export_model(model, KINDS[kind], out_dir, backend=backend, optimize=optimize, max_length=max_length,
                            reduce_range=reduce_range)
    for variant, record in exported.manifest["parity"].items():
        extra = f", min cosine {record['min_cosine']:.4f}" if "min_cosine" in record else ""
        typer.echo(f"{variant}: max abs diff {record['max_abs_diff']:.2e}, ranking agreement "
                   f"{record['ranking_agreement']:.3f}{extra}", err=True)
    files = exported.manifest["files"]
    sizes = ", ".join(f"{name} {record['bytes'] / 2**20:.1f} MiB" for name, record in files.items()
                      if name.endswith(".onnx"))
    typer.echo(f"{out_dir}: {kind} export ({sizes})", err=True)


def rerank(
    run_file: Annotated[Path, typer.Argument(help="TREC run to rerank")],
    queries: Queries,
    corpus: Corpus,
    model: RerankerSpec,
    out: Annotated[Path, out_file("TREC run file to write")],
    depth: Depth = 100,
    batch_size: Annotated[Optional[int], positive_int.option(help="model batch size")] = None,
    backend: RerankBackend = None,
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
                         first_stage_weight=first_stage_weight, save_reasoning=save_reasoning,
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
    app.command("export")(export)
    app.command("rerank")(rerank)
    from rankwise.rerank.server.cli import serve

    app.command("serve")(serve)
