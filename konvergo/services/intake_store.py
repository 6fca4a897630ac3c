"""Writing fetched messages to the database: a batch per transaction, never twice.

A batch of fetched messages is committed in one transaction together with the folder's
high-water mark (``FolderState.last_uid``), so the mark never gets ahead of what is stored
and a crash at any point re-fetches exactly the uncommitted tail. Inside the transaction a
message is complete or absent: Message, Attachments, participants and the thread update go
in together.

Duplicates are recognised on (server, Message-ID): first by a lookup (cheap, no failed
statement), and for races by the unique constraint ``message_in_unique``. When the batch
insert hits the constraint (another process stored one of the messages meanwhile) or the
database refuses some value, the batch is stored again message by message, each in its own
transaction, and a message the database refuses goes to quarantine with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, IntegrityError, connection, models, transaction
from django.utils import timezone

from konvergo.mailparse import ParsedMessage
from konvergo.services.intake_parse import Parsed
from konvergo.services.intake_threading import Route, route_batch
from konvergo.store.dbvalues import (
    IN_CHUNK,
    bulk_cursor,
    column,
    datetime_adapter,
    select_in,
    update,
)
from konvergo.store.models import (
    Attachment,
    FolderState,
    IncomingServer,
    Message,
    QuarantinedMessage,
    Thread,
    ThreadParticipant,
    User,
)

log = logging.getLogger("konvergo.intake")

_MAX_SUBJECT = 998


@dataclass
class BatchOutcome:
    """What happened to one batch (counts, and the UIDs now safely in the database)."""

    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    uids: list[int] = field(default_factory=list)


class _OneByOne(Exception):
    """The batch's own statements failed: store its messages one by one."""


def store_batch(
    server: IncomingServer,
    folder: str,
    uidvalidity: int,
    items: Sequence[Parsed],
    *,
    first: Callable[[], object] | None = None,
) -> BatchOutcome:
    """Store ``items`` and move the folder's high-water mark past them, atomically.

    ``first`` runs at the start of the batch's transaction (the fetcher renews its lease
    there: one write transaction a batch instead of two, and a lease lost meanwhile rolls
    the batch back); its errors, database errors included, propagate. When the batch is
    stored message by message it runs again, in a transaction of its own.
    """
    if not items:
        if first is not None:
            first()
        return BatchOutcome()
    try:
        with transaction.atomic():
            _commit_without_waiting_for_disk()
            if first is not None:
                first()
            try:
                outcome = _store(server, folder, uidvalidity, items)
                _advance(server, folder, uidvalidity, items, outcome)
            except (IntegrityError, DatabaseError) as exc:
                raise _OneByOne from exc  # rolls the batch back, not first()'s failure
            return outcome
    except _OneByOne as fallback:
        log.info("batch of %d fell back to one by one: %s", len(items), fallback.__cause__)
    if first is not None:
        with transaction.atomic():
            first()
    outcome = BatchOutcome()
    for item in items:
        try:
            with transaction.atomic():
                one = _store(server, folder, uidvalidity, [item])
                _advance(server, folder, uidvalidity, [item], one)
        except IntegrityError:
            # Stored meanwhile by someone else: the constraint is the final word.
            with transaction.atomic():
                one = BatchOutcome(duplicates=1, uids=[item.fetched.uid])
                _advance(server, folder, uidvalidity, [item], one)
        except DatabaseError as exc:
            with transaction.atomic():
                bad = Parsed(item.fetched, None, f"database refused the message: {exc}")
                one = _store(server, folder, uidvalidity, [bad])
                _advance(server, folder, uidvalidity, [item], one)
        outcome.stored += one.stored
        outcome.duplicates += one.duplicates
        outcome.quarantined += one.quarantined
        outcome.uids.extend(one.uids)
    return outcome


def _commit_without_waiting_for_disk() -> None:
    """On PostgreSQL, let this transaction's commit return before its WAL reaches the disk.

    Safe here, and only here: a batch commits together with the folder's high-water mark, so
    a commit that a crash of the database server loses takes the mark back with it, and the
    next fetch gets the same messages again from the mailbox, which still has them; a later
    commit that waits (a reply written to one of these threads) flushes this one first. A
    disk flush a batch is little on a cached disk (0.1-0.4 ms measured on the test machine)
    and more on a busy or networked one. (SQLite in WAL mode with ``synchronous=NORMAL``
    does not wait for the disk at commit anyway.)
    """
    # Only as the outermost transaction: SET LOCAL would also relax a caller's commit.
    if connection.vendor == "postgresql" and len(connection.atomic_blocks) == 1:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _advance(
    server: IncomingServer,
    folder: str,
    uidvalidity: int,
    items: Sequence[Parsed],
    outcome: BatchOutcome,
) -> None:
    top = max(i.fetched.uid for i in items)
    # Only forward, and only within the same UIDVALIDITY epoch (a resync may run beside).
    update(
        FolderState,
        "{last_uid} = %s",
        "{server} = %s AND {folder} = %s AND {uidvalidity} = %s AND {last_uid} < %s",
        [top, server.pk, folder, uidvalidity, top],
    )
    update(
        IncomingServer,
        "{messages_fetched} = {messages_fetched} + %s, {progress_done} = {progress_done} + %s",
        "{id} = %s",
        [outcome.stored, len(items), server.pk],
    )


