"""Dependencies: the service state, and API keys (compared in constant time, never logged)."""

from __future__ import annotations

import hmac

from fastapi import Request

from app.errors import ErrorKind, ServiceError
from app.scoring import ServiceState


async def service_state(request: Request) -> ServiceState:
    """The state ``create_app`` built; 503 until the model is loaded and the worker runs."""
    state: ServiceState = request.app.state.service
    if not state.ready or not state.batcher.running:
        raise ServiceError(ErrorKind.NOT_READY, "the model is not loaded yet, or shutting down")
    return state


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


async def require_api_key(request: Request) -> None:
    """With keys configured, accept ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    keys = request.app.state.service.settings.api_keys
    if not keys:
        return
    presented = _presented_key(request)
    if presented is None:
        raise ServiceError(ErrorKind.UNAUTHORIZED, "missing API key (Authorization: Bearer ...)")
    given = presented.encode()
    # Compare against every key without stopping early, so timing says nothing.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.get_secret_value().encode())
    if not matched:
        raise ServiceError(ErrorKind.UNAUTHORIZED, "wrong API key")
