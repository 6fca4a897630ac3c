"""Real worker processes (`konvergo worker`) on the shared test database: kills, caps, races."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from konvergo.config import get_config
from konvergo.services import outbox
from konvergo.store.models import OutboxItem
from tests.outbox.sink import Sink

pytestmark = pytest.mark.django_db(transaction=True)

KONVERGO = str(Path(sys.executable).with_name("konvergo"))


def database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "postgresql":
        host, port = settings["HOST"] or "127.0.0.1", settings["PORT"] or 5432
        return f"postgresql://{settings['USER']}@{host}:{port}/{settings['NAME']}"
    return f"sqlite:///{Path(settings['NAME']).resolve()}"


@pytest.fixture
def start_worker(cafile: Path, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `konvergo worker` processes on this test's database (killed after the test).

    With ``max_threads`` the small runner (same loop, fewer session threads) is used instead.
    """
    started: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "KONVERGO_DATABASE_URL": database_url(),
        "KONVERGO_VAR_DIR": str(get_config().var_dir),
        "KONVERGO_CA_BUNDLE": str(cafile),
        "KONVERGO_WORKER_INTERVAL": "0.1",
    }

    def start(max_threads: int | None = None) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"worker-{len(started)}.log", "wb")  # noqa: SIM115
        command = [KONVERGO, "worker"]
        if max_threads is not None:
            command = [sys.executable, "-m", "tests.outbox.run_worker", str(max_threads)]
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def enqueue(count: int, senders: list[str]) -> None:
    outbox.enqueue_many(
        {
            "from_": senders[i % len(senders)],
            "to": "c@customer.test",
            "subject": f"m{i}",
            "text": "x" * 2000,
        }
        for i in range(count)
    )


def sent() -> int:
    return OutboxItem.objects.filter(state="sent").count()


def duplicates(sink: Sink) -> int:
    return sum(n - 1 for n in sink.message_ids().values())


def test_kill_9_in_the_middle_of_2000_sends_loses_nothing_and_duplicates_at_most_one_per_kill(
    start_sink, make_server, example_params, start_worker
) -> None:
    """Two SIGKILLs mid-run: all 2,000 arrive, with at most one duplicate per killed session."""
    sink: Sink = start_sink()
    make_server("Notifications", "notifications@example.com", sink, max_sessions=1)
    enqueue(2000, ["John Doe <john@example.com>"])

    kills = 0
    for threshold in (400, 1100):
        worker = start_worker()
        wait_until(lambda t=threshold: len(sink.messages) >= t, 60, f"{threshold} deliveries")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        kills += 1
    start_worker()
    wait_until(lambda: sent() == 2000, 90, "all 2,000 rows sent")

    ids = sink.message_ids()
    assert len(ids) == 2000
    assert set(ids) == set(OutboxItem.objects.values_list("message_id", flat=True))
    assert duplicates(sink) <= kills


def test_kill_9_with_three_sessions_duplicates_at_most_one_per_open_session(
    start_sink, make_server, example_params, start_worker
) -> None:
    """Each session records a message's outcome before its next DATA: one kill of a worker with
    three sessions re-sends at most three messages (one per session), and loses none."""
    sink: Sink = start_sink()
    make_server("Notifications", "notifications@example.com", sink, max_sessions=3)
    enqueue(900, ["John Doe <john@example.com>"])
    worker = start_worker()
    wait_until(lambda: len(sink.messages) >= 300, 60, "300 deliveries")
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    start_worker()
    wait_until(lambda: sent() == 900, 90, "all 900 rows sent")
    assert len(sink.message_ids()) == 900
    assert sink.state.max_current <= 3
    assert duplicates(sink) <= 3


def test_session_cap_holds_across_worker_processes(
    start_sink, make_server, example_params, start_worker
) -> None:
    """Two workers, max_sessions=2: the server never sees more than two sessions at once."""
    sink: Sink = start_sink(data_delay=0.01)
    make_server("Notifications", "notifications@example.com", sink, max_sessions=2)
    enqueue(300, ["John Doe <john@example.com>"])
    start_worker()
    start_worker()
    wait_until(lambda: sent() == 300, 60, "300 rows sent")
    assert sink.state.max_current == 2
    assert len(sink.message_ids()) == 300 and duplicates(sink) == 0


@pytest.mark.skipif(
    not os.environ.get("KONVERGO_DATABASE_URL", "").startswith("postgres"),
    reason="needs PostgreSQL (KONVERGO_DATABASE_URL=postgresql://...): SKIP LOCKED claims",
)
def test_two_workers_on_postgresql_never_send_a_message_twice(
    start_sink, make_server, example_params, start_worker
) -> None:
    """Two worker processes claim with SKIP LOCKED: 1,500 messages, no duplicate, none lost."""
    sink: Sink = start_sink()
    make_server("John", "john@example.com", sink, max_sessions=3)
    make_server("Notifications", "notifications@example.com", sink, max_sessions=3)
    enqueue(1500, ["John Doe <john@example.com>", "Bob <bob@example.com>"])
    # Three session threads each: neither worker can take all six slots alone.
    start_worker(max_threads=3)
    start_worker(max_threads=3)
    wait_until(lambda: sent() == 1500, 90, "1,500 rows sent")
    assert len(sink.message_ids()) == 1500 and duplicates(sink) == 0
    assert sink.state.max_current <= 6
    claimers = {c.split("/")[0] for c in OutboxItem.objects.values_list("claimed_by", flat=True)}
    assert len(claimers) == 2  # both workers took part
