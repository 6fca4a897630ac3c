"""Credentials a transport presents to a mail server: a password, or an OAuth 2.0 token.

Neither class ever shows its secret in ``repr`` (tracebacks and debuggers print reprs), and
the token is fetched from ``token_provider`` each time it is needed, so a long-lived
connection object never holds a token past the moment it authenticates.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from konvergo.errors import ConfigurationError


@dataclass(frozen=True)
class PasswordAuth:
    """A user name and password for a classic SMTP AUTH (PLAIN, LOGIN or CRAM-MD5)."""

    username: str
    password: str = field(repr=False)

    @property
    def mechanism(self) -> str:
        return "password"


@dataclass(frozen=True)
class XOAuth2Auth:
    """SASL XOAUTH2 for ``username`` with an access token from ``token_provider``.

    ``token_provider`` belongs to the OAuth token store: it returns a current access token
    (refreshing it first when needed) or raises that store's own errors.
    """

    username: str
    token_provider: Callable[[], str] = field(repr=False)
    # The digest of the last token sent, so a refusal can be matched to the token it concerns.
    _sent: list[str] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def mechanism(self) -> str:
        return "XOAUTH2"

    @property
    def token_digest(self) -> str | None:
        """SHA-256 of the token last sent (never the token itself), or None before any."""
        return self._sent[-1] if self._sent else None

    def xoauth2_string(self) -> str:
        """``user=<username>^Aauth=Bearer <token>^A^A``, the clear text Microsoft documents."""
        token = self.token_provider()
        # A control character or space inside either part would shift the SASL fields; such a
        # value is a bug upstream, and sending it would only produce a misleading 535.
        for name, value in (("username", self.username), ("access token", token)):
            if not value or any(ch in value for ch in "\x00\x01\r\n "):
                raise ConfigurationError(
                    f"The XOAUTH2 {name} is empty or contains a space or control character."
                )
        self._sent[:] = [token_digest(token)]
        return f"user={self.username}\x01auth=Bearer {token}\x01\x01"

    def initial_response(self) -> str:
        """The base64 form of :meth:`xoauth2_string`, as sent on the wire."""
        return base64.b64encode(self.xoauth2_string().encode("utf-8")).decode("ascii")


Credentials = PasswordAuth | XOAuth2Auth


def token_digest(token: str) -> str:
    """The SHA-256 hex digest of an access token: compares tokens without keeping them."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
