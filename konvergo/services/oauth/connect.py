"""Connect your Outlook account: the authorization-code flow with PKCE and a bound state.

The state is random, single-use, valid 10 minutes, and bound to the browser session, the
user (when one is logged in) and the server; only its SHA-256 digest is stored. The PKCE
verifier stays on the server (encrypted), never in the browser.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from konvergo.errors import AuthorizationError, ConfigurationError, KonvergoError
from konvergo.providers.microsoft import endpoints
from konvergo.providers.microsoft.errors import IdentityError, parse_authorize_error
from konvergo.services import parameters
from konvergo.services.oauth import client, tokens
from konvergo.store.models import (
    AuditEvent,
    ConsentLink,
    IncomingServer,
    OAuthState,
    OutgoingServer,
)

ServerKind = Literal["outgoing", "incoming"]
STATE_TTL = dt.timedelta(minutes=10)
LINK_TTL = dt.timedelta(days=7)
MODELS: dict[str, type[OutgoingServer] | type[IncomingServer]] = {
    "outgoing": OutgoingServer,
    "incoming": IncomingServer,
}


class StateRejected(KonvergoError, PermissionError):
    """The state is unknown, used, expired, or belongs to another session/user: nothing stored."""


class WrongAccount(AuthorizationError):
    """Microsoft's consent came from another account than the server's Username."""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def get_server(kind: str, server_id: int) -> OutgoingServer | IncomingServer:
    model = MODELS.get(kind)
    if model is None:
        raise StateRejected("Unknown server kind.")
    server = model.objects.filter(pk=server_id).first()
    if server is None:
        raise StateRejected("This mail server no longer exists.")
    return server


def may_connect(user: Any, server: OutgoingServer | IncomingServer) -> bool:
    """Administrators connect any server; a user connects the servers they own."""
    if getattr(user, "is_administrator", False):
        return True
    return bool(getattr(user, "pk", None)) and server.owner_id == user.pk


def is_outlook(server: OutgoingServer | IncomingServer) -> bool:
    return (
        getattr(server, "auth_type", None) == OutgoingServer.Auth.OUTLOOK
        or getattr(server, "server_type", None) == IncomingServer.Type.OUTLOOK
    )


def _connectable(server: OutgoingServer | IncomingServer) -> str:
    """The redirect URI, once everything a sign-in at Microsoft needs is set up."""
    if not is_outlook(server):
        raise ConfigurationError("This server does not authenticate with Outlook.")
    if not server.username:
        raise ConfigurationError(
            "Fill the Username with the Outlook mailbox address before connecting."
        )
    client.credentials()  # raises "Setup your Outlook credentials in General Settings"
    redirect_uri = parameters.redirect_uri()
    if not redirect_uri:
        raise ConfigurationError(
            "Set the Base URL (web.base.url) in General Settings: the redirect URI is built "
            "from it."
        )
    return redirect_uri


def begin(
    *, kind: ServerKind, server: OutgoingServer | IncomingServer, user: Any, session_key: str
) -> str:
    """Record a new state for this session and return Microsoft's authorize URL."""
    redirect_uri = _connectable(server)
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    OAuthState.objects.create(
        state_digest=digest(state),
        server_kind=kind,
        server_id=server.pk,
        user=user if getattr(user, "pk", None) else None,
        session_digest=digest(session_key),
        code_verifier=verifier,
        redirect_uri=redirect_uri,
        expires_at=timezone.now() + STATE_TTL,
    )
    return client.authorization_url(
        endpoints.scope_for(kind), redirect_uri, state, verifier, login_hint=server.username
    )


@dataclass(frozen=True)
class Outcome:
    """What the confirm page shows: where to go back, and success or the explained error."""

    kind: str
    server_id: int
    ok: bool
    message: str
    error: IdentityError | None = None


def _claim_state(state: str, user: Any, session_key: str) -> OAuthState:
    if not state:
        raise StateRejected("The Microsoft answer carries no state.")
    with transaction.atomic():
        row = OAuthState.objects.select_for_update().filter(state_digest=digest(state)).first()
        if row is None:
            raise StateRejected("Unknown state: this link was not started from this Konvergo.")
        if row.used_at is not None:
            raise StateRejected("This authorization was already used; start again.")
        if row.expires_at < timezone.now():
            raise StateRejected("This authorization is older than 10 minutes; start again.")
        if row.session_digest != digest(session_key or ""):
            raise StateRejected("This authorization was started in another browser session.")
        if row.user_id is not None and row.user_id != getattr(user, "pk", None):
            raise StateRejected("This authorization was started by another user.")
        # Single use, committed before the code exchange: a replay fails even if the
        # exchange below fails or the process dies.
        row.used_at = timezone.now()
        row.save(update_fields=["used_at"])
    return row


