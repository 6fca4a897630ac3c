"""IMAP failures as Konvergo exceptions, chosen by lookup tables rather than by branches.

::

    ImapFailure                                  (base; reply_text, stage, explanation)
    ├── ImapAuthorizationError(AuthorizationError)   NO AUTHENTICATE failed, not connected
    ├── ImapConfigurationError(ConfigurationError)   TLS, host name, folder, cleartext refusal
    ├── ImapTemporaryError(TemporaryTransportError)  BYE, throttling, timeouts, dropped sockets
    └── ImapPermanentError(PermanentTransportError)  a command the server will never accept

Each failure carries ``reply_text``: the server's own lines, unaltered (Microsoft's words are
what an administrator searches for and what the error catalogue matches), ``stage`` (where in
the session it happened) and, for throttling, ``retry_after`` (seconds) from Exchange's
"Suggested Backoff Time".
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Mapping
from typing import Any, Literal

from konvergo.errors import (
    AuthorizationError,
    ConfigurationError,
    KonvergoError,
    PermanentTransportError,
    TemporaryTransportError,
)
from konvergo.providers.microsoft.catalogue import (
    Explanation,
    FailureClass,
    classify_imap_reply,
    explain,
)

Stage = Literal["connect", "starttls", "auth", "select", "search", "fetch", "store", "idle"]

#: What each stage is called in a message shown to an administrator.
STAGE_LABELS: Mapping[Stage, str] = {
    "connect": "Connecting",
    "starttls": "Starting TLS (STARTTLS)",
    "auth": "Authentication",
    "select": "Opening the folder",
    "search": "Searching the folder",
    "fetch": "Fetching messages",
    "store": "Setting flags",
    "idle": "Waiting for new mail (IDLE)",
}


class ImapFailure(KonvergoError):
    """Base of IMAP failures; never raised itself, always one of the subclasses below."""

    failure_class: FailureClass = "temporary"

    def __init__(
        self,
        message: str,
        *,
        stage: Stage,
        reply_text: str = "",
        retry_after: float | None = None,
        **context: Any,
    ) -> None:
        self.stage: Stage = stage
        self.reply_text = reply_text
        #: Seconds to wait before the next attempt (Exchange's suggested backoff), if known.
        self.retry_after = retry_after
        #: The error catalogue's advice (cause, who must act, fix), when it knows the text.
        self.explanation: Explanation | None = (
            explain(reply_text, surface="imap") if reply_text else None
        )
        super().__init__(
            message,
            stage=stage,
            reply_text=reply_text,
            retry_after=retry_after,
            explanation=self.explanation,
            **context,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Worker processes pickle errors; keyword-only arguments need this.
        return (_rebuild, (type(self), self.message, self.stage, self.reply_text, self.retry_after))

    @property
    def fix(self) -> str:
        """What to do about it: the catalogue's fix, else the generic advice for the class."""
        if self.explanation is not None:
            return self.explanation.entry.fix
        return GENERIC_FIXES[self.failure_class]


def _rebuild(
    cls: type[ImapFailure], message: str, stage: Stage, reply_text: str, retry: float | None
) -> ImapFailure:
    return cls(message, stage=stage, reply_text=reply_text, retry_after=retry)


class ImapAuthorizationError(ImapFailure, AuthorizationError):
    """The server refused the credentials or the mailbox; someone must reconnect or grant."""

    failure_class: FailureClass = "authorization"


class ImapConfigurationError(ImapFailure, ConfigurationError):
    """A setting is wrong (host, port, TLS, folder name); an administrator must change it."""

    failure_class: FailureClass = "configuration"


class ImapTemporaryError(ImapFailure, TemporaryTransportError):
    """Worth retrying later: the server said BYE, throttled us, or the connection broke."""

    failure_class: FailureClass = "temporary"


class ImapPermanentError(ImapFailure, PermanentTransportError):
    """The server refuses a command for good; retrying as is will not help."""

    failure_class: FailureClass = "permanent"


#: Exception class per failure class (the catalogue speaks in failure classes).
CLASS_FOR: Mapping[FailureClass, type[ImapFailure]] = {
    "authorization": ImapAuthorizationError,
    "configuration": ImapConfigurationError,
    "temporary": ImapTemporaryError,
    "permanent": ImapPermanentError,
}

