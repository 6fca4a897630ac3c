"""Evidence of delivery reports (RFC 3464 DSNs) read from a parsed MIME tree.

Parsing only collects facts here; :func:`konvergo.mailparse.threads.is_bounce` decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import HeaderParser

from konvergo.mailparse.charsets import decode_bytes, repair
from konvergo.mailparse.ids import normalize_message_id

# Parts whose body is the returned original (or just its header block).
_ORIGINAL_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers"}
)
_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_MAX_DEPTH = 20


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What a message says about the delivery of another message.

    Attributes:
        report_type: the ``report-type`` of a ``multipart/report`` ("delivery-status",
            "disposition-notification", ...), "" when the message is not a report.
        has_status: a ``message/delivery-status`` part is present.
        actions: the ``Action`` of each recipient block, lower-case ("failed", "delayed").
        failed_recipients: ``Final-Recipient`` addresses whose action is "failed".
        statuses: the ``Status`` codes ("5.1.1") of the failed recipients.
        diagnostic: the first ``Diagnostic-Code`` text.
        original_message_id: ``Message-ID`` of the returned original (or its headers).
        original_ms_message_id: ``X-Microsoft-Original-Message-ID`` of the returned original.
    """

    report_type: str = ""
    has_status: bool = False
    actions: tuple[str, ...] = ()
    failed_recipients: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    diagnostic: str = ""
    original_message_id: str | None = None
    original_ms_message_id: str | None = None


def _walk(part: Message, depth: int = 0) -> Iterator[Message]:
    yield part
    if depth >= _MAX_DEPTH or part.get_content_maintype() != "multipart":
        return
    payload = part.get_payload()
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                yield from _walk(sub, depth + 1)


def _text_of(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    return decode_bytes(data, part.get_content_charset())


def _header_blocks(part: Message) -> list[Message]:
    """Return the field blocks of a delivery-status part, however the parser stored them."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    # message/global-delivery-status (and encoded parts) arrive as text: one block per
    # paragraph, each parsed by the stdlib header parser.
    text = _text_of(part).replace("\r\n", "\n")
    parser = HeaderParser(policy=policy.default)
    return [parser.parsestr(block + "\n") for block in text.split("\n\n") if block.strip()]


def _original_headers(part: Message) -> Message | None:
    if part.get_content_type() in {"text/rfc822-headers", "message/global-headers"}:
        text = _text_of(part)
        return HeaderParser(policy=policy.default).parsestr(text, headersonly=True)
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    return None


def _field(block: Message, name: str) -> str:
    value = block.get(name)
    # Diagnostic-Code is often folded; the unfolded runs of spaces carry no meaning.
    return " ".join(repair(str(value)).split()) if value is not None else ""


def read_report(message: Message) -> DeliveryReport | None:
    """Collect DSN evidence from ``message``; None when it has no report or returned original."""
    report_type = ""
    if message.get_content_type() == "multipart/report":
        report_type = str(message.get_param("report-type", "") or "").lower()
    has_status = False
    actions: list[str] = []
    failed: list[str] = []
    statuses: list[str] = []
    diagnostic = ""
    original_id: str | None = None
    original_ms_id: str | None = None
    found_original = False
    for part in _walk(message):
        ctype = part.get_content_type()
        if ctype in _STATUS_TYPES:
            has_status = True
            # The first block describes the reporting MTA; each further one a recipient.
            for block in _header_blocks(part)[1:]:
                action = _field(block, "Action").lower()
                actions.append(action)
                if not diagnostic:
                    diagnostic = _field(block, "Diagnostic-Code")
                if action == "failed":
                    recipient = _field(block, "Final-Recipient") or _field(
                        block, "Original-Recipient"
                    )
                    # "rfc822; user@example.com": the address type comes first.
                    address = recipient.rpartition(";")[2].strip().strip("<>").lower()
                    if address:
                        failed.append(address)
                    status = _field(block, "Status")
                    if status:
                        statuses.append(status)
        elif ctype in _ORIGINAL_TYPES and not found_original:
            headers = _original_headers(part)
            if headers is not None:
                found_original = True
                original_id = normalize_message_id(_field(headers, "Message-ID"))
                original_ms_id = normalize_message_id(
                    _field(headers, "X-Microsoft-Original-Message-ID")
                )
    if not (report_type or has_status or found_original):
        return None
    return DeliveryReport(
        report_type=report_type,
        has_status=has_status,
        actions=tuple(actions),
        failed_recipients=tuple(failed),
        statuses=tuple(statuses),
        diagnostic=diagnostic,
        original_message_id=original_id,
        original_ms_message_id=original_ms_id,
    )
