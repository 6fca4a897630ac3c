"""Outgoing Email Servers and Incoming Mail Servers."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from konvergo.security.crypto import EncryptedTextField


class OutgoingServer(models.Model):
    """An SMTP server mail may be sent through, chosen per sender by its FROM Filtering."""

    class Auth(models.TextChoices):
        LOGIN = "login", "Username (password)"
        OUTLOOK = "outlook", "Outlook"
        NONE = "none", "None"

    class Encryption(models.TextChoices):
        NONE = "none", "None"
        STARTTLS = "starttls", "TLS (STARTTLS)"
        SSL = "ssl", "SSL/TLS"

    name = models.CharField(max_length=128)
    priority = models.PositiveIntegerField(default=10, help_text="Lower is tried first.")
    from_filter = models.TextField(
        "FROM Filtering",
        blank=True,
        default="",
        help_text="Comma-separated list of addresses or domains for which this server can be "
        'used, e.g. "notifications@example.com" or "example.com".',
    )
    auth_type = models.CharField(
        "Authenticate with", max_length=16, choices=Auth.choices, default=Auth.LOGIN
    )
    smtp_host = models.CharField("SMTP Server", max_length=255)
    smtp_port = models.PositiveIntegerField("SMTP Port", default=587)
    encryption = models.CharField(
        "Connection Encryption", max_length=16, choices=Encryption.choices, default="starttls"
    )
    username = models.CharField("Username", max_length=255, blank=True, default="")
    password = EncryptedTextField("Password", blank=True, default="")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="outgoing_servers",
        help_text="A user-specific server: its owner may connect it without Settings rights.",
    )
    active = models.BooleanField(default=True)
    mass_mailing_only = models.BooleanField(
        "Reserved for mass mailing",
        default=False,
        help_text="Never used for transactional mail, only as the Dedicated Server of mass "
        "mailings.",
    )
    grant = models.OneToOneField(
        "store.OAuthGrant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    max_sessions = models.PositiveIntegerField(
        default=3, help_text="Concurrent SMTP sessions (Exchange Online allows 3 per mailbox)."
    )
    messages_per_minute = models.PositiveIntegerField(
        default=30,
        help_text="Exchange Online accepts 30 messages per minute per mailbox (0: no limit).",
    )
    throttled_until = models.DateTimeField(null=True, blank=True)
    last_test_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return self.name


class IncomingServer(models.Model):
    """An IMAP mailbox fetched into the database."""

    class Type(models.TextChoices):
        IMAP = "imap", "IMAP Server"
        OUTLOOK = "outlook", "Outlook OAuth Authentication"

    class State(models.TextChoices):
        DRAFT = "draft", "Not Confirmed"
        DONE = "done", "Confirmed"

    class Target(models.TextChoices):
        INBOX = "inbox", "Inbox conversation"
        LEAD = "lead", "Lead"
        TICKET = "ticket", "Helpdesk ticket"

    name = models.CharField(max_length=128)
    server_type = models.CharField(
        "Server Type", max_length=16, choices=Type.choices, default=Type.IMAP
    )
    host = models.CharField("Server Name", max_length=255)
    port = models.PositiveIntegerField("Port", default=993)
    ssl = models.BooleanField("SSL/TLS", default=True)
    username = models.CharField("Username", max_length=255)
    password = EncryptedTextField("Password", blank=True, default="")
    folders = models.CharField(
        max_length=512, default="INBOX", help_text="Comma-separated folders to fetch."
    )
    create_record = models.CharField(
        "Create a New Record", max_length=16, choices=Target.choices, default=Target.INBOX
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.DRAFT)
    active = models.BooleanField(default=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="incoming_servers",
    )
    grant = models.OneToOneField(
        "store.OAuthGrant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    poll_interval = models.PositiveIntegerField(default=60, help_text="Seconds, without IDLE.")
    mark_read = models.BooleanField(default=False, help_text="Set \\Seen on fetched messages.")
    fetch_since = models.DateField(
        null=True, blank=True, help_text="The first fetch ignores older messages."
    )
    last_fetch_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    messages_fetched = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    last_error_fix = models.TextField(blank=True, default="")
    #: Exchange's "Suggested Backoff Time": no fetch before this moment.
    retry_after = models.DateTimeField(null=True, blank=True)
    #: Whether the server offered IDLE at the last connection (None: not known yet).
    supports_idle = models.BooleanField(null=True, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=128, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class FolderState(models.Model):
    """Where the fetch of one folder stands: UIDVALIDITY and the highest UID stored."""

    server = models.ForeignKey(
        IncomingServer, on_delete=models.CASCADE, related_name="folder_states"
    )
    folder = models.CharField(max_length=255)
    uidvalidity = models.BigIntegerField(default=0)
    last_uid = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["server", "folder"], name="folder_state_unique")
        ]
