"""What one request may ask for, and what the server holds at once; a request over a limit gets a 413."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Request limits (413 when passed) and the queue bound (503 when full).

    ``max_batch_documents`` and ``max_batch_delay_ms`` shape the dynamic batches: a model call takes
    the queued requests up to that many documents (at least one request), waiting at most the delay
    for more to arrive after the first.
    """

    max_documents: int = 1000
    max_document_chars: int = 20_000
    max_body_bytes: int = 4 * 2**20
    max_k: int = 1000
    queue_size: int = 256
    max_batch_documents: int = 512
    max_batch_delay_ms: float = 5.0

    def __post_init__(self) -> None:
        from rankwise.retrieval.errors import InputError

        for name in ("max_documents", "max_document_chars", "max_body_bytes", "max_k", "queue_size",
                     "max_batch_documents"):
            if getattr(self, name) < 1:
                raise InputError(f"must be at least 1, got {getattr(self, name)}", field=name.replace("_", "-"))
        if self.max_batch_delay_ms < 0:
            raise InputError(f"must not be negative, got {self.max_batch_delay_ms}", field="max-batch-delay")

    def check_texts(self, texts: Sequence[str], field: str) -> None:
        """413 for more than ``max_documents`` texts or a text over ``max_document_chars`` characters."""
        from rankwise.rerank.server.errors import ApiError  # FastAPI: imported when a request is checked

        if len(texts) > self.max_documents:
            raise ApiError(413, f"{len(texts)} {field} in one request; the limit is {self.max_documents}", field=field)
        for i, text in enumerate(texts):
            if len(text) > self.max_document_chars:
                raise ApiError(413, f"{len(text)} characters; the limit is {self.max_document_chars} per document",
                               field=f"{field}[{i}]")
