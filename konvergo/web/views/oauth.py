"""Connect your Outlook account, /microsoft_outlook/confirm, Disconnect, consent links."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from konvergo.errors import KonvergoError
from konvergo.providers.microsoft.catalogue import personalize
from konvergo.services.oauth import connect, tokens
from konvergo.store.models import AuditEvent
from konvergo.web import once
from konvergo.web.access import admin_required
from konvergo.web.views.servers_common import consent_link_name

log = logging.getLogger("konvergo.oauth")


def server_url(kind: str, server_id: int, user: object) -> str:
    """Where 'Go back to your mail server' leads: the form for admins, the owner page else."""
    if getattr(user, "is_administrator", False):
        return reverse(f"{kind}-server", kwargs={"pk": server_id})
    return reverse("my-servers")


def _session_key(request: HttpRequest) -> str:
    if not request.session.session_key:
        request.session.save()
    return str(request.session.session_key)


def _start(request: HttpRequest, kind: str, server_id: int) -> HttpResponse:
    server = connect.get_server(kind, server_id)
    try:
        url = connect.begin(
            kind=kind,  # type: ignore[arg-type]
            server=server,
            user=request.user,
            session_key=_session_key(request),
        )
    except KonvergoError as exc:
        messages.error(request, str(exc))
        return redirect(server_url(kind, server_id, request.user))
    return HttpResponseRedirect(url)


@require_POST
@login_required
def connect_view(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    """The button 'Connect your Outlook account' (POST + CSRF): off to Microsoft."""
    try:
        server = connect.get_server(kind, pk)
    except connect.StateRejected as exc:
        raise PermissionDenied(str(exc)) from None
    if not connect.may_connect(request.user, server):
        raise PermissionDenied("Only an administrator or this server's owner may connect it.")
    return _start(request, kind, pk)


def confirm(request: HttpRequest) -> HttpResponse:
    """GET /microsoft_outlook/confirm: the redirect URI registered in Azure."""
    params: dict[str, str] = {k: str(v) for k, v in request.GET.items()}
    try:
        outcome = connect.complete(
            params=params, user=request.user, session_key=request.session.session_key or ""
        )
    except connect.StateRejected as exc:
        # Nothing from the query is shown: it may have been forged.
        log.warning("refused an OAuth callback: %s", exc)
        return render(request, "konvergo/oauth/rejected.html", {"reason": str(exc)}, status=403)
    except connect.WrongAccount as exc:
        return render(
            request,
            "konvergo/oauth/error.html",
            {"message": str(exc), "back": reverse("home")},
            status=400,
        )
    except KonvergoError as exc:
        return render(
            request,
            "konvergo/oauth/error.html",
            {"message": str(exc), "back": reverse("home")},
            status=400,
        )
    back = server_url(outcome.kind, outcome.server_id, request.user)
    if outcome.ok:
        messages.success(request, "Outlook Token Valid: the mailbox is connected.")
        return redirect(back)
    explanation = outcome.error.explanation if outcome.error is not None else None
    server = connect.get_server(outcome.kind, outcome.server_id)
    fix = (
        personalize(explanation.entry.fix, server=server.name, user=server.username)
        if explanation is not None
        else ""
    )
    return render(
        request,
        "konvergo/oauth/error.html",
        {
            "message": outcome.message,
            "explanation": explanation,
            "fix": fix,
            "error": outcome.error,
            "back": back,
        },
        status=400,
    )


@require_POST
@login_required
def disconnect(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    server = connect.get_server(kind, pk)
    if not connect.may_connect(request.user, server):
        raise PermissionDenied("Only an administrator or this server's owner may disconnect it.")
    if server.grant is not None:
        tokens.disconnect(server.grant)
        AuditEvent.record("oauth.disconnected", f"{kind}:{pk}", "", request.user)
    messages.success(request, "Disconnected: the tokens were deleted.")
    return redirect(server_url(kind, pk, request.user))


@require_POST
@admin_required
def create_link(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    server = connect.get_server(kind, pk)
    try:
        token = connect.create_link(kind, server, request.user)  # type: ignore[arg-type]
    except KonvergoError as exc:
        messages.error(request, str(exc))
        return redirect(server_url(kind, pk, request.user))
    name = consent_link_name(kind, pk)
    # A link made earlier and not shown yet would stay valid unseen: withdraw it.
    unseen = once.take(request, name)
    if unseen is not None:
        connect.withdraw_link(unseen)
    # The link is a bearer credential: kept encrypted until the server's page shows it.
    once.keep(request, name, token)
    return redirect(server_url(kind, pk, request.user))


def consent_link(request: HttpRequest, token: str) -> HttpResponse:
    """The page a mailbox owner opens from an administrator's one-time link."""
    try:
        link = connect.peek_link(token)
        server = connect.get_server(link.server_kind, link.server_id)
    except connect.StateRejected as exc:
        return render(request, "konvergo/oauth/rejected.html", {"reason": str(exc)}, status=403)
    if request.method == "POST":
        try:
            url = connect.begin(
                kind=link.server_kind,  # type: ignore[arg-type]
                server=server,
                user=None,
                session_key=_session_key(request),
            )
        except KonvergoError as exc:
            return render(
                request, "konvergo/oauth/error.html", {"message": str(exc), "back": "/"}, status=400
            )
        try:
            connect.use_link(token)  # consumed only once the flow could start
        except connect.StateRejected as exc:
            return render(request, "konvergo/oauth/rejected.html", {"reason": str(exc)}, status=403)
        return HttpResponseRedirect(url)
    return render(request, "konvergo/oauth/link.html", {"server": server})
