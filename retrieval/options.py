"""Command-line options several ``rankwise`` commands share, declared once (typer ``Annotated`` aliases).

A command writes ``batch_size: EncoderBatchSize = 64``; the flag, its help and its checks are the
same in ``index``, ``search``, ``mine``, ``rerank`` and ``beir``.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from rankwise.retrieval.backend.value import Backend as BackendValue
from rankwise.retrieval.index import INDEX_TYPES
from rankwise.retrieval.values import non_negative_int, one_of, positive_int

# torch, onnx, onnx-int8, openvino or openvino-int8: the choices are BackendValue.NAMES
BackendName = one_of(BackendValue.NAMES)


def _parse_backend(value: str | None) -> BackendValue | None:
    return None if value is None else BackendValue.parse(value)


def backend_option(*param_decls: str, help: str) -> Any:
    """A ``--backend`` option: one of :attr:`BackendValue.NAMES`, handed to the command as a
    :class:`~rankwise.retrieval.backend.value.Backend` (None when an optional one is not given)."""
    return typer.Option(*param_decls, help=help, callback=_parse_backend)


Backend = Annotated[BackendName, backend_option(help="encoder backend")]
# the index's own backend unless given (search, mine --index)
IndexBackend = Annotated[Optional[BackendName], backend_option(help="encoder backend (default: the one the index "
                                                                    "was built with)")]
# a reranker's backend unless its spec names one
RerankBackend = Annotated[Optional[BackendName], backend_option(help="reranker backend (unless the spec names one)")]
EncoderBatchSize = Annotated[int, positive_int.option(help="encoder batch size")]
IndexType = Annotated[one_of(INDEX_TYPES), typer.Option("--index-type", help="FAISS index type (dense)")]
Force = Annotated[bool, typer.Option("--force", help="replace what OUT holds when it was made with other settings")]
# DataLoader worker processes of the trainers (retrieval.batching.default_workers when not given)
Workers = Annotated[Optional[int], non_negative_int.option(
    help="DataLoader worker processes that tokenize and collate batches (default: min(4, cores - 1); 0 on 2 cores: "
         "in the main process)")]


def out_folder(help: str, *param_decls: str) -> Any:
    """An output folder option: a path that is a file is refused while the command line is parsed."""
    return typer.Option(*(param_decls or ("--out",)), file_okay=False, help=help)


def out_file(help: str, *param_decls: str) -> Any:
    """An output file option: a path that is a folder is refused while the command line is parsed."""
    return typer.Option(*(param_decls or ("--out",)), dir_okay=False, help=help)
