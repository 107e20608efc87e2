"""The front ends' listening sockets."""

from __future__ import annotations

import asyncio
import socket

from parakeet_serve.net import bind_tcp


def test_connections_accepted_on_a_bound_socket_send_without_waiting_for_acks() -> None:
    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accept, sock=bind_tcp("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()

    # With Nagle's algorithm on, an answer written in two pieces waited for the client's delayed ACK: 40 ms a reply.
    assert asyncio.run(accepted_nodelay()) == 1


def test_a_taken_port_is_an_os_error_and_a_shared_one_is_not() -> None:
    first = bind_tcp("127.0.0.1", 0, shared=True)
    try:
        port = first.getsockname()[1]
        first.listen()
        bind_tcp("127.0.0.1", port, shared=True).close()
        try:
            bind_tcp("127.0.0.1", port).close()
        except OSError:
            pass
        else:
            raise AssertionError("a taken port was bound")
    finally:
        first.close()
