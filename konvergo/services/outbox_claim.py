"""Claiming queue rows and recording their outcomes: short transactions only.

A claim moves due rows of one server to ``sending`` with ``claimed_by`` and ``lease_until`` in
one transaction (on PostgreSQL, for a server without a per-minute limit, in one statement), and
commits before any SMTP command: no database lock is held while a server is talked to.
PostgreSQL workers skip rows another worker has locked (``FOR UPDATE SKIP LOCKED``); SQLite has
a single writer (IMMEDIATE transactions), which serialises claims.

A row still ``sending`` after its lease ran out belongs to a dead worker: the worker's
housekeeping puts it back in the queue (:func:`requeue_expired`; its possibly-sent message is
re-sent: at most one per dead session, the one in flight). Claims themselves only look at
queued rows, in the order of the ``outbox_claim`` index, so a claim reads the rows it takes
and nothing else, however much sent history the server has.

Each outcome is committed on its own as soon as the server has answered, so a crash never
loses more than the message in flight. Every outcome update is conditional on ``claimed_by``:
a worker whose lease was taken over does not overwrite the new owner's work.

The per-message statements (the claim, :func:`mark_sent`) are hand-written SQL on the DB-API
connection: they run thousands of times a second, and the ORM's query building and model
instantiation cost more CPU than the statements themselves. On PostgreSQL they are prepared
once per connection (:func:`pg_cursor`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, F, Min, Q, QuerySet
from django.utils import timezone

from konvergo.services.outbox_limits import OUTCOMES, POLICY, OutboxPolicy, Verdict, backoff_seconds
from konvergo.store.dbvalues import pg_cursor
from konvergo.store.models import OutboxBody, OutboxItem, OutgoingServer

State = OutboxItem.State

_sqlite_writes = threading.Lock()


@contextlib.contextmanager
def _serialised(pg: bool | None = None) -> Iterator[None]:
    """On SQLite, one writing thread per process at a time.

    SQLite allows one writer; threads of one process that collide would otherwise wait in
    SQLite's busy handler, which sleeps in steps of milliseconds: with many sessions that idle
    time, not the writes, would bound the throughput. A lock hands the turn over at once.
    """
    if pg is None:
        pg = connection.vendor != "sqlite"
    if not pg:
        with _sqlite_writes:
            yield
    else:
        yield


@dataclass(frozen=True)
class Claimed:
    """What a session needs to submit one message: no ORM object, just the bytes."""

    id: int
    envelope_from: str
    recipients: list[str]
    raw: bytes
    attempts: int
    message_id: str


@dataclass(frozen=True)
class ClaimResult:
    """The claimed rows, and when the server may take more if its rate limit was reached."""

    items: list[Claimed]
    wait_until: dt.datetime | None = None


def _due(now: dt.datetime) -> Q:
    return Q(state=State.QUEUED, next_attempt_at__lte=now)


_TABLE = OutboxItem._meta.db_table


def due_servers(now: dt.datetime | None = None) -> dict[int, int]:
    """Servers with mail queued and due, and how much."""
    now = now or timezone.now()
    rows = (
        OutboxItem.objects.filter(_due(now), server__isnull=False)
        .values("server_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    due = {row["server_id"]: row["n"] for row in rows}
    if due:
        paused = OutgoingServer.objects.filter(pk__in=due, throttled_until__gt=now).values_list(
            "pk", flat=True
        )
        for pk in paused:
            due.pop(pk, None)
    return due


def _rate_budget(
    server_id: int, per_minute: int, now: dt.datetime, policy: OutboxPolicy
) -> tuple[int, dt.datetime | None]:
    """How many more messages the server may take now under its sliding-window limit.

    Messages sent in the window plus those being sent (claimed but not answered) count, so the
    budget holds across every worker: claims of one server are serialised (row lock on
    PostgreSQL, the single writer on SQLite). The ``outbox_rate`` index (server, state,
    sent_at) answers the window query.
    """
    if per_minute <= 0:  # 0 means "no limit" (a local relay)
        return 1 << 30, None
    start = now - dt.timedelta(seconds=policy.rate_window)
    sent = OutboxItem.objects.filter(server_id=server_id, state=State.SENT, sent_at__gt=start)
    in_flight = OutboxItem.objects.filter(
        state=State.SENDING, server_id=server_id, lease_until__gte=now
    ).count()
    stats = sent.aggregate(n=Count("id"), oldest=Min("sent_at"))
    budget = per_minute - stats["n"] - in_flight
    if budget > 0:
        return budget, None
    oldest = stats["oldest"]
    wait = oldest + dt.timedelta(seconds=policy.rate_window) if oldest else now
    return 0, wait


# One statement claims the rows and returns what the session needs; a second reads their
# bytes. No model instances. Oldest due first, in the ``outbox_claim`` index's own order
# (server, state, next_attempt_at, then id), so no sort and no visit of rows not taken.
_CLAIM_SQL = (
    f"UPDATE {_TABLE} SET "  # noqa: S608  (our own table name; values are parameters)
    "state = %s, claimed_by = %s, lease_until = %s "
    f"WHERE id IN (SELECT id FROM {_TABLE} WHERE server_id = %s AND state = %s "
    "AND next_attempt_at <= %s ORDER BY next_attempt_at, id LIMIT %s{lock}) "
    "RETURNING id, envelope_from, recipients, attempts, message_id"
)
_BODIES_SQL = f"SELECT item_id, raw FROM {OutboxBody._meta.db_table} WHERE item_id IN ({{}})"  # noqa: S608
# PostgreSQL: the claim and the bytes in one statement (a data-modifying CTE), one round trip.
_CLAIM_PG_SQL = (
    f"WITH claimed AS ({_CLAIM_SQL.format(lock=' FOR UPDATE SKIP LOCKED')}) "  # noqa: S608
    "SELECT claimed.id, envelope_from, recipients, attempts, message_id, body.raw "
    f"FROM claimed LEFT JOIN {OutboxBody._meta.db_table} body ON body.item_id = claimed.id"
)
_SERVER_SQL = (
    "SELECT messages_per_minute, throttled_until, active "  # noqa: S608
    f"FROM {OutgoingServer._meta.db_table} WHERE id = %s"
)


class _Server(NamedTuple):
    per_minute: int
    throttled_until: dt.datetime | None
    active: bool


# How many of a server's rows are due, counted no further than a limit (the outbox_claim index).
_DUE_SQL = (
    f"SELECT COUNT(*) FROM (SELECT 1 FROM {_TABLE} WHERE server_id = %s AND state = %s "  # noqa: S608
    "AND next_attempt_at <= %s LIMIT %s) due"
)


def _claim_rows(
    db: BaseDatabaseWrapper,
    server_id: int,
    worker: str,
    count: int,
    now: dt.datetime,
    lease_until: dt.datetime,
) -> list[Claimed]:
    if db.vendor == "postgresql":
        pg_params = [State.SENDING.value, worker, lease_until, server_id, State.QUEUED.value, now]
        with db.wrap_database_errors, pg_cursor(db) as cursor:
            cursor.execute(_CLAIM_PG_SQL, [*pg_params, count], prepare=True)
            fetched = cursor.fetchall()
        rows = [row[:5] for row in fetched]
        bodies = {row[0]: bytes(row[5]) for row in fetched if row[5] is not None}
    else:
        ops = db.ops
        at, until = ops.adapt_datetimefield_value(now), ops.adapt_datetimefield_value(lease_until)
        params = [State.SENDING.value, worker, until, server_id, State.QUEUED.value, at, count]
        with db.cursor() as cursor:
            cursor.execute(_CLAIM_SQL.format(lock=""), params)
            rows = cursor.fetchall()
            if not rows:
                return []
            cursor.execute(_BODIES_SQL.format(", ".join(["%s"] * len(rows))), [r[0] for r in rows])
            bodies = {pk: raw if isinstance(raw, bytes) else bytes(raw) for pk, raw in cursor}
    if not rows:
        return []
    missing = [row[0] for row in rows if row[0] not in bodies]
    if missing:
        # A row saved without its message (no caller of ours does): fail it visibly rather
        # than let it block its server's queue.
        OutboxItem.objects.filter(pk__in=missing).update(
            state=State.FAILED,
            failure_class=OutboxItem.FailureClass.PERMANENT,
            last_reply="This mail has no message content stored; there is nothing to send.",
            last_fix="Queue the mail again from the program or page that wrote it.",
            lease_until=None,
        )
        rows = [row for row in rows if row[0] in bodies]
    rows.sort(key=lambda row: row[0])  # RETURNING gives no order; send oldest first
    return [
        Claimed(
            pk,
            env,
            json.loads(rcpts) if isinstance(rcpts, str | bytes) else list(rcpts),
            bodies[pk],
            attempts,
            mid,
        )
        for pk, env, rcpts, attempts, mid in rows
    ]


def claim(
    server_id: int,
    worker: str,
    limit: int,
    policy: OutboxPolicy | None = None,
    *,
    sessions: int = 1,
) -> ClaimResult:
    """Move up to ``limit`` due rows of ``server_id`` to ``sending`` for ``worker``.

    ``sessions`` is how many sessions of this server the caller runs: a claim takes no more
    than one session's share of what is due (see :func:`_fair_share`).

    On PostgreSQL a server without a per-minute limit has nothing to count: one statement
    (a claim with SKIP LOCKED) takes its rows, and claims of its sessions do not wait for
    each other. With a limit, the budget and the claim share one transaction holding the
    server row's lock, so the budget holds across every worker. On SQLite every claim is one
    short IMMEDIATE transaction in the single writer's turn, which serialises claims anyway.
    """
    p = policy or POLICY
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor == "postgresql":
        server = _server_row(db, server_id, lock=False)
        if server is None or server.per_minute <= 0:
            return _claim_for(db, server, server_id, worker, limit, sessions, p)
        with transaction.atomic():
            server = _server_row(db, server_id, lock=True)
            return _claim_for(db, server, server_id, worker, limit, sessions, p)
    with _serialised(False), transaction.atomic():
        server = _server_row(db, server_id, lock=False)
        return _claim_for(db, server, server_id, worker, limit, sessions, p)


def _claim_for(
    db: BaseDatabaseWrapper,
    server: _Server | None,
    server_id: int,
    worker: str,
    limit: int,
    sessions: int,
    policy: OutboxPolicy,
) -> ClaimResult:
    now = timezone.now()
    if server is None or not server.active:
        return ClaimResult([])
    if server.throttled_until and server.throttled_until > now:
        return ClaimResult([], server.throttled_until)
    budget, wait = _rate_budget(server_id, server.per_minute, now, policy)
    count = min(limit, budget)
    if count <= 0:
        return ClaimResult([], wait)
    if count > 1 and sessions > 1:
        count = _fair_share(db, server_id, count, sessions, now)
    lease_until = now + dt.timedelta(seconds=policy.lease_seconds)
    return ClaimResult(_claim_rows(db, server_id, worker, count, now, lease_until), wait)


def _fair_share(
    db: BaseDatabaseWrapper, server_id: int, count: int, sessions: int, now: dt.datetime
) -> int:
    """At most ``count`` rows, and no more than one session's share of what is due.

    When little is left, a session that took a whole batch would still be sending it alone
    while the server's other sessions have nothing left: the queue takes as long to empty as
    that last batch. Shares keep a server's sessions finishing together.
    """
    cap = count * sessions
    at = db.ops.adapt_datetimefield_value(now)
    with db.cursor() as cursor:
        cursor.execute(_DUE_SQL, [server_id, State.QUEUED.value, at, cap])
        row = cursor.fetchone()
    due = int(row[0]) if row else 0
    return max(1, min(count, -(-due // sessions)))


def _server_row(db: BaseDatabaseWrapper, server_id: int, *, lock: bool) -> _Server | None:
    """The server's rate limit, pause and state; its row locked if asked (PostgreSQL)."""
    if db.vendor == "postgresql":
        with db.wrap_database_errors, pg_cursor(db) as cursor:
            # NO KEY: mail being queued for the server (a foreign key to it) need not wait.
            lock_clause = " FOR NO KEY UPDATE" if lock else ""
            cursor.execute(_SERVER_SQL + lock_clause, [server_id], prepare=True)
            found = cursor.fetchone()
    else:
        with db.cursor() as cursor:
            cursor.execute(_SERVER_SQL, [server_id])
            found = cursor.fetchone()
    if found is None:
        return None
    per_minute, throttled_until, active = found
    if throttled_until is not None and throttled_until.tzinfo is None:
        # SQLite's converter gives the stored UTC time naive (USE_TZ); the ORM would add UTC.
        throttled_until = throttled_until.replace(tzinfo=dt.UTC)
    return _Server(int(per_minute), throttled_until, bool(active))


