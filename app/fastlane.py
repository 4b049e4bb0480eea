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

:class:`Shortcut` goes one step further, for the requests that need nothing else: the HTTP
protocol (``app.connection``) hands it a scoring request whose whole body has arrived, and
it answers with the same route function, the same admission (:class:`~app.intake.Admission`)
and the same request metrics, without the ASGI layers at all (uvicorn's request cycle, the
middlewares). A request it does not take, or takes and then finds it cannot admit or parse,
goes the usual way, with nothing spent: so every refusal and every error a malformed
request gets is still the one the layers give.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, get_type_hints

from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ErrorKind, ServiceError, error_response
from app.intake import Admission, replay
from app.metrics import RequestCounter
from app.scoring import DISCONNECTED
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


@dataclass(frozen=True)
class Answer:
    """A response: its status, its headers but the length, its body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


async def respond(state: ServiceState, lane: Lane, parsed: BaseModel, request: Request) -> Answer:
    """The route's answer to a parsed request, as FastAPI would give it; a
    :class:`~app.errors.ServiceError` as the app's handlers answer it, any other failure
    as a 500 (logged)."""
    try:
        state.require_ready()
        check_key(state.settings.api_keys, request_key(request.scope["headers"]))
        answer = await lane.endpoint(parsed, request, state)
        content = answer.model_dump_json(by_alias=True, exclude_none=lane.exclude_none).encode()
    except ServiceError as exc:
        return _error(error_response(exc.kind, exc.message, exc.retry_after))
    except Exception:
        log.exception("unexpected error on %s", request.scope["path"])
        return _error(error_response(ErrorKind.INTERNAL, "internal error (see the service log)"))
    return Answer(200, [(b"content-type", b"application/json")], content)


def _error(response: Response) -> Answer:
    headers = [(k, v) for k, v in response.raw_headers if k != b"content-length"]
    return Answer(response.status_code, headers, bytes(response.body))


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
        answer = await respond(self.state, lane, parsed, Request(scope, receive))
        headers = [(b"content-length", str(len(answer.body)).encode()), *answer.headers]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


# Headers that ask for something only the ASGI layers do: a request carrying one goes there.
_LAYERED_HEADERS = frozenset(
    {b"transfer-encoding", b"expect", b"forwarded", b"x-forwarded-for", b"x-forwarded-proto"}
)
SHORTCUT_MAX_BODY = 64 * 1024  # larger bodies are read by Intake, as they arrive


class Shortcut:
    """Scoring requests answered from the HTTP protocol, without the ASGI layers (module
    docstring). Built by ``create_app``; the server hands it to each connection."""

    def __init__(
        self,
        state: ServiceState,
        routes: list[Any],
        admission: Admission,
        counter: RequestCounter,
    ) -> None:
        self.state = state
        self.lanes = {path.encode(): lane for path, lane in lanes(routes).items()}
        self.admission = admission
        self.counter = counter
        self.max_body = min(SHORTCUT_MAX_BODY, admission.limit)
        self.cors = bool(state.settings.cors_origins)

    def takes(self, url: bytes, headers: list[tuple[bytes, bytes]], client: object) -> int | None:
        """The bytes reserved for the body of a POST to ``url`` with these (lower-case)
        headers from ``client``, when it may come here; None: the usual way. It may if it
        is a scoring path (no query) with a declared length within the limits, needs no
        layer (CORS, proxy headers, chunks, ``Expect``), and is admitted now as ``Intake``
        admits one (not held by the Retry-After gate, ready, its key, room in the queue
        and for its body in the in-flight budget): a refusal is the usual way's, at once.
        The caller gives the reservation to :meth:`start`, or back to :meth:`release`."""
        if url not in self.lanes:
            return None
        length = None
        for name, value in headers:
            if name == b"content-length":
                length = value
            elif name in _LAYERED_HEADERS or (self.cors and name == b"origin"):
                return None
        size = int(length) if length is not None and length.isdigit() else None
        if size is None or size > self.max_body:
            return None
        admission = self.admission
        if client is not None and admission.gate.holding(client):
            return None
        try:
            admission.admit(headers)
        except ServiceError:
            return None
        return size if admission.budget.take(size) else None

    def release(self, reserved: int) -> None:
        """Give back what :meth:`takes` reserved, for a request that went another way."""
        self.admission.budget.give(reserved)

    def start(
        self,
        scope: Scope,
        body: bytes,
        receive: Receive,
        gone: asyncio.Future[None],
        reserved: int,
    ) -> Coroutine[Any, Any, Answer] | None:
        """The answer to come, for a request taken (``reserved``: by :meth:`takes`) whose
        body parses (``gone``: done when its client leaves); None where it does not, and
        the layers must answer it (the reservation is given back)."""
        started = time.monotonic()
        lane = self.lanes[scope["raw_path"]]
        parsed = _parse(lane.body, {"type": "http.request", "body": body})
        if parsed is None:
            self.release(reserved)
            return None
        scope["extensions"] = {**scope.get("extensions", {}), DISCONNECTED: gone}
        return self._answer(scope, lane, parsed, receive, reserved, started)

    async def _answer(
        self,
        scope: Scope,
        lane: Lane,
        parsed: BaseModel,
        receive: Receive,
        reserved: int,
        started: float,
    ) -> Answer:
        status = 500
        try:
            answer = await respond(self.state, lane, parsed, Request(scope, receive))
            status = answer.status
            if status == 429 and scope.get("client") is not None:
                self.admission.gate.noted(scope["client"], answer.headers)
            return answer
        finally:
            self.admission.budget.give(reserved)
            self.counter.record(scope["path"], status, time.monotonic() - started)


def _parse(model: type[BaseModel], message: Message) -> BaseModel | None:
    """The body as FastAPI reads it (``json.loads``, then the model in Python mode), or None
    where that fails in any way."""
    if message["type"] != "http.request":
        return None
    try:
        return model.model_validate(json.loads(message.get("body", b"")))
    except Exception:  # not JSON, not valid, too deep, ...: FastAPI's to explain
        return None