def _store(
    server: IncomingServer, folder: str, uidvalidity: int, items: Sequence[Parsed]
) -> BatchOutcome:
    outcome = BatchOutcome(uids=[i.fetched.uid for i in items])
    bad = [i for i in items if i.message is None]
    if bad:
        QuarantinedMessage.objects.bulk_create(
            [
                QuarantinedMessage(
                    server=server,
                    folder=folder,
                    uid=i.fetched.uid,
                    uidvalidity=uidvalidity,
                    raw=i.fetched.raw,
                    reason=i.reason,
                )
                for i in bad
            ],
            ignore_conflicts=True,
        )
        outcome.quarantined = len(bad)
    good = _new_messages(server, [i for i in items if i.message is not None], outcome)
    if not good:
        return outcome
    parsed = [p for _, p in good]
    routes = route_batch(parsed, server.create_record)
    thread_ids = _threads(parsed, routes)
    to_db = datetime_adapter()
    now = to_db(timezone.now())
    _insert(
        Message,
        _MESSAGE_FIELDS,
        [
            (
                thread_ids[n],
                Message.Direction.IN.value,
                p.message_id,
                server.pk,
                folder,
                item.fetched.uid,
                p.subject[:_MAX_SUBJECT],
                p.from_address[:_MAX_SUBJECT],
                p.to_text,
                p.cc_text,
                to_db(p.date),
                (p.in_reply_to or "")[:_MAX_SUBJECT],
                " ".join(p.references),
                p.body_text,  # empty when the parser left it in raw (text_in_raw)
                p.body_html,
                item.fetched.raw,
                p.text_in_raw,
                now,
            )
            for n, (item, p) in enumerate(good)
        ],
    )
    if any(p.attachments for p in parsed):
        # The new rows' ids, only when something refers to them: one indexed query.
        pks = dict(
            Message.objects.filter(
                incoming_server=server,
                direction=Message.Direction.IN,
                message_id__in=[p.message_id for p in parsed if p.attachments],
            ).values_list("message_id", "pk")
        )
        _insert(
            Attachment,
            ("message", "filename", "content_type", "content_id", "size", "content"),
            [
                (
                    pks[p.message_id],
                    a.filename[:255],
                    a.content_type[:255],
                    a.content_id[:255],
                    a.size,
                    a.content,
                )
                for p in parsed
                for a in p.attachments
            ],
        )
    _participants(parsed, thread_ids)
    outcome.stored = len(good)
    return outcome


#: Message columns written by intake, in the order of the rows _store() builds.
_MESSAGE_FIELDS = (
    "thread", "direction", "message_id", "incoming_server", "folder", "uid", "subject",
    "from_address", "to", "cc", "date", "in_reply_to", "references", "body_text", "body_html",
    "raw", "text_in_raw", "created_at",
)  # fmt: skip


def _insert(
    model: type[models.Model],
    fields: Sequence[str],
    rows: list[tuple[Any, ...]],
    *,
    ignore_conflicts: bool = False,
) -> None:
    """INSERT ``rows`` (values in ``fields`` order, already in database form) in one call.

    bulk_create() costs more than the database does here (per object and field: pre_save,
    get_db_prep_save, SQL assembly: about 0.3 ms for a Message); intake writes plain values
    it has prepared itself, so executemany() with one statement is enough. Constraint
    violations still raise IntegrityError, which store_batch() handles.
    """
    if not rows:
        return
    meta = model._meta
    quote = connection.ops.quote_name
    columns = ", ".join(quote(column(model, name)) for name in fields)
    marks = ", ".join(["%s"] * len(fields))
    # Identifiers come from the model's metadata, quoted; every value is a parameter.
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks})"  # noqa: S608
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    with bulk_cursor() as cursor:
        cursor.executemany(sql, rows)


#: Rows per multi-row INSERT ... RETURNING (SQLite allows 32,766 parameters per statement).
_RETURNING_CHUNK = 500


