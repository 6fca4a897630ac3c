"""Reading ahead: the next IMAP batch travels while the current one is stored."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from konvergo.services.intake import _batched, _prefetched
from konvergo.transports import imap as imap_module


class Source:
    """Batches as a connection would read them, counting how many were read."""

    def __init__(self, count: int, fail_after: int | None = None) -> None:
        self.count = count
        self.fail_after = fail_after
        self.read = 0

    def __iter__(self) -> Iterator[list[int]]:
        for n in range(self.count):
            if self.fail_after is not None and n == self.fail_after:
                raise ConnectionResetError("BYE Session invalidated - AccessTokenExpired")
            self.read += 1
            yield [n]


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "imap-prefetch"]


def test_yields_every_batch_in_order() -> None:
    """Reading ahead changes when batches are read, never which or in what order."""
    assert list(_prefetched(iter(Source(10)))) == [[n] for n in range(10)]
    assert reader_threads() == []


def test_an_error_of_the_reader_comes_after_the_batches_read_before_it() -> None:
    """A dropped connection is raised in the caller, once the batches before it are stored."""
    got: list[list[int]] = []
    with pytest.raises(ConnectionResetError, match="AccessTokenExpired"):
        for batch in _prefetched(iter(Source(10, fail_after=3))):
            got.append(batch)
    assert got == [[0], [1], [2]]


def test_closing_early_stops_the_reader_and_bounds_what_it_read() -> None:
    """A caller that stops (its store failed) leaves no thread reading the connection."""
    source = Source(1000)
    batches = _prefetched(iter(source))
    assert next(batches) == [0]
    time.sleep(0.2)  # the reader fills what it may hold, and no more
    batches.close()
    assert reader_threads() == []
    assert source.read <= 4  # one stored, one handed over, one waiting in the reader


def test_batches_grow_as_the_fetch_requests_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches start at RAMP_START messages and double up to the batch size, so the first
    batch is parsed and stored while the larger ones travel; nothing is dropped."""
    monkeypatch.setattr(imap_module, "RAMP_START", 2)
    batches = list(_batched(iter(range(20)), 8))
    assert [len(b) for b in batches] == [2, 4, 8, 6]
    assert [n for b in batches for n in b] == list(range(20))
