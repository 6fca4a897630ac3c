"""Settings → Outgoing Email Servers (list, form, Test Connection)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from konvergo.services import servers as server_service
from konvergo.store.models import OutgoingServer
from konvergo.web.access import admin_required
from konvergo.web.views.servers_common import (
    delete_server,
    save_server,
    server_outlook_block,
    server_rows,
)


class OutgoingServerForm(forms.ModelForm):  # type: ignore[type-arg]
    password = forms.CharField(
        required=False,
        label="Password",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: leave empty to keep the stored password.",
    )

    class Meta:
        model = OutgoingServer
        fields = [
            "name",
            "priority",
            "from_filter",
            "auth_type",
            "smtp_host",
            "smtp_port",
            "encryption",
            "username",
            "owner",
            "active",
            "mass_mailing_only",
            "max_sessions",
            "messages_per_minute",
        ]
        widgets = {
            "auth_type": forms.RadioSelect,
            "smtp_host": forms.TextInput(attrs={"placeholder": "e.g. smtp.office365.com"}),
            "encryption": forms.RadioSelect,
            "from_filter": forms.TextInput(
                attrs={"placeholder": "e.g. email@domain.com, domain.com"}
            ),
            "name": forms.TextInput(attrs={"placeholder": "e.g. My Outgoing Server"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Outlook fills the host itself; the service refuses an empty host for the others.
        self.fields["smtp_host"].required = False


@admin_required
def server_list(request: HttpRequest) -> HttpResponse:
    rows = server_rows(OutgoingServer.objects.select_related("owner", "grant"))
    return render(request, "konvergo/servers/outgoing_list.html", {"rows": rows})


@admin_required
def server_form(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    server = get_object_or_404(OutgoingServer, pk=pk) if pk else None
    form = OutgoingServerForm(request.POST or None, instance=server)
    if request.method == "POST" and form.is_valid():
        saved = save_server(
            request, form, server, kind="outgoing", clean=server_service.clean_outgoing
        )
        if saved is not None:
            return redirect("outgoing-server", pk=saved.pk)
    context: dict[str, Any] = {"form": form, "server": server}
    if server is not None:
        context["outlook"] = server_outlook_block(request, server, "outgoing")
    return render(request, "konvergo/servers/outgoing_form.html", context)


@require_POST
@admin_required
def test_connection(request: HttpRequest, pk: int) -> HttpResponse:
    server = get_object_or_404(OutgoingServer, pk=pk)
    outcome = server_service.run_smtp_test(
        server, send_to=request.POST.get("send_to", "").strip(), actor=request.user
    )
    if outcome.ok:
        messages.success(request, outcome.message)
    else:
        messages.error(request, outcome.message + (f" — {outcome.fix}" if outcome.fix else ""))
    return redirect("outgoing-server", pk=pk)


@require_POST
@admin_required
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    delete_server(request, get_object_or_404(OutgoingServer, pk=pk), "outgoing")
    return redirect("outgoing-servers")
