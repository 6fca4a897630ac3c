"""Parsing raw incoming mail into a :class:`ParsedMessage`.

The stdlib ``email`` package with ``policy.default`` does the MIME work; this module decides
what to keep and makes every value safe to store: no lone surrogates, no NUL characters,
lengths that fit the ``Message``/``Attachment`` columns, sanitised HTML. Anything short of
"these bytes are not a message at all" is parsed as well as possible and the problems are
listed in ``ParsedMessage.defects``; only :class:`UnparseableMessage` is ever raised.

Speed (intake parses every message it fetches): ``policy.default`` builds a header object
with a full RFC 5322 parse for every header read, which costs more than the rest of parsing a
10 KB message. Header values that are plain printable ASCII in the everyday shapes
(``Name <user@host>``, a single ``<id@host>``, a parsable date) are therefore read straight
from the raw value by :mod:`konvergo.mailparse.fastheaders`; anything else still goes through
``policy.default``. A message whose top level is a single ``text/plain`` or ``text/html`` part
in 7bit/8bit/quoted-printable/base64 has only its header block run through the parser, and its
body decoded from the bytes after it. Both shortcuts give exactly what the full path gives
(tests/mailparse/test_fast_paths.py compares them); ``_FAST = False`` turns them off.
"""

from __future__ import annotations

import binascii
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from email import policy
from email.feedparser import BytesFeedParser
from email.header import decode_header
from email.headerregistry import AddressHeader, BaseHeader, HeaderRegistry, SingleAddressHeader
from email.message import EmailMessage, Message
from email.utils import format_datetime, getaddresses, parsedate_to_datetime

from konvergo.mailparse import fastheaders
from konvergo.mailparse.charsets import decode_bytes, repair
from konvergo.mailparse.errors import UnparseableMessage
from konvergo.mailparse.html import html_to_text, sanitize_html
from konvergo.mailparse.ids import extract_ids, normalize_message_id, synthetic_message_id
from konvergo.mailparse.reports import DeliveryReport, read_report

# Threading looks at the newest ids only; older ones add cost, not precision (Odoo: 32).
MAX_REFERENCES = 32

# Column sizes of konvergo.store.models.inbox (Message/Attachment).
_MAX_HEADER_TEXT = 998
_MAX_ATTACHMENT_FIELD = 255

# Feeding the parser in slices means the whole message never exists a second time as one
# str (the parser decodes what it is fed); 1 MiB keeps the per-call overhead negligible.
_FEED_CHUNK = 1 << 20
_MAX_DEPTH = 50
# Address fields longer than this (about 300 addresses) take the linear parser.
_LONG_ADDRESS_FIELD = 16 * 1024

# Header fields of which at least one must be present for bytes to count as a message.
_MESSAGE_FIELDS = frozenset(
    {
        "from", "sender", "to", "cc", "bcc", "subject", "date", "message-id", "received",
        "return-path", "delivered-to", "reply-to", "in-reply-to", "references",
        "mime-version", "content-type", "x-original-to", "resent-to", "resent-from",
    }
)  # fmt: skip

_EXTENSIONS = {
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/csv": ".csv",
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "text/rfc822-headers": ".txt",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
}
# Names senders' software gets wrong, mapped to what they mean.
_CONTENT_TYPE_FIXES = {"binary/octet-stream": "application/octet-stream"}

# Off: every header through policy.default and every message through the full parse
# (the reference the shortcuts are tested against).
_FAST = True
# The end of the header block: the first empty line.
_HEADER_END = re.compile(rb"\n\r?\n")
# A top-level single text part the shortcut decodes itself: type, then simple parameters.
_PARAM_TEXT = r';[ \t]*([A-Za-z0-9_-]+)=(?:"([^"\\]*)"|([^;"()<>@,:\\/\[\]?= \t]+))[ \t]*'
_PARAM = re.compile(_PARAM_TEXT)
_SIMPLE_TYPE = re.compile(rf"[ \t]*text/(plain|html)[ \t]*((?:{_PARAM_TEXT})*);?[ \t]*", re.I)
_SIMPLE_CTE = frozenset({"7bit", "8bit", "binary", "quoted-printable", "base64"})
# Header fields the shortcut reads to decide; more than one of any means the full parse.
_STRUCTURE_FIELDS = ("content-type", "content-transfer-encoding", "content-disposition")

