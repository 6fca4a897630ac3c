"""Enqueue: route the mail, build its finished bytes, and store one row in the caller's transaction.

The sender never rebuilds MIME: every byte it submits is produced here, once. Nothing is saved
until the message is routed and built, so an error (a bad address, no server accepts the
sender) reaches the caller as an exception and leaves nothing queued; and because the row is
written in the caller's transaction, a rollback there un-queues the mail too.

MIME is built with the standard library (``email`` with ``policy.default``) in
:func:`_build_message`; when ``konvergo.mailparse`` provides ``build_message`` the outbox can
switch to it without changing its callers.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import json
import re
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from konvergo.errors import RoutingError, ValidationFailed
from konvergo.services import parameters
from konvergo.services.routing import (
    PURPOSES,
    Decision,
    RoutingParams,
    RoutingTable,
    ServerInfo,
    format_mailbox,
    normalize_domain,
    parse_address,
)
from konvergo.store.dbvalues import datetime_adapter
from konvergo.store.models import (
    MailSettings,
    OutboxBody,
    OutboxItem,
    OutgoingServer,
    SystemParameter,
)

#: policy.default with CRLF: the bytes go on the wire as they are.
WIRE_POLICY = policy.default.clone(linesep="\r\n")

#: Headers the outbox owns: routing decides From/Reply-To/envelope, recipients are arguments.
_OWNED_HEADERS = frozenset({"from", "to", "cc", "bcc", "sender", "return-path", "reply-to"})

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext

_ROUTING_KEYS = (
    "mail.default.from",
    "mail.catchall.domain",
    "mail.bounce.alias",
    "mail.catchall.alias",
)


@dataclass(frozen=True)
class Attachment:
    """One attachment: file name, content and MIME type (``maintype/subtype``)."""

    filename: str
    content: bytes | str  # str for text/* parts (kept as text, encoded as UTF-8)
    mimetype: str = "application/octet-stream"


AttachmentLike = Attachment | tuple[str, bytes | str, str | None] | tuple[str, bytes | str]


class UnroutableMail(ValidationFailed, RoutingError):
    """No outgoing server may send this mail; the message names the setting to change.

    Both a :class:`ValidationFailed` (``field`` is ``"from_"``: the caller's input cannot be
    sent as it is) and a :class:`RoutingError`, so either ``except`` catches it.
    """

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__("from_", message, **context)


# --- the routing table, cached per process ------------------------------------------------

_cache_lock = threading.Lock()
_cached: tuple[tuple[Any, ...], RoutingTable] | None = None


def _signature() -> tuple[Any, ...]:
    """A cheap "did anything routing depends on change" key: one single-row query.

    Servers and parameters bump ``updated_at`` when saved, and deleting one changes the count.
    """
    servers = OutgoingServer._meta.db_table
    params = SystemParameter._meta.db_table
    mail_settings = MailSettings._meta.db_table
    keys = ", ".join(["%s"] * len(_ROUTING_KEYS))
    # Table names come from our own models, never from input; the keys are parameters.
    sql = (
        f"SELECT (SELECT COUNT(*) FROM {servers}), (SELECT MAX(updated_at) FROM {servers}), "  # noqa: S608
        f"(SELECT COUNT(*) FROM {params} WHERE key IN ({keys})), "
        f"(SELECT MAX(updated_at) FROM {params} WHERE key IN ({keys})), "
        f"(SELECT MAX(updated_at) FROM {mail_settings})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*_ROUTING_KEYS, *_ROUTING_KEYS])
        row = cursor.fetchone()
    return tuple(row)


def _build_table() -> RoutingTable:
    servers = [
        ServerInfo(
            id=row["id"],
            priority=row["priority"],
            from_filter=row["from_filter"],
            active=row["active"],
            mass_mailing_only=row["mass_mailing_only"],
            name=row["name"],
        )
        for row in OutgoingServer.objects.values(
            "id", "priority", "from_filter", "active", "mass_mailing_only", "name"
        )
    ]
    dedicated = (
        MailSettings.objects.filter(pk=1).values_list("mass_mailing_server_id", flat=True).first()
    )
    params = RoutingParams(
        default_from=parameters.get("mail.default.from"),
        catchall_domain=parameters.get("mail.catchall.domain"),
        bounce_alias=parameters.get("mail.bounce.alias"),
        catchall_alias=parameters.get("mail.catchall.alias"),
        mass_mailing_server_id=dedicated,
    )
    return RoutingTable(servers, params)


def routing_table() -> RoutingTable:
    """The routing table for the current servers and parameters (rebuilt only on change)."""
    global _cached
    signature = _signature()
    with _cache_lock:
        if _cached is not None and _cached[0] == signature:
            return _cached[1]
    table = _build_table()
    with _cache_lock:
        _cached = (signature, table)
    return table


def forget_routing_table() -> None:
    """Drop the cached table (tests that change rows with ``update()``)."""
    global _cached
    with _cache_lock:
        _cached = None


#: Decisions of the current table: a decision is a pure function of the table and the
#: arguments, and an application sends most of its mail from a handful of From values, so
#: parsing and routing them once per table (not once per mail) saves most of the enqueue CPU.
_decisions: tuple[RoutingTable, dict[tuple[Any, ...], Decision]] | None = None
_DECISIONS_MAX = 4096


def _decide(
    table: RoutingTable,
    from_: str,
    purpose: str,
    server_id: int | None,
    reply_to: str | None,
) -> Decision:
    global _decisions
    cached = _decisions
    if cached is None or cached[0] is not table or len(cached[1]) > _DECISIONS_MAX:
        cached = _decisions = (table, {})
    key = (from_, purpose, server_id, reply_to)
    decision = cached[1].get(key)
    if decision is None:  # errors are not cached: they raise again, with the same message
        decision = table.decide(
            from_,
            purpose=purpose,  # type: ignore[arg-type]  # checked against PURPOSES by callers
            forced_server_id=server_id,
            reply_to=reply_to,
        )
        cached[1][key] = decision
    return decision


# --- building ----------------------------------------------------------------------------


# A bare dot-atom address with a plain ASCII domain: parse_address and format_mailbox would
# return it unchanged except for the lower-cased domain, so the common case (one recipient
# address per mail, all different) skips the email package. Anything else takes the full path.
_PLAIN_ADDRESS_RE = re.compile(
    r"^([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)$"
)
_domains: dict[str, str | None] = {}


def _plain_address(value: str) -> str | None:
    """``value`` with its domain normalised when it is a plain bare address, else None."""
    match = _PLAIN_ADDRESS_RE.match(value)
    if match is None:
        return None
    domain = match.group(2)
    if domain not in _domains:
        if len(_domains) > _DECISIONS_MAX:
            _domains.clear()
        _domains[domain] = normalize_domain(domain)
    normalised = _domains[domain]
    return None if normalised is None else f"{match.group(1)}@{normalised}"


def _addresses(field: str, values: str | Iterable[str]) -> list[tuple[str, str]]:
    """(header form, envelope form) for each address; a bad one raises naming ``field``."""
    items = [values] if isinstance(values, str) else list(values)
    out: list[tuple[str, str]] = []
    for value in items:
        if not isinstance(value, str):
            raise ValidationFailed(field, f"{value!r} is not an email address.")
        plain = _plain_address(value)
        if plain is not None:
            out.append((plain, plain))
            continue
        parsed = parse_address(value, field)
        out.append(
            (format_mailbox(parsed.display_name, parsed.written_address), parsed.written_address)
        )
    return out


def _attachment(item: AttachmentLike) -> Attachment:
    if isinstance(item, Attachment):
        return item
    if isinstance(item, tuple) and len(item) in (2, 3):
        filename, content = item[0], item[1]
        mimetype = (item[2] if len(item) == 3 else None) or "application/octet-stream"
        if (
            isinstance(filename, str)
            and isinstance(content, bytes | str)
            and isinstance(mimetype, str)
        ):
            return Attachment(filename, content, mimetype)
    raise ValidationFailed(
        "attachments", f"{item!r} is not an attachment: give (filename, content, mimetype)."
    )


_from_domains: dict[str, str] = {}


def _message_id(header_from: str) -> str:
    domain = _from_domains.get(header_from)
    if domain is None:
        domain = parse_address(header_from).domain
        if len(_from_domains) > _DECISIONS_MAX:
            _from_domains.clear()
        _from_domains[header_from] = domain
    return f"<{secrets.token_hex(12)}.konvergo@{domain}>"


_MAX_LINE = 998  # RFC 5322 2.1.1, without the CRLF

#: enqueue_many() dates a whole batch with one moment: format it once (format_datetime takes
#: ~6 us, a few per cent of queueing a plain mail).
_date_header = functools.lru_cache(maxsize=16)(email.utils.format_datetime)


def _ascii_lines(text: str) -> list[str] | None:
    """``text`` as CRLF-ready lines when it is ASCII with no line over 998 octets, else None."""
    if not text.isascii():
        return None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if max(map(len, lines), default=0) > _MAX_LINE:  # in C: a 10 KB body has 150 lines
        return None
    return lines


def _fast_build(headers: list[tuple[str, str]], text: str | None, html: str | None) -> bytes | None:
    """The common case (ASCII headers and bodies, no attachment) without the email package.

    ``policy.default`` parses every header it is given (about 2 ms a message, most of the
    enqueue cost); here the values are already validated and formatted by routing, so writing
    them out is enough. Anything else (non-ASCII, long lines, attachments) returns None and goes
    through the standard library.
    """
    head = []
    for name, value in headers:
        line = f"{name}: {value}"
        if not line.isascii() or len(line) > _MAX_LINE or "\r" in line or "\n" in line:
            return None
        head.append(line)
    parts: list[tuple[str, list[str]]] = []
    for subtype, body in (("plain", text), ("html", html)):
        if body is None:
            continue
        lines = _ascii_lines(body)
        if lines is None:
            return None
        parts.append((subtype, lines))
    if not parts:
        parts.append(("plain", []))
    out = [*head, "MIME-Version: 1.0"]
    if len(parts) == 1:
        subtype, lines = parts[0]
        out += [
            f'Content-Type: text/{subtype}; charset="us-ascii"',
            "Content-Transfer-Encoding: 7bit",
            "",
            *lines,
        ]
    else:
        boundary = f"=_konvergo_{secrets.token_hex(12)}"
        out += [f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
        for subtype, lines in parts:
            out += [
                f"--{boundary}",
                f'Content-Type: text/{subtype}; charset="us-ascii"',
                "Content-Transfer-Encoding: 7bit",
                "",
                *lines,
            ]
        out.append(f"--{boundary}--")
    return ("\r\n".join(out) + "\r\n").encode("ascii")


def _build_message(
    *,
    header_from: str,
    to: Sequence[str],
    cc: Sequence[str],
    reply_to: str | None,
    subject: str,
    text: str | None,
    html: str | None,
    attachments: Sequence[Attachment],
    message_id: str,
    date: dt.datetime,
    in_reply_to: str | None,
    references: Sequence[str],
    headers: Mapping[str, str],
) -> bytes:
    """The finished message bytes (CRLF, ready for DATA)."""
    if not attachments:
        fields = [("From", header_from)]
        fields += [("To", ", ".join(to))] if to else []
        fields += [("Cc", ", ".join(cc))] if cc else []
        fields += [("Reply-To", reply_to)] if reply_to else []
        fields += [
            ("Subject", subject),
            ("Date", _date_header(date)),
            ("Message-ID", message_id),
        ]
        fields += [("In-Reply-To", in_reply_to)] if in_reply_to else []
        fields += [("References", " ".join(references))] if references else []
        fields += list(headers.items())
        fast = _fast_build(fields, text, html)
        if fast is not None:
            return fast
    msg = EmailMessage(policy=WIRE_POLICY)
    msg["From"] = header_from
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = subject
    msg["Date"] = _date_header(date)
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    for name, value in headers.items():
        msg[name] = value
    if html is not None and text is None:
        msg.set_content(html, subtype="html")
    else:
        msg.set_content(text or "")
        if html is not None:
            msg.add_alternative(html, subtype="html")
    for att in attachments:
        maintype, _, subtype = att.mimetype.partition("/")
        if isinstance(att.content, str):
            msg.add_attachment(att.content, subtype=subtype or "plain", filename=att.filename)
            continue
        msg.add_attachment(
            att.content,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=att.filename,
        )
    return msg.as_bytes()


def rewrite_from(raw: bytes, header_from: str, reply_to: str | None) -> bytes:
    """``raw`` with its From (and Reply-To) replaced; used when Retry routes a mail again."""
    msg = BytesParser(policy=WIRE_POLICY).parsebytes(raw)
    del msg["From"]
    msg["From"] = header_from
    if reply_to is not None:
        del msg["Reply-To"]
        msg["Reply-To"] = reply_to
    return msg.as_bytes()


def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValidationFailed("headers", f"Header {name!r} must be a string.")
        if not _HEADER_NAME.match(name):
            raise ValidationFailed("headers", f"{name!r} is not a valid header name.")
        if name.lower() in _OWNED_HEADERS:
            raise ValidationFailed(
                "headers",
                f"{name} is set by the outbox (routing or the recipients); pass it as an "
                "argument instead.",
            )
        if any(ch in name + value for ch in "\r\n\0"):
            raise ValidationFailed("headers", f"Header {name!r} contains a line break.")
        out[name] = value
    return out


def _prepare(
    table: RoutingTable,
    *,
    from_: str,
    to: str | Sequence[str],
    cc: str | Sequence[str] = (),
    bcc: str | Sequence[str] = (),
    subject: str,
    text: str | None = None,
    html: str | None = None,
    attachments: Sequence[AttachmentLike] = (),
    purpose: str = "transactional",
    server_id: int | None = None,
    created_by: Any = None,
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    thread: Any = None,
    headers: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Route and build one mail into the field values of its row (no database writes)."""
    if purpose not in PURPOSES:
        raise ValidationFailed("purpose", f"Unknown purpose {purpose!r}: use {sorted(PURPOSES)}.")
    if not isinstance(subject, str) or any(ch in subject for ch in "\r\n\0"):
        raise ValidationFailed("subject", "The subject must be one line of text.")
    if text is None and html is None and not attachments:
        raise ValidationFailed("text", "The message has no body: give text, html or attachments.")
    to_list, cc_list, bcc_list = _addresses("to", to), _addresses("cc", cc), _addresses("bcc", bcc)
    if not (to_list or cc_list or bcc_list):
        raise ValidationFailed("to", "The message has no recipient (to, cc or bcc).")
    extra = _check_headers(headers)
    files = [_attachment(a) for a in attachments]
    if in_reply_to is not None and any(ch in in_reply_to for ch in "\r\n"):
        raise ValidationFailed("in_reply_to", "In-Reply-To must be one Message-ID.")
    try:
        decision = _decide(table, from_, purpose, server_id, reply_to)
    except RoutingError as exc:
        raise UnroutableMail(exc.message, **exc.context) from exc
    now = now or timezone.now()
    overrides = {name.lower(): name for name in extra}
    given_id = extra.pop(overrides["message-id"]) if "message-id" in overrides else None
    # Date is the moment of enqueueing; a caller's Date would make a second header.
    if "date" in overrides:
        extra.pop(overrides["date"])
    message_id = given_id or _message_id(decision.header_from)
    raw = _build_message(
        header_from=decision.header_from,
        to=[h for h, _ in to_list],
        cc=[h for h, _ in cc_list],
        reply_to=decision.reply_to,
        subject=subject,
        text=text,
        html=html,
        attachments=files,
        message_id=message_id,
        date=now,
        in_reply_to=in_reply_to,
        references=list(references),
        headers=extra,
    )
    recipients = list(dict.fromkeys(env for _, env in (*to_list, *cc_list, *bcc_list)))
    thread_id = thread if isinstance(thread, int) else getattr(thread, "pk", None)
    user_id = created_by if isinstance(created_by, int) else getattr(created_by, "pk", None)
    return {
        "state": OutboxItem.State.QUEUED.value,
        "purpose": purpose,
        "created_at": now,
        "created_by_id": user_id,
        "server_id": decision.server_id,
        "route": decision.route,
        "message_id": message_id,
        "subject": subject[:998],
        "header_from": decision.header_from,
        # As the caller wrote it: Retry routes a mail whose server was deleted from this.
        "original_from": from_[:998],
        "envelope_from": decision.envelope_from,
        "recipients": recipients,
        "raw": raw,
        "size": len(raw),
        # Set at once so the (state, next_attempt_at) index finds new mail without an OR.
        "next_attempt_at": now,
        "thread_id": thread_id,
    }


