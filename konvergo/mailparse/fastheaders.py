"""Cheap readings of everyday header values, identical to what ``policy.default`` returns.

Each function takes a raw header value (as stored by the parser, folding included) and returns
the reading, or None when the value is not in the narrow shape it knows; the caller then asks
``policy.default`` as before. A value qualifies only when it is printable ASCII without encoded
words: for those, ``policy.default`` produces no defects and the readings below are what its
header objects say (tests/mailparse/test_fast_paths.py checks this against the stdlib).
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

# policy.default unfolds by deleting CR and LF (email.policy.linesep_splitter).
_LINESEP = re.compile(r"\r\n|\r|\n")
# Printable ASCII and tab, without the start of an RFC 2047 encoded word.
_PLAIN = re.compile(r"(?:[\t -<>-~]|=(?!\?))*")

_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_ADDR_SPEC = rf"{_DOT_ATOM}@{_DOT_ATOM}"
# An address list item: "addr", "<addr>", "Word Word <addr>" or '"Any, text" <addr>'.
# Phrases with dots ("Mr. X") are obsolete syntax with a defect: left to policy.default.
_ITEM = re.compile(
    rf"[ \t]*(?:(?P<bare>{_ADDR_SPEC})"
    rf"|(?:(?P<phrase>{_ATOM}(?:[ \t]+{_ATOM})*)[ \t]*|\"(?P<quoted>[^\"\\]*)\"[ \t]*)?"
    rf"<(?P<angle>{_ADDR_SPEC})>)[ \t]*(?:,|\Z)"
)
_SPACES = re.compile(r"[ \t]+")
_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM}@{_DOT_ATOM}>")


def unfold(raw: str) -> str | None:
    """The unfolded value when it is plain printable ASCII without encoded words, else None."""
    value = _LINESEP.sub("", raw)
    return value if _PLAIN.fullmatch(value) else None


def unstructured(raw: str) -> str | None:
    """``str(header)`` of an unstructured field (Subject, References, Delivered-To...)."""
    return unfold(raw)


def message_id(raw: str) -> str | None:
    """``str(header)`` of a Message-ID field holding one well-formed ``<left@right>``."""
    value = unfold(raw)
    return value if value is not None and _MESSAGE_ID.fullmatch(value) else None


def date(raw: str) -> str | None:
    """``str(header)`` of a Date field: policy.default re-formats a parsable date."""
    parsed = date_time(raw)
    if parsed is None:
        return None
    try:
        return format_datetime(parsed)
    except (TypeError, ValueError, OverflowError):
        return None


def date_time(raw: str) -> datetime | None:
    """The date :func:`date` formats (naive for ``-0000``), or None where it gives None."""
    value = unfold(raw)
    if not value:
        return None
    try:
        parsed: datetime = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # policy.default records the defect (or fails): let it
    return parsed


def addresses(raw: str) -> list[tuple[str, str]] | None:
    """``[(display_name, addr_spec)]`` of an address field in the everyday shapes, else None."""
    value = unfold(raw)
    if value is None or not value.strip(" \t"):
        return None  # an empty list is a defect for policy.default
    pairs: list[tuple[str, str]] = []
    pos, end = 0, len(value)
    while pos < end:
        found = _ITEM.match(value, pos)
        if found is None or found.end() == pos:
            return None
        bare, angle = found.group("bare"), found.group("angle")
        if bare is not None:
            pairs.append(("", bare))
        else:
            phrase, quoted = found.group("phrase"), found.group("quoted")
            name = _SPACES.sub(" ", phrase) if phrase is not None else quoted or ""
            pairs.append((name, angle))
        pos = found.end()
        if value[pos - 1] == "," and not value[pos:].strip(" \t"):
            return None  # a trailing comma: policy.default notes an empty item
    return pairs
