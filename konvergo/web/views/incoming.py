"""Settings → Incoming Mail Servers (list, form, Test and Confirm, Fetch Now)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from konvergo.errors import KonvergoError
from konvergo.services import servers as server_service
from konvergo.store.models import AuditEvent, IncomingServer
from konvergo.web.access import admin_required
from konvergo.web.views.servers_common import (
    delete_server,
    save_server,
    server_outlook_block,
    server_rows,
)


class IncomingServerForm(forms.ModelForm):  # type: ignore[type-arg]
    password = forms.CharField(
        required=False,
        label="Password",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="IMAP Server only. Write-only: leave empty to keep the stored password.",
    )

    class Meta:
        model = IncomingServer
        fields = [
            "name",
            "server_type",
            "host",
            "port",
            "ssl",
            "username",
            "folders",
            "create_record",
            "owner",
            "active",
            "poll_interval",
            "mark_read",
            "fetch_since",
        ]
        widgets = {
            "server_type": forms.RadioSelect,
            "fetch_since": forms.DateInput(attrs={"type": "date"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["host"].required = False


@admin_required
def server_list(request: HttpRequest) -> HttpResponse:
    rows = server_rows(IncomingServer.objects.select_related("owner", "grant"))
    return render(request, "konvergo/servers/incoming_list.html", {"rows": rows})


@admin_required
def server_form(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    server = get_object_or_404(IncomingServer, pk=pk) if pk else None
    form = IncomingServerForm(request.POST or None, instance=server)
    if server is not None and server.state == IncomingServer.State.DONE:
        # Like Odoo: a confirmed server's connection settings are frozen until reset.
        for name in ("server_type", "host", "port", "ssl", "username"):
            form.fields[name].disabled = True
    if request.method == "POST" and form.is_valid():
        saved = save_server(
            request, form, server, kind="incoming", clean=server_service.clean_incoming
        )
        if saved is not None:
            return redirect("incoming-server", pk=saved.pk)
    context: dict[str, Any] = {"form": form, "server": server}
    if server is not None:
        context["outlook"] = server_outlook_block(request, server, "incoming")
        context["quarantined"] = server.quarantinedmessage_set.count()
    return render(request, "konvergo/servers/incoming_form.html", context)


def _intake_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    server = get_object_or_404(IncomingServer, pk=pk)
    try:
        from konvergo.services import intake
    except ImportError:
        messages.error(request, "Incoming mail is not available in this build.")
        return redirect("incoming-server", pk=pk)
    try:
        result = getattr(intake, action)(server)
    except KonvergoError as exc:
        explanation = getattr(exc, "explanation", None)
        fix = f" — {explanation.summary()}" if explanation is not None else ""
        messages.error(request, f"{exc}{fix}")
    else:
        ok, message = _describe(result)
        (messages.success if ok else messages.error)(request, message)
    AuditEvent.record(f"server.{action}", f"incoming:{pk}", "", request.user)
    return redirect("incoming-server", pk=pk)


def _describe(result: Any) -> tuple[bool, str]:
    """A sentence for the result of an intake action (ConfirmResult or FetchResult)."""
    error = getattr(result, "error", "")
    if error:
        fix = getattr(result, "fix", "")
        return False, f"{error}" + (f" — Fix: {fix}" if fix else "")
    message = getattr(result, "message", "")
    if message:
        return bool(getattr(result, "ok", True)), str(message)
    if hasattr(result, "stored"):
        parts = [f"Fetched {result.stored} new message(s)"]
        if getattr(result, "duplicates", 0):
            parts.append(f"{result.duplicates} already stored")
        if getattr(result, "quarantined", 0):
            parts.append(f"{result.quarantined} quarantined (see the server's quarantine)")
        return True, ", ".join(parts) + "."
    return True, "Done."


@require_POST
@admin_required
def test_and_confirm(request: HttpRequest, pk: int) -> HttpResponse:
    return _intake_action(request, pk, "test_and_confirm")


@require_POST
@admin_required
def fetch_now(request: HttpRequest, pk: int) -> HttpResponse:
    return _intake_action(request, pk, "fetch_now")


@require_POST
@admin_required
def reset_confirmation(request: HttpRequest, pk: int) -> HttpResponse:
    server = get_object_or_404(IncomingServer, pk=pk)
    server.state = IncomingServer.State.DRAFT
    server.save(update_fields=["state"])
    messages.success(request, "Reset to Not Confirmed.")
    return redirect("incoming-server", pk=pk)


@require_POST
@admin_required
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    delete_server(request, get_object_or_404(IncomingServer, pk=pk), "incoming")
    return redirect("incoming-servers")
