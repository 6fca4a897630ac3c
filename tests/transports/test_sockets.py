"""Waiting on sockets works for any descriptor number, as a busy worker has."""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Iterator

import pytest

from konvergo.transports.sockets import readable

HIGH = 1500  # past select()'s FD_SETSIZE of 1024


@pytest.fixture
def high_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair whose first socket has descriptor number 1500."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] <= HIGH:
        pytest.skip("the open-files limit is below the descriptor this test needs")
    a, b = socket.socketpair()
    os.dup2(a.fileno(), HIGH)
    a.close()
    high = socket.socket(fileno=HIGH)
    yield high, b
    high.close()
    b.close()


def test_a_quiet_socket_is_not_readable_and_data_or_a_hang_up_is(
    high_pair: tuple[socket.socket, socket.socket],
) -> None:
    """Nothing waiting: not readable; after the peer writes or hangs up: readable at once."""
    high, peer = high_pair
    assert not readable(high, 0)
    assert not readable(high, 0.05)
    peer.sendall(b"421 4.4.2 idle timeout\r\n")
    assert readable(high, 0)
    high.recv(100)
    peer.close()
    assert readable(high, 0)
