"""What a server serves: a reranker, a retriever over an index, an encoder; and their batched model calls.

Each ``*_batch`` function takes the payloads of several requests and returns one result per
request; it is what :class:`rankwise.rerank.server.batcher.DynamicBatcher` runs in its worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.rerank.base import Reranker
from rankwise.rerank.spec import RerankerSpec, load_reranker, parse_spec
from rankwise.retrieval.backend.value import ONNX_INT8, Backend
from rankwise.retrieval.errors import InputError


@dataclass
class Services:
    """The loaded models; any may be absent (its endpoint then answers 404)."""

    reranker: Reranker | None = None
    retriever: Any | None = None  # a DenseRetriever or BM25Retriever (``search(queries, k) -> Run``)
    encoder: Any | None = None  # a retrieval.encoder.Encoder, for /v1/embeddings
    docstore: Any | None = None  # a retrieval.docstore.DocStore, for the texts of search results
    reranker_name: str = ""
    index_name: str = ""
    encoder_name: str = ""

    def close(self) -> None:
        for thing in (self.retriever, self.docstore):
            close = getattr(thing, "close", None)
            if close is not None:
                close()


def server_spec(spec: str | RerankerSpec, *, gpu: bool | None = None) -> RerankerSpec:
    """The spec as the server loads it: a cross-encoder that names no backend gets ``onnx-int8`` on the CPU."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.paradigm != "cross-encoder" or "backend" in parsed.options:
        return parsed
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    if gpu:
        return parsed
    return RerankerSpec(parsed.paradigm, parsed.model, {**parsed.options, "backend": str(ONNX_INT8)})


def batch_invariant(model: Any) -> bool:
    """Whether a model scores an input the same whatever else is in its batch.

    Not so for a quantized backend's graphs (``onnx-int8``): their activations are quantized with one scale per batch tensor
    (ONNX Runtime's dynamic quantization), so batchmates move a score (by up to 7e-3 on a MiniLM
    cross-encoder here, enough to swap close documents).
    """
    for part in (model, getattr(model, "lm", None)):
        backend = getattr(part, "backend", None)  # a model of the server's own (a test double) may name none
        if isinstance(backend, Backend) and backend.int8:
            return False
    return True


def load_services(reranker: str | None = None, index: str | Path | None = None, model: str | None = None,
                  corpus: str | Path | None = None) -> Services:
    """Load what the command line names; at least one of ``reranker``, ``index``, ``model``."""
    if not (reranker or index or model):
        raise InputError("nothing to serve: give --reranker, --index or --encoder", field="serve")
    services = Services()
    if reranker:
        spec = server_spec(reranker)
        services.reranker = load_reranker(spec)
        services.reranker_name = str(spec)
    if index:
        from rankwise.retrieval.manifest import read_manifest
        from rankwise.retrieval.open import open_retriever

        manifest = read_manifest(index, verify=False)
        services.retriever = open_retriever(index)
        services.index_name = Path(index).name
        source = corpus or (manifest.get("source") or {}).get("path")
        if source and Path(source).exists():
            from rankwise.retrieval.docstore import DocStore

            services.docstore = DocStore(source, progress=False)
        elif corpus:
            raise InputError("does not exist", path=corpus, field="corpus")
        if model is None and getattr(services.retriever, "encoder", None) is not None:
            services.encoder = services.retriever.encoder
            services.encoder_name = manifest["encoder"]["name"]
    if model:
        from rankwise.retrieval.encoder import Encoder

        services.encoder = Encoder(model)
        services.encoder_name = model
    return services


def rerank_batch(reranker: Reranker, payloads: Sequence[tuple[str, list[str]]]) -> list[list[float]]:
    """Scores for each ``(query, documents)``, all in one :meth:`Reranker.score` call."""
    return reranker.score(list(payloads))


def search_batch(retriever: Any, payloads: Sequence[tuple[str, int]]) -> list[list[tuple[str, float]]]:
    """The top ``k`` ``(doc id, score)`` of each ``(query, k)``: one search call per distinct ``k``."""
    out: list[list[tuple[str, float]]] = [[] for _ in payloads]
    by_k: dict[int, list[int]] = {}
    for i, (_, k) in enumerate(payloads):
        by_k.setdefault(k, []).append(i)
    for k, members in by_k.items():
        run = retriever.search({str(i): payloads[i][0] for i in members}, k=k, progress=False)
        for i in members:
            out[i] = list(run[str(i)]) if str(i) in run else []
    return out


def embed_batch(encoder: Any, payloads: Sequence[tuple[list[str], str]]) -> list[tuple[np.ndarray, int]]:
    """``(vectors, token count)`` for each ``(texts, input_type)``: one encoder call per input type."""
    out: list[Any] = [None] * len(payloads)
    for kind in ("query", "document"):
        members = [i for i, (_, t) in enumerate(payloads) if t == kind]
        if not members:
            continue
        texts = [text for i in members for text in payloads[i][0]]
        encode = encoder.encode_queries if kind == "query" else encoder.encode_docs
        vectors = encode(texts)
        prompt = encoder.query_prompt if kind == "query" else encoder.doc_prompt
        tokens = encoder._token_lengths(texts, prompt)  # the lengths the encoder sorts its batches by
        start = 0
        for i in members:
            n = len(payloads[i][0])
            out[i] = (vectors[start:start + n], int(np.sum(tokens[start:start + n])))
            start += n
    return out
