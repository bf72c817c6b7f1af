"""``rankwise serve``: the server on uvicorn, from a reranker spec, an index and an encoder."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rankwise.rerank.server.limits import Limits
from rankwise.rerank.options import OptionalRerankerSpec
from rankwise.retrieval.options import IndexEncoder, IndexFolder, OptionalCorpus
from rankwise.retrieval.values import non_negative_float, port as port_range, positive_int

_D = Limits()


def serve(
    reranker: OptionalRerankerSpec = None,
    index: IndexFolder = None,
    corpus: OptionalCorpus = None,
    model: IndexEncoder = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, port_range.option(help="port to listen on")] = 8080,
    api_key: Annotated[Optional[str], typer.Option(
        envvar="RANKWISE_API_KEY", help="require 'Authorization: Bearer KEY' (or X-API-Key); also $RANKWISE_API_KEY")] = None,
    max_batch_delay: Annotated[float, non_negative_float.option(
        help="ms to wait for more requests before a model call")] = _D.max_batch_delay_ms,
    max_batch_documents: Annotated[int, positive_int.option(help="documents per model call across requests")] = _D.max_batch_documents,
    max_documents: Annotated[int, positive_int.option(help="documents (or inputs) per request, else 413")] = _D.max_documents,
    max_document_chars: Annotated[int, positive_int.option(help="characters per document, else 413")] = _D.max_document_chars,
    max_body_bytes: Annotated[int, positive_int.option(help="request body size, else 413")] = _D.max_body_bytes,
    max_k: Annotated[int, positive_int.option(help="largest k of /v1/search")] = _D.max_k,
    queue_size: Annotated[int, positive_int.option(help="requests waiting or running per service; more get 503")] = _D.queue_size,
    shutdown_timeout: Annotated[float, non_negative_float.option(help="seconds to let in-flight requests finish on shutdown")] = 60.0,
) -> None:
    """Serve rerank, search and embeddings over HTTP, with requests batched across clients.

    /v1/rerank runs --reranker (a cross-encoder without backend= runs onnx-int8 on the CPU), /v1/search
    searches --index, /v1/embeddings encodes with --encoder (default: a dense index's encoder)."""
    import logging

    from rankwise.retrieval.extras import requires

    uvicorn = requires("uvicorn", "serve", "The server")
    from rankwise.rerank.server.app import create_app  # names the extra when fastapi or prometheus_client is missing
    from rankwise.rerank.server.services import load_services

    limits = Limits(max_documents=max_documents, max_document_chars=max_document_chars, max_body_bytes=max_body_bytes,
                    max_k=max_k, queue_size=queue_size, max_batch_documents=max_batch_documents,
                    max_batch_delay_ms=max_batch_delay)
    services = load_services(reranker, index, model, corpus)
    app = create_app(services, limits, api_key=api_key)
    batchers = app.state.batchers
    shared = [f"/v1/{n}" for n, b in batchers.items() if b.shared]
    alone = [f"/v1/{n}" for n, b in batchers.items() if not b.shared]
    logging.getLogger(__name__).info(
        "serving %s on http://%s:%d; %s", ", ".join(f"/v1/{n}" for n in batchers), host, port,
        "; ".join(part for part in (f"requests batched together: {', '.join(shared)}" if shared else "",
                                    f"one request per model call: {', '.join(alone)}" if alone else "") if part))
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=shutdown_timeout)
    finally:
        services.close()