def prepare(table: RoutingTable, **mail: Any) -> OutboxItem:
    """Route and build one mail into an unsaved :class:`OutboxItem` (no database writes).

    ``mail`` takes :func:`enqueue`'s arguments, and ``now`` (the Date and first due time).
    """
    return OutboxItem(**_prepare(table, **mail))


#: Row columns in model order; the INSERT and the returned instances use the same order.
_COLUMNS = [f for f in OutboxItem._meta.concrete_fields if not f.primary_key]


def _insert(rows: list[dict[str, Any]]) -> list[OutboxItem]:
    """INSERT ``rows`` with one hand-written multi-row statement per chunk and return them.

    ``bulk_create`` compiles each of the ~24 values of each row through the field machinery
    (about 0.4 ms a mail); the values here are built by :func:`_prepare` and only the JSON,
    bytes and datetime columns need the backend's adaptation. The instances are created the
    way the ORM loads rows (positional values), which is several times cheaper than keywords.
    """
    if connection.vendor == "postgresql":
        return _copy(rows)
    table = OutboxItem._meta.db_table
    names = ", ".join(connection.ops.quote_name(str(f.column)) for f in _COLUMNS)
    adapt: dict[str, Any] = {}
    to_db = datetime_adapter()
    for f in _COLUMNS:
        kind = f.get_internal_type()
        if kind == "JSONField":
            adapt[f.attname] = lambda v, f=f: f.get_db_prep_value(v, connection)
        elif kind == "DateTimeField":
            adapt[f.attname] = to_db
    attnames = [f.attname for f in _COLUMNS]
    # SQLite allows 32,766 parameters a statement; PostgreSQL 65,535.
    per_chunk = max(1, min(500, 30_000 // len(attnames)))
    placeholder = "(" + ", ".join(["%s"] * len(attnames)) + ")"
    items: list[OutboxItem] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_chunk):
            chunk = rows[start : start + per_chunk]
            params: list[Any] = []
            for row in chunk:
                for name in attnames:
                    value = row.get(name, _DEFAULTS[name])
                    convert = adapt.get(name)
                    params.append(value if convert is None or value is None else convert(value))
            sql = (
                f"INSERT INTO {table} ({names}) VALUES "  # noqa: S608  (our own table, columns)
                + ", ".join([placeholder] * len(chunk))
                + " RETURNING id"
            )
            cursor.execute(sql, params)
            ids = sorted(r[0] for r in cursor.fetchall())  # ids grow in VALUES order
            for pk, row in zip(ids, chunk, strict=True):
                item = OutboxItem.from_db(
                    connection.alias, _NAMES, [pk, *(row.get(n, _DEFAULTS[n]) for n in attnames)]
                )
                items.append(item)
        cursor.executemany(
            f"INSERT INTO {_BODY_TABLE} (item_id, raw) VALUES (%s, %s)",  # noqa: S608
            [(item.pk, row["raw"]) for item, row in zip(items, rows, strict=True)],
        )
    return _with_bytes(items, rows)


def _with_bytes(items: list[OutboxItem], rows: list[dict[str, Any]]) -> list[OutboxItem]:
    """The new rows, each already holding its bytes (no query to read them back)."""
    return [item.holding(row["raw"]) for item, row in zip(items, rows, strict=True)]


def _copy(rows: list[dict[str, Any]]) -> list[OutboxItem]:
    """PostgreSQL: reserve the ids, then ``COPY`` the rows in (no SQL text to build or parse).

    A multi-row INSERT through Django's client-side binding spells every 10 KB message out as
    an escaped ``bytea`` literal that the server then parses again; COPY streams the values.
    """
    table = OutboxItem._meta.db_table
    quote = connection.ops.quote_name
    attnames = [f.attname for f in _COLUMNS]
    json_fields = [f.attname for f in _COLUMNS if f.get_internal_type() == "JSONField"]
    columns = ", ".join(quote(str(f.column)) for f in OutboxItem._meta.concrete_fields)
    items: list[OutboxItem] = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [table, len(rows)],
        )
        ids = sorted(r[0] for r in cursor.fetchall())
        values = [
            [pk, *(row.get(n, _DEFAULTS[n]) for n in attnames)]
            for pk, row in zip(ids, rows, strict=True)
        ]
        positions = [1 + attnames.index(n) for n in json_fields]
        with cursor.cursor.copy(f"COPY {quote(table)} ({columns}) FROM STDIN") as copy:
            for value in values:
                row = list(value)
                for i in positions:
                    row[i] = json.dumps(row[i])
                copy.write_row(row)
        # Binary: the bytes go as they are, not spelled out in hex (twice the size) as the
        # text format needs.
        body_copy = f"COPY {_BODY_TABLE} (item_id, raw) FROM STDIN (FORMAT BINARY)"
        with cursor.cursor.copy(body_copy) as copy:
            copy.set_types(["bigint", "bytea"])
            for pk, mail in zip(ids, rows, strict=True):
                copy.write_row((pk, mail["raw"]))
        items = [OutboxItem.from_db(connection.alias, _NAMES, value) for value in values]
    return _with_bytes(items, rows)


