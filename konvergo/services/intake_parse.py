"""Parsing fetched messages, in this process or in parser processes.

Everyday mail parses in about 0.15 ms per 10 KB message; the fetching process also reads
and stores, and all of that shares one interpreter lock. ``konvergo worker`` therefore starts
one long-lived parser process (:func:`start_shared_parser`) and its fetches hand every batch
to it: batch N+1 is parsed there while batch N is stored here. Elsewhere (Fetch Now in the
web process) parsing stays in process, except that large MIME messages (attachments) cost
far more, and on a first fetch of a large mailbox of those a pool of parser processes pays
for starting. This module imports no Django, so ``spawn``-ed parser processes start in a
fraction of a second and never touch (or inherit) a database connection.

A parser process that dies (the kernel's OOM killer, a crash in a C library) costs no mail:
the batches it held are parsed in process and the shared parser is started again.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from konvergo.mailparse import ParsedMessage, UnparseableMessage, parse
from konvergo.transports.imap import FetchedMessage

log = logging.getLogger("konvergo.intake")

#: Messages this large on average (bytes) are parsed in a process pool when the rest of the
#: fetch holds at least POOL_BYTES of them: 256 KB parse in ~8 ms, 10 KB in ~0.15 ms.
POOL_MESSAGE_BYTES = 256 * 1024
POOL_BYTES = 64 * 1024 * 1024
#: A plain-text message up to this size keeps its text only in ``raw`` (``text_in_raw``):
#: decoding it again for a page costs ~0.1 ms per 10 KB (~1.5 ms for 64 KB that needs the
#: full parser), and storing it twice cost intake a sixth of its storing time. Not decoding
#: it here saves a third of the parse and the text's trip back from the parser process.
#: Larger ones keep both, so a page never spends long decoding.
TEXT_IN_RAW_MAX = 64 * 1024


@dataclass
class Parsed:
    """A fetched message with its parse result (or the reason it could not be parsed)."""

    fetched: FetchedMessage
    message: ParsedMessage | None
    reason: str = ""


def _parse_one(raw: bytes) -> tuple[ParsedMessage | None, str]:
    try:
        return parse(raw, text_in_raw_max=TEXT_IN_RAW_MAX), ""
    except UnparseableMessage as exc:
        return None, str(exc)
    except Exception as exc:  # a parser bug must not stop the mailbox: keep the bytes
        log.exception("parser failed")
        return None, f"parser error: {type(exc).__name__}: {exc}"


def parse_fetched(fetched: FetchedMessage) -> Parsed:
    """Parse, never raise: a parser failure of any kind is a reason for quarantine."""
    message, reason = _parse_one(fetched.raw)
    return Parsed(fetched, message, reason)


def parse_raws(raws: Sequence[bytes]) -> list[tuple[ParsedMessage | None, str]]:
    """Parse several messages (the unit of work sent to a parser process)."""
    return [_parse_one(raw) for raw in raws]


def _exit_with_parent() -> None:
    """In a parser process: exit when the process that started it is gone.

    A worker killed with SIGKILL cannot stop its parser processes, and they would wait for
    work forever (each holds its own end of the work queue, so it never reads end-of-file).
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class ParserPool:
    """Parser processes; ``submit(batch)`` returns a handle whose ``result()`` is the
    parsed batch, so the caller stores one batch while the next is being parsed."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
        )
        self.broken = False

    def pids(self) -> set[int]:
        """The process ids of the parser processes started so far."""
        processes = self._pool._processes.values()  # not public: for tests and logs
        return {process.pid for process in processes if process.pid is not None}

    def warm_up(self) -> None:
        """Start every process now (they would otherwise start on the first batch)."""
        for _ in self._pool.map(parse_raws, [[b"Subject: warm-up\r\n\r\n"]] * self.workers):
            pass

    def submit(self, batch: Sequence[FetchedMessage]) -> PendingBatch:
        step = max(1, -(-len(batch) // self.workers))
        try:
            futures = [
                self._pool.submit(parse_raws, [m.raw for m in batch[i : i + step]])
                for i in range(0, len(batch), step)
            ]
        except (BrokenProcessPool, RuntimeError):  # dead, or shut down meanwhile
            self.broken = True
            futures = []  # result() parses the batch in this process
        return PendingBatch(list(batch), futures, self)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class PendingBatch:
    batch: list[FetchedMessage]
    futures: list[Future[list[tuple[ParsedMessage | None, str]]]]
    pool: ParserPool | None = None

    def result(self) -> list[Parsed]:
        if not self.futures:  # the parser was gone before the batch came
            return self._parse_here()
        try:
            results = [r for f in self.futures for r in f.result()]
        except (BrokenProcessPool, CancelledError):  # dead, or shut down with the worker
            return self._parse_here()
        return [Parsed(m, p, reason) for m, (p, reason) in zip(self.batch, results, strict=True)]

    def _parse_here(self) -> list[Parsed]:
        log.warning("a parser process died; parsing its batch in this process")
        if self.pool is not None:
            self.pool.broken = True
        return [parse_fetched(m) for m in self.batch]


_shared: ParserPool | None = None
_shared_lock = threading.Lock()


def start_shared_parser() -> ParserPool:
    """Start (or return) this process's long-lived parser process; ``konvergo worker`` calls
    this at start so that no fetch waits for it. Raises when no process can be started."""
    global _shared
    with _shared_lock:
        current = _shared
        if current is not None and not current.broken:
            return current
        if current is not None:
            current.close()
        _shared = None
        pool = ParserPool(workers=1)
        try:
            pool.warm_up()
        except BaseException:
            pool.close()
            raise
        _shared = pool
        return pool


def shared_parser() -> ParserPool | None:
    """The running shared parser (restarted if it died), or None: none was started, or it
    died and cannot be started again (fetches then parse in their own process)."""
    current = _shared
    if current is None or not current.broken:
        return current
    try:
        return start_shared_parser()
    except Exception:
        log.exception("the parser process could not be started again; parsing in process")
        return None


def stop_shared_parser() -> None:
    global _shared
    with _shared_lock:
        pool, _shared = _shared, None
    if pool is not None:
        pool.close()


atexit.register(stop_shared_parser)
