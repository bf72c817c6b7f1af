"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from rankwise.retrieval.extras import requires

requires("prometheus_client", "serve", "The server")  # this module is the server's metrics
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest  # noqa: E402
from prometheus_client.exposition import CONTENT_TYPE_LATEST  # noqa: E402

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    """Request counts and latency per endpoint; per service: batch sizes, model time, queue depth, rejections."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("rankwise_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.latency = Histogram("rankwise_request_duration_seconds", "Time from request to response",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_requests = Histogram("rankwise_batch_requests", "Requests run together in one model call",
                                        ["service"], buckets=SIZE_BUCKETS, registry=r)
        self.batch_documents = Histogram("rankwise_batch_documents", "Documents (or texts) in one model call",
                                         ["service"], buckets=SIZE_BUCKETS, registry=r)
        self.model_seconds = Histogram("rankwise_model_call_seconds", "Time of one model call",
                                       ["service"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("rankwise_queue_depth", "Requests admitted and not yet answered", ["service"],
                                 registry=r)
        self.rejected = Counter("rankwise_rejected", "Requests refused by the batcher", ["service", "reason"],
                                registry=r)
        self.cancelled = Counter("rankwise_cancelled", "Requests whose client went away before the answer",
                                 ["service"], registry=r)

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
