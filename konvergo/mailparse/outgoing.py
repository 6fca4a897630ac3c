"""Building outgoing messages, and rewriting the From of an already built one.

Messages are composed with ``email.message.EmailMessage`` and ``policy.SMTP`` restricted to
7-bit transfer encodings, so the bytes are valid for any SMTP server (no 8BITMIME or
SMTPUTF8 needed): non-ASCII names and subjects become RFC 2047 words, non-ASCII filenames
RFC 2231 parameters, non-ASCII bodies quoted-printable or base64, domains IDNA (2008,
UTS #46) A-labels.

Every input is validated before anything is built; a refusal is a
:class:`~konvergo.errors.ValidationFailed` whose ``field`` is the keyword argument at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address, AddressHeader, Group, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime

import idna

from konvergo.errors import ValidationFailed
from konvergo.mailparse.html import html_to_text
from konvergo.mailparse.ids import extract_ids, generate_message_id

# Exchange Online's default maximum send size (MaxSendSize), the tightest limit we target.
DEFAULT_MAX_SIZE = 35 * 1024 * 1024

# CRLF everywhere and only 7-bit content transfer encodings.
_POLICY = policy.SMTP.clone(cte_type="7bit")

# Everything str.splitlines() (and thus the email package) treats as a line boundary, plus
# NUL: any of them in a header value could start a new header field or break the message.
_LINE_BREAK = re.compile("[\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_FIELD_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$", re.I)

# Headers build_message() writes itself; callers may not override them through headers=.
_MANAGED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id", "in-reply-to",
        "references", "mime-version", "content-type", "content-transfer-encoding",
        "content-disposition", "sender",
    }
)  # fmt: skip

_REGISTRY = HeaderRegistry()


@dataclass(frozen=True, slots=True)
class BuiltMessage:
    """A message ready for SMTP: ``raw`` goes after DATA, the envelope to MAIL/RCPT."""

    raw: bytes
    message_id: str
    envelope_from: str
    envelope_recipients: tuple[str, ...]
    size: int


def _refuse_line_breaks(field: str, value: str) -> None:
    if _LINE_BREAK.search(value):
        raise ValidationFailed(
            field, f"{field} contains a line break; refused to prevent header injection"
        )


def _ascii_domain(field: str, domain: str) -> str:
    """Return the IDNA A-label form of ``domain``, refusing anything not a host name."""
    try:
        ascii_domain = idna.encode(domain.rstrip("."), uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise ValidationFailed(field, f"{field}: {domain!r} is not a valid domain") from exc
    labels = ascii_domain.split(".")
    # Mail to a single-label name or an address literal never leaves a real system.
    if len(ascii_domain) > 253 or len(labels) < 2 or not all(map(_LABEL.match, labels)):
        raise ValidationFailed(field, f"{field}: {domain!r} is not a valid domain")
    return ascii_domain


def _address(field: str, value: object) -> Address:
    """Parse one ``Name <user@domain>`` or ``user@domain`` into an ASCII-domain Address."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(field, f"{field}: an email address is required")
    _refuse_line_breaks(field, value)
    header = _REGISTRY("to", value)
    assert isinstance(header, AddressHeader)  # the registry maps "to" to an address header
    addresses = header.addresses
    if header.defects or len(addresses) != 1 or any(g.display_name for g in header.groups):
        raise ValidationFailed(field, f"{field}: {value!r} is not one valid email address")
    parsed = addresses[0]
    local = parsed.username
    if not local or len(local) > 64 or not _LOCAL_PART.match(local) or ".." in local:
        # Non-ASCII local parts need SMTPUTF8, which we do not rely on.
        raise ValidationFailed(field, f"{field}: {value!r} has an invalid local part")
    domain = _ascii_domain(field, parsed.domain)
    if _CONTROL.search(parsed.display_name):
        raise ValidationFailed(field, f"{field}: the name in {value!r} has control characters")
    return Address(display_name=parsed.display_name, username=local, domain=domain)


def _addresses(field: str, values: Sequence[str]) -> list[Address]:
    if isinstance(values, str):
        raise ValidationFailed(field, f"{field}: give a list of addresses, not one string")
    return [_address(field, value) for value in values]


