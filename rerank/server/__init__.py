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

import importlib
from typing import Any

# loaded on first use: ``rankwise serve --help`` (and every other command) starts without FastAPI
_EXPORTS = {"create_app": "rankwise.rerank.server.app", "Limits": "rankwise.rerank.server.limits",
            "Services": "rankwise.rerank.server.services"}

__all__ = ["Limits", "Services", "create_app"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
