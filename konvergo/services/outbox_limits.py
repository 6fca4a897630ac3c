"""Outbox policy, failure classification (as data) and per-server session slots.

Classification works in three table lookups, most specific last:

1. :data:`CLASS_BY_EXCEPTION`: the transport's exception type gives the base class
   (temporary / permanent / authorization / configuration);
2. the Microsoft error catalogue, when it knows the reply, overrides the class and adds the fix
   (``554 5.2.0 SendAsDenied`` is a 5xx but a *configuration* problem: an admin must grant Send
   As; blind retries would get the mailbox barred, microsoft.md E-25/E-26);
3. :data:`THROTTLE_RULES`: a reply that says "slow down" (``432 4.3.2``, throttling texts)
   pauses the server instead of counting a failed attempt.

What each class then does to the row is :data:`OUTCOMES`, again a table.

Session slots: Exchange allows three concurrent SMTP sessions per mailbox (``432 4.3.2``
beyond). A session may only be opened while holding one of the server's ``max_sessions``
slots. On PostgreSQL a slot is a session-level advisory lock on a dedicated connection, shared
by every worker on every machine; on SQLite (one machine by design) it is an ``flock`` on a file
next to the database. Both vanish with the process that holds them, even after ``kill -9``, so a
dead worker never strands a slot and no lease has to expire first.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import re
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from konvergo.errors import (
    AuthorizationError,
    ConfigurationError,
    PermanentTransportError,
    TemporaryTransportError,
)
from konvergo.transports.smtp_errors import (
    SmtpAuthorizationError,
    SmtpConfigurationError,
    SmtpFailure,
    SmtpPermanentError,
    SmtpTemporaryError,
)

log = logging.getLogger("konvergo.outbox")

FailureClass = Literal["temporary", "permanent", "authorization", "configuration"]
#: Which rows a failure concerns: the one message, or every message of the server (a failure
#: before MAIL FROM says nothing about the message and would repeat for all of them).
Scope = Literal["message", "server"]


@dataclass
class OutboxPolicy:
    """Tunables of the queue; tests and the benchmark change them on :data:`POLICY`."""

    #: Rows one session claims per short transaction, at most.
    batch_size: int = 20
    #: ... and no more than it sends in about this many seconds at the server's pace: on a slow
    #: server a claim of 20 would keep rows waiting behind one session while the others have
    #: run out of work (the last batch sets how long the queue takes to empty).
    batch_seconds: float = 0.5
    #: How long a claim holds a row in ``sending``; renewed while the session works.
    lease_seconds: float = 120.0
    #: Temporary failures before a message is given up as failed (about 12 hours with the
    #: defaults below: 30 s doubling to the one-hour cap).
    max_attempts: int = 10
    backoff_base: float = 30.0
    backoff_cap: float = 3600.0
    #: Exchange counts messages per mailbox over a sliding minute.
    rate_window: float = 60.0
    #: Pause of a server after a throttling reply when the rule gives no duration.
    throttle_pause: float = 60.0
    #: SMTP socket timeout.
    smtp_timeout: float = 60.0
    #: A server gets one more session per this many due messages, up to ``max_sessions``
    #: (one claim's worth: a second connection pays for its TLS handshake and login as soon
    #: as there is a second batch to send).
    messages_per_session: int = 20
    #: Session threads one worker process runs at most (over all servers).
    max_threads: int = 32
    #: While sessions run, look for new due mail at most this often (seconds): new mail of a
    #: busy server gets its extra sessions this soon (one grouped query per scan).
    scan_interval: float = 0.2
    #: While sessions run, hold mail of deleted or archived servers and re-queue rows of dead
    #: sessions at most this often (seconds); always when idle.
    housekeeping_interval: float = 5.0


POLICY = OutboxPolicy()


def backoff_seconds(attempts: int, policy: OutboxPolicy | None = None) -> float:
    """Delay before retry number ``attempts`` + 1: exponential, capped, with "equal" jitter.

    Half the delay is fixed and half random, so many messages that failed together (a server
    restart) do not all come back in the same second.
    """
    p = policy or POLICY
    delay = min(p.backoff_cap, p.backoff_base * 2 ** max(0, attempts - 1))
    return delay / 2 + random.random() * delay / 2


# --- classification tables ---------------------------------------------------------------

#: First match wins, so the SMTP classes (which also inherit the generic ones) come first.
CLASS_BY_EXCEPTION: tuple[tuple[type[BaseException], FailureClass], ...] = (
    (SmtpAuthorizationError, "authorization"),
    (SmtpConfigurationError, "configuration"),
    (SmtpTemporaryError, "temporary"),
    (SmtpPermanentError, "permanent"),
    # Token store errors: the grant is revoked/expired (authorization), the app registration
    # is wrong (configuration), or Microsoft's token endpoint is unreachable (temporary).
    (AuthorizationError, "authorization"),
    (ConfigurationError, "configuration"),
    (TemporaryTransportError, "temporary"),
    (PermanentTransportError, "permanent"),
    (OSError, "temporary"),
)

#: Where in the dialogue a failure happened decides whether it is the message's or the
#: server's: nothing of the message has been said before MAIL FROM.
SCOPE_BY_STAGE: Mapping[str, Scope] = MappingProxyType(
    {
        "connect": "server",
        "starttls": "server",
        "auth": "server",
        "mail": "message",
        "rcpt": "message",
        "data": "message",
    }
)


@dataclass(frozen=True)
class ThrottleRule:
    """A reply that means "too fast": pause the server for ``pause`` seconds (None: policy)."""

    pattern: re.Pattern[str]
    pause: float | None = None


#: Matched against ``"<code> <text>"``. Exchange: 432 4.3.2 (concurrent sessions, E-27),
#: 5.2.25x "Sender throttled" (the mailbox is barred for a while, E-26); other providers use
#: 4.7.x/451 with "throttl"/"rate limit" texts. A plain 451 without such words is an ordinary
#: temporary failure.
THROTTLE_RULES: tuple[ThrottleRule, ...] = (
    ThrottleRule(re.compile(r"^432\b|\b4\.3\.2\b")),
    ThrottleRule(re.compile(r"\b5\.2\.25[1-5]\b.*\bthrottled\b", re.I), pause=900.0),
    ThrottleRule(
        re.compile(
            r"^4\d\d\b.*(throttl|rate.?limit|too many (messages|connections|sessions)|"
            r"sender thread limit|concurrent connections)",
            re.I,
        )
    ),
)


@dataclass(frozen=True)
class Outcome:
    """What a failure class does to the row."""

    state: str
    counts_attempt: bool
    backoff: bool


#: authorization → held: a token or password problem is fixed by reconnecting, and the mail is
#: fine; it must not burn attempts. configuration → held too, with the fix: the message itself
#: is fine and an admin's change (Send As right, host, CA) makes it sendable, so failing it
#: would make someone re-create mail that was never wrong. ``release_held`` re-queues both.
OUTCOMES: Mapping[FailureClass, Outcome] = MappingProxyType(
    {
        "temporary": Outcome("queued", counts_attempt=True, backoff=True),
        "permanent": Outcome("failed", counts_attempt=True, backoff=False),
        "authorization": Outcome("held", counts_attempt=False, backoff=False),
        "configuration": Outcome("held", counts_attempt=False, backoff=False),
    }
)


@dataclass(frozen=True)
class Verdict:
    """A classified failure: its class, scope, the server's words and the advice."""

    failure_class: FailureClass
    scope: Scope
    reply: str
    fix: str = ""
    throttle_pause: float | None = None  # set when the reply asks us to slow down

    @property
    def throttled(self) -> bool:
        return self.throttle_pause is not None