_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_FILENAME_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
# Message/Attachment values go to PostgreSQL text columns, which refuse NUL.
_NUL = "\x00"


@dataclass(frozen=True, slots=True)
class ParsedAttachment:
    """A non-body part of a message.

    ``content_id`` is stored without angle brackets, exactly as HTML refers to it
    (``<img src="cid:...">``); ``inline`` is true for parts with a Content-ID that are not
    marked ``Content-Disposition: attachment`` (images embedded in the HTML body).
    """

    filename: str
    content_type: str
    content: bytes = field(repr=False)
    size: int
    content_id: str = ""
    inline: bool = False


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """Everything Konvergo keeps from an incoming message; every text is safe to store.

    Address fields come in two forms: bare addresses (lower-case ``user@domain``), used for
    matching, and ``*_text`` display forms (``Name <user@domain>, ...``) for people.
    """

    message_id: str
    message_id_synthetic: bool
    subject: str
    from_address: str
    from_email: str
    reply_to: tuple[str, ...]
    to: tuple[str, ...]
    to_text: str
    cc: tuple[str, ...]
    cc_text: str
    delivered_to: tuple[str, ...]
    recipients: tuple[str, ...]
    date: datetime | None
    in_reply_to: str | None
    references: tuple[str, ...]
    body_text: str
    body_html: str
    attachments: tuple[ParsedAttachment, ...]
    defects: tuple[str, ...]
    content_type: str
    report: DeliveryReport | None = None
    #: ``body_text`` was left empty because it is the raw body decoded, which
    #: :func:`plain_text` gives back (see ``parse(text_in_raw_max=...)``).
    text_in_raw: bool = False

    def __reduce__(self) -> tuple[type[ParsedMessage], tuple[object, ...]]:
        # Parser processes send every message back pickled: rebuilding from the field values
        # costs half of a frozen dataclass's default (a setattr per field from a state dict).
        return (ParsedMessage, tuple(getattr(self, name) for name in _PARSED_FIELDS))


_PARSED_FIELDS = tuple(f.name for f in fields(ParsedMessage))


