"""Listening sockets of the plain-TCP front ends (HTTP, Wyoming)."""

from __future__ import annotations

import socket


def bind_tcp(host: str, port: int, shared: bool = False) -> socket.socket:
    """A socket bound to `host:port` (an OSError to report when taken); `shared` lets several worker processes
    bind the same port.

    It is made with an explicit IPPROTO_TCP: asyncio turns Nagle's algorithm off only on connections whose socket
    says so, and with it on, an answer written in two pieces waits for the client's delayed ACK (40 ms a reply,
    measured on the Wyoming front end).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


def free_port() -> int:
    """A loopback port free at the moment (for servers started by the bench, the load tests and the tests)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
