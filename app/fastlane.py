"""The short way through for well-formed scoring requests.

A scoring request that FastAPI would accept is answered here, in pure ASGI, by the same
route function FastAPI would call: the body is parsed as FastAPI parses it (``json.loads``,
then the route's request model), readiness and the API key are checked as the route's
dependencies check them, and the answer is the route's response model serialised as
FastAPI serialises it (``model_dump_json``, ``exclude_none`` as the route declares). What it
skips is the cost of the layers in between: routing, dependency solving, the response
model validated a second time, FastAPI's exception middleware.

Anything else goes on to FastAPI unchanged, with its body: a body that does not parse or
validate, another method or path, another endpoint. So every error a malformed request
gets (which field, which index) is FastAPI's, exactly as before; the errors a well-formed
request can still meet while it is scored (429, 504, 422 too long, ...) are
:class:`~app.errors.ServiceError`\\ s, answered by the same ``error_response`` the app's
handlers use.

It sits inside :class:`~app.intake.Intake` (admission and the body limits come first) and
inside CORS when that is configured, so its answers carry the same headers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ErrorKind, ServiceError, error_response
from app.intake import replay
from app.security import check_key, request_key
from app.state import ServiceState

log = logging.getLogger("rankrm.service")

Endpoint = Callable[[Any, Request, ServiceState], Awaitable[BaseModel]]


@dataclass(frozen=True)
class Lane:
    """One route taken the short way: its request model, its function, how it serialises."""

    body: type[BaseModel]
    endpoint: Endpoint
    exclude_none: bool


def lanes(routes: list[Any]) -> dict[str, Lane]:
    """The POST routes of ``routes`` whose function takes ``(body, request, state)``, by
    path: their request model is read from the function's type hints, so FastAPI's route
    stays the one definition."""
    found = {}
    for route in routes:
        if not isinstance(route, APIRoute) or route.methods != {"POST"}:
            continue
        hints = get_type_hints(route.endpoint, include_extras=False)
        body = hints.get("body")
        if list(hints)[:3] != ["body", "request", "state"] or not isinstance(body, type):
            continue
        found[route.path] = Lane(body, route.endpoint, route.response_model_exclude_none)
    return found


class FastLane:
    """Answer well-formed scoring requests without FastAPI's layers (module docstring)."""

    def __init__(self, app: ASGIApp, state: ServiceState, routes: list[Any]) -> None:
        self.app = app
        self.state = state
        self.lanes = lanes(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lanes.get(scope["path"]) if scope["type"] == "http" else None
        if lane is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        message = await receive()  # Intake hands the whole body over as one message
        parsed = _parse(lane.body, message) if not message.get("more_body") else None
        if parsed is None:  # FastAPI answers it, with its own error if it is wrong
            await self.app(scope, replay(message.get("body", b""), receive), send)
            return
        state = self.state
        try:
            state.require_ready()
            check_key(state.settings.api_keys, request_key(scope["headers"]))
            answer = await lane.endpoint(parsed, Request(scope, receive), state)
            content = answer.model_dump_json(by_alias=True, exclude_none=lane.exclude_none).encode()
        except ServiceError as exc:
            await error_response(exc.kind, exc.message, exc.retry_after)(scope, receive, send)
            return
        except Exception:
            log.exception("unexpected error on %s", scope["path"])
            await error_response(ErrorKind.INTERNAL, "internal error (see the service log)")(
                scope, receive, send
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(content)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


def _parse(model: type[BaseModel], message: Message) -> BaseModel | None:
    """The body as FastAPI reads it (``json.loads``, then the model in Python mode), or None
    where that fails in any way."""
    if message["type"] != "http.request":
        return None
    try:
        return model.model_validate(json.loads(message.get("body", b"")))
    except Exception:  # not JSON, not valid, too deep, ...: FastAPI's to explain
        return None
