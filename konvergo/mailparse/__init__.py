"""MIME in and out for Konvergo mail: pure functions, no Django, no I/O.

Incoming::

    parsed = parse(raw)               # ParsedMessage; UnparseableMessage only for non-mail
    text = plain_text(raw)            # parse(raw).body_text, "" for non-mail
    keys = thread_keys(parsed)        # Message-IDs to look up, most specific first
    bounce = is_bounce(parsed)        # Bounce(original_message_id=...) or None

Outgoing::

    built = build_message(from_=..., to=[...], subject=..., text=..., html=None, domain=...)
    smtp.sendmail(built.envelope_from, built.envelope_recipients, built.raw)
    raw = rewrite_from(built.raw, "Notifications <notifications@example.com>", reply_to)

The HTML sanitiser policy is described in :mod:`konvergo.mailparse.html`.
"""

from __future__ import annotations

from konvergo.mailparse.errors import UnparseableMessage
from konvergo.mailparse.html import html_to_text, sanitize_html
from konvergo.mailparse.incoming import (
    MAX_REFERENCES,
    ParsedAttachment,
    ParsedMessage,
    parse,
    plain_text,
)
from konvergo.mailparse.outgoing import DEFAULT_MAX_SIZE, BuiltMessage, build_message, rewrite_from
from konvergo.mailparse.reports import DeliveryReport
from konvergo.mailparse.threads import Bounce, is_bounce, thread_keys

__all__ = [
    "DEFAULT_MAX_SIZE",
    "MAX_REFERENCES",
    "Bounce",
    "BuiltMessage",
    "DeliveryReport",
    "ParsedAttachment",
    "ParsedMessage",
    "UnparseableMessage",
    "build_message",
    "html_to_text",
    "is_bounce",
    "parse",
    "plain_text",
    "rewrite_from",
    "sanitize_html",
    "thread_keys",
]
