"""Threads, messages and attachments; raw incoming mail and its quarantine."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Thread(models.Model):
    """A conversation: incoming and outgoing messages linked by their Message-IDs."""

    subject = models.CharField(max_length=998, blank=True, default="")
    kind = models.CharField(max_length=16, default="inbox")
    created_at = models.DateTimeField(auto_now_add=True)
    last_message_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-last_message_at", "-id"]


class ThreadParticipant(models.Model):
    """An address taking part in a thread (users see the threads their address is in)."""

    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="participants")
    address = models.CharField(max_length=320, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["thread", "address"], name="participant_unique")
        ]


class Message(models.Model):
    """One message of a thread, incoming (fetched) or outgoing (sent through the outbox)."""

    class Direction(models.TextChoices):
        IN = "in", "Incoming"
        OUT = "out", "Outgoing"

    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="messages")
    direction = models.CharField(max_length=3, choices=Direction.choices)
    message_id = models.CharField(max_length=512, db_index=True)
    incoming_server = models.ForeignKey(
        "store.IncomingServer", null=True, blank=True, on_delete=models.SET_NULL
    )
    folder = models.CharField(max_length=255, blank=True, default="")
    uid = models.BigIntegerField(null=True, blank=True)
    subject = models.CharField(max_length=998, blank=True, default="")
    from_address = models.CharField(max_length=998, blank=True, default="")
    to = models.TextField(blank=True, default="")
    cc = models.TextField(blank=True, default="")
    date = models.DateTimeField(null=True, blank=True)
    in_reply_to = models.CharField(max_length=998, blank=True, default="")
    references = models.TextField(blank=True, default="")
    #: Empty when ``text_in_raw``: read texts with ``konvergo.services.inbox.with_text``.
    body_text = models.TextField(blank=True, default="")
    body_html = models.TextField(blank=True, default="")
    raw = models.BinaryField(null=True, blank=True)
    #: A plain-text message's text is its raw body decoded: intake keeps it once, in ``raw``
    #: (half the bytes to write), and readers decode it again when they show it. Null means
    #: false: rows written without this column (a worker of the previous release still
    #: running while the database is migrated must not fail on NOT NULL and lose its batch;
    #: and SQLite adds a nullable column without copying the table).
    text_in_raw = models.BooleanField(null=True)
    outbox_item = models.ForeignKey(
        "store.OutboxItem", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["date", "id"]
        constraints = [
            # Dedupe incoming mail on (server, Message-ID): a resync or a crash never stores
            # a message twice, whichever worker fetched it.
            models.UniqueConstraint(
                fields=["incoming_server", "message_id"],
                condition=models.Q(direction="in"),
                name="message_in_unique",
            )
        ]


class Attachment(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255)
    content_id = models.CharField(max_length=255, blank=True, default="")
    size = models.PositiveIntegerField(default=0)
    content = models.BinaryField()


class QuarantinedMessage(models.Model):
    """A fetched message that could not be parsed: kept raw, with the reason."""

    server = models.ForeignKey("store.IncomingServer", on_delete=models.CASCADE)
    folder = models.CharField(max_length=255)
    uid = models.BigIntegerField()
    uidvalidity = models.BigIntegerField(default=0)
    raw = models.BinaryField()
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["server", "folder", "uidvalidity", "uid"], name="quarantine_unique"
            )
        ]
