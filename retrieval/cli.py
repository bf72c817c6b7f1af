"""``rankwise index`` and ``rankwise search``: the first-stage commands."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.options import (Backend, ChunkSize, Encoder, EncoderBatchSize, Force, IndexBackend, IndexEncoder,
                                        INDEX_KINDS, IndexRetriever, IndexType, K, MaxTokens, Queries, out_file,
                                        out_folder)
from rankwise.retrieval.values import positive_int


def index(
    paths: Annotated[list[Path], typer.Argument(help="CORPUS (BEIR folder, corpus.jsonl or collection.tsv); "
                                                      "with --merge, the shard folders")],
    out: Annotated[Path, out_folder("index folder to write")],
    retriever: IndexRetriever = "dense",
    model: Encoder = DEFAULT_ENCODER,
    index_type: IndexType = "flat",
    shard: Annotated[Optional[str], typer.Option(help="encode only shard I/N (dense); join with --merge")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="join shard folders into one index")] = False,
    chunk_size: ChunkSize = 8192,
    batch_size: EncoderBatchSize = 64,
    max_tokens: MaxTokens = None,
    backend: Backend = "torch",
    nlist: Annotated[Optional[int], positive_int.option(help="IVF lists (default ~4*sqrt(N))")] = None,
    pq_m: Annotated[Optional[int], positive_int.option(help="IVF-PQ sub-quantizers (default dim/8)")] = None,
    threads: Annotated[int, positive_int.option(help="indexing threads (bm25)")] = 2,
    force: Force = False,
) -> None:
    """Index a collection for BM25 or dense retrieval (resumable; shardable with --shard I/N)."""
    from rankwise.retrieval.formats import Corpus
    from rankwise.retrieval.index import IndexConfig, build_dense_index, check_dense_build, merge_shards, parse_shard
    from rankwise.retrieval.locks import folder_lock

    if merge:
        manifest = merge_shards(paths, out)
    else:
        if len(paths) != 1:
            raise InputError(f"expected one CORPUS, got {len(paths)} paths (use --merge to join shards)")
        corpus = Corpus(paths[0])
        if retriever == "bm25":
            if shard:
                raise InputError("--shard applies to dense indexes", field="shard")
            from rankwise.retrieval.bm25 import build_bm25_index

            manifest = build_bm25_index(corpus, out, threads=threads, force=force)
        elif retriever == "dense":
            from rankwise.retrieval.batching import BatchingConfig
            from rankwise.retrieval.encoder import Encoder

            config = IndexConfig(type=index_type, nlist=nlist, pq_m=pq_m)
            from rankwise.retrieval.distributed import device_for_rank, distributed_build, world

            _, world_size, local_rank = world()  # under torchrun: one shard per rank, rank 0 merges
            if world_size > 1 and shard:
                raise InputError("--shard and torchrun both split the corpus; use one", field="shard")
            # one writer per folder, and everything that needs no model refused before the encoder loads
            # (or is exported); under torchrun each rank locks its own shard folder instead
            with contextlib.ExitStack() as stack:
                if world_size == 1:
                    stack.enter_context(folder_lock(out))
                check_dense_build(corpus, out, config, backend=backend,
                                  chunk_size=chunk_size, shard=parse_shard(shard), force=force)
                from rankwise.retrieval.backend.calibration import corpus_calibration

                encoder = Encoder(model, backend=backend, batch_size=batch_size,
                                  batching=BatchingConfig(max_tokens=max_tokens),
                                  calibration=lambda: corpus_calibration(corpus),  # read by openvino-int8 only
                                  device=device_for_rank(local_rank, world_size))
                if world_size > 1:
                    manifest = distributed_build(corpus, encoder, out, config, chunk_size=chunk_size, force=force)
                else:
                    manifest = build_dense_index(corpus, encoder, out, config, chunk_size=chunk_size,
                                                 shard=parse_shard(shard), force=force)
        else:
            raise InputError(f"unknown retriever {retriever!r}; choose from {', '.join(INDEX_KINDS)}", field="retriever")
    typer.echo(f"{out}: {manifest['kind']} index of {manifest.get('source', {}).get('count', manifest.get('count'))} documents",
               err=True)
    line = truncation_line(manifest)
    if line:
        typer.echo(line, err=True)


def truncation_line(manifest: dict) -> str | None:
    """The report of a dense index's documents cut to the encoder's window (None when none were, or not dense)."""
    if not str(manifest.get("kind", "")).startswith("dense"):
        return None
    truncated, count = manifest.get("truncated"), manifest.get("count")
    max_length = manifest.get("encoder", {}).get("max_length")
    if truncated is None:
        return f"documents cut to max_length={max_length} tokens: not counted for this index"
    if not truncated:
        return None
    return (f"{truncated} of {count} documents were cut to max_length={max_length} tokens; index passages "
            "(see docs/long-documents.md) to keep their tails")


def search(
    index_dir: Annotated[Path, typer.Argument(help="index folder written by `rankwise index`")],
    queries: Queries,
    out: Annotated[Path, out_file("TREC run file to write")],
    k: K = 100,
    model: IndexEncoder = None,
    batch_size: EncoderBatchSize = 64,
    backend: IndexBackend = None,
) -> None:
    """Search an index with a queries file and write a TREC run."""
    from rankwise.retrieval.formats import read_queries
    from rankwise.retrieval.open import open_retriever

    retriever = open_retriever(index_dir, model=model, backend=backend, batch_size=batch_size)
    run = retriever.search(read_queries(queries), k=k)
    run.write(out)
    typer.echo(f"{out}: {len(run)} queries", err=True)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the ``rankwise`` app."""
    app.command("index")(index)
    app.command("search")(search)
