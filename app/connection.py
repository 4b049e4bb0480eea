"""What a connection may send before its body: limits on the request head.

uvicorn's httptools protocol takes a request head of any size and any number of headers,
at any speed: one 16 MB header was parsed (its cost grows faster than its size) before the
API key was looked at, and a client sending its head a byte a second held its connection
forever. :class:`LimitedHttpToolsProtocol` answers, and closes the connection:

* ``431`` when the head (request line and headers) passes ``max_header_bytes``, counted as
  it arrives, so an endless header is cut off after at most one more read;
* ``431`` when it has more than ``max_header_count`` headers;
* ``408`` when a head has not arrived ``header_timeout_s`` after its first byte, or after
  the connection opened for its first request (between requests uvicorn's keep-alive
  timeout closes idle connections; the body has its own deadline: ``app.intake``).

Errors are the service's JSON shape, with ``Connection: close``.

uvicorn writes a response's head and its body with two calls, so each answer cost two
sends (and two packets, two wake-ups of the client). :class:`OneSend` holds what is written
in one turn of the event loop and sends it at once, so a response leaves in one.

With a :class:`~app.fastlane.Shortcut`, a scoring ``POST`` it takes (by path and headers)
has its body held here instead of starting uvicorn's request cycle at the end of its head.
When the whole body has arrived, the shortcut answers it without the ASGI layers, or
declines and the request starts the usual way with its body; a body that is not whole
``SHORTCUT_BODY_GRACE_S`` after its head goes the usual way then (``Intake`` reads the rest
under its limits and deadline). Either way the request has the request cycle uvicorn would build, so
pipelining, keep-alive, disconnects and graceful shutdown work as for any other.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httptools
from starlette.types import Receive, Scope
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

if TYPE_CHECKING:  # app.config imports this module
    from app.fastlane import Answer, Shortcut

log = logging.getLogger("rankrm.service")


@dataclass(frozen=True)
class HeadLimits:
    """Limits on a request head."""

    max_header_bytes: int = 64 * 1024
    max_header_count: int = 100
    header_timeout_s: float = 10.0


# How long a body may come after its head and still be held for the shortcut: many clients
# (httpx, h11) write the head and the body separately, and Nagle's algorithm with delayed
# ACKs can hold the second write for up to about 40 ms. Past it, the usual way.
SHORTCUT_BODY_GRACE_S = 0.5


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a head over the limits."""