#: Advice when the catalogue has no row for the server's text.
GENERIC_FIXES: Mapping[FailureClass, str] = {
    "authorization": (
        "Check the Username and the password (or reconnect the Outlook account), then click "
        "Test and Confirm."
    ),
    "configuration": (
        "Check the Server Name, Port, SSL/TLS and folder names of this Incoming Mail Server, "
        "then click Test and Confirm."
    ),
    "temporary": "Nothing to change: Konvergo tries again automatically.",
    "permanent": "Check the folder names and the server's limits, then click Test and Confirm.",
}

#: Replies of IMAP servers other than Exchange (Dovecot, Cyrus, Gmail: RFC 5530 response
#: codes), checked before the Microsoft catalogue. First match wins.
REPLY_RULES: tuple[tuple[re.Pattern[str], FailureClass], ...] = (
    (re.compile(r"\[(AUTHENTICATIONFAILED|AUTHORIZATIONFAILED|EXPIRED)\]", re.I), "authorization"),
    (re.compile(r"\bLOGIN failed\b", re.I), "authorization"),
    (
        re.compile(r"\[(NONEXISTENT|TRYCREATE)\]|doesn't exist|no such mailbox", re.I),
        "configuration",
    ),
    (re.compile(r"\[(UNAVAILABLE|INUSE|LIMIT|SERVERBUG)\]", re.I), "temporary"),
    (re.compile(r"\[PRIVACYREQUIRED\]|\[CLIENTBUG\]", re.I), "configuration"),
)

#: Exchange's throttle reply names its backoff (microsoft.md E-36).
BACKOFF_RE = re.compile(r"Suggested Backoff Time:\s*(\d+)\s*milliseconds", re.I)

#: Socket-level failures: (exception type, failure class, what it means). First match wins,
#: so subclasses come before their bases.
OSERROR_RULES: tuple[tuple[type[BaseException], FailureClass, str], ...] = (
    (ssl.SSLCertVerificationError, "configuration", "the server's certificate was refused"),
    (ssl.SSLError, "configuration", "TLS could not be established"),
    (socket.gaierror, "configuration", "the Server Name cannot be resolved"),
    (TimeoutError, "temporary", "the server did not answer in time"),
    (ConnectionRefusedError, "temporary", "the connection was refused (check the Port)"),
    (ConnectionError, "temporary", "the connection was closed"),
    (EOFError, "temporary", "the connection was closed"),
    (OSError, "temporary", "a network error occurred"),
)


def classify_reply(text: str) -> FailureClass:
    """The failure class of a server's reply lines: generic IMAP codes, then the catalogue."""
    for pattern, failure_class in REPLY_RULES:
        if pattern.search(text):
            return failure_class
    return classify_imap_reply(text)


def backoff_seconds(text: str) -> float | None:
    """Exchange's suggested backoff in seconds, if the reply names one."""
    found = BACKOFF_RE.search(text)
    return int(found.group(1)) / 1000 if found else None


def reply_failure(stage: Stage, text: str, server: str) -> ImapFailure:
    """The exception for a NO/BAD/BYE reply: class by data, message with the exact text."""
    failure_class = classify_reply(text)
    if backoff_seconds(text) is not None:
        failure_class = "temporary"
    cls = CLASS_FOR[failure_class]
    one_line = " | ".join(line for line in text.splitlines() if line.strip())
    return cls(
        f"{STAGE_LABELS[stage]} on {server} failed: {one_line}",
        stage=stage,
        reply_text=text,
        retry_after=backoff_seconds(text),
        server=server,
    )


def oserror_failure(stage: Stage, exc: BaseException, server: str) -> ImapFailure:
    """The exception for a socket/TLS failure, classified by its type."""
    for exc_type, failure_class, meaning in OSERROR_RULES:
        if isinstance(exc, exc_type):
            cls = CLASS_FOR[failure_class]
            return cls(
                f"{STAGE_LABELS[stage]} to {server} failed: {meaning} ({exc}).",
                stage=stage,
                server=server,
            )
    return ImapTemporaryError(
        f"{STAGE_LABELS[stage]} to {server} failed: {exc}", stage=stage, server=server
    )