def reclaim_slot(server_id: int, slot: int, policy: OutboxPolicy | None = None) -> int:
    """Re-queue rows left ``sending`` by the previous holder of a session slot.

    Called right after taking the slot: slots are exclusive across workers and vanish with the
    process that held them, so whoever had this slot before is gone (or finished, and then it
    left no ``sending`` rows). Its in-flight row is re-queued at once instead of waiting for the
    lease.
    """
    rows = OutboxItem.objects.filter(
        server_id=server_id, state=State.SENDING, claimed_by__endswith=slot_suffix(server_id, slot)
    )
    return _requeue_lost(rows, policy)


def requeue_expired(policy: OutboxPolicy | None = None) -> int:
    """Re-queue rows whose lease ran out: their worker died, or hangs, mid-send.

    A worker that is only slow renews its leases; if it comes back after all, its outcome
    update finds the row no longer its own and changes nothing.
    """
    rows = OutboxItem.objects.filter(state=State.SENDING, lease_until__lt=timezone.now())
    return _requeue_lost(rows, policy)


def _requeue_lost(rows: QuerySet[OutboxItem], policy: OutboxPolicy | None) -> int:
    """Put ``rows`` (``sending``, their worker gone) back in the queue.

    A session sends its rows in id order and records each outcome before the next final dot,
    so of the rows it left only its first can have been on the wire (sent but not recorded,
    or being sent): that row's attempt counts, because the message may be what killed the
    worker, and after ``max_attempts`` it fails instead of taking down every worker in turn.
    The session's other rows were never tried and go back as they were.
    """
    p = policy or POLICY
    now = timezone.now()
    first = list(
        rows.values("claimed_by").annotate(first=Min("id")).values_list("first", flat=True)
    )
    if not first:
        # The usual case (every session start): a read, which never waits for SQLite's writer.
        return 0
    with _serialised():
        return _requeue(rows, first, now, p)


