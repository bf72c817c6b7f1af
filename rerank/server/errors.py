"""Errors answered as JSON: ``{"error": {"type": ..., "message": ..., "field": ...}}`` with an HTTP status."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rankwise.retrieval.errors import InputError

if TYPE_CHECKING:  # the 'serve' extra (app.py names it when missing): imported where used, so limits load without it
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)
_TYPES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
          413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request", 500: "internal_error", 503: "unavailable"}


class ApiError(Exception):
    """An answer other than 200: ``status``, a one-line ``message`` and the request ``field`` at fault."""

    def __init__(self, status: int, message: str, *, field: str | None = None, kind: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field
        self.kind = kind or _TYPES.get(status, "error")
        self.headers = dict(headers or {})


def error_body(status: int, message: str, field: str | None = None, kind: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind or _TYPES.get(status, "error"), "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


def error_response(status: int, message: str, field: str | None = None, kind: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    from fastapi.responses import JSONResponse

    return JSONResponse(error_body(status, message, field, kind), status_code=status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def validation_message(err: RequestValidationError) -> tuple[str, str]:
    """One line for the first problem pydantic found, and the field it names."""
    first = err.errors()[0]
    field = _location(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return f"malformed JSON: {ctx.get('error', first.get('msg'))}", "body"
    if field == "body":
        return f"the body must be a JSON object: {first.get('msg', 'invalid value')}", field
    return f"{first.get('msg', 'invalid value')}", field


def install_handlers(app: FastAPI) -> None:
    """Answer every error the app can raise in the one JSON shape."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def _api(_: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.message, err.field, err.kind, err.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        message, field = validation_message(err)
        return error_response(422, message, field)

    @app.exception_handler(InputError)
    async def _input(_: Request, err: InputError) -> JSONResponse:
        return error_response(422, err.message, err.field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def _internal(_: Request, err: Exception) -> JSONResponse:
        log.error("internal error: %s: %s", type(err).__name__, err, exc_info=err)
        first = (str(err).splitlines() or [""])[0]
        return error_response(500, f"{type(err).__name__}: {first}")
