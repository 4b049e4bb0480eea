"""The accepting thread: connections handed to the loop, a clean stop."""

from __future__ import annotations

import asyncio
import socket

from app.server import Acceptor


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())


def test_acceptor_hands_connections_to_the_loop_and_stops() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        acceptor = Acceptor(listener, loop, Echo)
        acceptor.start()
        port = listener.getsockname()[1]
        answers = []
        for word in (b"one", b"two", b"three"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(word)
            answers.append(await reader.readexactly(len(word)))
            writer.close()
        assert answers == [b"ONE", b"TWO", b"THREE"]
        acceptor.close()
        await asyncio.wait_for(acceptor.wait_closed(), 5)
        assert listener.fileno() == -1  # closed: no more connections
        try:
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        except OSError:
            pass
        else:
            raise AssertionError("a stopped acceptor must not take connections")

    asyncio.run(scenario())