def _requeue(
    rows: QuerySet[OutboxItem], first: list[int], now: dt.datetime, p: OutboxPolicy
) -> int:
    untried = rows.exclude(pk__in=first).update(
        state=State.QUEUED, next_attempt_at=now, lease_until=None
    )
    tried = rows.filter(pk__in=first)
    requeued = tried.filter(attempts__lt=p.max_attempts - 1).update(
        state=State.QUEUED, attempts=F("attempts") + 1, next_attempt_at=now, lease_until=None
    )
    failed = tried.update(
        state=State.FAILED,
        attempts=F("attempts") + 1,
        failure_class=OutboxItem.FailureClass.TEMPORARY,
        last_reply=(
            f"Gave up after {p.max_attempts} attempts; the last one ended with the worker "
            "stopping while this message was being sent: the message may be what stops it."
        ),
        last_fix=(
            "Look at the worker's log for the crash at this message's sending time; Retry "
            "once it is fixed. The recipient may already have one copy."
        ),
        lease_until=None,
    )
    return int(untried + requeued + failed)


def sending_slots() -> set[tuple[int, int]]:
    """The (server, slot) pairs that rows in ``sending`` claim to be sent by."""
    pairs: set[tuple[int, int]] = set()
    rows = (
        OutboxItem.objects.filter(state=State.SENDING, server__isnull=False)
        .values_list("server_id", "claimed_by")
        .distinct()
    )
    for server_id, claimed_by in rows:
        _, _, suffix = claimed_by.rpartition("/")
        sid, _, slot = suffix.partition(".")
        if sid == str(server_id) and slot.isdigit():
            pairs.add((server_id, int(slot)))
    return pairs