def error_response(
    status: int, reason: str, kind: str, message: str, extra_headers: str = ""
) -> bytes:
    """A complete HTTP/1.1 error response in the service's JSON shape that closes
    (``extra_headers``: more ``name: value\\r\\n`` lines)."""
    body = json.dumps({"error": message, "error_type": kind}, ensure_ascii=True).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra_headers}\r\n"
    )
    return head.encode("ascii") + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`HeadLimits`."""

    def __init__(
        self, *args: Any, limits: HeadLimits, shortcut: Shortcut | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.shortcut = shortcut
        self._held: list[bytes] | None = None  # the body so far of a request for the shortcut
        self._whole: bytes | None = None  # its whole body, while its cycle starts
        self._gone: asyncio.Future[None] | None = None  # done if its client leaves
        self._hold_timer: asyncio.TimerHandle | None = None  # while its body is late
        self._reserved = 0  # its body's bytes, reserved from the in-flight budget
        self._reading_head = False
        self._head_read = 0  # bytes of whole reads into a head that began before them
        self._head_parsed = 0  # bytes of the request line and headers parsed so far
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: bytes | None = None

    # -------------------------------------------------------------- the head's size
    def data_received(self, data: bytes) -> None:
        was_reading = self._reading_head
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # as uvicorn does
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._drop_held()
            if self._refusal is not None:
                self._refuse(self._refusal)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._held is not None and self._hold_timer is None:  # the rest comes later
            self._hold_timer = self.loop.call_later(SHORTCUT_BODY_GRACE_S, self._start_usual_way)
        if self._reading_head and was_reading:  # a head still arriving: this read was head
            self._head_read += len(data)
            if self._head_read > self.limits.max_header_bytes:
                self._refuse(self._too_large())

    def _too_large(self) -> bytes:
        return error_response(
            431,
            "Request Header Fields Too Large",
            "headers_too_large",
            f"the request head is over {self.limits.max_header_bytes} bytes "
            "(request line and headers; RANKRM_MAX_HEADER_BYTES)",
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneSend(transport, self.loop))
        self._begin_head()  # a connection that sends nothing is timed out too

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begin_head()

    def _begin_head(self) -> None:
        self._reading_head = True
        self._head_read = self._head_parsed = 0
        self._header_count = 0
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_late)

    def on_url(self, url: bytes) -> None:
        self._head_parsed += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_parsed += len(name) + len(value) + 4
        if self._header_count > self.limits.max_header_count:
            self._refusal = error_response(
                431,
                "Request Header Fields Too Large",
                "headers_too_large",
                f"more than {self.limits.max_header_count} headers (RANKRM_MAX_HEADER_COUNT)",
            )
            raise _Refused
        if self._head_parsed > self.limits.max_header_bytes:
            self._refusal = self._too_large()
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_timer()
        reserved = self._for_shortcut()
        if reserved is not None:
            self._held, self._reserved = [], reserved
            return
        super().on_headers_complete()

    # -------------------------------------------------------------- the shortcut
    def _for_shortcut(self) -> int | None:
        """The bytes reserved when this request's body is held for the shortcut: a
        keep-alive HTTP/1.1 POST it takes (``Shortcut.takes``), nothing before it on the
        connection still unanswered, and no per-request work of uvicorn's (access log,
        concurrency limit, root path)."""
        parser = self.parser
        if (
            self.shortcut is not None
            and (self.cycle is None or self.cycle.response_complete)
            and parser.get_method() == b"POST"
            and parser.get_http_version() == "1.1"
            and parser.should_keep_alive()
            and not parser.should_upgrade()
            and not (self.access_log and self.access_logger.isEnabledFor(logging.INFO))
            and self.limit_concurrency is None
            and not self.root_path
        ):
            return self.shortcut.takes(self.url, self.headers, self.client)
        return None

    def on_body(self, body: bytes) -> None:
        if self._held is not None:
            self._held.append(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._held is None:
            super().on_message_complete()
            return
        self._whole, self._held = b"".join(self._held), None
        self._cancel_hold_timer()
        super().on_headers_complete()  # its cycle, started in _start_asgi_task below
        if self._whole is not None:  # declined by the shortcut: the usual way, body and all
            body, self._whole = self._whole, None
            super().on_body(body)
            super().on_message_complete()

    def _start_usual_way(self) -> None:
        """Start the held request's cycle as uvicorn would have, with its body so far (its
        body is late: ``Intake`` reads the rest under its deadline)."""
        self._hold_timer = None
        held, self._held = self._held, None
        if held is None:
            return
        self._release()  # Intake reserves the body's bytes as they arrive
        if self.transport.is_closing():
            return
        super().on_headers_complete()
        for chunk in held:
            super().on_body(chunk)

    def _cancel_hold_timer(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    def _drop_held(self) -> None:
        if self._held is not None:
            self._held = None
            self._release()
        self._cancel_hold_timer()

    def _release(self) -> None:
        if self.shortcut is not None:
            self.shortcut.release(self._reserved)
        self._reserved = 0

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        whole = self._whole
        if whole is None or self.shortcut is None:
            super()._start_asgi_task(cycle, app)
            return
        scope, receive = cast(Scope, cycle.scope), cast(Receive, cycle.receive)
        gone: asyncio.Future[None] = self.loop.create_future()
        reserved, self._reserved = self._reserved, 0
        answering = self.shortcut.start(scope, whole, receive, gone, reserved)
        if answering is None:  # on_message_complete sends it the usual way
            super()._start_asgi_task(cycle, app)
            return
        self._whole = None
        self._gone = gone
        cycle.more_body = False
        task = self.loop.create_task(self._send_answer(cycle, answering))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _send_answer(self, cycle: RequestResponseCycle, answering: Awaitable[Answer]) -> None:
        answer = await answering
        self._gone = None
        cycle.response_complete = True
        if not self.transport.is_closing():
            headers = [
                *cycle.default_headers,
                (b"content-length", str(len(answer.body)).encode()),
                *answer.headers,
            ]
            if not cycle.keep_alive:  # the server is shutting down
                headers.append((b"connection", b"close"))
            head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            self.transport.write(STATUS_LINE[answer.status] + head + b"\r\n" + answer.body)
            if not cycle.keep_alive:
                self.transport.close()
        self.on_response_complete()

    # -------------------------------------------------------------- the head's speed
    def _head_late(self) -> None:
        self._head_timer = None
        if self._reading_head and not self.transport.is_closing():
            self._refuse(
                error_response(
                    408,
                    "Request Timeout",
                    "header_timeout",
                    f"the request head did not arrive within {self.limits.header_timeout_s:g}s "
                    "(RANKRM_HEADER_TIMEOUT_S)",
                )
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, response: bytes) -> None:
        self._reading_head = False
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._drop_held()
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)  # the shortcut's request: its texts are dropped
        super().connection_lost(exc)


class OneSend(asyncio.Transport):
    """A transport whose writes in one turn of the event loop leave in one send."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(bytes(data))

    def _flush(self) -> None:
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()