@sensitive_variables()
def complete(*, params: dict[str, str], user: Any, session_key: str) -> Outcome:
    """Handle GET /microsoft_outlook/confirm: state first, then error or code exchange."""
    row = _claim_state(params.get("state", ""), user, session_key)
    server = get_server(row.server_kind, row.server_id)
    if params.get("error"):
        error = parse_authorize_error(params)
        AuditEvent.record("oauth.refused", f"{row.server_kind}:{server.pk}", error.error, user)
        return Outcome(row.server_kind, server.pk, False, str(error), error)
    code = params.get("code", "")
    if not code:
        raise StateRejected("The Microsoft answer carries neither a code nor an error.")
    scope = endpoints.scope_for(row.server_kind)  # type: ignore[arg-type]
    try:
        token = client.redeem_code(scope, row.redirect_uri, code, row.code_verifier)
    except IdentityError as error:
        return Outcome(row.server_kind, server.pk, False, str(error), error)
    client_id, _ = client.credentials()
    claims = client.id_token_claims(token, client_id)
    signed_in = str(claims.get("preferred_username", "")).strip().lower()
    if signed_in != server.username.strip().lower():
        AuditEvent.record("oauth.wrong_account", f"{row.server_kind}:{server.pk}", signed_in, user)
        raise WrongAccount(
            f"You signed in at Microsoft as {signed_in or 'an unknown account'}, but this "
            f"server's Username is {server.username}. Nothing was saved. Click 'Connect your "
            f"Outlook account' again and pick {server.username} in Microsoft's account picker "
            "(use 'Use another account' if needed). An administrator who consents with their "
            "own account would make Exchange refuse the mailbox later (535 5.7.3 / SendAs).",
            signed_in_as=signed_in,
            username=server.username,
        )
    with transaction.atomic():
        # Lock the server: two callbacks finishing together must not each create a grant.
        server = type(server).objects.select_for_update().get(pk=server.pk)
        grant = tokens.store_new_grant(
            grant=server.grant,
            mailbox=server.username.strip().lower(),
            scope=scope,
            owner=server.owner or user,
            token=token,
            claims=claims,
        )
        if server.grant_id != grant.pk:
            server.grant = grant
            server.save(update_fields=["grant"])
        AuditEvent.record("oauth.connected", f"{row.server_kind}:{server.pk}", signed_in, user)
        transaction.on_commit(lambda: _release_held(row.server_kind, server.pk))
    return Outcome(row.server_kind, server.pk, True, "Outlook Token Valid")


def _release_held(kind: str, server_id: int) -> None:
    """Mail held for this server's authorization can go now."""
    if kind != "outgoing":
        return
    try:
        from konvergo.services import outbox
    except ImportError:
        return
    release = getattr(outbox, "release_held", None)
    if release is not None:
        release(OutgoingServer.objects.get(pk=server_id))


def create_link(kind: ServerKind, server: OutgoingServer | IncomingServer, admin: Any) -> str:
    """A one-time token for the mailbox owner's consent link (shown once to the admin).

    Refused (ConfigurationError) where the owner's sign-in could not start anyway.
    """
    _connectable(server)
    token = secrets.token_urlsafe(32)
    ConsentLink.objects.create(
        token_digest=digest(token),
        server_kind=kind,
        server_id=server.pk,
        created_by=admin,
        expires_at=timezone.now() + LINK_TTL,
    )
    AuditEvent.record("oauth.link_created", f"{kind}:{server.pk}", "", admin)
    return token


def use_link(token: str) -> ConsentLink:
    """Consume a consent link; raises StateRejected when unknown, used or expired."""
    with transaction.atomic():
        link = ConsentLink.objects.select_for_update().filter(token_digest=digest(token)).first()
        if link is None or link.used_at is not None or link.expires_at < timezone.now():
            raise StateRejected("This consent link is unknown, already used or expired.")
        link.used_at = timezone.now()
        link.save(update_fields=["used_at"])
    return link


def withdraw_link(token: str) -> None:
    """End an unused consent link now (its administrator made another before seeing it)."""
    ConsentLink.objects.filter(token_digest=digest(token), used_at__isnull=True).update(
        expires_at=timezone.now()
    )


def peek_link(token: str) -> ConsentLink:
    link = ConsentLink.objects.filter(token_digest=digest(token)).first()
    if link is None or link.used_at is not None or link.expires_at < timezone.now():
        raise StateRejected("This consent link is unknown, already used or expired.")
    return link
