"""Turning the bytes of mail into text without ever raising.

Mail declares charsets that are wrong (``us-ascii`` on UTF-8 text), unknown to Python
(``x-unknown``, ``iso-8859-8-i``) or vendor aliases (Outlook's ``ks_c_5601-1987``). The rule:

1. the declared charset, mapped through :data:`CHARSET_ALIASES`, decoded strictly;
2. UTF-8, strictly (the usual truth behind a wrong label);
3. windows-1252, strictly (what "latin-1" mail nearly always is);
4. latin-1, which maps every byte and therefore cannot fail.

The stdlib ``email`` package hands back undecodable header bytes as lone surrogates
(``surrogateescape``); :func:`repair` turns them back into bytes and through the same chain,
because a surrogate would make the database driver refuse the string later.
"""

from __future__ import annotations

import codecs
import re

# Labels that Python does not know, or knows as a narrower charset than the one senders
# really use (the superset decodes everything the narrow one does).
CHARSET_ALIASES: dict[str, str] = {
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "windows-874": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "x-mac-roman": "mac_roman",
    "ansi_x3.4-1968": "ascii",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "ascii",
}

# Text codecs that are not charsets: they could manufacture markup out of escape sequences
# (``unicode_escape``) or are for host names, not bodies. A label naming one is ignored.
_NOT_CHARSETS = frozenset(
    {"unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined", "mbcs", "oem"}
)

_FALLBACKS = ("utf-8", "cp1252")

# Codecs whose strict decoding never produces a surrogate code point.
_SURROGATE_FREE = frozenset({"utf-8", "ascii", "cp1252", "iso8859-1", "iso8859-15", "iso8859-2"})

_ANY_SURROGATE = re.compile("[\ud800-\udfff]")
# Surrogates outside the range ``surrogateescape`` uses for bytes 0x80-0xFF.
_FOREIGN_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def codec_for(label: str | None) -> str | None:
    """Return the Python codec name for a MIME charset label, or None when unusable."""
    if not label:
        return None
    name = label.strip().strip('"').lower()
    name = CHARSET_ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if info.name in _NOT_CHARSETS:
        return None
    return info.name


def decode_bytes(data: bytes, declared: str | None = None) -> str:
    """Decode ``data`` with the declared charset, else UTF-8, else windows-1252, else latin-1."""
    candidates: list[str] = []
    codec = codec_for(declared)
    if codec is not None:
        candidates.append(codec)
    candidates.extend(c for c in _FALLBACKS if c not in candidates)
    for candidate in candidates:
        try:
            text = data.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
        # UTF-7 and UTF-16 can yield lone surrogates, which no database accepts; strict
        # UTF-8 and the single-byte codecs cannot, so their (long) texts skip the search.
        if candidate in _SURROGATE_FREE or _ANY_SURROGATE.search(text) is None:
            return text
    return data.decode("latin-1")


def repair(text: str) -> str:
    """Replace ``surrogateescape`` residue left by the ``email`` package with decoded text."""
    if _ANY_SURROGATE.search(text) is None:
        return text
    # Only surrogates in the escape range stand for bytes; any other is not text at all.
    text = _FOREIGN_SURROGATE.sub("?", text)
    return decode_bytes(text.encode("utf-8", "surrogateescape"))