_NAMES = [f.attname for f in OutboxItem._meta.concrete_fields]
_BODY_TABLE = OutboxBody._meta.db_table
_DEFAULTS: dict[str, Any] = {
    f.attname: (f.get_default() if f.has_default() else None) for f in _COLUMNS
}


def enqueue(
    *,
    from_: str,
    to: str | Sequence[str],
    cc: str | Sequence[str] = (),
    bcc: str | Sequence[str] = (),
    subject: str,
    text: str | None = None,
    html: str | None = None,
    attachments: Sequence[AttachmentLike] = (),
    purpose: str = "transactional",
    server_id: int | None = None,
    created_by: Any = None,
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    thread: Any = None,
    headers: Mapping[str, str] | None = None,
) -> OutboxItem:
    """Queue one mail in the caller's transaction and return its row.

    Raises :class:`~konvergo.errors.ValidationFailed` (``.field`` names the input) for bad
    input and :class:`~konvergo.errors.RoutingError` when no server may send it; in both
    cases nothing is queued.
    """
    item = prepare(
        routing_table(),
        from_=from_,
        to=to,
        cc=cc,
        bcc=bcc,
        subject=subject,
        text=text,
        html=html,
        attachments=attachments,
        purpose=purpose,
        server_id=server_id,
        created_by=created_by,
        reply_to=reply_to,
        in_reply_to=in_reply_to,
        references=references,
        thread=thread,
        headers=headers,
    )
    item.save()
    return item


def enqueue_many(mails: Iterable[Mapping[str, Any]]) -> list[OutboxItem]:
    """Queue many mails (each a mapping of :func:`enqueue`'s arguments) all or nothing.

    One routing table, one transaction and one multi-row INSERT per 500 mails; the first
    invalid mail raises and nothing is queued.
    """
    table = routing_table()
    now = timezone.now()
    rows = [_prepare(table, now=now, **dict(mail)) for mail in mails]
    with transaction.atomic():
        return _insert(rows)


__all__ = [
    "Attachment",
    "UnroutableMail",
    "enqueue",
    "enqueue_many",
    "forget_routing_table",
    "prepare",
    "rewrite_from",
    "routing_table",
]
