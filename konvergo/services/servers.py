"""Outgoing and incoming server configuration: defaults, save-time checks, Test Connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from konvergo.errors import ConfigurationError, KonvergoError, ValidationFailed
from konvergo.services import parameters, routing
from konvergo.store.models import AuditEvent, IncomingServer, OutgoingServer
from konvergo.transports.auth import XOAuth2Auth


@dataclass(frozen=True)
class ProviderDefaults:
    """What choosing a provider fills in the form (still editable)."""

    host: str
    port: int
    encryption: str


#: Outlook's submission endpoint (research/microsoft.md §1.14: 587 STARTTLS, no 465).
OUTLOOK_SMTP = ProviderDefaults("smtp.office365.com", 587, OutgoingServer.Encryption.STARTTLS)
#: Outlook's IMAP endpoint: implicit TLS on 993.
OUTLOOK_IMAP = ProviderDefaults("outlook.office365.com", 993, "ssl")


def _looks_like_address(value: str) -> bool:
    return routing.normalize_address(value) is not None and "@" in value


def clean_outgoing(server: OutgoingServer, new_password: str) -> None:
    """Fill Outlook defaults and refuse inconsistent settings with the field named.

    Nothing is saved here; the caller saves only when this returns.
    """
    if server.auth_type == OutgoingServer.Auth.OUTLOOK:
        if new_password:
            raise ValidationFailed(
                "password",
                f"Please leave the password field empty for Outlook mail server “{server.name}”: "
                "the OAuth process does not require it.",
            )
        server.smtp_host = server.smtp_host or OUTLOOK_SMTP.host
        server.smtp_port = server.smtp_port or OUTLOOK_SMTP.port
        if server.encryption == OutgoingServer.Encryption.NONE:
            raise ValidationFailed(
                "encryption",
                f"Incorrect Connection Encryption for Outlook mail server “{server.name}”: set "
                'it to "TLS (STARTTLS)" (Exchange Online refuses to authenticate without TLS).',
            )
        if not _looks_like_address(server.username):
            raise ValidationFailed(
                "username",
                'Please fill the "Username" field with your Outlook/Office365 username (your '
                "email address). This should be the same account as the one used for the "
                "Outlook OAuthentication Token.",
            )
        server.username = server.username.strip().lower()
        if not server.from_filter.strip():
            server.from_filter = server.username
        server.password = ""
    elif server.auth_type == OutgoingServer.Auth.LOGIN and not server.username:
        raise ValidationFailed("username", "A server that authenticates with Username needs one.")
    if not server.smtp_host.strip():
        raise ValidationFailed("smtp_host", "Enter the SMTP Server host name.")
    if not 0 < server.smtp_port < 65536:
        raise ValidationFailed("smtp_port", "The SMTP Port must be between 1 and 65535.")
    routing.parse_filter(server.from_filter)  # raises ValidationFailed("from_filter", ...)
    if server.max_sessions < 1:
        raise ValidationFailed("max_sessions", "Concurrent SMTP sessions must be at least 1.")
    # 0 is "no limit", for a relay of your own; Exchange Online delays mail beyond 30 a minute
    # per mailbox, so an Outlook server always counts.
    if server.messages_per_minute < 0 or (
        server.messages_per_minute == 0 and server.auth_type == OutgoingServer.Auth.OUTLOOK
    ):
        raise ValidationFailed(
            "messages_per_minute",
            "Messages per minute must be at least 1 for an Outlook server (Exchange Online "
            "accepts 30 a minute per mailbox); 0 means no limit, for other servers only.",
        )


def clean_incoming(server: IncomingServer, new_password: str) -> None:
    if server.server_type == IncomingServer.Type.OUTLOOK:
        if new_password:
            raise ValidationFailed(
                "password",
                f"Please leave the password field empty for Outlook mail server “{server.name}”: "
                "the OAuth process does not require it.",
            )
        server.host = server.host or OUTLOOK_IMAP.host
        server.port = server.port or OUTLOOK_IMAP.port
        if not server.ssl:
            raise ValidationFailed("ssl", f"SSL is required for server “{server.name}”.")
        if not _looks_like_address(server.username):
            raise ValidationFailed(
                "username",
                'Please fill the "Username" field with the Outlook mailbox address.',
            )
        server.username = server.username.strip().lower()
        server.password = ""
    if not server.host.strip():
        raise ValidationFailed("host", "Enter the Server Name.")
    if not 0 < server.port < 65536:
        raise ValidationFailed("port", "The Port must be between 1 and 65535.")
    folders = [f.strip() for f in server.folders.split(",") if f.strip()]
    if not folders:
        raise ValidationFailed("folders", "Name at least one folder to fetch, e.g. INBOX.")
    server.folders = ",".join(folders)


def test_sender(server: OutgoingServer) -> str:
    """The MAIL FROM of Test Connection: an address this server's filter accepts."""
    addresses, domains = routing.parse_filter(server.from_filter)
    if addresses:
        return sorted(addresses)[0]
    notifications = parameters.notifications_address()
    if notifications and (not domains or notifications.rpartition("@")[2] in domains):
        return notifications
    if domains:
        local = parameters.get("mail.default.from").partition("@")[0] or "noreply"
        return f"{local}@{sorted(domains)[0]}"
    if server.username and "@" in server.username:
        return server.username
    raise ConfigurationError(
        "Test Connection needs a sender: set FROM Filtering, or mail.default.from and "
        "mail.catchall.domain."
    )


