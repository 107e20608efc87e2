"""The Wyoming server: a TCP listener in the service's own event loop, one `Connection` per client, and an
optional mDNS announcement (`_wyoming._tcp`) through which Home Assistant discovers it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from parakeet_serve.net import bind_tcp
from parakeet_serve.recognizer import Recognizer
from parakeet_serve.telemetry import Telemetry
from parakeet_serve.wyoming.connection import HEADER_LIMIT, Connection, WyomingLimits

__all__ = ["WyomingLimits", "WyomingServer"]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."


class WyomingServer:
    def __init__(self, recognizer: Callable[[], Recognizer], telemetry: Telemetry, limits: WyomingLimits, *,
                 host: str, port: int, shared_port: bool = False, announce_as: str = "") -> None:
        self._recognizer, self._telemetry, self._limits = recognizer, telemetry, limits
        self._host, self._requested_port = host, port
        self._shared_port = shared_port  # one of several worker processes on it
        self._announce_as = announce_as
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], Connection] = {}
        self._announcement: _Announcement | None = None
        self.port = 0

    async def start(self) -> None:
        """Bind (an OSError to report when the port is taken) and serve; announce when asked to."""
        sock = bind_tcp(self._host, self._requested_port, self._shared_port)
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=HEADER_LIMIT)
        self.port = sock.getsockname()[1]
        if self._announce_as:
            self._announcement = await _Announcement.register(self._announce_as, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(reader, writer, self._recognizer, self._telemetry, self._limits)
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = connection
        try:
            await connection.run()
        finally:
            self._connections.pop(task, None)

    async def stop(self, grace_s: float) -> None:
        """Take no more connections; close the idle ones now and give utterances under way up to `grace_s`."""
        if self._announcement is not None:
            await self._announcement.close()
        if self._server is None:
            return
        self._server.close()
        for task, connection in list(self._connections.items()):
            connection.closing = True  # one under way ends after its utterance
            if not connection.busy:
                task.cancel()
        if self._connections:
            _, late = await asyncio.wait(list(self._connections), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._server.wait_closed()


class _Announcement:
    """The server's mDNS record, for as long as it serves."""

    def __init__(self, zeroconf: Any, info: Any) -> None:
        self._zeroconf, self._info = zeroconf, info

    @classmethod
    async def register(cls, name: str, port: int) -> _Announcement:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        address = _primary_address()
        zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only)
        info = AsyncServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", port=port, server=f"{name}.local.",
                                addresses=[socket.inet_aton(address)])
        await (await zeroconf.async_register_service(info))  # registered, then announced
        log.info("wyoming server announced", extra={"announced_as": name, "address": address, "port": port})
        return cls(zeroconf, info)

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # the record only helps discovery: a failed goodbye is harmless
            await (await self._zeroconf.async_unregister_service(self._info))
        await self._zeroconf.async_close()


def _primary_address() -> str:
    """The IPv4 address this host sends multicast from (where Home Assistant can reach it); no packet is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("224.0.0.251", 5353))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"
