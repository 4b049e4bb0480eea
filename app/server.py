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
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable

import uvicorn
from uvicorn.config import STARTUP_FAILURE

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
    ) -> None:
        self.sockets = [sock]
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
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self._loop.call_soon_threadsafe(self._adopt, conn)
            except RuntimeError:  # the loop is closed: shutting down
                conn.close()
                return

    def _adopt(self, conn: socket.socket) -> None:
        task = self._loop.create_task(self._loop.connect_accepted_socket(self._make_protocol, conn))
        task.add_done_callback(_close_on_failure(conn))

    def close(self) -> None:
        self._closed.set()

    async def wait_closed(self) -> None:
        await asyncio.to_thread(self._thread.join)
        self._sock.close()


def _close_on_failure(conn: socket.socket) -> Callable[[asyncio.Task[object]], None]:
    def done(task: asyncio.Task[object]) -> None:
        if task.cancelled() or task.exception() is not None:
            conn.close()

    return done


class Server(uvicorn.Server):
    """uvicorn with the :class:`Acceptor` for host/port listening (sockets handed in by a
    process manager are served the usual way)."""

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
            protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
            )
            return protocol

        acceptor = Acceptor(sock, loop, make_protocol)
        acceptor.start()
        self.servers = [acceptor]  # type: ignore[list-item]
        self.started = True