def _catalogue(reply: str) -> tuple[FailureClass, str] | None:
    """The catalogue's class and fix for an SMTP reply, when it knows the reply."""
    try:
        from konvergo.providers.microsoft.catalogue import explain
    except ImportError:  # pragma: no cover - the catalogue ships with the product
        return None
    found = explain(reply, surface="smtp")
    if found is None:
        return None
    return found.failure_class, found.entry.fix


def classify(exc: BaseException, policy: OutboxPolicy | None = None) -> Verdict:
    """Classify a sending failure through the tables above."""
    p = policy or POLICY
    failure_class: FailureClass = next(
        (cls for kind, cls in CLASS_BY_EXCEPTION if isinstance(exc, kind)), "temporary"
    )
    if isinstance(exc, SmtpFailure):
        scope = SCOPE_BY_STAGE.get(exc.stage, "message")
        reply = exc.reply
        text = str(exc)
    else:
        scope = "server"  # the token store failed before any SMTP command
        reply = ""
        text = str(exc) or type(exc).__name__
    fix = ""
    if reply and isinstance(exc, SmtpFailure) and exc.reply_code is not None:
        known = _catalogue(reply)
        if known is not None:
            failure_class, fix = known
    pause: float | None = None
    if reply:
        for rule in THROTTLE_RULES:
            if rule.pattern.search(reply):
                pause = rule.pause if rule.pause is not None else p.throttle_pause
                break
    return Verdict(failure_class, scope, text if text else reply, fix, pause)


