"""What the outgoing and incoming server pages share: the Outlook block and its actions."""

from __future__ import annotations

from typing import Any

from konvergo.services.oauth.connect import may_connect
from konvergo.store.models import IncomingServer, MailSettings, OAuthGrant, OutgoingServer


def outlook_block(server: OutgoingServer | IncomingServer, kind: str, user: Any) -> dict[str, Any]:
    """Template context for the Outlook tag and buttons of one server."""
    grant: OAuthGrant | None = server.grant if server.pk else None
    state = "none"
    if grant is not None:
        if grant.status == OAuthGrant.Status.VALID and grant.verified_at is not None:
            state = "valid"
        elif grant.status == OAuthGrant.Status.INVALID:
            state = "invalid"
        elif grant.status == OAuthGrant.Status.DISCONNECTED:
            state = "none"
    return {
        "kind": kind,
        "configured": MailSettings.load().outlook_configured,
        "state": state,
        "grant": grant,
        "can_connect": bool(server.pk) and may_connect(user, server),
        "is_admin": getattr(user, "is_administrator", False),
    }


def token_label(server: OutgoingServer | IncomingServer) -> tuple[str, str]:
    """(css class, text) of the token tag in server lists."""
    grant = server.grant
    if grant is None or grant.status == OAuthGrant.Status.DISCONNECTED:
        return ("tag-muted", "Not connected")
    if grant.status == OAuthGrant.Status.VALID:
        return ("tag-ok", "Outlook Token Valid")
    return ("tag-bad", "Outlook Token Invalid")
