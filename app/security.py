"""Dependencies: the service state, and API keys (compared in constant time, never logged)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence

from fastapi import Request
from pydantic import SecretStr

from app.errors import ErrorKind, ServiceError
from app.state import ServiceState


async def service_state(request: Request) -> ServiceState:
    """The state ``create_app`` built; 503 until the model is loaded and the worker runs."""
    state: ServiceState = request.app.state.service
    state.require_ready()
    return state


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return x_api_key


def request_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key an ASGI request's raw headers present: the first ``Authorization`` and
    ``X-API-Key``, as Starlette's ``request.headers`` reads them (so admission, the fast
    lane and the routes' dependency agree when a header is repeated)."""
    found: dict[bytes, str] = {}
    for name, value in headers:
        if name in (b"authorization", b"x-api-key") and name not in found:
            found[name] = value.decode("latin-1")
    return presented_key(found.get(b"authorization"), found.get(b"x-api-key"))


def check_key(keys: Sequence[SecretStr], presented: str | None) -> None:
    """Raise UNAUTHORIZED unless ``presented`` is one of ``keys`` (none configured: open).
    Compared against every key without stopping early, so timing says nothing."""
    if not keys:
        return
    if presented is None:
        raise ServiceError(ErrorKind.UNAUTHORIZED, "missing API key (Authorization: Bearer ...)")
    given = presented.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.get_secret_value().encode())
    if not matched:
        raise ServiceError(ErrorKind.UNAUTHORIZED, "wrong API key")


async def require_api_key(request: Request) -> None:
    """With keys configured, accept ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    keys = request.app.state.service.settings.api_keys
    headers = request.headers
    check_key(keys, presented_key(headers.get("authorization"), headers.get("x-api-key")))
