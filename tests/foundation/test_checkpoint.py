"""SQLite's log is checkpointed in the writers' pauses by the worker's thread."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from konvergo.store import checkpoint
from konvergo.store.checkpoint import Checkpointer


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    path = tmp_path / "wal.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # only the thread checkpoints here
    conn.execute("CREATE TABLE t (data BLOB)")
    yield path, conn
    conn.close()


def _write(conn: sqlite3.Connection, rows: int) -> None:
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?)", [(os.urandom(4000),) for _ in range(rows)])
    conn.execute("COMMIT")


def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


def test_the_log_is_copied_into_the_database_once_the_writers_pause(
    database: tuple[Path, sqlite3.Connection],
) -> None:
    """After a burst of writes the thread checkpoints: the database file holds the rows and
    the next write starts the log over instead of growing it."""
    path, conn = database
    before = path.stat().st_size
    _write(conn, 500)
    wal = Path(f"{path}-wal").stat().st_size
    ckpt = Checkpointer(path, idle=0.05).start()
    try:
        _until(lambda: ckpt.checkpoints >= 1)
        assert ckpt.checkpoints >= 1
        assert path.stat().st_size >= before + 500 * 4000
        _write(conn, 5)  # starts the log from its beginning: the file does not grow
        assert Path(f"{path}-wal").stat().st_size <= wal
    finally:
        ckpt.stop()


def test_an_idle_log_is_not_checkpointed_again(database: tuple[Path, sqlite3.Connection]) -> None:
    """Once everything is copied the thread leaves the database alone until it is written."""
    path, conn = database
    _write(conn, 50)
    ckpt = Checkpointer(path, idle=0.05).start()
    try:
        _until(lambda: ckpt.checkpoints >= 1)
        time.sleep(0.5)
        assert ckpt.checkpoints == 1
        _write(conn, 50)
        _until(lambda: ckpt.checkpoints >= 2)
        assert ckpt.checkpoints == 2
    finally:
        ckpt.stop()


def test_a_large_log_is_checkpointed_while_the_writers_keep_writing(
    database: tuple[Path, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past BUSY_BYTES the thread does not wait for a pause (that a long burst may never
    leave), so no commit has to reach the automatic threshold and checkpoint itself."""
    path, conn = database
    monkeypatch.setattr(checkpoint, "BUSY_BYTES", 200_000)
    ckpt = Checkpointer(path, idle=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while ckpt.checkpoints == 0 and time.monotonic() < deadline:
            _write(conn, 20)  # never pausing for as long as the thread waits for a pause
        assert ckpt.checkpoints >= 1
    finally:
        ckpt.stop()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="a setting of SQLite connections")
def test_commits_leave_checkpoints_of_a_small_log_to_the_thread(db: None) -> None:
    """Connections checkpoint by themselves only past 64 MB of log; the worker starts the
    thread for the rest, once."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        assert cursor.fetchone()[0] == checkpoint.AUTOCHECKPOINT_PAGES
    first = checkpoint.start()
    try:
        assert first is not None and checkpoint.start() is first
    finally:
        checkpoint.stop()
