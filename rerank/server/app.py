"""The FastAPI app: ``POST /v1/rerank``, ``/v1/search``, ``/v1/embeddings``; ``GET /health``, ``/metrics``.

:func:`create_app` takes loaded :class:`~rerank.server.services.Services` (so tests and Python
callers build it around any model) and :class:`~rerank.server.limits.Limits`. Every model call
goes through a :class:`~rerank.server.batcher.DynamicBatcher` per service; every error is JSON
(:mod:`rankwise.rerank.server.errors`). On shutdown the batchers run what they admitted before the app stops.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import uuid
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import numpy as np

from rankwise.retrieval.extras import requires

requires("fastapi", "serve", "The server")  # this module is the server: without the extra it names the extra
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

from rankwise.rerank.server.batcher import DynamicBatcher, QueueFull, ShuttingDown
from rankwise.rerank.server.errors import ApiError, install_handlers
from rankwise.rerank.server.limits import Limits
from rankwise.rerank.server.metrics import Metrics
from rankwise.rerank.server.middleware import Guard
from rankwise.rerank.server.schemas import (EmbeddingsRequest, EmbeddingsResponse, RerankRequest, RerankResponse,
                                   SearchRequest, SearchResponse)
from rankwise.rerank.server.services import Services, batch_invariant, embed_batch, rerank_batch, search_batch

ENDPOINTS = {"/v1/rerank", "/v1/search", "/v1/embeddings", "/health", "/metrics"}
DISCONNECT_POLL_S = 0.05  # how often a waiting request checks that its client is still there


def _batchers(services: Services, limits: Limits, metrics: Metrics,
              executor: concurrent.futures.Executor) -> dict[str, DynamicBatcher]:
    common = dict(executor=executor, metrics=metrics, max_batch=limits.max_batch_documents,
                  max_delay=limits.max_batch_delay_ms / 1000.0, max_queue=limits.queue_size)
    out = {}
    if services.reranker is not None:
        out["rerank"] = DynamicBatcher(partial(rerank_batch, services.reranker), name="rerank",
                                       shared=batch_invariant(services.reranker), **common)
    if services.retriever is not None:
        out["search"] = DynamicBatcher(partial(search_batch, services.retriever), name="search",
                                       shared=batch_invariant(getattr(services.retriever, "encoder", None)), **common)
    if services.encoder is not None:
        out["embeddings"] = DynamicBatcher(partial(embed_batch, services.encoder), name="embeddings",
                                           shared=batch_invariant(services.encoder), **common)
    return out


async def _result(request: Request, batcher: DynamicBatcher, payload: Any, size: int) -> Any:
    """Queue one request's payload and wait for its result; a client that goes away withdraws it."""
    try:
        future = batcher.enqueue(payload, size)
    except (QueueFull, ShuttingDown) as err:
        raise ApiError(503, str(err), kind="queue_full" if isinstance(err, QueueFull) else "shutting_down",
                       headers={"Retry-After": "1"}) from None
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_S)
            if done:
                return future.result()
            if await request.is_disconnected():
                future.cancel()
                raise ApiError(499, "the client closed the request", kind="client_closed")
    except asyncio.CancelledError:
        future.cancel()
        raise


def _need(thing: Any, what: str, option: str) -> Any:
    if thing is None:
        raise ApiError(404, f"this server has no {what}: start it with {option}")
    return thing


