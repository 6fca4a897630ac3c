"""SANDBOX ONLY: the interface between the sandbox identity platform and its mail servers.

The identity platform (:mod:`konvergo.sandbox.idp`) issues access tokens; the SMTP server
(:mod:`konvergo.sandbox.smtp`) and the IMAP front (:mod:`konvergo.sandbox.imap`) ask it
about a bearer token through :class:`TokenValidator`. Dovecot asks the same thing over HTTP
(``POST /introspect``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

#: The audience (resource) of Outlook tokens, as Exchange checks it.
OUTLOOK_RESOURCE = "https://outlook.office.com"
SMTP_SCOPE = "SMTP.Send"
IMAP_SCOPE = "IMAP.AccessAsUser.All"


@dataclass(frozen=True)
class TokenInfo:
    """What the identity platform knows of an access token it issued."""

    active: bool
    #: The signed-in user's UPN (preferred_username), lower-case.
    upn: str = ""
    #: The resource the token was issued for, e.g. "https://outlook.office.com".
    audience: str = ""
    #: Scope names without the resource prefix, e.g. {"SMTP.Send"}.
    scopes: frozenset[str] = field(default_factory=frozenset)
    #: Expiry, seconds since the epoch on the sandbox clock.
    expires_at: float = 0.0
    tenant_id: str = ""
    #: Why the token is not active ("expired", "unknown", "revoked"), for the sandbox log.
    reason: str = ""


class TokenValidator(Protocol):
    """Anything that can say what a bearer token is worth (the identity platform does)."""

    def introspect(self, token: str) -> TokenInfo: ...

    def now(self) -> float:
        """The sandbox clock (tests fast-forward it)."""
        ...
