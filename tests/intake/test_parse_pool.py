"""Large messages: parsing moves to parser processes mid-fetch, with the same guarantees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from konvergo.sandbox.imap import SandboxImap
from konvergo.services import intake, intake_parse
from konvergo.services.intake_parse import ParserPool
from konvergo.store.models import FolderState, IncomingServer, Message, QuarantinedMessage
from tests.intake.conftest import MAILBOX, sized_messages


def test_large_messages_are_parsed_in_processes_and_stored_once_with_quarantine(
    password_server: IncomingServer, imap_server: SandboxImap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once batches prove large, the rest is parsed in a process pool; every message is
    stored once, an unparseable one is quarantined, and the high-water mark reaches the end."""
    # What counts as large, scaled down so a few small messages make a "large" fetch.
    monkeypatch.setattr(intake, "POOL_MESSAGE_BYTES", 1000)
    monkeypatch.setattr(intake, "POOL_BYTES", 10_000)
    pools: list[ParserPool] = []

    class CountedPool(ParserPool):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pools.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(intake, "ParserPool", CountedPool)
    imap_server.populate(MAILBOX, [*sized_messages(35, 2000), b"\r\n\r\nnot a message at all\r\n"])

    owner = intake.lease_owner_name()
    assert intake.acquire_lease(password_server.pk, owner)
    fetcher = intake.Fetcher(password_server, owner, batch_size=10)
    try:
        result = fetcher.run()
    finally:
        fetcher.close()

    assert len(pools) == 1  # the first batch was parsed here, the other three there
    assert result.stored == 35 and result.quarantined == 1
    assert Message.objects.count() == 35 and QuarantinedMessage.objects.count() == 1
    assert len(set(Message.objects.values_list("message_id", flat=True))) == 35
    assert FolderState.objects.get(server=password_server).last_uid == 36


@pytest.fixture
def shared_parser() -> Iterator[ParserPool]:
    pool = intake_parse.start_shared_parser()
    yield pool
    intake_parse.stop_shared_parser()


def _fetch(server: IncomingServer) -> intake.FetchResult:
    owner = intake.lease_owner_name()
    assert intake.acquire_lease(server.pk, owner)
    fetcher = intake.Fetcher(server, owner, batch_size=10)
    try:
        return fetcher.run()
    finally:
        fetcher.close()


def test_a_worker_parses_every_batch_in_its_parser_process(
    password_server: IncomingServer,
    imap_server: SandboxImap,
    shared_parser: ParserPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the worker's parser running, no message is parsed in the fetching process."""
    in_process: list[bytes] = []
    monkeypatch.setattr(intake, "parse_fetched", lambda m: in_process.append(m.raw))
    imap_server.populate(MAILBOX, [*sized_messages(25, 2000), b"\r\n\r\nnot a message\r\n"])
    result = _fetch(password_server)
    assert (result.stored, result.quarantined) == (25, 1)
    assert in_process == []
    assert len(set(Message.objects.values_list("message_id", flat=True))) == 25


def test_a_dead_parser_process_loses_no_mail_and_is_started_again(
    password_server: IncomingServer, imap_server: SandboxImap, shared_parser: ParserPool
) -> None:
    """Killing the parser process (the OOM killer) before a fetch: every message is still
    parsed and stored once, and the worker gets a new parser process."""
    [pid] = shared_parser.pids()
    os.kill(pid, signal.SIGKILL)
    imap_server.populate(MAILBOX, sized_messages(25, 2000))
    result = _fetch(password_server)
    assert result.stored == 25 and Message.objects.count() == 25
    assert FolderState.objects.get(server=password_server).last_uid == 25
    replacement = intake_parse.shared_parser()
    assert replacement is not None and not replacement.broken
    assert replacement.pids() and pid not in replacement.pids()


def test_the_parser_process_exits_when_its_worker_is_killed(tmp_path: Path) -> None:
    """kill -9 of a worker leaves no parser process behind waiting for work forever."""
    script = tmp_path / "holder.py"
    script.write_text(
        "import sys, time\n"
        "from konvergo.services import intake_parse\n"
        "if __name__ == '__main__':\n"
        "    pool = intake_parse.start_shared_parser()\n"
        "    print(*pool.pids(), flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert holder.stdout is not None
        child = int(holder.stdout.readline())
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 20
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_parser_that_cannot_be_started_again_leaves_parsing_in_process(
    password_server: IncomingServer,
    imap_server: SandboxImap,
    shared_parser: ParserPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the parser process died and no new one starts, fetches still store every message."""
    [pid] = shared_parser.pids()
    os.kill(pid, signal.SIGKILL)

    def cannot_start(self: ParserPool) -> None:
        raise OSError("no more processes")

    monkeypatch.setattr(ParserPool, "warm_up", cannot_start)
    imap_server.populate(MAILBOX, sized_messages(25, 2000))
    assert _fetch(password_server).stored == 25
    imap_server.populate(MAILBOX, sized_messages(5, 2000))
    assert _fetch(password_server).stored == 5
    assert intake_parse.shared_parser() is None
    assert Message.objects.count() == 30
