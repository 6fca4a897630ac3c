"""The outbox: one row per message to send, with its routing decision and its history."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models, transaction


class OutboxItem(models.Model):
    """A finished message (bytes built at enqueue time) waiting for, or done with, sending."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        HELD = "held", "Held (waiting for authorization)"
        CANCELLED = "cancelled", "Cancelled"

    class FailureClass(models.TextChoices):
        NONE = "", "—"
        TEMPORARY = "temporary", "Temporary"
        PERMANENT = "permanent", "Permanent"
        AUTHORIZATION = "authorization", "Authorization"
        CONFIGURATION = "configuration", "Configuration"

    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    purpose = models.CharField(max_length=16, default="transactional")
    created_at = models.DateTimeField(auto_now_add=True)
    # Indexed only where set (see Meta): mail queued by programs has no user, and PostgreSQL
    # would otherwise add an entry for NULL on every state change of every row.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_index=False,
    )
    # No index of its own: outbox_claim and outbox_rate start with it (one index fewer to
    # update for every state change on PostgreSQL).
    server = models.ForeignKey(
        "store.OutgoingServer", null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    route = models.CharField(max_length=32, blank=True, default="")
    # Indexed in Meta: a plain index (db_index would add a LIKE index on PostgreSQL, which
    # no query uses and every state change would update).
    message_id = models.CharField(max_length=512)
    subject = models.CharField(max_length=998, blank=True, default="")
    header_from = models.CharField(max_length=998)
    #: The From as the caller wrote it, before routing (a re-route starts from it).
    original_from = models.CharField(max_length=998, blank=True, default="")
    envelope_from = models.CharField(max_length=320)
    recipients = models.JSONField(default=list)
    #: Bytes of :attr:`raw` (the message itself lives in :class:`OutboxBody`).
    size = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    failure_class = models.CharField(
        max_length=16, choices=FailureClass.choices, blank=True, default=""
    )
    last_reply = models.TextField(blank=True, default="")
    last_fix = models.TextField(blank=True, default="")
    claimed_by = models.CharField(max_length=128, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    thread = models.ForeignKey(
        "store.Thread",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="outbox_due"),
            # The per-minute rate window counts a server's recent sends.
            models.Index(fields=["server", "state", "sent_at"], name="outbox_rate"),
            # Claims look for a server's due rows without walking its sent history.
            models.Index(fields=["server", "state", "next_attempt_at"], name="outbox_claim"),
            models.Index(fields=["message_id"], name="outbox_message_id"),
            models.Index(
                fields=["created_by"],
                name="outbox_created_by",
                condition=models.Q(created_by__isnull=False),
            ),
            models.Index(
                fields=["thread"], name="outbox_thread", condition=models.Q(thread__isnull=False)
            ),
        ]

    # --- the message bytes, kept in OutboxBody ------------------------------------------

    @property
    def raw(self) -> bytes:
        """The finished message (loaded from :class:`OutboxBody` on first use)."""
        cached: bytes | None = self.__dict__.get("_raw")
        if cached is None:
            value = OutboxBody.objects.filter(item_id=self.pk).values_list("raw", flat=True)
            cached = bytes(value.get())
            self.__dict__["_raw"] = cached
        return cached

    @raw.setter
    def raw(self, value: bytes) -> None:
        self.__dict__["_raw"] = bytes(value)
        self.__dict__["_raw_changed"] = True

    def holding(self, raw: bytes) -> OutboxItem:
        """This row, knowing its stored bytes ``raw`` (no query to read them, nothing to write)."""
        self.__dict__["_raw"] = raw
        return self

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save the row, and its bytes when they were set or changed (together or not at all)."""
        adding = self._state.adding
        with transaction.atomic(using=kwargs.get("using"), savepoint=False):
            super().save(*args, **kwargs)
            if self.__dict__.pop("_raw_changed", False):
                raw = self.__dict__["_raw"]
                if adding:
                    OutboxBody(item_id=self.pk, raw=raw).save(force_insert=True)
                else:
                    OutboxBody.objects.update_or_create(item_id=self.pk, defaults={"raw": raw})


class OutboxBody(models.Model):
    """The finished bytes of one outbox message, apart from the row that changes state.

    Every claim and every outcome rewrites the outbox row; SQLite rewrites a row whole (a 10 KB
    message is three overflow pages) and PostgreSQL copies it. Kept apart, the bytes are
    written once, when the mail is queued, and read once per attempt.
    """

    item = models.OneToOneField(
        OutboxItem, primary_key=True, on_delete=models.CASCADE, related_name="body"
    )
    raw = models.BinaryField()


class ApiKey(models.Model):
    """A per-user API key; only its SHA-256 digest is stored (the key is shown once)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    name = models.CharField(max_length=128)
    prefix = models.CharField(max_length=16)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
