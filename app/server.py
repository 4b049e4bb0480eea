"""The HTTP server: uvicorn, with connections accepted on a thread of their own.

uvloop accepts new connections on the event loop, and under a storm it stops accepting:
with 768 kept-alive connections sending requests back to back, a fresh connection's
``GET /health`` waited until the storm ended (7-16 s), while requests on connections opened
before the storm were answered in 60 ms (measured; the same with a 20-line uvloop server, so
it is uvloop's, not the app's). A liveness probe opens a fresh connection every time, so a
429 storm would get the pod restarted. Here a thread blocks in ``accept()`` and hands each
connection to the loop (``call_soon_threadsafe`` is served every loop iteration, whatever the
sockets are doing); from then on the connection is the loop's like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from app.connection import HeadLimits, LimitedHttpToolsProtocol, error_response
from app.fastlane import Shortcut

log = logging.getLogger("rankrm.service")


class Acceptor:
    """Accept on ``sock`` in a thread; each connection becomes ``make_protocol()`` on
    ``loop``. Looks like an asyncio server to uvicorn (``sockets``, ``close``,
    ``wait_closed``)."""

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        make_protocol: Callable[[], asyncio.Protocol],
        max_connections: int | None = None,
        open_connections: Callable[[], int] = lambda: 0,
    ) -> None:
        self.sockets = [sock]
        self.max_connections = max_connections
        self._open_connections = open_connections
        self._last_refusal_log = 0.0
        self._sock = sock
        self._loop = loop
        self._make_protocol = make_protocol
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="rankrm-accept", daemon=True)
        self._last_warning = 0.0

    def start(self) -> None:
        self._sock.settimeout(0.2)  # wake now and then to notice close()
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._closed.is_set():
                    return
                now = time.monotonic()
                if now - self._last_warning > 10:  # e.g. out of file descriptors
                    log.warning("cannot accept connections: %s", exc)
                    self._last_warning = now
                time.sleep(0.05)
                continue
            cap = self.max_connections
            if cap is not None and self._open_connections() >= cap:
                self._refuse(conn)
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self._loop.call_soon_threadsafe(self._adopt, conn)
            except RuntimeError:  # the loop is closed: shutting down
                conn.close()
                return

    def _refuse(self, conn: socket.socket) -> None:
        """Answer 503 and close at once: the descriptor is back before the next accept."""
        now = time.monotonic()
        if now - self._last_refusal_log > 10:
            log.warning(
                "connection limit reached: %d connections open (RANKRM_MAX_CONNECTIONS); "
                "refusing new ones with 503",
                self._open_connections(),
            )
            self._last_refusal_log = now
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(_TOO_MANY_CONNECTIONS)
        conn.close()

    def _adopt(self, conn: socket.socket) -> None:
        task = self._loop.create_task(self._loop.connect_accepted_socket(self._make_protocol, conn))
        task.add_done_callback(_close_on_failure(conn))

    def close(self) -> None:
        self._closed.set()

    async def wait_closed(self) -> None:
        await asyncio.to_thread(self._thread.join)
        self._sock.close()


_TOO_MANY_CONNECTIONS = error_response(
    503,
    "Service Unavailable",
    "overloaded",
    "too many open connections; retry later",
    extra_headers="retry-after: 1\r\n",
)


def _close_on_failure(conn: socket.socket) -> Callable[[asyncio.Task[object]], None]:
    def done(task: asyncio.Task[object]) -> None:
        if task.cancelled() or task.exception() is not None:
            conn.close()

    return done


class Server(uvicorn.Server):
    """uvicorn with the :class:`Acceptor` for host/port listening, its connection cap,
    :class:`~app.connection.HeadLimits` and the app's :class:`~app.fastlane.Shortcut`
    (sockets handed in by a process manager are served the usual way)."""

    def __init__(
        self,
        config: uvicorn.Config,
        limits: HeadLimits | None = None,
        max_connections: int | None = 2048,
        shortcut: Shortcut | None = None,
    ) -> None:
        super().__init__(config)
        self.limits = limits or HeadLimits()
        self.max_connections = max_connections
        self.shortcut = shortcut

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, except that a SIGTERM that ended a graceful shutdown is not raised
        again afterwards: the process exits 0, not 143 (process managers read 143 as a
        failure)."""
        with super().capture_signals():
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", [])
                captured[:] = [sig for sig in captured if sig != signal.SIGTERM]

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        if sockets is not None or config.uds is not None or config.fd is not None:
            await super().startup(sockets)
            return
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        sock = config.bind_socket()
        sock.listen(config.backlog)
        loop = asyncio.get_running_loop()

        def make_protocol() -> asyncio.Protocol:
            return LimitedHttpToolsProtocol(
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
                limits=self.limits,
                shortcut=self.shortcut,
            )

        cap = self.max_connections
        if cap is not None:
            cap = descriptors_for(cap)
        acceptor = Acceptor(
            sock, loop, make_protocol, cap, lambda: len(self.server_state.connections)
        )
        acceptor.start()
        self.servers = [acceptor]  # type: ignore[list-item]
        self.started = True


def descriptors_for(connections: int, reserve: int = 256) -> int:
    """Raise the open-file limit to hold ``connections`` plus ``reserve`` (model files,
    logs, the listener) where the hard limit allows; the connections that fit otherwise."""
    try:
        import resource
    except ImportError:  # not on this platform
        return connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + reserve
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < wanted:
        fitted = max(1, soft - reserve)
        log.warning(
            "the open-file limit (%d) holds %d connections, not %d: capping there",
            soft, fitted, connections,
        )  # fmt: skip
        return fitted
    return connections
