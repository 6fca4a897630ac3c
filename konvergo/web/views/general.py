"""Settings → General Settings (Custom Email Servers, Outlook Credentials, developer mode)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from konvergo.errors import ValidationFailed
from konvergo.services import parameters
from konvergo.services.mailsettings import (
    GeneralSettingsInput,
    save_general_settings,
    secret_expiry_warning,
)
from konvergo.store.models import AuditEvent, MailSettings, OutgoingServer
from konvergo.web.access import admin_required


class GeneralSettingsForm(forms.Form):
    custom_email_servers = forms.BooleanField(required=False, label="Custom Email Servers")
    base_url = forms.CharField(
        required=False,
        label="Base URL (web.base.url)",
        widget=forms.TextInput(attrs={"placeholder": "https://erp.example.com"}),
    )
    outlook_client_id = forms.CharField(
        required=False,
        label="Client ID",
        widget=forms.TextInput(attrs={"placeholder": "Application (client) ID of your Azure app"}),
    )
    outlook_client_secret = forms.CharField(
        required=False,
        label="Client Secret",
        strip=True,
        widget=forms.PasswordInput(
            render_value=False,
            attrs={"autocomplete": "new-password", "placeholder": "Value of your client secret"},
        ),
    )
    mass_mailing_server = forms.ModelChoiceField(
        queryset=OutgoingServer.objects.filter(active=True),
        required=False,
        label="Dedicated Server",
        empty_label="(none: mass mailings route like any other mail)",
        help_text="Mass mailings always use this server and keep their From; its FROM "
        "Filtering may stay empty.",
    )
    outlook_client_secret_expires = forms.DateField(
        required=False,
        label="Client Secret expires on",
        widget=forms.DateInput(attrs={"type": "date"}),
    )


@admin_required
def general_settings(request: HttpRequest) -> HttpResponse:
    settings = MailSettings.load()
    if request.method == "POST":
        form = GeneralSettingsForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                save_general_settings(
                    GeneralSettingsInput(
                        custom_email_servers=data["custom_email_servers"],
                        base_url=data["base_url"],
                        outlook_client_id=data["outlook_client_id"],
                        outlook_client_secret=data["outlook_client_secret"],
                        outlook_client_secret_expires=data["outlook_client_secret_expires"],
                        mass_mailing_server_id=(
                            data["mass_mailing_server"].pk if data["mass_mailing_server"] else None
                        ),
                    ),
                    actor=request.user,
                )
            except ValidationFailed as exc:
                target = exc.field if exc.field in form.fields else "base_url"
                form.add_error(target, exc.message)
            else:
                messages.success(request, "Settings saved.")
                return redirect("general-settings")
    else:
        form = GeneralSettingsForm(
            initial={
                "custom_email_servers": settings.custom_email_servers,
                "base_url": parameters.base_url(),
                "outlook_client_id": settings.outlook_client_id,
                "outlook_client_secret_expires": settings.outlook_client_secret_expires,
                "mass_mailing_server": settings.mass_mailing_server_id,
            }
        )
    base = parameters.base_url()
    origin = f"{request.scheme}://{request.get_host()}"
    return render(
        request,
        "konvergo/settings/general.html",
        {
            "form": form,
            "settings": settings,
            "secret_set": bool(settings.outlook_client_secret),
            "redirect_uri": parameters.redirect_uri(),
            "secret_warning": secret_expiry_warning(),
            # Microsoft sends the browser back to the base URL, not to where it came from.
            "origin_mismatch": origin if base and origin.lower() != base.lower() else "",
        },
    )


@require_POST
@admin_required
def toggle_developer_mode(request: HttpRequest) -> HttpResponse:
    user = request.user
    user.developer_mode = not user.developer_mode  # type: ignore[union-attr]
    user.save(update_fields=["developer_mode"])  # type: ignore[union-attr,call-arg]
    AuditEvent.record(
        "user.developer_mode",
        user.get_username(),
        "on" if user.developer_mode else "off",  # type: ignore[union-attr]
        actor=user,
    )
    return redirect(_safe_next(request) or "general-settings")


def _safe_next(request: HttpRequest) -> str:
    """The POSTed ``next`` when it stays on this site, else ''."""
    target = request.POST.get("next", "")
    allowed = url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure())
    return target if allowed else ""
