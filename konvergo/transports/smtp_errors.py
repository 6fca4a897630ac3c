"""SMTP failures as Konvergo exceptions, chosen by lookup tables rather than by branches.

Every failure carries ``stage`` (where in the dialogue it happened), ``reply_code`` and
``reply_text`` (the server's words, unaltered: Microsoft's reply text is what an admin
searches for, and what the error catalogue matches). Each class also inherits from the
project-wide class (``AuthorizationError`` ...), so callers that only know
:mod:`konvergo.errors` can catch them without importing this module.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from konvergo.errors import (
    AuthorizationError,
    ConfigurationError,
    KonvergoError,
    PermanentTransportError,
    TemporaryTransportError,
)
from konvergo.providers.microsoft.catalogue import Explanation, FailureClass, explain

Stage = Literal["connect", "starttls", "auth", "mail", "rcpt", "data"]

#: What each stage is called in a message shown to an administrator.
STAGE_LABELS: Mapping[Stage, str] = {
    "connect": "Connecting",
    "starttls": "Starting TLS (STARTTLS)",
    "auth": "Authentication",
    "mail": "MAIL FROM (sender)",
    "rcpt": "RCPT TO (recipient)",
    "data": "DATA (message)",
}


class SmtpFailure(KonvergoError):
    """Base of SMTP failures; never raised itself, always one of the subclasses below."""

    #: What the queue does when the catalogue does not know the reply (see failure_class).
    default_failure_class: ClassVar[FailureClass] = "permanent"

    def __init__(
        self,
        message: str,
        *,
        stage: Stage,
        reply_code: int | None = None,
        reply_text: str = "",
        refused: Mapping[str, tuple[int, str]] | None = None,
        **context: Any,
    ) -> None:
        self._init_kwargs: dict[str, Any] = {
            "stage": stage,
            "reply_code": reply_code,
            "reply_text": reply_text,
            "refused": dict(refused or {}),
            **context,
        }
        self.stage: Stage = stage
        self.reply_code = reply_code
        self.reply_text = reply_text
        #: Recipients the server refused, with its reply to each (RCPT stage).
        self.refused: dict[str, tuple[int, str]] = dict(refused or {})
        #: The error catalogue's advice for the reply (cause, who must act, fix), if known.
        self.explanation: Explanation | None = (
            explain(self.reply, surface="smtp") if reply_code is not None else None
        )
        super().__init__(
            message,
            stage=stage,
            reply_code=reply_code,
            reply_text=reply_text,
            explanation=self.explanation,
            **context,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Queue workers pass exceptions between processes; the keyword-only arguments would
        # be lost by the default pickling of Exception (which replays ``args`` only).
        return (_rebuild, (type(self), self.message, self._init_kwargs))

    @property
    def reply(self) -> str:
        """``"<code> <text>"`` as the server sent it, or ``""`` when it sent nothing."""
        if self.reply_code is None:
            return self.reply_text
        return f"{self.reply_code} {self.reply_text}".rstrip()

    @property
    def failure_class(self) -> FailureClass:
        """What the queue should do: the catalogue's verdict on this reply, else the class's.

        The exception class follows the SMTP code (what callers catch); the catalogue can be
        more precise, e.g. ``535 5.7.139`` (SMTP AUTH disabled) needs a tenant admin, not a
        reconnect, and ``554 5.2.0 SendAsDenied`` must not be retried but held for an admin.
        """
        if self.explanation is not None:
            return self.explanation.failure_class
        return self.default_failure_class


def _rebuild(cls: type[SmtpFailure], message: str, kwargs: dict[str, Any]) -> SmtpFailure:
    return cls(message, **kwargs)


class SmtpAuthorizationError(SmtpFailure, AuthorizationError):
    """The server refused our credentials (535, 530, 534, or any 5xx to AUTH)."""

    default_failure_class = "authorization"


class SmtpTemporaryError(SmtpFailure, TemporaryTransportError):
    """4xx replies, dropped connections and timeouts: the queue may retry later."""

    default_failure_class = "temporary"


class SmtpPermanentError(SmtpFailure, PermanentTransportError):
    """5xx replies other than authentication: retrying the same message will not help."""

    default_failure_class = "permanent"


class SmtpConfigurationError(SmtpFailure, ConfigurationError):
    """A server setting is wrong (host, port, Connection Encryption, CA); an admin must act."""

    default_failure_class = "configuration"


# --- replies -------------------------------------------------------------------------------

#: Exact codes that mean the same thing wherever they appear. 530 5.7.57 at MAIL FROM is
#: Exchange's way of saying the AUTH before it failed (microsoft.md E-24).
_BY_CODE: Mapping[int, type[SmtpFailure]] = {
    530: SmtpAuthorizationError,  # authentication required / 5.7.57 not authenticated
    534: SmtpAuthorizationError,  # mechanism too weak
    535: SmtpAuthorizationError,  # credentials refused (5.7.3, 5.7.139, 5.7.8 ...)
    538: SmtpConfigurationError,  # encryption required for this mechanism: use TLS
}

#: A permanent refusal of AUTH itself is about the credentials, e.g. ``550 5.7.30 Basic
#: authentication is not supported``; a 4xx there (454) stays temporary.
_BY_STAGE_AND_CLASS: Mapping[tuple[Stage, int], type[SmtpFailure]] = {
    ("auth", 5): SmtpAuthorizationError,
}

#: RFC 5321's first digit: 4 = transient, 5 = permanent. Anything else where a specific
#: reply was expected (a 2xx instead of 354, a stray 3xx) is a protocol breach we cannot
#: fix by retrying.
_BY_CLASS: Mapping[int, type[SmtpFailure]] = {
    4: SmtpTemporaryError,
    5: SmtpPermanentError,
}


def class_for_reply(code: int, stage: Stage) -> type[SmtpFailure]:
    """The exception class for reply ``code`` received at ``stage``."""
    first_digit = code // 100
    return (
        _BY_CODE.get(code)
        or _BY_STAGE_AND_CLASS.get((stage, first_digit))
        or _BY_CLASS.get(first_digit, SmtpPermanentError)
    )


def reply_failure(
    code: int,
    text: str,
    stage: Stage,
    *,
    server: str,
    refused: Mapping[str, tuple[int, str]] | None = None,
    message: str | None = None,
) -> SmtpFailure:
    """An exception for an unwanted reply, whose message quotes the reply verbatim."""
    cls = class_for_reply(code, stage)
    if message is None:
        message = f"{STAGE_LABELS[stage]} failed on {server}: the server replied {code} {text}"
    return cls(
        message.rstrip(),
        stage=stage,
        reply_code=code,
        reply_text=text,
        refused=refused,
        server=server,
    )


# --- exceptions raised below the SMTP dialogue ---------------------------------------------

#: (exception type, our class, what to tell the admin). First match wins, so the specific
#: types come before the general ones they inherit from. ``{host}``, ``{port}``,
#: ``{encryption}`` and ``{error}`` are filled in.
_BY_EXCEPTION: tuple[tuple[type[BaseException], type[SmtpFailure], str], ...] = (
    (
        ssl.SSLCertVerificationError,
        SmtpConfigurationError,
        "The TLS certificate of {host} could not be verified ({error}). Check that the SMTP "
        "Server host is the name on the server's certificate; if the server uses a private "
        "CA, add that CA to KONVERGO_CA_BUNDLE. Verification is never switched off.",
    ),
    (
        ssl.SSLError,
        SmtpConfigurationError,
        "The TLS handshake with {host}:{port} failed ({error}). Check Connection Encryption "
        "({encryption} now): port 465 normally uses SSL/TLS, ports 587 and 25 use STARTTLS.",
    ),
    (
        ConnectionRefusedError,
        SmtpTemporaryError,
        "Nothing accepted a connection at {host}:{port} ({error}). Check the SMTP Server "
        "host and port, and that a firewall allows outgoing connections to it.",
    ),
    (
        TimeoutError,
        SmtpTemporaryError,
        "{host}:{port} did not answer in time ({error}). Check the host and port; if the "
        "port expects SSL/TLS from the first byte (465), set Connection Encryption to SSL/TLS.",
    ),
    (
        smtplib.SMTPServerDisconnected,
        SmtpTemporaryError,
        "{host}:{port} closed the connection ({error}). If this happens every time, check "
        "Connection Encryption ({encryption} now) and the port.",
    ),
    (
        ConnectionError,
        SmtpTemporaryError,
        "The connection to {host}:{port} was lost ({error}).",
    ),
    (
        OSError,
        SmtpTemporaryError,
        "Could not talk to {host}:{port} ({error}). Check the SMTP Server host and port.",
    ),
)

#: getaddrinfo errors that say the name does not exist (a typo: an admin must act); other
#: resolver errors (EAI_AGAIN: DNS unreachable) are worth retrying.
_UNKNOWN_NAME_ERRORS = frozenset(
    {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
)


def exception_failure(
    exc: BaseException, stage: Stage, *, host: str, port: int, encryption: str
) -> SmtpFailure:
    """An exception for a network, TLS or disconnect error raised at ``stage``."""
    server = f"{host}:{port}"
    # smtplib reports a read timeout as SMTPServerDisconnected("... timed out"); the timeout
    # is the real cause and deserves the timeout advice.
    if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(
        exc.__context__, TimeoutError
    ):
        exc = exc.__context__
    error = str(exc) or type(exc).__name__
    if isinstance(exc, socket.gaierror):
        unknown = exc.errno in _UNKNOWN_NAME_ERRORS
        cls: type[SmtpFailure] = SmtpConfigurationError if unknown else SmtpTemporaryError
        template = "The SMTP Server host {host} could not be resolved ({error}). Check the host."
    else:
        cls, template = next(
            ((c, t) for kind, c, t in _BY_EXCEPTION if isinstance(exc, kind)),
            (SmtpTemporaryError, "The connection to {host}:{port} failed ({error})."),
        )
    message = template.format(host=host, port=port, encryption=encryption, error=error)
    return cls(
        f"{STAGE_LABELS[stage]} failed: {message}",
        stage=stage,
        reply_text=error,
        server=server,
        error_type=type(exc).__name__,
    )
