"""SQLite WAL checkpoints while the writers rest, not inside their commits.

In WAL mode SQLite copies the log back into the database file (a checkpoint) inside the
commit that takes the log past ``wal_autocheckpoint`` pages, and with
``synchronous=NORMAL`` that commit also waits for two fsyncs. Intake writes about 20 KB a
message: with SQLite's default threshold (1,000 pages) one commit in every ~200 messages
copied and synced 4 MB, which was half the time storing a batch took (measured: 0.24 ms a
message with those checkpoints, 0.13 ms without).

So every connection waits until the log holds ``AUTOCHECKPOINT_PAGES`` (64 MB at 4 KB pages;
set in the settings' ``init_command``), and ``konvergo worker`` and ``konvergo fetch`` run a
:class:`Checkpointer`: a thread with its own connection that runs a passive checkpoint once
the log has stopped growing for ``IDLE`` seconds, or while it grows once its file holds
``BUSY_BYTES``. A burst of mail is stored at full speed and its checkpoint happens in the
pause after it; a longer burst is checkpointed beside the writers, never inside a commit (a
commit that checkpointed 64 MB held SQLite's write lock for 265 ms, measured, and 30 sending
sessions waited behind it). A passive checkpoint never blocks readers or writers, and the
first write after a complete one starts the log from its beginning again
(``journal_size_limit`` then trims the file to 16 MB), so an idle database keeps a small log.
Processes without the thread (the web process) write little, and the threshold bounds the
log for them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("konvergo.store")

#: Pages the log may hold before a commit checkpoints it itself (64 MB at 4 KB pages).
AUTOCHECKPOINT_PAGES = 16384
#: Bytes the log file is trimmed to when it starts over; below BUSY_BYTES, so that a file
#: grown by one long burst does not count as busy for ever after.
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024
#: Seconds the log must have stopped growing before the thread checkpoints it.
IDLE = 0.5
#: A log file this large is checkpointed by the thread even while writers are busy, so no
#: commit reaches AUTOCHECKPOINT_PAGES and stalls every writer behind its checkpoint.
BUSY_BYTES = 48 * 1024 * 1024


class Checkpointer:
    """Checkpoints the WAL of the SQLite database at ``path`` when its writers rest."""

    def __init__(self, path: str | os.PathLike[str], idle: float = IDLE) -> None:
        self.path = Path(path)
        self.idle = idle
        #: Checkpoints run so far (tests and logs).
        self.checkpoints = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)

    def start(self) -> Checkpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)

    def _wal_size(self) -> int:
        try:
            return os.stat(f"{self.path}-wal").st_size
        except OSError:  # not there (yet), or unreadable: no reason to hurry
            return 0

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("WAL checkpoints are left to the writers' commits: %s", exc)
            return
        # data_version changes when another connection commits: it tells whether the writers
        # wrote since the last look (busy) or since the last complete checkpoint.
        seen: int | None = None
        done: int | None = None
        try:
            while not self._stop.wait(self.idle):
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    busy_writers, seen = version != seen, version
                    if version == done or (busy_writers and self._wal_size() < BUSY_BYTES):
                        continue
                    checkpoint = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # locked for longer than the timeout: next round
                    log.info("WAL checkpoint postponed: %s", exc)
                    continue
                busy, frames, copied = checkpoint
                self.checkpoints += 1
                # Incomplete (a reader holds an old snapshot): try again after the next pause.
                done = version if not busy and frames == copied else None
        finally:
            conn.close()


_running: Checkpointer | None = None
_lock = threading.Lock()


def start() -> Checkpointer | None:
    """Start the checkpoint thread of the default database, when it is SQLite (once)."""
    global _running
    from django.db import connection

    if connection.vendor != "sqlite":
        return None
    with _lock:
        if _running is None:
            _running = Checkpointer(connection.settings_dict["NAME"]).start()
        return _running


def stop() -> None:
    """Stop the thread :func:`start` started, if any."""
    global _running
    with _lock:
        running, _running = _running, None
    if running is not None:
        running.stop()