def create_app(services: Services, limits: Limits | None = None, *, api_key: str | None = None) -> FastAPI:
    """The app serving ``services`` under ``limits``; requests need ``api_key`` when one is given."""
    limits = limits or Limits()
    metrics = Metrics()
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rankwise-model")
    batchers = _batchers(services, limits, metrics, executor)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await asyncio.gather(*(b.close() for b in batchers.values()))  # drain: run what was admitted
        executor.shutdown(wait=True)

    app = FastAPI(title="rankwise", summary="rerank, search and embed, batched across requests",
                  lifespan=lifespan)
    app.state.services, app.state.limits, app.state.metrics, app.state.batchers = services, limits, metrics, batchers
    install_handlers(app)
    app.add_middleware(Guard, metrics=metrics, endpoints=ENDPOINTS, api_key=api_key,
                       max_body_bytes=limits.max_body_bytes)

    def check_query(query: str) -> None:
        if len(query) > limits.max_document_chars:
            raise ApiError(413, f"{len(query)} characters; the limit is {limits.max_document_chars}", field="query")

    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
    async def rerank(body: RerankRequest, request: Request) -> dict[str, Any]:
        """Score ``documents`` for ``query``; the ``top_n`` best first (all of them without ``top_n``)."""
        _need(services.reranker, "reranker", "--reranker")
        texts = body.texts()
        check_query(body.query)
        limits.check_texts(texts, "documents")
        scores = await _result(request, batchers["rerank"], (body.query, texts), len(texts)) if texts else []
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:body.top_n]
        results = [{"index": i, "relevance_score": float(scores[i]),
                    **({"document": {"text": texts[i]}} if body.return_documents else {})} for i in order]
        return {"id": str(uuid.uuid4()), "model": services.reranker_name, "results": results}

    @app.post("/v1/search", response_model=SearchResponse, response_model_exclude_none=True)
    async def search(body: SearchRequest, request: Request) -> dict[str, Any]:
        """The top ``k`` documents of the index for ``query``: ids, scores, and texts when asked for."""
        _need(services.retriever, "index", "--index")
        check_query(body.query)
        if body.k > limits.max_k:
            raise ApiError(422, f"k={body.k} is over the limit of {limits.max_k}", field="k")
        if body.return_documents and services.docstore is None:
            raise ApiError(422, "this server has no corpus to return texts from: start it with --corpus",
                           field="return_documents")
        hits = await _result(request, batchers["search"], (body.query, body.k), 1)
        out: dict[str, Any] = {"model": services.index_name, "ids": [d for d, _ in hits],
                               "scores": [float(s) for _, s in hits]}
        if body.return_documents:
            docs = await run_in_threadpool(services.docstore.get_many, out["ids"])
            out["texts"] = [doc.full_text for doc in docs]
        return out

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse)
    async def embeddings(body: EmbeddingsRequest, request: Request) -> dict[str, Any]:
        """OpenAI-shaped embeddings of ``input`` (a string or a list of strings)."""
        encoder = _need(services.encoder, "encoder", "--encoder (or a dense --index)")
        texts = body.texts()
        if not texts:
            raise ApiError(422, "input is an empty list", field="input")
        limits.check_texts(texts, "input")
        if body.dimensions is not None and body.dimensions != encoder.dim:
            raise ApiError(422, f"the model gives {encoder.dim} dimensions, not {body.dimensions}", field="dimensions")
        vectors, tokens = await _result(request, batchers["embeddings"], (texts, body.input_type), len(texts))
        vectors = np.asarray(vectors, dtype="<f4")
        if body.encoding_format == "base64":
            data = [base64.b64encode(v.tobytes()).decode("ascii") for v in vectors]
        else:
            data = [v.tolist() for v in vectors]
        return {"object": "list", "model": services.encoder_name,
                "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.get("/health")
    async def health() -> JSONResponse:
        """``ok`` with what is served and the queue depths; 503 ``draining`` during shutdown."""
        draining = any(b.closing for b in batchers.values())
        body = {"status": "draining" if draining else "ok", "reranker": services.reranker_name or None,
                "index": services.index_name or None, "embeddings": services.encoder_name or None,
                "queue": {name: b.admitted for name, b in batchers.items()}, "queue_size": limits.queue_size}
        return JSONResponse(body, status_code=503 if draining else 200)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Request counts, latency, batch sizes and queue depth in the Prometheus text format."""
        return Response(metrics.render(), media_type=metrics.content_type)

    return app
