"""The exception hierarchy of Konvergo mail.

::

    KonvergoError                          (base; carries context)
    ├── ConfigurationError(ValueError)     a setting is missing or wrong; an admin must act
    ├── ValidationFailed(ValueError)       user input refused; ``field`` names the input
    ├── SecretError(ValueError)            a stored secret cannot be decrypted
    ├── AuthorizationError(PermissionError) provider refused our credentials (reconnect)
    ├── TransportError(OSError)            SMTP/IMAP/HTTP dialogue failed
    │   ├── TemporaryTransportError        worth retrying later (4xx, timeouts, disconnects)
    │   └── PermanentTransportError        retrying will not help (5xx)
    └── RoutingError(LookupError)          no outgoing server may send this mail

Each carries the ``explanation`` (cause, who must act, fix) when the error catalogue knows
the provider's text, so every surface (form, queue, CLI) shows the same advice.
"""

from __future__ import annotations

from typing import Any


class KonvergoError(Exception):
    """Base of every error Konvergo raises on purpose; ``context`` says where it happened."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = context

    def __str__(self) -> str:
        return self.message


class ConfigurationError(KonvergoError, ValueError):
    """A setting is missing or inconsistent; the message says which one to change."""


class ValidationFailed(KonvergoError, ValueError):
    """Input was refused; ``field`` names the offending input."""

    def __init__(self, field: str, message: str, **context: Any) -> None:
        super().__init__(message, field=field, **context)
        self.field = field


class SecretError(KonvergoError, ValueError):
    """A stored secret could not be decrypted with any configured key."""


class AuthorizationError(KonvergoError, PermissionError):
    """The provider refused our credentials or grant; someone must reconnect or fix access."""


class TransportError(KonvergoError, OSError):
    """A protocol dialogue with a mail or identity server failed."""


class TemporaryTransportError(TransportError):
    """A failure worth retrying later: 4xx replies, timeouts, dropped connections."""


class PermanentTransportError(TransportError):
    """A failure that retrying will not cure: 5xx replies other than authentication."""


class RoutingError(KonvergoError, LookupError):
    """No outgoing server may send this mail; the message names the setting to change."""
