"""Dynamic batching: concurrent requests are queued and run together in one model call.

A worker takes the first queued request, then waits up to ``max_delay`` seconds for more, until the
batch holds ``max_batch`` documents (a request is never split; one larger than the budget runs
alone). The batch goes to the model in one call, whose own batching (pairs sorted by token length,
as :meth:`rankwise.rerank.cross_encoder.CrossEncoderReranker.score_pairs` forms them) is what the CLI uses.
Model calls run in one worker thread, so the event loop keeps answering while the model works.
This is the continuous batching of serving systems such as Triton's dynamic batcher and TEI.

Invariance: with ``shared=False`` each request of a batch gets a model call of its own (in the same
worker turn). That is for models whose scores depend on their batchmates, such as int8 graphs whose
activations are quantized with one scale per batch (:mod:`rankwise.retrieval.backend.quantize`).

Bounded memory: at most ``max_queue`` requests are admitted (waiting or running); the next one gets
:class:`QueueFull`. A request whose client went away is cancelled, which frees its slot at once and
drops it from the queue before it reaches the model. :meth:`DynamicBatcher.close` stops admitting,
runs what was admitted, then stops the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rankwise.rerank.server.metrics import Metrics

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already."""


class ShuttingDown(Exception):
    """The batcher is draining and takes no new requests."""


@dataclass(eq=False)
class Job:
    payload: Any
    size: int
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    """``await submit(payload, size)`` -> the result of ``run([payload, ...])`` for that payload.

    ``run`` takes a list of payloads and returns one result per payload, in order; it runs in
    ``executor`` (a single thread shared by every service of the server).
    """

    def __init__(self, run: Callable[[Sequence[Any]], Sequence[Any]], *, name: str,
                 executor: concurrent.futures.Executor, metrics: Metrics, max_batch: int = 512,
                 max_delay: float = 0.005, max_queue: int = 256, shared: bool = True) -> None:
        self.run, self.name, self.executor, self.metrics = run, name, executor, metrics
        self.max_batch, self.max_delay, self.max_queue, self.shared = max_batch, max_delay, max_queue, shared
        self._queue: asyncio.Queue[Job | None] | None = None
        self._worker: asyncio.Task | None = None
        self._held: Job | None = None  # taken from the queue, waits for the next batch
        self._admitted = 0
        self._closing = False

    @property
    def admitted(self) -> int:
        """Requests waiting or running."""
        return self._admitted

    @property
    def closing(self) -> bool:
        return self._closing

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            # first use, or the loop the worker ran on is gone (a new event loop serves the app)
            self._queue, self._held = asyncio.Queue(), None
            self._worker = loop.create_task(self._loop(), name=f"batcher-{self.name}")

    async def submit(self, payload: Any, size: int = 1) -> Any:
        """Queue ``payload`` (``size`` documents) and wait for its result; cancelling the wait cancels the job."""
        future = self.enqueue(payload, size)
        return await future

    def enqueue(self, payload: Any, size: int = 1) -> asyncio.Future:
        """Queue ``payload`` and return the future of its result (cancel it to withdraw the request)."""
        if self._closing:
            self.metrics.rejected.labels(self.name, "shutting_down").inc()
            raise ShuttingDown(f"the {self.name} service is shutting down")
        if self._admitted >= self.max_queue:
            self.metrics.rejected.labels(self.name, "queue_full").inc()
            raise QueueFull(f"the {self.name} queue is full ({self.max_queue} requests); try again later")
        self._start()
        assert self._queue is not None
        job = Job(payload, max(1, size), asyncio.get_running_loop().create_future())
        self._admitted += 1
        self.metrics.queue_depth.labels(self.name).set(self._admitted)
        job.future.add_done_callback(lambda f, j=job: self._done(j, f))
        self._queue.put_nowait(job)
        return job.future

    def _done(self, job: Job, future: asyncio.Future) -> None:
        self._admitted -= 1
        self.metrics.queue_depth.labels(self.name).set(self._admitted)
        if future.cancelled():
            job.payload = None  # the queue keeps a tombstone, not the documents
            self.metrics.cancelled.labels(self.name).inc()

    async def _next(self, timeout: float | None) -> Job | None:
        """The next live job (``None`` when the queue stays empty for ``timeout`` s, or holds the stop mark)."""
        assert self._queue is not None
        while True:
            if timeout is None:
                job = await self._queue.get()
            elif timeout <= 0:
                try:
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    return None
            else:
                try:
                    job = await asyncio.wait_for(self._queue.get(), timeout)
                except asyncio.TimeoutError:
                    return None
            if job is None:
                self._queue.put_nowait(None)  # seen again by the loop once the batch is done
                return None
            if not job.future.done():
                return job

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first, self._held = self._held, None
            if first is None:
                first = await self._next(None)
            if first is None:  # the stop mark: everything admitted before it has run
                return
            batch, size = [first], first.size
            deadline = loop.time() + self.max_delay
            while size < self.max_batch:
                job = await self._next(deadline - loop.time())
                if job is None:
                    break
                if size + job.size > self.max_batch:
                    self._held = job
                    break
                batch.append(job)
                size += job.size
            await self._execute(batch)

    async def _execute(self, batch: list[Job]) -> None:
        live = [j for j in batch if not j.future.done()]
        if not live:
            return
        payloads = [j.payload for j in live]
        self.metrics.batch_requests.labels(self.name).observe(len(live))
        self.metrics.batch_documents.labels(self.name).observe(sum(j.size for j in live))
        start = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self._call, payloads)
        except Exception as err:  # noqa: BLE001 - handed to each waiting request, answered there
            for j in live:
                if not j.future.done():
                    j.future.set_exception(err)
            return
        finally:
            self.metrics.model_seconds.labels(self.name).observe(time.perf_counter() - start)
        for j, result in zip(live, results):
            if not j.future.done():
                j.future.set_result(result)

    def _call(self, payloads: list[Any]) -> list[Any]:
        if self.shared:
            return list(self.run(payloads))
        return [self.run([p])[0] for p in payloads]

    async def close(self) -> None:
        """Stop admitting, run every admitted request, stop the worker."""
        self._closing = True
        if self._worker is None or self._queue is None:
            return
        self._queue.put_nowait(None)
        await self._worker
        self._worker = None
