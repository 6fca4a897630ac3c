"""General Settings of the mail layer: Custom Email Servers and the Outlook Credentials."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from konvergo.errors import ValidationFailed
from konvergo.services import parameters
from konvergo.store.models import AuditEvent, MailSettings

GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
#: Warn about the client secret's expiry from this many days before.
SECRET_WARNING_DAYS = 30


@dataclass(frozen=True)
class GeneralSettingsInput:
    """What the General Settings form submits (the secret empty means "keep the old one")."""

    custom_email_servers: bool
    base_url: str
    outlook_client_id: str
    outlook_client_secret: str
    outlook_client_secret_expires: dt.date | None
    mass_mailing_server_id: int | None = None


def save_general_settings(data: GeneralSettingsInput, actor: object = None) -> MailSettings:
    """Validate everything first, then save everything in one transaction (or nothing)."""
    client_id = data.outlook_client_id.strip()
    new_secret = data.outlook_client_secret.strip()
    base_url = parameters.KNOWN["web.base.url"].clean(data.base_url) if data.base_url else ""
    current = MailSettings.load()
    if client_id and not GUID_RE.match(client_id):
        raise ValidationFailed(
            "outlook_client_id",
            "The Client ID is the Application (client) ID, a GUID such as "
            "1b2c3d4e-0000-4000-8000-123456789abc: copy it from Microsoft Entra → App "
            "registrations → your app → Overview (not the Object ID, not an email address).",
        )
    if (
        data.custom_email_servers
        and not client_id
        and (new_secret or current.outlook_client_secret)
    ):
        raise ValidationFailed(
            "outlook_client_id",
            "Enter the Client ID that goes with the Client Secret (Microsoft Entra → App "
            "registrations → your app → Overview → Application (client) ID).",
        )
    if new_secret and GUID_RE.match(new_secret):
        raise ValidationFailed(
            "outlook_client_secret",
            "This looks like the Secret ID. Paste the secret's Value instead (Certificates & "
            "secrets → Client secrets → Value, shown only once when the secret is created).",
        )
    with transaction.atomic():
        settings = MailSettings.objects.select_for_update().get(pk=current.pk)
        settings.custom_email_servers = data.custom_email_servers
        settings.outlook_client_id = client_id
        if new_secret:
            settings.outlook_client_secret = new_secret
            settings.outlook_client_secret_set_at = timezone.now()
        settings.outlook_client_secret_expires = data.outlook_client_secret_expires
        settings.mass_mailing_server_id = data.mass_mailing_server_id
        settings.save()
        if base_url:
            parameters.set_value("web.base.url", base_url)
        if current.outlook_client_id and client_id != current.outlook_client_id:
            from konvergo.services.oauth.tokens import app_changed

            # Grants belong to the app that issued them: with another Client ID every
            # mailbox must consent again, and saying so now beats a red tag next week.
            app_changed()
        if new_secret:
            from konvergo.services.oauth.tokens import credentials_changed

            # A new secret needs no reconnect: grants broken by the old one try again.
            credentials_changed()
        AuditEvent.record(
            "settings.general.saved",
            "mail settings",
            "client secret replaced" if new_secret else "",
            actor=actor,
        )
    return settings


def secret_expiry_warning(today: dt.date | None = None) -> str:
    """The warning to show when the Outlook client secret expires within 30 days ('' if not)."""
    settings = MailSettings.load()
    expires = settings.outlook_client_secret_expires
    if not (settings.custom_email_servers and settings.outlook_client_secret and expires):
        return ""
    today = today or timezone.localdate()
    days = (expires - today).days
    if days > SECRET_WARNING_DAYS:
        return ""
    fix = (
        "Create a new one in Microsoft Entra → App registrations → your app → Certificates & "
        "secrets → New client secret, and paste its Value in General Settings (no reconnect "
        "needed)."
    )
    if days < 0:
        return f"The Outlook client secret expired on {expires.isoformat()}: every Outlook " + (
            "mailbox stops working at its next token refresh. " + fix
        )
    return f"The Outlook client secret expires in {days} day(s), on {expires.isoformat()}. " + fix
