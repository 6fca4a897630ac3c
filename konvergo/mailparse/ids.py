"""Message-IDs: extraction from headers, normalisation, synthesis and generation.

Every id leaves this module in one form, ``<left@right>`` with the angle brackets, so that
the value stored for a message, the values found in In-Reply-To/References and the ids we
generate for outgoing mail compare as plain strings.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

# An id is whatever sits between angle brackets, without whitespace or controls: real mail
# carries ids that are not RFC 5322 dot-atoms (Outlook, list software), and they must still
# match the References of the replies.
_BRACKETED = re.compile(r"<([^<>\s\x00-\x1f\x7f]+)>")
_BARE = re.compile(r"[^<>\s\x00-\x1f\x7f()]+@[^<>\s\x00-\x1f\x7f()]+")

# Message.message_id is a 512-character column; longer ids are mapped (deterministically, so
# a reply's References still match) instead of truncated.
MAX_ID_LENGTH = 500

SYNTHETIC_DOMAIN = "konvergo.missing-message-id"
_LONG_DOMAIN = "konvergo.long-message-id"


def _bounded(msgid: str) -> str:
    if len(msgid) <= MAX_ID_LENGTH:
        return msgid
    digest = hashlib.sha256(msgid.encode("utf-8", "surrogatepass")).hexdigest()
    return f"<{digest}@{_LONG_DOMAIN}>"


def extract_ids(value: str | None) -> list[str]:
    """Return the Message-IDs in a header value, in order, as ``<...>`` strings.

    Ids without brackets (``In-Reply-To: abc@host``) are accepted when the value holds no
    bracketed id at all, which is how some old clients write them.
    """
    if not value:
        return []
    found = [f"<{m}>" for m in _BRACKETED.findall(value)]
    if not found:
        found = [f"<{m}>" for m in _BARE.findall(value)]
    return [_bounded(msgid) for msgid in found]


def normalize_message_id(value: str | None) -> str | None:
    """Return the first Message-ID of a header value as ``<...>``, or None when there is none."""
    ids = extract_ids(value)
    return ids[0] if ids else None


def synthetic_message_id(raw: bytes) -> str:
    """Return a stable id for a message that has none: the same bytes give the same id.

    Intake dedupes on (server, Message-ID), so a refetch of the same bytes is recognised.
    """
    return f"<{hashlib.sha256(raw).hexdigest()}@{SYNTHETIC_DOMAIN}>"


def generate_message_id(domain: str) -> str:
    """Return a new ``<random.timestamp@domain>`` id; ``domain`` must already be ASCII."""
    # 96 random bits make collisions irrelevant; the millisecond timestamp helps a human
    # reading logs to place the message in time.
    return f"<{secrets.token_hex(12)}.{time.time_ns() // 1_000_000}@{domain}>"