def _message_ids(field: str, values: Sequence[str]) -> list[str]:
    ids: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise ValidationFailed(field, f"{field}: Message-IDs are strings")
        _refuse_line_breaks(field, value)
        found = extract_ids(value)
        if len(found) != 1 or "@" not in found[0]:
            raise ValidationFailed(field, f"{field}: {value!r} is not one <id@domain> Message-ID")
        ids.append(found[0])
    return list(dict.fromkeys(ids))


def _check_text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationFailed(field, f"{field}: text is required")
    _refuse_line_breaks(field, value)
    if _CONTROL.search(value):
        raise ValidationFailed(field, f"{field} contains control characters")
    return value


def _check_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    checked: list[tuple[str, str]] = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            raise ValidationFailed("headers", f"headers: {name!r} is not a valid field name")
        if name.lower() in _MANAGED_HEADERS:
            raise ValidationFailed(
                "headers", f"headers: {name} is set by build_message(); use its argument"
            )
        checked.append((name, _check_text("headers", value)))
    return checked


def _check_attachments(
    attachments: Sequence[tuple[str, str, bytes]],
) -> list[tuple[str, str, str, bytes]]:
    checked: list[tuple[str, str, str, bytes]] = []
    for index, item in enumerate(attachments):
        try:
            filename, content_type, content = item
        except (TypeError, ValueError) as exc:
            raise ValidationFailed(
                "attachments", f"attachments[{index}]: expected (filename, type, bytes)"
            ) from exc
        if not isinstance(filename, str) or not filename.strip():
            raise ValidationFailed("attachments", f"attachments[{index}]: filename required")
        _refuse_line_breaks("attachments", filename)
        if _CONTROL.search(filename) or "/" in filename or "\\" in filename:
            raise ValidationFailed(
                "attachments", f"attachments[{index}]: {filename!r} is not a plain file name"
            )
        if not isinstance(content_type, str) or not _CONTENT_TYPE.match(content_type):
            raise ValidationFailed(
                "attachments", f"attachments[{index}]: {content_type!r} is not a MIME type"
            )
        if not isinstance(content, bytes | bytearray | memoryview):
            raise ValidationFailed("attachments", f"attachments[{index}]: content must be bytes")
        maintype, subtype = content_type.lower().split("/")
        checked.append((filename, maintype, subtype, bytes(content)))
    return checked


def _refuse_size(field: str, size: int, max_size: int) -> None:
    raise ValidationFailed(
        field,
        f"the message would be {size:,} bytes, above the {max_size:,}-byte limit; "
        "send fewer or smaller attachments",
        size=size,
        max_size=max_size,
    )