class _Defects:
    """Ordered, de-duplicated defect descriptions."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)

    def extend(self, defects: object, where: str = "") -> None:
        for defect in defects if isinstance(defects, list | tuple) else ():
            detail = str(defect)
            label = type(defect).__name__ + (f": {detail}" if detail else "")
            self.add(f"{where}{label}" if where else label)


def _clean(text: str) -> str:
    return repair(text).replace(_NUL, "")


class _RememberingHeaderRegistry(HeaderRegistry):
    """policy.default's header factory, answering a repeated (name, value) from memory.

    policy.default builds a new header object, with a full parse, on every read; a multipart
    message has each part's Content-Type read a dozen times (get_body, walking the parts,
    delivery reports). Header objects are immutable, so one object can answer every read of
    the same text; short values only, and a bounded number, so memory stays small.
    """

    _MAX_ENTRIES = 4096
    _MAX_VALUE = 1024

    def __init__(self) -> None:
        super().__init__()
        self._known: dict[tuple[str, str], BaseHeader] = {}

    def __call__(self, name: str, value: str) -> BaseHeader:
        if len(value) > self._MAX_VALUE:
            return super().__call__(name, value)
        key = (name, value)
        header = self._known.get(key)
        if header is None:
            header = super().__call__(name, value)
            if len(self._known) >= self._MAX_ENTRIES:
                self._known.clear()
            self._known[key] = header
        return header


_POLICY = policy.default.clone(header_factory=_RememberingHeaderRegistry())


def _read(raw: bytes) -> EmailMessage:
    parser = BytesFeedParser(policy=_POLICY)
    view = memoryview(raw)
    for start in range(0, len(view), _FEED_CHUNK):
        parser.feed(bytes(view[start : start + _FEED_CHUNK]))
    message = parser.close()
    assert isinstance(message, EmailMessage)  # guaranteed by policy.default's factory
    return message


# A header line the feed parser reads as a field ("Name:"), as its headerRE says.
_FIELD_LINE = re.compile(r"[\041-\071\073-\176]+:")
_LINE = re.compile(r"[^\n]*\n")


def _header_block(head: bytes) -> EmailMessage | None:
    """The header block ``head`` (ending with its empty line) as the feed parser stores it,
    or None when it holds anything but plain ASCII fields and folded lines.

    Feeding the parser costs more than the rest of reading a simple message; for such a
    block its result is only (name, value) pairs, split and unfolded as
    ``policy.header_source_parse`` does (tests/mailparse/test_fast_paths.py compares them).
    """
    if not head.isascii():
        return None
    text = head.decode("ascii")
    if text.count("\r") != text.count("\r\n"):
        return None  # a lone CR ends a line for the feed parser
    lines = _LINE.findall(text)
    if not lines or lines[-1].strip("\r\n"):
        return None
    fields: list[list[str]] = []
    for line in lines[:-1]:
        if line[0] in " \t":
            if not fields:
                return None  # a continuation first: a defect the parser records
            fields[-1].append(line)
        elif _FIELD_LINE.match(line):
            fields.append([line])
        else:
            return None  # "From " lines, body text: the parser decides
    message = EmailMessage(policy=_POLICY)
    for lines_of_field in fields:
        message.set_raw(*_POLICY.header_source_parse(lines_of_field))
    return message


def _raw_value(message: Message, name: str) -> str | None:
    values = _raw_values(message, name)
    return values[0] if values else None


def _decode_words(raw: str) -> str:
    """Decode RFC 2047 words with the charset fallback chain instead of U+FFFD."""
    try:
        decoded = decode_header(raw)
    except Exception:  # a malformed encoded word leaves the raw text as the best reading
        return raw
    chunks: list[str] = []
    for chunk, charset in decoded:
        if isinstance(chunk, str):
            chunks.append(chunk)
        else:
            chunks.append(decode_bytes(chunk, charset))
    return "".join(chunks)


_INDEX = "_konvergo_raw_index"


def _raw_values(message: Message, name: str) -> list[str]:
    """The raw values of every ``name`` field, in order (no header objects built)."""
    # A dozen fields are read per message: index the header list once, on the message
    # itself (it is discarded after parsing), instead of scanning it for each field.
    index: dict[str, list[str]] | None = vars(message).get(_INDEX)
    if index is None:
        index = {}
        for key, value in message.raw_items():
            index.setdefault(key.lower(), []).append(str(value))
        vars(message)[_INDEX] = index
    return index.get(name.lower(), [])


# Which cheap reading applies to a field read with _header_text (others: policy.default).
_FAST_TEXT = {
    "subject": fastheaders.unstructured,
    "in-reply-to": fastheaders.unstructured,
    "message-id": fastheaders.message_id,
    # Date is read by _message_date (fastheaders.date_time); only what that could not read
    # comes here, for policy.default.
}


def _header_text(message: Message, name: str, defects: _Defects) -> str | None:
    """Return the decoded value of the first ``name`` field, or None when absent."""
    reader = _FAST_TEXT.get(name.lower()) if _FAST else None
    if reader is not None:
        raw = _raw_value(message, name)
        if raw is None:
            return None
        text = reader(raw)
        if text is not None:
            return text  # printable ASCII: nothing for _clean() to repair
    try:
        value = message.get(name)
    except Exception as exc:  # the stdlib header parser has crashed on hostile input
        defects.add(f"{name}: unreadable header ({type(exc).__name__})")
        value = None
        if _raw_value(message, name) is None:
            return None
    if value is not None:
        defects.extend(getattr(value, "defects", ()), f"{name}: ")
        text = _clean(str(value))
        if "\ufffd" not in text:
            return text
        defects.add(f"{name}: undecodable encoded text; charset fallback applied")
    # policy.default replaced what it could not decode (an unknown or wrong charset in an
    # encoded word); the raw value through our own fallback chain does better.
    raw = _raw_value(message, name)
    if raw is None:
        return None
    return _clean(_decode_words(repair(raw)))


def _format_address(name: str, address: str) -> str:
    if not name:
        return address
    if _SPECIALS.search(name):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        name = f'"{escaped}"'
    return f"{name} <{address}>"


def _addresses(message: Message, name: str, defects: _Defects) -> list[tuple[str, str]]:
    """Return ``(display name, bare address)`` for every address in every ``name`` field."""
    result: list[tuple[str, str]] = []
    pairs: list[tuple[str, str]] = []
    raws = [repair(v) for v in _raw_values(message, name)]
    if not raws:
        return result  # no such field (the usual case for Cc, Resent-*, Delivered-To...)
    fast = _fast_addresses(name, raws) if _FAST else None
    if fast is not None:
        pairs = fast
    elif sum(map(len, raws)) > _LONG_ADDRESS_FIELD:
        # policy.default's address parser is super-linear (20,000 addresses: 15 s); the
        # stdlib's getaddresses() is linear, and its names only lack RFC 2047 decoding.
        pairs = [(_decode_words(n), a) for n, a in getaddresses(raws)]
    else:
        try:
            for header in message.get_all(name) or []:
                defects.extend(getattr(header, "defects", ()), f"{name}: ")
                # policy.default parses the standard address fields (typeshed says str);
                # others such as Delivered-To arrive as text for the lenient splitter.
                addresses = getattr(header, "addresses", None)
                if addresses is None:
                    pairs.extend(getaddresses([str(header)]))
                else:
                    pairs.extend((a.display_name, a.addr_spec) for a in addresses)
        except Exception as exc:  # the stdlib parser failed: use the lenient splitter
            defects.add(f"{name}: unreadable address list ({type(exc).__name__})")
            pairs = [(_decode_words(n), a) for n, a in getaddresses(raws)]
    for display, spec in pairs:
        bare = _clean(spec).strip().lower()
        # Groups like "undisclosed-recipients:;" and broken fragments carry no mailbox.
        if "@" not in bare or " " in bare:
            continue
        result.append((_clean(display).strip(), bare))
    return result


def _fast_addresses(name: str, raws: list[str]) -> list[tuple[str, str]] | None:
    """The pairs of every ``name`` field read cheaply, or None when one needs policy.default."""
    if not raws or sum(map(len, raws)) > _LONG_ADDRESS_FIELD:
        return None
    pairs: list[tuple[str, str]] = []
    if name.lower() not in _ADDRESS_FIELDS:
        # Unstructured for policy.default (Delivered-To): its text to the lenient splitter.
        for raw in raws:
            text = fastheaders.unstructured(raw)
            if text is None:
                return None
            pairs.extend(getaddresses([text]))
        return pairs
    for raw in raws:
        found = fastheaders.addresses(raw)
        if found is None:
            return None
        pairs.extend(found)
    return pairs


# The fields policy.default parses as address lists (the others it reads as unstructured).
_ADDRESS_FIELDS = frozenset(
    name
    for name, kind in HeaderRegistry().registry.items()
    if issubclass(kind, AddressHeader | SingleAddressHeader)
)


def _unique(values: Iterator[str] | list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _message_date(message: Message, defects: _Defects) -> datetime | None:
    """The Date field in UTC, or None (with a defect when it is there but unusable)."""
    raw = _raw_value(message, "Date") if _FAST else None
    parsed = fastheaders.date_time(raw) if raw is not None else None
    if parsed is not None:
        # What policy.default's formatted value parses back to, without the round trip.
        return _in_utc(parsed, None, defects)
    return _parse_date(_header_text(message, "Date", defects), defects)


def _parse_date(value: str | None, defects: _Defects) -> datetime | None:
    if not value:
        return None
    parsed: datetime | None = None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        # Some software writes ISO 8601; anything else really is unparsable.
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            defects.add(f"Date: unparsable value {value[:80]!r}")
            return None
    return _in_utc(parsed, value, defects)


def _in_utc(parsed: datetime, value: str | None, defects: _Defects) -> datetime | None:
    """``parsed`` in UTC; ``value`` is the text it came from (None: policy.default's)."""
    if parsed.tzinfo is None:
        # RFC 5322 "-0000" (and ISO without offset): no zone known, UTC is the least wrong.
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        text = value if value is not None else format_datetime(parsed)
        defects.add(f"Date: out of range {text[:80]!r}")
        return None


def _leaves(part: Message, defects: _Defects, depth: int = 0) -> Iterator[Message]:
    """Yield the non-multipart parts in order; message/* parts are leaves (kept whole)."""
    if part.get_content_maintype() != "multipart":
        yield part
        return
    payload = part.get_payload()
    if not isinstance(payload, list):
        # A multipart whose boundary never appears: the parser keeps the body as text.
        yield part
        return
    if depth >= _MAX_DEPTH:
        defects.add(f"MIME nesting deeper than {_MAX_DEPTH} levels; inner parts ignored")
        return
    for sub in payload:
        if isinstance(sub, Message):
            yield from _leaves(sub, defects, depth + 1)


def _payload_bytes(part: Message) -> bytes:
    """Return the transfer-decoded bytes of a leaf part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        # message/* parts: the embedded message(s), re-serialised without refolding.
        return b"".join(
            sub.as_bytes(policy=policy.default.clone(refold_source="none"))
            for sub in payload
            if isinstance(sub, Message)
        )
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte == "base64" and isinstance(payload, str):
        # binascii decodes the str directly, skipping the bytes copy and the split/join
        # into lines that Message.get_payload(decode=True) makes: for a 25 MB attachment
        # that is the difference between one and four extra copies.
        try:
            return binascii.a2b_base64(payload)
        except (binascii.Error, ValueError):
            pass  # padding damage or 8-bit junk: the stdlib decoder is more forgiving
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _part_text(part: Message) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:  # a malformed charset parameter is just unknown
        charset = None
    text = decode_bytes(_payload_bytes(part), charset)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace(_NUL, "")


def _safe_filename(name: str) -> str:
    name = _FILENAME_UNSAFE.sub("", _clean(name))
    # Keep the last path component only: "../../etc/passwd" or "C:\\x\\y.doc" are names
    # a sender chose, not places to write to.
    name = re.split(r"[/\\]", name)[-1].strip().strip(".").strip()
    if len(name) > _MAX_ATTACHMENT_FIELD:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: _MAX_ATTACHMENT_FIELD - len(ext) - 1] + "." + ext
        else:
            name = name[:_MAX_ATTACHMENT_FIELD]
    return name


def _attachment(part: Message, index: int, defects: _Defects) -> ParsedAttachment:
    content_type = part.get_content_type()
    content_type = _CONTENT_TYPE_FIXES.get(content_type, content_type)
    try:
        filename = _safe_filename(part.get_filename() or "")
    except Exception as exc:  # an unreadable name is replaced, not fatal
        defects.add(f"attachment {index}: unreadable filename ({type(exc).__name__})")
        filename = ""
    if not filename:
        filename = f"attachment-{index}{_EXTENSIONS.get(content_type, '.bin')}"
    content_id = (_header_text(part, "Content-ID", defects) or "").strip().strip("<>").strip()
    content = _payload_bytes(part)
    # The tree is discarded after parsing; dropping the encoded payload now means several
    # large attachments never hold their encoded and decoded forms all at once.
    if not isinstance(part.get_payload(), list):
        part.set_payload("")
    disposition = part.get_content_disposition()
    return ParsedAttachment(
        filename=filename,
        content_type=content_type[:_MAX_ATTACHMENT_FIELD],
        content=content,
        size=len(content),
        content_id=content_id[:_MAX_ATTACHMENT_FIELD],
        inline=bool(content_id) and disposition != "attachment",
    )


def _find_body(message: EmailMessage, subtype: str) -> Message | None:
    try:
        return message.get_body(preferencelist=(subtype,))
    except Exception:  # a broken tree simply has no identifiable body
        return None


def _is_message(message: Message) -> bool:
    return any(key.lower() in _MESSAGE_FIELDS for key in message)


_Content = tuple[str, str, tuple[ParsedAttachment, ...], str, DeliveryReport | None]
"""``(body_text, body_html, attachments, content_type, report)``."""


def _content(message: EmailMessage, defects: _Defects) -> _Content:
    """Bodies, attachments, content type and delivery report of a fully parsed message."""
    text_part = _find_body(message, "plain")
    html_part = _find_body(message, "html")
    body_text = _part_text(text_part) if text_part is not None else ""
    body_html = sanitize_html(_part_text(html_part)) if html_part is not None else ""
    if text_part is None and html_part is not None:
        body_text = html_to_text(body_html)

    report = read_report(message)

    attachments: list[ParsedAttachment] = []
    for part in _leaves(message, defects):
        if part is not message:
            defects.extend(part.defects, f"{part.get_content_type()}: ")
        if part is text_part or part is html_part:
            continue
        if part is message and part.get_content_maintype() == "multipart":
            # Boundary never found: the undivided body is the best text there is.
            if not body_text:
                body_text = _part_text(part)
            continue
        attachments.append(_attachment(part, len(attachments) + 1, defects))
    return body_text, body_html, tuple(attachments), message.get_content_type(), report


@dataclass
class _SimpleMessage:
    """A message that is one text part: its parsed header block and its undecoded body."""

    headers: EmailMessage
    subtype: str
    charset: str | None
    cte: str
    body: bytes

    def content(self, defects: _Defects, *, decode_plain: bool = True) -> _Content:
        if self.subtype == "plain" and not decode_plain:
            return "", "", (), "text/plain", None
        text = decode_bytes(_decode_transfer(self.body, self.cte), self.charset)
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace(_NUL, "")
        if self.subtype == "plain":
            # No HTML part: the sanitiser (nh3) never runs for a text-only message.
            return text, "", (), "text/plain", None
        html = sanitize_html(text)
        return html_to_text(html), html, (), "text/html", None


def _decode_transfer(body: bytes, cte: str) -> bytes:
    # What Message.get_payload(decode=True) does for these encodings (checked by _read_simple).
    if cte == "quoted-printable":
        return quopri.decodestring(body)
    if cte == "base64":
        return binascii.a2b_base64(body)
    return body


def _read_simple(raw: bytes) -> _SimpleMessage | None:
    """Parse only the header block when the message is one text/plain or text/html part.

    None when anything would make the full parse differ: MIME structure, a disposition,
    parameters beyond plain ``name=value``, another transfer encoding, base64 that is not
    clean, or a header block the parser does not end where the empty line is.
    """
    end = _HEADER_END.search(raw)
    if end is None:
        return None
    head = raw[: end.end()]
    headers = _header_block(head) or _read(head)
    if headers.get_payload() or headers.defects:
        return None  # the parser saw the body start elsewhere, or needs to report something
    fields: dict[str, list[str]] = {}
    for key, value in headers.raw_items():
        lowered = key.lower()
        if lowered in _STRUCTURE_FIELDS:
            fields.setdefault(lowered, []).append(str(value))
    if any(len(values) > 1 for values in fields.values()) or "content-disposition" in fields:
        return None
    subtype, charset = "plain", None
    if "content-type" in fields:
        value = fastheaders.unfold(fields["content-type"][0])
        found = _SIMPLE_TYPE.fullmatch(value) if value is not None else None
        if found is None:
            return None
        subtype = found.group(1).lower()
        pairs = _PARAM.findall(found.group(2))
        params = {k.lower(): quoted or token for k, quoted, token in pairs}
        if len(params) != len(pairs):
            return None  # a repeated parameter: which one wins is the stdlib's business
        charset = params.get("charset")
        charset = charset.lower() if charset is not None else None
    cte = ""
    if "content-transfer-encoding" in fields:
        value = fastheaders.unfold(fields["content-transfer-encoding"][0])
        if value is None or value.lower() not in _SIMPLE_CTE:
            return None
        cte = value.lower()
    body = raw[end.end() :]
    if cte == "base64":
        if not body.isascii():
            return None
        try:
            binascii.a2b_base64(body)
        except (binascii.Error, ValueError):
            return None  # the stdlib's forgiving decoder records defects: full parse
    return _SimpleMessage(headers, subtype, charset, cte, body)


def plain_text(raw: bytes) -> str:
    """The plain-text body :func:`parse` gives for ``raw``; empty when it cannot be parsed.

    For messages stored without their text beside them (a plain-text message's text is its
    body, decoded): cheap for those, as they take the header-only path.
    """
    try:
        return parse(raw).body_text
    except UnparseableMessage:
        return ""


def parse(raw: bytes, *, text_in_raw_max: int = 0) -> ParsedMessage:
    """Parse raw RFC 5322 bytes into a :class:`ParsedMessage`.

    Args:
        raw: the message exactly as fetched (``BODY[]``), CRLF or LF line endings.
        text_in_raw_max: a message of at most this many bytes that is plain text only (no
            HTML, no attachments) comes back with ``text_in_raw`` set and ``body_text``
            empty, for callers that store ``raw`` and read the text back with
            :func:`plain_text` when it is shown. Decoding the body is about a third of
            parsing such a message, and sending the text back from a parser process as much
            again. 0 (the default): the text is always in ``body_text``.

    Returns:
        The parsed message. Problems the parser worked around are in ``defects``.

    Raises:
        UnparseableMessage: the bytes are empty or carry no message header field at all.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"parse() needs bytes, not {type(raw).__name__}")
    raw = bytes(raw) if not isinstance(raw, bytes) else raw
    if not raw or raw.isspace():  # without copying a large message as strip() would
        raise UnparseableMessage("empty message: no bytes to parse")
    simple = _read_simple(raw) if _FAST else None
    if simple is not None:
        message = simple.headers
    else:
        try:
            message = _read(raw)
        except RecursionError as exc:
            raise UnparseableMessage("MIME structure nested too deeply to parse") from exc
    if not _is_message(message):
        raise UnparseableMessage(
            "not an RFC 5322 message: no header fields found before the body",
            size=len(raw),
        )

    defects = _Defects()
    defects.extend(message.defects)

    raw_id = _header_text(message, "Message-ID", defects)
    message_id = normalize_message_id(raw_id)
    synthetic = message_id is None
    if message_id is None:
        message_id = synthetic_message_id(raw)
        defects.add("Message-ID: missing or empty; synthetic id derived from the bytes")

    subject = " ".join((_header_text(message, "Subject", defects) or "").split())

    senders = _addresses(message, "From", defects) or _addresses(message, "Sender", defects)
    if senders:
        display, from_email = senders[0]
        from_address = _format_address(display, from_email)
    else:
        from_email = ""
        from_address = (_header_text(message, "From", defects) or "").strip()
        defects.add("From: no readable address")

    to = _addresses(message, "To", defects)
    cc = _addresses(message, "Cc", defects)
    delivered = _addresses(message, "Delivered-To", defects)
    resent = _addresses(message, "Resent-To", defects) + _addresses(message, "Resent-Cc", defects)
    reply_to = _addresses(message, "Reply-To", defects)

    references: list[str] = []
    for raw_refs in _raw_values(message, "References"):
        text = fastheaders.unstructured(raw_refs) if _FAST else None
        if text is None:
            text = _clean(str(message.policy.header_fetch_parse("References", raw_refs)))
        references.extend(extract_ids(text))
    references = list(dict.fromkeys(references))[-MAX_REFERENCES:]
    in_reply_to = normalize_message_id(_header_text(message, "In-Reply-To", defects))

    date = _message_date(message, defects)
    if date is None and _raw_value(message, "Date") is None:
        defects.add("Date: missing")

    small = len(raw) <= text_in_raw_max
    if simple is not None:
        content = simple.content(defects, decode_plain=not small)
    else:
        content = _content(message, defects)
    body_text, body_html, attachments, content_type, report = content
    text_in_raw = small and content_type == "text/plain" and not body_html and not attachments
    if text_in_raw:
        body_text = ""

    return ParsedMessage(
        message_id=message_id,
        message_id_synthetic=synthetic,
        subject=subject[:_MAX_HEADER_TEXT],
        from_address=from_address[:_MAX_HEADER_TEXT],
        from_email=from_email,
        reply_to=_unique(bare for _, bare in reply_to),
        to=_unique(bare for _, bare in to),
        to_text=", ".join(_format_address(n, a) for n, a in to),
        cc=_unique(bare for _, bare in cc),
        cc_text=", ".join(_format_address(n, a) for n, a in cc),
        delivered_to=_unique(bare for _, bare in delivered),
        recipients=_unique(bare for _, bare in delivered + to + cc + resent),
        date=date,
        in_reply_to=in_reply_to,
        references=tuple(references),
        body_text=body_text,
        body_html=body_html,
        attachments=attachments,
        defects=tuple(defects.items),
        content_type=content_type,
        report=report,
        text_in_raw=text_in_raw,
    )
