"""What the outgoing and incoming server pages share: the Outlook block and its actions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse

from konvergo.errors import ValidationFailed
from konvergo.services import parameters
from konvergo.services.oauth import tokens
from konvergo.services.oauth.connect import is_outlook, may_connect
from konvergo.store.models import (
    AuditEvent,
    IncomingServer,
    MailSettings,
    OAuthGrant,
    OutgoingServer,
)
from konvergo.web import once


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


def consent_link_name(kind: str, pk: int) -> str:
    """Where a new consent link waits (encrypted, see :mod:`konvergo.web.once`) for its page."""
    return f"consent_link:{kind}:{pk}"


def server_outlook_block(
    request: HttpRequest, server: OutgoingServer | IncomingServer, kind: str
) -> dict[str, Any]:
    """The Outlook block of a server's own page, with a consent link just created for it."""
    block = outlook_block(server, kind, request.user)
    token = once.take(request, consent_link_name(kind, server.pk))
    block["consent_link"] = consent_url(request, token) if token is not None else None
    return block


def consent_url(request: HttpRequest, token: str) -> str:
    """The address the mailbox owner opens: on the Base URL when one is set."""
    path = reverse("consent-link", kwargs={"token": token})
    base = parameters.base_url()
    return base + path if base else request.build_absolute_uri(path)


def token_label(server: OutgoingServer | IncomingServer) -> tuple[str, str]:
    """(css class, text) of the token tag in server lists."""
    grant = server.grant
    if grant is None or grant.status == OAuthGrant.Status.DISCONNECTED:
        return ("tag-muted", "Not connected")
    if grant.status == OAuthGrant.Status.VALID:
        return ("tag-ok", "Outlook Token Valid")
    return ("tag-bad", "Outlook Token Invalid")


def server_rows(servers: Iterable[OutgoingServer | IncomingServer]) -> list[dict[str, Any]]:
    """List rows: each server with its token tag."""
    rows = []
    for server in servers:
        css, label = token_label(server)
        rows.append({"server": server, "token_css": css, "token_label": label})
    return rows


def save_server(
    request: HttpRequest,
    form: Any,
    server: OutgoingServer | IncomingServer | None,
    *,
    kind: str,
    clean: Callable[[Any, str], None],
) -> OutgoingServer | IncomingServer | None:
    """Validate with the service, then save; None (errors on the form) when refused."""
    candidate = form.save(commit=False)
    new_password = form.cleaned_data["password"]
    was_outlook = server is not None and is_outlook(type(server).objects.get(pk=server.pk))
    try:
        clean(candidate, new_password)
    except ValidationFailed as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return None
    with transaction.atomic():
        if new_password:
            candidate.password = new_password
        previous = type(server).objects.get(pk=server.pk) if server is not None else None
        renamed = previous is not None and previous.username != candidate.username
        if candidate.grant and ((was_outlook and not is_outlook(candidate)) or renamed):
            # Leaving Outlook, or another mailbox: the tokens must not linger (Odoo only
            # clears them in the browser, weakness 7), and a grant consented by one mailbox
            # must never authenticate as another.
            tokens.disconnect(candidate.grant)
        candidate.save()
        AuditEvent.record("server.saved", f"{kind}:{candidate.pk}", "", request.user)
    messages.success(request, f"Saved {candidate.name}.")
    return candidate  # type: ignore[no-any-return]


def delete_server(request: HttpRequest, server: OutgoingServer | IncomingServer, kind: str) -> None:
    """Delete a server and forget its tokens."""
    if server.grant:
        tokens.disconnect(server.grant)
    AuditEvent.record("server.deleted", f"{kind}:{server.pk}", server.name, request.user)
    server.delete()
    messages.success(request, f"Deleted {server.name}.")
