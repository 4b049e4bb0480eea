"""The service's one error vocabulary, mapped to HTTP in exactly one place.

::

    ServiceError
    ├── kind EMPTY_INPUT       400  nothing to score
    ├── kind INVALID_JSON      400  the body is not JSON
    ├── kind UNAUTHORIZED      401  missing or wrong API key
    ├── kind BODY_TIMEOUT      408  the request body did not arrive within the deadline
    ├── kind TOO_LARGE         413  body or item count over the limit
    ├── kind INVALID_REQUEST   422  a field is wrong (the message names it)
    ├── kind TEXT_TOO_LONG     422  over max_length tokens with truncate=false
    ├── kind CLIENT_CLOSED     499  the client left before its answer (nobody reads it)
    ├── kind OVERLOADED        429  the queue is full (Retry-After)
    ├── kind NOT_READY         503  model not loaded or shutting down
    ├── kind MODEL_ERROR       503  the model failed on this request's batch (retry)
    ├── kind TIMEOUT           504  not scored before the request deadline
    └── kind INTERNAL          500  a model failure (details logged, never returned)

Every error body is ``{"error": <message>, "error_type": <kind>}``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("rankrm.service")


class ErrorKind(StrEnum):
    """Closed set of error kinds (the ``error_type`` field)."""

    EMPTY_INPUT = "empty_input"
    INVALID_JSON = "invalid_json"
    UNAUTHORIZED = "unauthorized"
    BODY_TIMEOUT = "body_timeout"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    TOO_LARGE = "too_large"
    INVALID_REQUEST = "invalid_request"
    TEXT_TOO_LONG = "text_too_long"
    CLIENT_CLOSED = "client_closed"
    OVERLOADED = "overloaded"
    NOT_READY = "not_ready"
    MODEL_ERROR = "model_error"
    TIMEOUT = "timeout"
    INTERNAL = "internal"


STATUS = {
    ErrorKind.EMPTY_INPUT: 400,
    ErrorKind.INVALID_JSON: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.BODY_TIMEOUT: 408,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.INVALID_REQUEST: 422,
    ErrorKind.TEXT_TOO_LONG: 422,
    ErrorKind.CLIENT_CLOSED: 499,
    ErrorKind.OVERLOADED: 429,
    ErrorKind.NOT_READY: 503,
    ErrorKind.MODEL_ERROR: 503,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.INTERNAL: 500,
}


class ServiceError(Exception):
    """An error with a kind (and so a status) and a message safe to show the client."""

    def __init__(self, kind: ErrorKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


class AsciiJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: an error message may quote what the
    client sent (a field name, a role), and that may not be encodable as UTF-8."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(
    kind: ErrorKind,
    message: str,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON body and status of an error (``headers`` added, e.g. a 405's ``Allow``)."""
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return AsciiJSON(
        {"error": message, "error_type": kind.value}, status_code=STATUS[kind], headers=headers
    )


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or "body"


def _validation_message(exc: RequestValidationError) -> tuple[ErrorKind, str]:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = e.get("ctx", {}).get("error", "")
            where = [p for p in e.get("loc", ()) if isinstance(p, int)]
            at = f" at byte {where[0]}" if where else ""
            return ErrorKind.INVALID_JSON, f"the request body is not valid JSON: {reason}{at}"
    shown = [f"{_location(tuple(e['loc']))}: {e['msg']}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return ErrorKind.INVALID_REQUEST, "; ".join(shown) + more


def _unparsable(cause: BaseException) -> str:
    """Why FastAPI could not parse a body (it says only "There was an error parsing the
    body"): bytes that are not UTF-8, nesting too deep, a number too long."""
    if isinstance(cause, UnicodeDecodeError):
        byte = cause.object[cause.start]
        reason = f"not valid UTF-8: byte 0x{byte:02x} at byte {cause.start} ({cause.reason})"
    elif isinstance(cause, RecursionError):
        reason = "arrays or objects nested too deeply"
    elif isinstance(cause, ValueError):  # e.g. an integer of more than 4,300 digits
        reason = str(cause).split("; use sys.", 1)[0]
    else:
        reason = type(cause).__name__
    return f"the request body is not valid JSON: {reason}"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the JSON error shape."""

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.kind, exc.message, exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        kind, message = _validation_message(exc)
        return error_response(kind, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:  # the body did not parse
            return error_response(ErrorKind.INVALID_JSON, _unparsable(exc.__cause__))
        kind = {404: ErrorKind.NOT_FOUND, 405: ErrorKind.METHOD_NOT_ALLOWED}.get(
            exc.status_code, ErrorKind.INVALID_REQUEST
        )
        return error_response(kind, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(ErrorKind.INTERNAL, "internal error (see the service log)")
