"""The background worker: a loop over registered jobs (outbox, intake, token keep-alive).

Jobs are registered by the modules that own them (:func:`register`). Each job claims its
own work in the database (``SKIP LOCKED`` rows, leases), so any number of workers on any
number of machines can run side by side.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module

from django.db import close_old_connections

from konvergo.security.tls import shared_client_context
from konvergo.store import checkpoint

log = logging.getLogger("konvergo.worker")

#: Modules that register jobs when imported; a missing module is simply not loaded yet.
JOB_MODULES = (
    "konvergo.services.outbox",
    "konvergo.services.intake",
    "konvergo.services.oauth.keepalive",
)


@dataclass
class Job:
    name: str
    run: Callable[[], int]
    interval: float
    next_run: float = field(default=0.0)


JOBS: dict[str, Job] = {}


def register(name: str, interval: float) -> Callable[[Callable[[], int]], Callable[[], int]]:
    """Decorator: run ``func`` every ``interval`` seconds (sooner while it reports work done)."""

    def wrap(func: Callable[[], int]) -> Callable[[], int]:
        JOBS[name] = Job(name, func, interval)
        return func

    return wrap


#: What modules start with the worker loop and stop after it: ``(start, stop)`` pairs.
LIFECYCLE: list[tuple[Callable[[], object], Callable[[], object]]] = []


def on_start(start: Callable[[], object], stop: Callable[[], object]) -> None:
    """Run ``start`` when a worker loop starts and ``stop`` when it ends."""
    if (start, stop) not in LIFECYCLE:
        LIFECYCLE.append((start, stop))


def _warm_tls() -> None:
    """Load the CA store for TLS clients now (~40 ms of CPU), not in the first handshake."""
    shared_client_context()


def _nothing() -> None:
    pass


# A worker writes all day: its SQLite log is checkpointed in the pauses, not in its commits.
on_start(checkpoint.start, checkpoint.stop)
on_start(_warm_tls, _nothing)


def load_jobs() -> dict[str, Job]:
    for module in JOB_MODULES:
        try:
            import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return JOBS


def run_once() -> int:
    """Run every due job once; returns the total work done (for tests and ``--once``)."""
    done = 0
    now = time.monotonic()
    for job in load_jobs().values():
        if job.next_run > now:
            continue
        close_old_connections()
        try:
            worked = job.run()
        except Exception:
            # One failing job must not stop the others; the job records its own error rows.
            log.exception("job %s failed", job.name)
            worked = 0
        done += worked
        job.next_run = time.monotonic() + (0 if worked else job.interval)
    return done


def run_forever(idle_sleep: float = 1.0, stop: threading.Event | None = None) -> None:
    """Loop until SIGTERM/SIGINT (or ``stop`` is set)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    log.info("worker started with jobs: %s", ", ".join(load_jobs()) or "(none)")
    started: list[Callable[[], object]] = []
    try:
        started = start_lifecycle()
        while not stop.is_set():
            if run_once() == 0:
                stop.wait(idle_sleep)
    finally:
        stop_lifecycle(started)
    log.info("worker stopped")


def start_lifecycle() -> list[Callable[[], object]]:
    """Run every registered ``start``; returns the ``stop`` of each that started."""
    load_jobs()
    started: list[Callable[[], object]] = []
    for start, finish in LIFECYCLE:
        try:
            start()
            started.append(finish)
        except Exception:  # e.g. no process can be spawned: the job works without it
            log.exception("could not start %s", getattr(start, "__name__", start))
    return started


def stop_lifecycle(started: list[Callable[[], object]]) -> None:
    for finish in reversed(started):
        finish()
