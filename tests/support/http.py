"""Small pieces of HTTP for the tests' own loopback servers (fault proxies, hostile peers)."""

from __future__ import annotations

import socket


def read_head(sock: socket.socket) -> bytes | None:
    """Bytes received up to and including the end of a request head (a blank line), plus whatever
    arrived with it; None when the peer closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    return data