def slot_suffix(server_id: int, slot: int) -> str:
    """The end of ``claimed_by`` for a session holding ``slot`` of ``server_id``."""
    return f"/{server_id}.{slot}"


def renew(ids: list[int], worker: str, policy: OutboxPolicy | None = None) -> None:
    """Extend the lease of rows this worker still holds (a long batch on a slow server)."""
    p = policy or POLICY
    if ids:
        with _serialised():
            OutboxItem.objects.filter(pk__in=ids, state=State.SENDING, claimed_by=worker).update(
                lease_until=timezone.now() + dt.timedelta(seconds=p.lease_seconds)
            )


_MARK_SENT_SQL = (
    f"UPDATE {_TABLE} SET state = %s, sent_at = %s, "  # noqa: S608  (our own table name)
    "attempts = attempts + 1, failure_class = '', last_reply = %s, last_fix = '', "
    "lease_until = NULL WHERE id = %s AND state = %s AND claimed_by = %s"
)

# PostgreSQL: this one transaction commits without waiting for its WAL flush (set_config with
# is_local=true lasts until the end of the statement's own implicit transaction, and the
# setting is read when that transaction commits). Killing the worker loses nothing that was
# committed; only a crash of the database server itself could forget the last few hundred
# milliseconds of outcomes, and those rows then go back to "sending" and are re-sent when
# their lease or slot is reclaimed: a duplicate, never a lost mail. It saves the WAL fsync
# (about 2 ms) per message; claims and every other write keep synchronous commits.
_MARK_SENT_SQL_PG = (
    f"WITH sync_off AS (SELECT set_config('synchronous_commit', 'off', true)) "  # noqa: S608
    f"UPDATE {_TABLE} SET state = %s, sent_at = %s, "
    "attempts = attempts + 1, failure_class = '', last_reply = %s, last_fix = '', "
    "lease_until = NULL FROM sync_off WHERE id = %s AND state = %s AND claimed_by = %s"
)