def smtp_settings(server: OutgoingServer) -> Any:
    from konvergo.services.credentials import smtp_auth_for
    from konvergo.transports.smtp import SmtpSettings

    return SmtpSettings(
        host=server.smtp_host,
        port=server.smtp_port,
        encryption=server.encryption,  # type: ignore[arg-type]
        auth=smtp_auth_for(server),
        timeout=30,
    )


@dataclass(frozen=True)
class TestOutcome:
    ok: bool
    message: str
    fix: str = ""
    #: The transport's class of the failure ("authorization" means Exchange refused the token).
    failure_class: str | None = None


def run_smtp_test(server: OutgoingServer, *, send_to: str = "", actor: Any = None) -> TestOutcome:
    """Test Connection: connect, authenticate, MAIL FROM, RCPT, DATA (and send if asked)."""
    from konvergo.transports.smtp import test_connection

    settings = None
    try:
        sender = test_sender(server)
        settings = smtp_settings(server)
        result = test_connection(
            settings,
            sender,
            send_to or None,
            send_test_email=bool(send_to),
        )
        outcome = TestOutcome(
            result.ok, result.message, result.explanation or "", result.failure_class
        )
    except KonvergoError as exc:
        explanation = getattr(exc, "explanation", None)
        fix = explanation.summary() if explanation is not None else ""
        outcome = TestOutcome(False, str(exc), fix)
    server.last_test_at = timezone.now()
    server.last_test_ok = outcome.ok
    server.last_test_message = outcome.message + (f"\n{outcome.fix}" if outcome.fix else "")
    server.save(update_fields=["last_test_at", "last_test_ok", "last_test_message"])
    if server.grant_id is not None:
        from konvergo.services.oauth import tokens

        if outcome.ok:
            tokens.record_use(server.grant_id, True)
        elif outcome.failure_class == "authorization":
            # Exchange refused a token the identity platform issued (5.7.3): the tag must
            # turn red. A 5.7.139 is "configuration" (SMTP AUTH off), not the grant's fault.
            auth = settings.auth if settings is not None else None
            digest = auth.token_digest if isinstance(auth, XOAuth2Auth) else None
            tokens.record_use(
                server.grant_id, False, outcome.message, outcome.fix, token_digest=digest
            )
    AuditEvent.record(
        "server.tested", f"outgoing:{server.pk}", "ok" if outcome.ok else "failed", actor
    )
    return outcome
