"""``rankwise serve``: rerank, search and embed over HTTP, with requests batched across clients.

- :mod:`~rerank.server.app`: the FastAPI app factory (:func:`create_app`) and its endpoints;
- :mod:`~rerank.server.services`: what the server serves (a reranker, a retriever, an encoder), loaded
  from the command line's specs;
- :mod:`~rerank.server.batcher`: the dynamic batcher that queues requests and runs them together;
- :mod:`~rerank.server.schemas`: the request and response shapes (Cohere/TEI rerank, OpenAI embeddings);
- :mod:`~rerank.server.limits` / :mod:`~rerank.server.errors`: request limits and JSON error answers;
- :mod:`~rerank.server.middleware`: API key, body size, request counts and latency;
- :mod:`~rerank.server.metrics`: the Prometheus metrics.
"""

from __future__ import annotations

from rankwise.rerank.server.app import create_app
from rankwise.rerank.server.limits import Limits
from rankwise.rerank.server.services import Services

__all__ = ["Limits", "Services", "create_app"]
