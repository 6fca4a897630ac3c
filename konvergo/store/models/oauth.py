"""OAuth grants (a mailbox's tokens) and the short-lived state of a Connect in progress."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from konvergo.security.crypto import EncryptedTextField


class OAuthGrant(models.Model):
    """A mailbox's authorization at Microsoft: tokens (encrypted), health and last error."""

    class Status(models.TextChoices):
        VALID = "valid", "Outlook Token Valid"
        INVALID = "invalid", "Outlook Token Invalid"
        DISCONNECTED = "disconnected", "Disconnected"

    provider = models.CharField(max_length=32, default="microsoft")
    mailbox = models.CharField(max_length=320, help_text="The Username the grant must belong to.")
    scope = models.TextField(help_text="The resource scope this grant's access tokens carry.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.VALID)
    tenant_id = models.CharField(max_length=64, blank=True, default="")
    object_id = models.CharField(max_length=64, blank=True, default="")
    signed_in_as = models.CharField(max_length=320, blank=True, default="")
    refresh_token = EncryptedTextField(blank=True, default="")
    access_token = EncryptedTextField(blank=True, default="")
    access_expires_at = models.DateTimeField(null=True, blank=True)
    #: Bumped on every token change: the compare-and-swap guard against lost rotations.
    version = models.PositiveIntegerField(default=0)
    refresh_lease_owner = models.CharField(max_length=128, blank=True, default="")
    refresh_lease_until = models.DateTimeField(null=True, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    retry_after = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    last_error_code = models.CharField(max_length=32, blank=True, default="")
    #: "authorization" (reconnect), "configuration" (an admin fixes the app), "temporary".
    failure_class = models.CharField(max_length=16, blank=True, default="")
    last_error_fix = models.TextField(blank=True, default="")
    alerted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.provider}:{self.mailbox}"


class OAuthState(models.Model):
    """One Connect in progress: single-use, 10 minutes, bound to session, user and server."""

    state_digest = models.CharField(max_length=64, unique=True)
    server_kind = models.CharField(max_length=16)  # "outgoing" | "incoming"
    server_id = models.BigIntegerField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    session_digest = models.CharField(max_length=64)
    code_verifier = EncryptedTextField()
    redirect_uri = models.CharField(max_length=512)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)


class ConsentLink(models.Model):
    """A one-time link an administrator sends a mailbox owner to run the consent."""

    token_digest = models.CharField(max_length=64, unique=True)
    server_kind = models.CharField(max_length=16)
    server_id = models.BigIntegerField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