def build_message(
    *,
    from_: str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    subject: str,
    text: str | None,
    html: str | None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    message_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    domain: str,
    max_size: int = DEFAULT_MAX_SIZE,
) -> BuiltMessage:
    """Compose a MIME message ready for SMTP.

    Args:
        from_: the author, ``user@domain`` or ``Name <user@domain>``.
        to, cc, bcc: recipients; Bcc goes to the envelope only, never into a header.
        subject: one line of text.
        text, html: the bodies. With only HTML, a text alternative is derived from it;
            with neither, the body is empty.
        attachments: ``(filename, content_type, content)`` triples.
        reply_to: a single Reply-To address.
        in_reply_to, references: threading headers (``<id@domain>``).
        message_id: the Message-ID to use; generated as ``<random.timestamp@domain>``.
        headers: extra header fields (not the ones this function manages).
        domain: the right-hand side of generated Message-IDs.
        max_size: refuse messages larger than this many bytes.

    Returns:
        The :class:`BuiltMessage`.

    Raises:
        ValidationFailed: ``field`` names the argument that was refused.
    """
    sender = _address("from_", from_)
    to_addrs = _addresses("to", to)
    cc_addrs = _addresses("cc", cc)
    bcc_addrs = _addresses("bcc", bcc)
    if not (to_addrs or cc_addrs or bcc_addrs):
        raise ValidationFailed("to", "no recipient: give at least one To, Cc or Bcc address")
    reply_addr = _address("reply_to", reply_to) if reply_to is not None else None
    subject = _check_text("subject", subject)
    parent = _message_ids("in_reply_to", [in_reply_to]) if in_reply_to else []
    refs = _message_ids("references", references)
    own_domain = _ascii_domain("domain", domain)
    msgid = (
        _message_ids("message_id", [message_id])[0]
        if message_id
        else generate_message_id(own_domain)
    )
    extra = _check_headers(headers or {})
    files = _check_attachments(attachments)
    for field, body in (("text", text), ("html", html)):
        if body is not None and not isinstance(body, str):
            raise ValidationFailed(field, f"{field}: the body must be a string")

    # Refuse before encoding anything: base64 grows content by 4/3 plus line breaks.
    estimate = sum(len(content) * 4 // 3 * 78 // 76 for *_, content in files)
    estimate += len((text or "").encode()) + len((html or "").encode())
    if estimate > max_size:
        _refuse_size("attachments" if files else ("html" if html else "text"), estimate, max_size)

    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    if to_addrs:
        message["To"] = to_addrs
    elif not cc_addrs:
        # RFC 5322 wants a destination field; this is the conventional empty one.
        message["To"] = Group("undisclosed-recipients")
    if cc_addrs:
        message["Cc"] = cc_addrs
    if reply_addr is not None:
        message["Reply-To"] = reply_addr
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = msgid
    if parent:
        message["In-Reply-To"] = parent[0]
    if refs:
        message["References"] = " ".join(refs)
    for name, value in extra:
        message[name] = value

    if html is not None:
        message.set_content(text if text is not None else html_to_text(html))
        message.add_alternative(html, subtype="html")
    else:
        message.set_content(text or "")
    for filename, maintype, subtype, content in files:
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)

    # add_alternative()/add_attachment() create EmailMessage sub-parts, which stamp their
    # own MIME-Version; RFC 2045 wants it once, at the top.
    for part in message.walk():
        if part is not message:
            del part["MIME-Version"]
    raw = message.as_bytes()
    if len(raw) > max_size:
        _refuse_size("attachments" if files else ("html" if html else "text"), len(raw), max_size)
    recipients: dict[str, str] = {}
    for addr in (*to_addrs, *cc_addrs, *bcc_addrs):
        recipients.setdefault(addr.addr_spec.lower(), addr.addr_spec)
    return BuiltMessage(
        raw=raw,
        message_id=msgid,
        envelope_from=sender.addr_spec,
        envelope_recipients=tuple(recipients.values()),
        size=len(raw),
    )


def _split_header_block(raw: bytes) -> tuple[list[bytes], bytes, bytes]:
    """Return (header fields with their line endings, newline, body including separator)."""
    fields: list[bytes] = []
    newline = b"\r\n"
    position = 0
    first = True
    while position < len(raw):
        end = raw.find(b"\n", position)
        end = len(raw) if end < 0 else end + 1
        line = raw[position:end]
        if first:
            newline = b"\r\n" if line.endswith(b"\r\n") else b"\n"
            first = False
        if line in {b"\r\n", b"\n"}:
            return fields, newline, raw[position:]
        if line[:1] in {b" ", b"\t"} and fields:
            fields[-1] += line  # folded continuation of the previous field
        else:
            fields.append(line)
        position = end
    return fields, newline, b""


def _field_name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def rewrite_from(raw: bytes, header_from: str, reply_to: str | None) -> bytes:
    """Return ``raw`` with its From replaced, and Reply-To added when given and absent.

    Only the header block changes: every other header line and the body are kept byte for
    byte (a body re-encoded by a generator could change, and would break any signature
    made over it). The new fields use the message's own line ending.

    Raises:
        ValidationFailed: ``header_from`` or ``reply_to`` is not a valid address.
    """
    sender = _address("header_from", header_from)
    reply_addr = _address("reply_to", reply_to) if reply_to is not None else None
    fields, newline, body = _split_header_block(raw)
    fold_policy = _POLICY.clone(linesep=newline.decode("ascii"))
    new_from = _REGISTRY("From", [sender]).fold(policy=fold_policy).encode("ascii")
    added = [new_from]
    if reply_addr is not None and not any(_field_name(f) == b"reply-to" for f in fields):
        added.append(_REGISTRY("Reply-To", [reply_addr]).fold(policy=fold_policy).encode("ascii"))
    result: list[bytes] = []
    placed = False
    for field in fields:
        if _field_name(field) == b"from":
            if not placed:
                result.extend(added)
                placed = True
            continue  # a second From (malformed input) is dropped with the first
        result.append(field)
    if not placed:
        result.extend(added)
    if not body:
        body = newline
    return b"".join(result) + body
