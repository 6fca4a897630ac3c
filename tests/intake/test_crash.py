"""kill -9 during ``konvergo fetch``: every message ends up stored exactly once.

The fetch runs in real subprocesses against their own database (a SQLite file, or a fresh
PostgreSQL database when the suite runs on PostgreSQL), because the test database of
pytest-django lives in a transaction other processes cannot see.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from konvergo.sandbox.imap import SandboxImap
from konvergo.sandbox.tls import SandboxTLS
from konvergo.store.models import Message
from tests.intake.conftest import MAILBOX, sized_messages

pytestmark = pytest.mark.dovecot

SETUP = """
from konvergo.store.models import IncomingServer
IncomingServer.objects.create(name="crash", host="127.0.0.1", port={port}, ssl=False,
    username="{user}", password="{password}", state="done")
"""
COUNT = """
from konvergo.store.models import Message, FolderState
ids = list(Message.objects.values_list("message_id", flat=True))
state = FolderState.objects.first()
print("COUNT", len(ids), len(set(ids)), state.last_uid if state else 0)
"""


@pytest.fixture
def process_env(tmp_path: Path, sandbox_tls: SandboxTLS) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONVERGO_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(KONVERGO_VAR_DIR=str(tmp_path), KONVERGO_CA_BUNDLE=str(sandbox_tls.ca_file))
    url = os.environ.get("KONVERGO_DATABASE_URL", "")
    dbname = ""
    if url.startswith("postgres"):
        import psycopg

        dbname = "konvergo_crash_" + secrets.token_hex(4)
        base = url.rsplit("/", 1)[0]
        with psycopg.connect(base + "/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {dbname}")
        env["KONVERGO_DATABASE_URL"] = f"{base}/{dbname}"
    yield env
    if dbname:
        import psycopg

        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


def _count(env: dict[str, str]) -> tuple[int, int, int]:
    out = _konvergo(env, "shell", "-c", COUNT).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("COUNT "))
    stored, distinct, last_uid = map(int, line.split()[1:])
    return stored, distinct, last_uid


def _stored_now(env: dict[str, str]) -> int:
    """Messages committed so far, read straight from the fetcher's database (cheap enough to
    poll while it runs, unlike a ``konvergo shell`` subprocess)."""
    table = Message._meta.db_table
    url = env.get("KONVERGO_DATABASE_URL", "")
    if url.startswith("postgres"):
        import psycopg

        with psycopg.connect(url) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    else:
        path = Path(env["KONVERGO_VAR_DIR"]) / "konvergo.sqlite3"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def _konvergo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "konvergo", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_kill_9_during_fetch_stores_every_message_exactly_once(
    process_env: dict[str, str], imap_server: SandboxImap
) -> None:
    """Killing ``konvergo fetch`` with SIGKILL four times mid-fetch loses and duplicates nothing;
    two fetchers started together never both fetch."""
    total = 3000
    imap_server.populate(MAILBOX, sized_messages(total, 2000))
    assert _konvergo(process_env, "migrate", "--no-input").returncode == 0
    setup = SETUP.format(
        port=imap_server.dovecot.port, user=MAILBOX, password=imap_server.dovecot.delegate_secret
    )
    assert _konvergo(process_env, "shell", "-c", setup).returncode == 0

    killed_mid_fetch = 0
    for round_ in range(4):
        before = _stored_now(process_env)
        proc = subprocess.Popen(
            [sys.executable, "-m", "konvergo", "fetch", "crash", "--quiet"],
            env=process_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        # Killed once this round has committed something, at a point that moves each round
        # (how fast the fetch runs does not decide whether a kill lands mid-fetch).
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if _stored_now(process_env) > before:
                break
            time.sleep(0.02)
        time.sleep(0.05 * round_)
        if proc.poll() is None:
            # The whole process group, parser processes included, as a power cut would.
            os.killpg(proc.pid, signal.SIGKILL)
            killed_mid_fetch += 1
        proc.wait(30)
        stored, _, _ = _count(process_env)
        if stored >= total:
            break

    first = subprocess.Popen(
        [sys.executable, "-m", "konvergo", "fetch", "crash", "--quiet"],
        env=process_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    second = _konvergo(process_env, "fetch", "crash", "--quiet")
    out, err = first.communicate(timeout=120)
    outcomes = [(first.returncode, out + err), (second.returncode, second.stdout + second.stderr)]

    stored, distinct, last_uid = _count(process_env)
    assert killed_mid_fetch >= 2
    assert (stored, distinct, last_uid) == (total, total, total), outcomes
    assert any(code == 0 for code, _ in outcomes), outcomes
    for code, text in outcomes:
        assert code == 0 or "Another worker is fetching" in text, text