_MARK_SENT_SQLITE = _MARK_SENT_SQL.replace("%s", "?")


def mark_sent(item_id: int, worker: str, reply: str) -> bool:
    """Record an accepted message (its own commit); False if the row was taken over.

    One hand-written UPDATE: this runs once per message, and the ORM's query building costs as
    much CPU as the statement itself. The send time goes to ``sent_at``, which the rate window
    counts.
    """
    # ``connection`` is a proxy that looks the thread's connection up on every attribute
    # access; once is enough here.
    db = connections[DEFAULT_DB_ALIAS]
    pg = db.vendor == "postgresql"
    now = db.ops.adapt_datetimefield_value(timezone.now())
    params = (State.SENT.value, now, reply, item_id, State.SENDING.value, worker)
    sql = _MARK_SENT_SQLITE
    if pg:
        # Inside a caller's transaction (inline sessions in tests) the setting would apply to
        # the caller's whole transaction: keep the plain statement there.
        sql = _MARK_SENT_SQL if db.in_atomic_block else _MARK_SENT_SQL_PG
    db.ensure_connection()
    # The DB-API cursor itself: Django's wrapper (placeholder rewriting, error translation,
    # debug bookkeeping) costs more than this one-row UPDATE on SQLite.
    with _serialised(pg), db.wrap_database_errors:
        if pg:
            with pg_cursor(db) as pg_cur:
                pg_cur.execute(sql, params, prepare=True)
                return bool(pg_cur.rowcount == 1)
        cursor = db.connection.cursor()
        try:
            cursor.execute(sql, params)
            return bool(cursor.rowcount == 1)
        finally:
            cursor.close()


def mark_failed(
    items: list[Claimed], worker: str, verdict: Verdict, policy: OutboxPolicy | None = None
) -> None:
    """Apply a classified failure to ``items`` (one message, or the server's whole batch)."""
    p = policy or POLICY
    now = timezone.now()
    outcome = OUTCOMES[verdict.failure_class]
    for item in items:
        attempts = item.attempts + (1 if outcome.counts_attempt else 0)
        state, next_at, reply = outcome.state, now, verdict.reply
        if outcome.backoff:
            if attempts >= p.max_attempts:
                state = State.FAILED
                reply = f"Gave up after {attempts} attempts. Last reply: {verdict.reply}"
            else:
                next_at = now + dt.timedelta(seconds=backoff_seconds(attempts, p))
        with _serialised():
            OutboxItem.objects.filter(pk=item.id, state=State.SENDING, claimed_by=worker).update(
                state=state,
                attempts=attempts,
                next_attempt_at=next_at,
                failure_class=verdict.failure_class,
                last_reply=reply,
                last_fix=verdict.fix,
                lease_until=None,
            )


def release(
    items: list[Claimed], worker: str, at: dt.datetime | None = None, reply: str | None = None
) -> None:
    """Give claimed rows back to the queue untouched (no attempt counted), due at ``at``."""
    if not items:
        return
    fields: dict[str, object] = {
        "state": State.QUEUED,
        "next_attempt_at": at or timezone.now(),
        "lease_until": None,
    }
    if reply is not None:
        fields["last_reply"] = reply
    with _serialised():
        OutboxItem.objects.filter(
            pk__in=[i.id for i in items], state=State.SENDING, claimed_by=worker
        ).update(**fields)


def throttle(server_id: int, until: dt.datetime) -> None:
    """Pause ``server_id`` until ``until`` (``update()``: routing's signature must not change)."""
    OutgoingServer.objects.filter(pk=server_id).update(throttled_until=until)


def hold_server_queue(server_id: int, verdict: Verdict) -> int:
    """Hold every queued row of a server whose credentials or settings were refused."""
    return OutboxItem.objects.filter(server_id=server_id, state=State.QUEUED).update(
        state=State.HELD,
        failure_class=verdict.failure_class,
        last_reply=verdict.reply,
        last_fix=verdict.fix,
    )
