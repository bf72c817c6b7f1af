"""``rankwise mine``: hard-negative triples (and teacher scores) from a first-stage ranking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from retrieval.errors import InputError
from retrieval.models import DEFAULT_ENCODER


def _beir_defaults(corpus: Path, queries: Path | None, qrels: Path | None) -> tuple[Path, Path]:
    """``--queries`` / ``--qrels`` default to a BEIR folder's ``queries.jsonl`` and ``qrels/train.tsv``."""
    if corpus.is_dir():
        if queries is None:
            queries = next((corpus / n for n in ("queries.jsonl", "queries.tsv") if (corpus / n).is_file()), None)
            if queries is None:
                raise InputError("no queries.jsonl in this folder; pass --queries", path=corpus, field="queries")
        if qrels is None:
            qrels = corpus / "qrels" / "train.tsv"
            if not qrels.is_file():
                raise InputError("no qrels/train.tsv in this folder; pass --qrels", path=corpus, field="qrels")
    if queries is None:
        raise InputError("--queries is needed when --corpus is a file", field="queries")
    if qrels is None:
        raise InputError("--qrels is needed when --corpus is a file", field="qrels")
    return queries, qrels


def mine(
    corpus: Annotated[Path, typer.Option(help="BEIR folder, corpus.jsonl or collection.tsv")],
    out: Annotated[Path, typer.Option("--out", help="triples file to write (query_id, pos_id, neg_id)")],
    queries: Annotated[Optional[Path], typer.Option(help="queries file (default: the BEIR folder's queries.jsonl)")] = None,
    qrels: Annotated[Optional[Path], typer.Option(help="qrels file (default: the BEIR folder's qrels/train.tsv)")] = None,
    retriever: Annotated[str, typer.Option(help="dense, bm25 or hybrid")] = "dense",
    model: Annotated[str, typer.Option(help="encoder name or path (dense, hybrid)")] = DEFAULT_ENCODER,
    depth: Annotated[str, typer.Option(help="rank window A:B to draw negatives from (ranked[A:B], 0-based)")] = "10:100",
    negatives: Annotated[int, typer.Option(help="negatives per (query, positive)")] = 8,
    sampling: Annotated[str, typer.Option(help="random (seeded) or top")] = "random",
    teacher: Annotated[Optional[str], typer.Option(help="reranker spec PARADIGM:MODEL[,key=value...] scoring the "
                                                        "candidates, e.g. cross-encoder:PATH")] = None,
    margin: Annotated[Optional[float], typer.Option(help="drop a negative when teacher(neg) > teacher(pos) - MARGIN")]
    = None,
    text: Annotated[bool, typer.Option("--text", help="write texts (query, positive, negative) instead of ids")] = False,
    scores: Annotated[Optional[Path], typer.Option("--scores", help="teacher scores file (Margin-MSE format)")] = None,
    seed: Annotated[int, typer.Option(help="random seed of the sampling")] = 0,
    force: Annotated[bool, typer.Option("--force", help="discard an unfinished run made with other settings")] = False,
    chunk_size: Annotated[int, typer.Option(help="queries per resumable chunk")] = 256,
    index_type: Annotated[str, typer.Option("--index-type", help="flat, hnsw, ivf or ivfpq (dense, hybrid)")] = "flat",
    fusion: Annotated[str, typer.Option(help="hybrid fusion: rrf or interpolation")] = "rrf",
    batch_size: Annotated[int, typer.Option(help="encoder batch size")] = 64,
    backend: Annotated[str, typer.Option(help="encoder backend")] = "torch",
    json_output: Annotated[bool, typer.Option("--json", help="print the statistics as one JSON object to stdout")]
    = False,
) -> None:
    """Mine hard negatives from the --depth window of a retriever's ranking (resumable); write triples."""
    from retrieval.cached import KINDS, cached_retriever
    from retrieval.formats import Corpus
    from training.mining import mine_negatives, parse_depth

    window = parse_depth(depth)
    if retriever not in KINDS:
        raise InputError(f"unknown retriever {retriever!r}; choose from {', '.join(KINDS)}", field="retriever")
    queries, qrels = _beir_defaults(corpus, queries, qrels)
    docs = Corpus(corpus)
    stats = mine_negatives(
        docs, queries, qrels,
        lambda: cached_retriever(docs, retriever, model, index_type=index_type, fusion=fusion,
                                 batch_size=batch_size, backend=backend),
        window=window, negatives=negatives, sampling=sampling, seed=seed, teacher=teacher, margin=margin,
        out=out, scores_out=scores, text=text, chunk_size=chunk_size, force=force,
    )
    typer.echo(f"{out}: {stats.triples} triples from {stats.queries} queries ({stats.positives} positives; "
               f"{stats.no_positives} queries without positives, {stats.short} with fewer than {negatives} "
               f"negatives for a positive, {stats.teacher_dropped} candidates dropped by the teacher)"
               + (f"; teacher scores in {scores}" if scores else ""), err=True)
    if json_output:
        typer.echo(json.dumps(stats.as_dict(), sort_keys=True))


def register(app: typer.Typer) -> None:
    """Add this package's commands to the ``rankwise`` app."""
    app.command("mine")(mine)
