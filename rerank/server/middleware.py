"""One ASGI middleware in front of the app: request counts and latency, the API key, the body size limit.

The API key is read from ``Authorization: Bearer KEY`` (as Cohere and OpenAI clients send it) or
``X-API-Key``; without it every path but ``/health`` answers 401, before the body is read. A body
over ``max_body_bytes`` answers 413: at once when ``Content-Length`` says so, else as soon as the
bytes received pass the limit (the body is read here, before the app sees it). A ``POST`` to
``/v1/...`` whose ``Content-Type`` is missing or not JSON answers 415 with the reason.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from rankwise.rerank.server.errors import error_body
from rankwise.rerank.server.metrics import Metrics

OPEN_PATHS = ("/health",)


async def _send_json(send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


def _content_type_problem(value: bytes | None) -> str | None:
    """Why a POST body's ``Content-Type`` is not JSON (``application/json``, any ``+json``), or None."""
    if not value:
        return "the Content-Type header is missing; send 'Content-Type: application/json'"
    media = value.split(b";")[0].strip().lower().decode("latin-1")
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return None
    return f"Content-Type {media!r} is not supported; send 'Content-Type: application/json'"


class Guard:
    """Wraps the app: see the module docstring. ``endpoints`` are the paths metrics are labelled with."""

    def __init__(self, app: Any, *, metrics: Metrics, endpoints: set[str], api_key: str | None,
                 max_body_bytes: int) -> None:
        self.app, self.metrics, self.endpoints = app, metrics, endpoints
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.max_body_bytes = max_body_bytes

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        if self.api_key is None:
            return True
        given = headers.get(b"x-api-key")
        auth = headers.get(b"authorization", b"")
        if given is None and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given, self.api_key)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in self.endpoints else "other"
        start = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_watched(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        try:
            await self._guarded(scope, receive, send_watched, path)
        finally:
            code = status["code"] if status["started"] else 499  # 499: the client went away first
            self.metrics.requests.labels(endpoint, str(code)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    async def _guarded(self, scope: dict[str, Any], receive: Any, send: Any, path: str) -> None:
        headers = dict(scope.get("headers") or [])
        if path not in OPEN_PATHS and not self._authorized(headers):
            await _send_json(send, 401, error_body(401, "missing or wrong API key (send 'Authorization: Bearer KEY')"),
                             [(b"www-authenticate", b"Bearer")])
            return
        length = headers.get(b"content-length")
        too_large = error_body(413, f"the request body is over {self.max_body_bytes} bytes", "body")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await _send_json(send, 413, too_large)
            return
        if scope.get("method") == "POST" and path.startswith("/v1/"):
            problem = _content_type_problem(headers.get(b"content-type"))
            if problem:
                await _send_json(send, 415, error_body(415, problem, "Content-Type"))
                return
        chunks, received, more = [], 0, True
        while more:  # read the whole body here, so that no byte past the limit is held
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending it all
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_body_bytes:
                await _send_json(send, 413, too_large)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: http.disconnect when the client goes away

        await self.app(scope, replay, send)
