"""SANDBOX ONLY: what the identity platform remembers between requests.

Records for pending sign-ins, codes, refresh tokens and access tokens, and the consent
grants. The platform guards all of them with one lock; nothing here locks by itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from konvergo.sandbox.idp_scopes import Scope, parse, parse_one
from konvergo.sandbox.world import App, World


@dataclass
class Flow:
    """A pending ``/authorize`` request, between the sign-in and consent pages."""

    ctx: str
    tenant_path: str
    app: App
    redirect_uri: str
    scopes: list[Scope]
    state: str | None
    response_mode: str
    nonce: str | None
    challenge: str | None
    challenge_method: str
    login_hint: str
    prompt: str
    created: float
    #: Set once the user signed in: who, when, and whether MFA was performed.
    upn: str = ""
    signed_in_at: float = 0.0
    mfa: bool = False


@dataclass
class Session:
    """One interactive sign-in of a user to an app; codes and refresh tokens descend from it."""

    upn: str
    tenant_id: str
    client_id: str
    #: Scopes of the /authorize leg: they decide refresh token, ID token and its claims.
    scopes: list[Scope]
    auth_time: float
    #: The user passed MFA at this sign-in (required later → AADSTS50076 if not).
    mfa: bool
    nonce: str | None = None

    def has(self, oidc_scope: str) -> bool:
        return any(s.oidc and s.name == oidc_scope for s in self.scopes)


@dataclass
class AuthCode:
    value: str
    session: Session
    redirect_uri: str
    challenge: str | None
    challenge_method: str
    issued_at: float
    redeemed: bool = False


@dataclass
class RefreshToken:
    value: str
    session: Session
    issued_at: float
    #: When a newer token replaced this one (rotation); None while it is the newest.
    superseded_at: float | None = None


@dataclass
class AccessRecord:
    """An issued access token, for introspection by the mail servers and Dovecot."""

    upn: str
    tenant_id: str
    client_id: str
    #: Normalised resource ("https://outlook.office.com" for every Exchange URI).
    audience: str
    #: The ``aud`` as issued (the resource URI the client asked for).
    aud_claim: str
    scopes: frozenset[str]
    expires_at: float
    app_only: bool = False
    claims: dict[str, Any] = field(default_factory=dict)


def _keys(scopes: Iterable[str | Scope]) -> set[str]:
    return {(s if isinstance(s, Scope) else parse_one(s)).key for s in scopes}


class Consents:
    """Consent grants: per user and app, tenant-wide (admin) per tenant and app, app roles."""

    def __init__(self, world: World) -> None:
        self._user: dict[tuple[str, str], set[str]] = {}
        self._admin: dict[tuple[str, str], set[str]] = {}
        self._roles: dict[tuple[str, str], set[str]] = {}
        for app in world.apps.values():
            roles = {r.lower() for r in app.app_permissions}
            for text in app.admin_consented:
                scope = parse_one(text)
                if scope.name.lower() in roles:
                    self.grant_role(app.home_tenant_id, app.client_id, [scope])
                else:
                    self.grant_admin(app.home_tenant_id, app.client_id, [scope])

    def grant(self, upn: str, client_id: str, scopes: Iterable[str | Scope]) -> None:
        """The user clicked Yes: remember the scopes for this user and app."""
        self._user.setdefault((upn.lower(), client_id), set()).update(_keys(scopes))

    def grant_admin(self, tenant_id: str, client_id: str, scopes: Iterable[str | Scope]) -> None:
        """Tenant-wide delegated consent ("Grant admin consent for <tenant>")."""
        self._admin.setdefault((tenant_id, client_id), set()).update(_keys(scopes))

    def grant_role(self, tenant_id: str, client_id: str, roles: Iterable[str | Scope]) -> None:
        """Admin consent to application permissions (app-only, client credentials)."""
        self._roles.setdefault((tenant_id, client_id), set()).update(_keys(roles))

    def revoke(self, upn: str, client_id: str) -> None:
        self._user.pop((upn.lower(), client_id), None)

    def revoke_admin(self, tenant_id: str, client_id: str) -> None:
        self._admin.pop((tenant_id, client_id), None)
        self._roles.pop((tenant_id, client_id), None)

    def granted(self, upn: str, tenant_id: str, client_id: str) -> set[str]:
        """Consent keys in force for this user and app (own grant plus the tenant's)."""
        return self._user.get((upn.lower(), client_id), set()) | self._admin.get(
            (tenant_id, client_id), set()
        )

    def missing(
        self, upn: str, tenant_id: str, client_id: str, scopes: Iterable[Scope]
    ) -> list[Scope]:
        have = self.granted(upn, tenant_id, client_id)
        return [s for s in scopes if s.key not in have]

    def roles(self, tenant_id: str, client_id: str) -> set[str]:
        return set(self._roles.get((tenant_id, client_id), set()))

    def snapshot(self) -> dict[str, Any]:
        """JSON-friendly view, for the ``/_sandbox/consents`` knob and for debugging."""

        def rows(table: dict[tuple[str, str], set[str]], who: str) -> list[dict[str, Any]]:
            return [{who: k[0], "client_id": k[1], "scopes": sorted(v)} for k, v in table.items()]

        return {
            "user": rows(self._user, "upn"),
            "admin": rows(self._admin, "tenant_id"),
            "roles": rows(self._roles, "tenant_id"),
        }


def scopes_of(text: str | Iterable[str]) -> list[Scope]:
    """Scopes from a space-separated string or a list of scope strings."""
    return parse(text if isinstance(text, str) else " ".join(text))
