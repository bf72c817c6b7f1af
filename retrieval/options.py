"""Command-line options several ``rankwise`` commands share, declared once (typer ``Annotated`` aliases).

A command writes ``batch_size: EncoderBatchSize = 64``; the flag, its help and its checks are the
same in ``index``, ``search``, ``mine``, ``rerank`` and ``beir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rankwise.retrieval.backend.value import Backend as BackendValue
from rankwise.retrieval.cached import KINDS
from rankwise.retrieval.hybrid import FUSIONS
from rankwise.retrieval.index import INDEX_TYPES
from rankwise.retrieval.values import non_negative_int, one_of, positive_int

# torch, onnx, onnx-int8, openvino, openvino-int8 or openvino-bf16: the choices are BackendValue.NAMES
BackendName = one_of(BackendValue.NAMES)
INDEX_KINDS = ("bm25", "dense")  # what `rankwise index` builds


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
Force = Annotated[bool, typer.Option("--force", help="start over when OUT, or its unfinished work, was made with other "
                                                    "settings (else such a mismatch is refused)")]
# print the command's result as one JSON object on stdout (its messages stay on stderr)
Json = Annotated[bool, typer.Option("--json", help="print one JSON object, nothing else, to stdout")]
Seed = Annotated[int, non_negative_int.option(help="random seed")]
_ENCODER = typer.Option("--encoder", help="encoder: a sentence-transformers name or path, for dense and hybrid "
                                          "retrieval (default for an existing index: the one it was built with)")
Encoder = Annotated[str, _ENCODER]
IndexEncoder = Annotated[Optional[str], _ENCODER]  # search, serve: the index's own encoder unless given
_RETRIEVER = typer.Option("--retriever", help="first-stage retriever")
Retriever = Annotated[one_of(KINDS), _RETRIEVER]
IndexRetriever = Annotated[one_of(INDEX_KINDS), _RETRIEVER]  # index: what a folder can hold (hybrid joins two)
Fusion = Annotated[one_of(FUSIONS), typer.Option(help="hybrid fusion")]
K = Annotated[int, positive_int.option("-k", help="documents per query")]
OptionalK = Annotated[Optional[int], positive_int.option("-k", help="documents per query")]
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
ChunkSize = Annotated[int, positive_int.option(help="items per resumable chunk (index: documents; mine, rerank: "
                                                    "queries, the unit shared out under torchrun)")]
_CORPUS_HELP = ("corpus: a BEIR folder, corpus.jsonl or collection.tsv (serve: default the index's own; train: for id "
                "triples, --runs, ADORE's index and the bm25 curriculum)")
Corpus = Annotated[Path, typer.Option(help=_CORPUS_HELP)]
OptionalCorpus = Annotated[Optional[Path], typer.Option(help=_CORPUS_HELP)]
_QUERIES_HELP = "queries.jsonl, queries.tsv or a BEIR folder (mine, train: default the queries of the --corpus BEIR folder)"
Queries = Annotated[Path, typer.Option(help=_QUERIES_HELP)]
OptionalQueries = Annotated[Optional[Path], typer.Option(help=_QUERIES_HELP)]
MaxLength = Annotated[Optional[int], positive_int.option(
    help="max tokens per model input: a text, or a (query, document) pair for a cross-encoder (default: the model's)")]
MaxTokens = Annotated[Optional[int], positive_int.option(
    help="padded tokens per forward pass: batches are length-sorted and cut to fit (training: a step's micro-batches "
         "accumulate their gradients, the same effective batch)")]
IndexFolder = Annotated[Optional[Path], typer.Option(
    help="a `rankwise index` folder (mine: searched instead of a cached index; serve: for /v1/search; train "
         "bi-encoder: ADORE's fixed dense index, built by --model)")]
Passages = Annotated[int, positive_int.option(help="words per passage (as the passages=N key of a reranker spec)")]
Stride = Annotated[Optional[int], positive_int.option(help="words between passage starts (default: --passages)")]
_QRELS_HELP = ("qrels: a qrels file (compare: or a dataset, a BEIR name or folder, MS MARCO folder or irds:NAME, whose "
               "qrels and official measures are used; mine, train: default the BEIR folder's qrels/train.tsv)")
Qrels = Annotated[str, typer.Option("--qrels", help=_QRELS_HELP)]
OptionalQrels = Annotated[Optional[Path], typer.Option("--qrels", help=_QRELS_HELP)]
