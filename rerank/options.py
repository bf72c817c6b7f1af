"""Command-line options of the reranking stage, declared once (typer ``Annotated`` aliases).

``rankwise rerank``, ``beir``, ``followir``, ``position-bias`` and ``serve`` take a reranker spec as
``--reranker`` and the documents reranked per query as ``--depth``, with one help text each.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rankwise.retrieval.values import Range, positive_int

_RERANKER = typer.Option("--reranker", help="reranker spec PARADIGM:MODEL[,key=value...] (see docs/reranking.md)")
RerankerSpec = Annotated[str, _RERANKER]
OptionalRerankerSpec = Annotated[Optional[str], _RERANKER]
Depth = Annotated[int, positive_int.option(help="documents reranked per query")]
FirstStageWeight = Annotated[float, Range(float, min=0.0, below=1.0).option(
    help="rank by W x first-stage + (1 - W) x reranker score (min-max normalized per query); 0: the reranker alone")]
