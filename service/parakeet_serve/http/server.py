"""The HTTP server: uvicorn in the service's own event loop, beside the gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator

import h11
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from parakeet_serve.http.errors import error_body
from parakeet_serve.net import bind_tcp


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # SIGTERM belongs to the service's drain, which stops this server in turn


def _timed_out(seconds: float) -> bytes:
    body = json.dumps(error_body(f"The request's headers did not arrive within {seconds:g} s "
                                 "(PARAKEET_HTTP_HEADER_TIMEOUT_S).", "invalid_request_error",
                                 code="header_timeout")).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body))


def header_deadline(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's head, from when the connection opens or the
    last response ends: a client that sends its headers a byte at a time (slowloris), or nothing, is answered
    408 and closed instead of holding a connection forever (uvicorn alone waits as long as bytes trickle)."""

    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the head is in (or the socket was upgraded)
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on the connection gets its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.trailing_data[0]:  # part of a head: answered; an idle connection is just closed
                self.transport.write(_timed_out(seconds))
            self.transport.close()

    return HeaderDeadline


class HttpServer:
    def __init__(self, app: Starlette, host: str, port: int, *, header_timeout_s: float,
                 ws_max_bytes: int, shared_port: bool = False) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
                                ws_max_size=ws_max_bytes, http=header_deadline(header_timeout_s))
        self._server = _Server(config)
        self._shared_port = shared_port  # one of several worker processes on it
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        """Bind here, so a taken port is an OSError to report (inside uvicorn it would exit the process)."""
        config = self._server.config
        sock = bind_tcp(config.host, config.port, self._shared_port)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # any other start-up failure ends start-up with its reason
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
