"""System Parameters (a key/value store) and the General Settings of the mail layer."""

from __future__ import annotations

from django.db import models

from konvergo.security.crypto import EncryptedTextField


class SystemParameter(models.Model):
    """One key/value pair of Settings → Technical → Parameters → System Parameters."""

    key = models.CharField(max_length=255, unique=True)
    value = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class MailSettings(models.Model):
    """The single row behind General Settings → Discuss → Custom Email Servers."""

    custom_email_servers = models.BooleanField(default=False)
    outlook_client_id = models.CharField(max_length=255, blank=True, default="")
    outlook_client_secret = EncryptedTextField(blank=True, default="")
    outlook_client_secret_expires = models.DateField(null=True, blank=True)
    outlook_client_secret_set_at = models.DateTimeField(null=True, blank=True)
    mass_mailing_server = models.ForeignKey(
        "store.OutgoingServer",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="Dedicated Server",
        help_text="Mass mailings always go through this server; their From is never rewritten.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "mail settings"
        verbose_name_plural = "mail settings"

    @classmethod
    def load(cls) -> MailSettings:
        """The singleton row, created on first use."""
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj

    @property
    def outlook_configured(self) -> bool:
        return bool(self.outlook_client_id and self.outlook_client_secret)
