"""Waiting on a socket without ``select()``, which cannot watch descriptors from 1024 on."""

from __future__ import annotations

import math
import select
import socket
import ssl


def readable(sock: socket.socket, timeout: float) -> bool:
    """Whether ``sock`` has data, or its end, within ``timeout`` seconds (0: right now).

    ``poll()``: ``select()`` raises for a descriptor numbered 1024 or above, which a busy
    worker reaches (SMTP sessions, IMAP IDLE connections, a database connection per thread).
    Bytes TLS has already decrypted are waiting too.
    """
    if isinstance(sock, ssl.SSLSocket) and sock.pending() > 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(math.ceil(max(0.0, timeout) * 1000)))