def _insert_returning_ids(
    model: type[models.Model], fields: Sequence[str], rows: list[tuple[Any, ...]]
) -> list[int]:
    """INSERT ``rows`` and return their new ids, in the order of ``rows``.

    One multi-row ``INSERT ... RETURNING id`` per chunk, as bulk_create() does on SQLite and
    PostgreSQL (both return the rows in the order of the VALUES list), without building a
    model instance per row.
    """
    if not rows:
        return []
    meta = model._meta
    quote = connection.ops.quote_name
    columns = ", ".join(quote(column(model, name)) for name in fields)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    assert meta.pk is not None and meta.pk.column
    returning = quote(meta.pk.column)
    ids: list[int] = []
    # Statements of every row count would fill PostgreSQL's prepared-statement cache.
    once = {"prepare": False} if connection.vendor == "postgresql" else {}
    with bulk_cursor() as cursor:
        for start in range(0, len(rows), _RETURNING_CHUNK):
            chunk = rows[start : start + _RETURNING_CHUNK]
            values = ", ".join([one] * len(chunk))
            # Identifiers come from the model's metadata, quoted; every value is a parameter.
            sql = (
                f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {values} "  # noqa: S608
                f"RETURNING {returning}"
            )
            cursor.execute(sql, [value for row in chunk for value in row], **once)
            ids.extend(row[0] for row in cursor.fetchall())
    return ids


def _new_messages(
    server: IncomingServer, items: Sequence[Parsed], outcome: BatchOutcome
) -> list[tuple[Parsed, ParsedMessage]]:
    """Items whose Message-ID this server has not stored yet (nor earlier in the batch)."""
    ids = [i.message.message_id for i in items if i.message is not None]
    where = [("incoming_server", server.pk), ("direction", Message.Direction.IN.value)]
    known = {row[0] for row in select_in(Message, ["message_id"], "message_id", ids, where)}
    fresh: list[tuple[Parsed, ParsedMessage]] = []
    for item in items:
        p = item.message
        assert p is not None
        if p.message_id in known:
            outcome.duplicates += 1
            continue
        known.add(p.message_id)
        fresh.append((item, p))
    return fresh


def _threads(parsed: Sequence[ParsedMessage], routes: Sequence[Route]) -> list[int]:
    """The thread id of each message, creating the new threads in one statement."""
    now = timezone.now()
    root = list(range(len(routes)))
    for n, route in enumerate(routes):
        if route.reason.startswith("batch:"):
            # A reply to a message earlier in this batch shares that message's thread.
            root[n] = root[int(route.reason.split(":", 1)[1])]
    new_index = [n for n, r in enumerate(root) if r == n and routes[n].thread_id is None]
    latest: dict[int, dt.datetime] = {}
    for n in range(len(routes)):
        when = parsed[n].date or now
        if root[n] not in latest or when > latest[root[n]]:
            latest[root[n]] = when
    to_db = datetime_adapter()
    created_at = to_db(now)
    created = _insert_returning_ids(
        Thread,
        ("subject", "kind", "last_message_at", "created_at"),
        [
            (
                parsed[n].subject[:_MAX_SUBJECT],
                routes[n].kind,
                to_db(latest[n]),
                created_at,
            )
            for n in new_index
        ],
    )
    by_root = dict(zip(new_index, created, strict=True))
    ids: list[int] = []
    for n in range(len(routes)):
        existing = routes[root[n]].thread_id
        ids.append(existing if existing is not None else by_root[root[n]])
    # Existing threads move forward to their newest message; one UPDATE per thread touched,
    # and only replies touch existing threads.
    touched: dict[int, dt.datetime] = {}
    for n in range(len(routes)):
        existing = routes[root[n]].thread_id
        if existing is not None:
            when = latest[root[n]]
            touched[existing] = max(when, touched.get(existing, when))
    for thread_id, when in touched.items():
        Thread.objects.filter(pk=thread_id).exclude(last_message_at__gte=when).update(
            last_message_at=when
        )
    return ids


def _users_by_address(addresses: set[str]) -> dict[str, int]:
    """Users whose email, lower-cased by the database, is one of ``addresses``.

    As ``annotate(Lower("email")).filter(...__in=...)`` would, in plain queries: compiling
    that through the ORM cost more than storing the batch's participants.
    """
    quote = connection.ops.quote_name
    email = f"LOWER({quote(column(User, 'email'))})"
    table, pk = quote(User._meta.db_table), quote(column(User, "id"))
    unique = sorted(addresses)
    found: dict[str, int] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(unique), IN_CHUNK):
            part = unique[start : start + IN_CHUNK]
            # Identifiers come from the model's metadata, quoted; every value is a parameter.
            marks = ", ".join(["%s"] * len(part))
            sql = f"SELECT {email}, {pk} FROM {table} WHERE {email} IN ({marks})"  # noqa: S608
            cursor.execute(sql, part)
            found.update(cursor.fetchall())
    return found


def _participants(parsed: Sequence[ParsedMessage], thread_ids: Sequence[int]) -> None:
    pairs: dict[tuple[int, str], None] = {}
    for p, thread_id in zip(parsed, thread_ids, strict=True):
        for address in (p.from_email, *p.to, *p.cc):
            if address:
                pairs[(thread_id, address.lower()[:320])] = None
    if not pairs:
        return
    users = _users_by_address({a for _, a in pairs})
    _insert(
        ThreadParticipant,
        ("thread", "address", "user"),
        [(t, a, users.get(a)) for t, a in pairs],
        ignore_conflicts=True,
    )
