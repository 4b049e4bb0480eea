"""Admission and body intake: what a request costs is decided before it costs anything.

The outermost layer of the service (after the request counter), in pure ASGI:

1. A scoring ``POST`` is refused at once, before its body is read, when the service is
   not ready (503), the API key is missing or wrong (401), or the queue is full (429
   with Retry-After). A refusal costs the HTTP parse and nothing else.
2. Every ``POST`` body is read here, not by FastAPI: over ``max_body_bytes`` it is 413
   (by Content-Length at once, or as chunks arrive); its bytes are reserved, as they
   arrive, from a process-wide budget of ``max_inflight_bytes`` held until the request
   ends, so the memory requests can hold at once (bodies, their parsed JSON, their
   tokens) is bounded whatever clients send; past it, 429 at once. A body that does not
   arrive within ``request_timeout_s`` is 408.
3. The body is then handed to the application as one message.

A connection that sends a scoring request again before the ``Retry-After`` of its last 429
has passed is held until it has (:class:`RetryAfterGate`): a client retrying in a tight loop
then costs the event loop one refusal per Retry-After instead of thousands a second, and
the model and the clients that wait as told keep their share of the CPU.

A refusal sent before the body is read keeps the connection: the server reads the rest and
drops it, so a client that writes its whole body before reading the answer still gets it.
Only when the rest is over the body limit or of unknown size (chunked) does the answer say
``Connection: close``, so the connection is never left in an unknown state.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ErrorKind, ServiceError, error_response
from app.metrics import Metrics
from app.security import check_key, request_key
from app.state import ServiceState

log = logging.getLogger("rankrm.service")

SCORING_PATHS = frozenset({"/score", "/compare", "/rank", "/groups", "/get_reward"})
_GATE_ENTRIES = 10_000  # connections remembered at once by the Retry-After gate


class ByteBudget:
    """Bytes of request bodies held at once (event loop only: no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes if they fit."""
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        """Return ``n`` reserved bytes."""
        self.used -= n


class RetryAfterGate:
    """When each connection (client address and port) may be heard again after a 429."""

    def __init__(self, metrics: Metrics) -> None:
        self._until: dict[object, float] = {}
        self._metrics = metrics

    def holding(self, connection: object) -> bool:
        """Whether a request on ``connection`` would be held now."""
        return connection in self._until

    async def wait(self, connection: object) -> None:
        """Hold the request until the connection's last Retry-After has passed."""
        until = self._until.pop(connection, None)
        if until is None:
            return
        delay = until - time.monotonic()
        if delay > 0:
            self._metrics.held_retries.inc()
            await asyncio.sleep(delay)

    def refused(self, connection: object, retry_after_s: float) -> None:
        """Note a 429 with ``Retry-After: retry_after_s`` sent on ``connection``."""
        now = time.monotonic()
        if len(self._until) > _GATE_ENTRIES:  # connections that never came back
            self._until = {k: t for k, t in self._until.items() if t > now}
        # Up to half as long again, at random: refusals come in bursts, and held requests
        # released together would reach the event loop as one burst again.
        self._until[connection] = now + retry_after_s * (1 + 0.5 * random.random())

    def watching(self, connection: object, send: Send) -> Send:
        """``send``, noting the connection when the answer is a 429."""

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 429:
                self.noted(connection, message.get("headers", []))
            await send(message)

        return watched

    def noted(self, connection: object, headers: list[tuple[bytes, bytes]]) -> None:
        """Note a 429 with these headers sent on ``connection`` (its Retry-After)."""
        for name, value in headers:
            if name.lower() == b"retry-after" and value.isdigit():
                self.refused(connection, int(value))


class Admission:
    """What admits a request, shared by :class:`Intake` and the protocol's shortcut
    (``app.fastlane.Shortcut``): the in-flight byte budget, the Retry-After gate, and the
    checks made before a scoring request's body costs anything."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.limit = state.settings.max_body_bytes
        self.budget = ByteBudget(state.settings.max_inflight_bytes)
        self.gate = RetryAfterGate(state.metrics)
        state.metrics.inflight_bytes_limit.set(self.budget.limit)
        budget = self.budget
        state.metrics.inflight_bytes.set_function(lambda: budget.used)  # read when scraped

    def admit(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Refuse a scoring request that cannot be served, before its body is read."""
        state = self.state
        state.require_ready()
        check_key(state.settings.api_keys, request_key(headers))
        refused = state.batcher.refusal()
        if refused is not None:
            raise refused


class Intake:
    """Admission before any work, bodies read under limits (see the module docstring)."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.state = admission.state
        self.limit = admission.limit
        self.budget = admission.budget
        self.gate = admission.gate
        self._admit = admission.admit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = _content_length(headers)
        reserved = 0
        connection = scope.get("client")
        scoring = scope["path"] in SCORING_PATHS
        if scoring and connection is not None:
            await self.gate.wait(connection)
            send = self.gate.watching(connection, send)
        try:
            if scoring:
                self._admit(scope["headers"])
            if declared is not None and declared > self.limit:
                raise ServiceError(
                    ErrorKind.TOO_LARGE,
                    f"request body of {declared} bytes is over the {self.limit}-byte limit",
                )
            chunks: list[bytes] = []
            deadline = asyncio.get_running_loop().time() + self.state.settings.request_timeout_s
            more = True
            while more:
                message = await _receive_before(receive, deadline)
                if message["type"] == "http.disconnect":
                    self.budget.give(reserved)  # the client left: nobody to answer
                    return
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                if reserved + len(chunk) > self.limit:
                    raise ServiceError(
                        ErrorKind.TOO_LARGE, f"request body over the {self.limit}-byte limit"
                    )
                if not self.budget.take(len(chunk)):
                    raise ServiceError(
                        ErrorKind.OVERLOADED,
                        f"too much request data in flight ({self.budget.used} of "
                        f"{self.budget.limit} bytes); retry later",
                        retry_after=1,
                    )
                reserved += len(chunk)
                chunks.append(chunk)
            body = b"".join(chunks)
            del chunks
        except ServiceError as exc:
            self.budget.give(reserved)
            unread = declared - reserved if declared is not None else None
            close = unread is None or unread > self.limit
            await _refuse(exc, scope, receive, send, close=close)
            return
        try:
            await self.app(scope, replay(body, receive), send)
        finally:
            self.budget.give(reserved)


def _content_length(headers: dict[bytes, bytes]) -> int | None:
    value = headers.get(b"content-length")
    if value is None or not value.isdigit():
        return None
    return int(value)


async def _receive_before(receive: Receive, deadline: float) -> Message:
    """The next message, or BODY_TIMEOUT once the loop's clock passes ``deadline``."""
    try:
        async with asyncio.timeout_at(deadline):
            return await receive()
    except TimeoutError:
        raise ServiceError(
            ErrorKind.BODY_TIMEOUT, "the request body did not arrive in time"
        ) from None


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the whole body once, then whatever the client sends next
    (a disconnect, watched for while scoring)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(
    exc: ServiceError, scope: Scope, receive: Receive, send: Send, *, close: bool
) -> None:
    response = error_response(exc.kind, exc.message, exc.retry_after)
    if close:
        response.headers["connection"] = "close"
    await response(scope, receive, send)
