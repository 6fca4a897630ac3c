"""Keep secrets out of logs: a logging filter that masks what looks like a credential."""

from __future__ import annotations

import logging
import re

# Each pattern keeps its first group and masks the rest: bearer tokens, XOAUTH2 strings
# (clear or base64), refresh tokens and client secrets in form bodies or JSON.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(auth=Bearer\s+)[^\s\x01]+", re.I), r"\1[redacted]"),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9\-._~+/]+=*", re.I), r"\1[redacted]"),
    (re.compile(r"(AUTH(?:ENTICATE)?\s+XOAUTH2\s+)\S+", re.I), r"\1[redacted]"),
    (
        re.compile(
            r"""((?:access_token|refresh_token|client_secret|password|code_verifier|id_token)"""
            r"""["']?\s*[:=]\s*["']?)[^"'&\s,}]+""",
            re.I,
        ),
        r"\1[redacted]",
    ),
    (re.compile(r"dXNlcj[A-Za-z0-9+/=]{20,}"), "[redacted-xoauth2]"),
)


def redact(text: str) -> str:
    """Return ``text`` with anything credential-shaped replaced by ``[redacted]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks credentials in every record that passes through a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = redact(str(exc))
            if text != str(exc):
                record.exc_text = f"{type(exc).__name__}: {text}"
                record.exc_info = None
        return True
