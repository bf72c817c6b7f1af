"""Command-line options several ``rankwise`` commands share, declared once (typer ``Annotated`` aliases).

A command writes ``batch_size: EncoderBatchSize = 64``; the flag, its help and its checks are the
same in ``index``, ``search``, ``mine``, ``rerank`` and ``beir``.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rankwise.retrieval.backend import BACKENDS

_BACKENDS = ", ".join(BACKENDS)

# torch, onnx, onnx-int8, openvino or openvino-int8: one value (retrieval.backend.check_backend)
Backend = Annotated[str, typer.Option(help=f"encoder backend: {_BACKENDS}")]
# the index's own backend unless given (search, mine --index)
IndexBackend = Annotated[Optional[str], typer.Option(help=f"encoder backend: {_BACKENDS} (default: the one the "
                                                          "index was built with)")]
# a reranker's backend unless its spec names one
RerankBackend = Annotated[Optional[str], typer.Option(help=f"{_BACKENDS} (unless the spec names one)")]
Int8 = Annotated[bool, typer.Option("--int8", help="deprecated: the same as --backend onnx-int8")]
EncoderBatchSize = Annotated[int, typer.Option(help="encoder batch size")]
IndexType = Annotated[str, typer.Option("--index-type", help="flat, hnsw, ivf or ivfpq (dense)")]
Force = Annotated[bool, typer.Option("--force", help="replace what OUT holds when it was made with other settings")]
# DataLoader worker processes of the trainers (retrieval.batching.default_workers when not given)
Workers = Annotated[Optional[int], typer.Option(help="DataLoader worker processes that tokenize and collate batches "
                                                     "(default: min(4, cores - 1); 0 on 2 cores: in the main process)")]