# --- session slots -----------------------------------------------------------------------

#: Advisory-lock namespace ("KV") so our keys never collide with another application's.
_PG_NAMESPACE = 0x4B56
_MAX_SLOTS = 64


class _PgSlots:
    """Slots as ``pg_try_advisory_lock`` on one dedicated connection per process.

    A dedicated connection, because Django may close and reopen its own connections between
    jobs (``CONN_MAX_AGE``), which would silently drop the locks.
    """

    def __init__(self) -> None:
        self._conn: Any = None
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            from django.db import connections

            wrapper = connections["default"]
            raw = wrapper.get_new_connection(wrapper.get_connection_params())
            raw.autocommit = True
            self._conn = raw
        return self._conn

    def _call(self, function: str, server_id: int, slot: int) -> bool:
        key = server_id * _MAX_SLOTS + slot
        with self._lock:
            try:
                cursor = self._connection().execute(
                    f"SELECT {function}(%s, %s)", (_PG_NAMESPACE, key)
                )
                row = cursor.fetchone()
            except Exception:
                # The connection died: every lock it held is gone with it; start afresh.
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
                raise
        return bool(row and row[0])

    def try_acquire(self, server_id: int, slot: int) -> bool:
        return self._call("pg_try_advisory_lock", server_id, slot)

    def release(self, server_id: int, slot: int) -> None:
        with contextlib.suppress(Exception):
            self._call("pg_advisory_unlock", server_id, slot)


class _FileSlots:
    """Slots as ``flock`` on files beside the SQLite database (SQLite means one machine)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._fds: dict[tuple[int, int], int] = {}

    def try_acquire(self, server_id: int, slot: int) -> bool:
        self._dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._dir / f"smtp-{server_id}-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fds[(server_id, slot)] = fd
        return True

    def release(self, server_id: int, slot: int) -> None:
        fd = self._fds.pop((server_id, slot), None)
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _file_slot_dir() -> Path:
    from django.db import connections

    name = str(connections["default"].settings_dict["NAME"])
    if name.startswith("file:") or name == ":memory:" or "mode=memory" in name:
        # An in-memory database lives in this process only; so do its slots.
        return Path(tempfile.gettempdir()) / f"konvergo-slots-{os.getpid()}"
    path = Path(name)
    return path.parent / f".{path.name}.smtp-slots"


class SessionSlots:
    """At most ``max_sessions`` open sessions per server across every worker process.

    The process-local set matters on PostgreSQL: advisory locks are re-entrant within one
    connection, so two threads of one process would otherwise both "win" slot 0.
    """

    def __init__(self) -> None:
        from django.db import connections

        vendor = connections["default"].vendor
        self._backend: _PgSlots | _FileSlots = (
            _PgSlots() if vendor == "postgresql" else _FileSlots(_file_slot_dir())
        )
        self._held: set[tuple[int, int]] = set()
        self._lock = threading.Lock()

    def acquire(self, server_id: int, max_sessions: int) -> int | None:
        """Take a free slot of ``server_id`` and return its number, or None when all are taken."""
        for slot in range(max(1, min(max_sessions, _MAX_SLOTS))):
            with self._lock:
                if (server_id, slot) in self._held:
                    continue
                self._held.add((server_id, slot))
            try:
                won = self._backend.try_acquire(server_id, slot)
            except Exception:
                log.exception("could not take SMTP session slot %s/%s", server_id, slot)
                won = False
            if won:
                return slot
            with self._lock:
                self._held.discard((server_id, slot))
        return None

    def try_slot(self, server_id: int, slot: int) -> bool:
        """Take exactly ``slot`` of ``server_id`` if it is free (to check its holder is gone)."""
        with self._lock:
            if (server_id, slot) in self._held:
                return False
            self._held.add((server_id, slot))
        try:
            won = self._backend.try_acquire(server_id, slot)
        except Exception:
            log.exception("could not take SMTP session slot %s/%s", server_id, slot)
            won = False
        if not won:
            with self._lock:
                self._held.discard((server_id, slot))
        return won

    def release(self, server_id: int, slot: int) -> None:
        self._backend.release(server_id, slot)
        with self._lock:
            self._held.discard((server_id, slot))

    def held(self, server_id: int) -> int:
        """Slots of ``server_id`` this process holds (for deciding whether to start more)."""
        with self._lock:
            return sum(1 for sid, _ in self._held if sid == server_id)
