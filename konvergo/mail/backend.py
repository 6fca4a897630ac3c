"""A Django email backend that queues every message in the Konvergo outbox.

Configuration comes only from constructor keyword arguments (Django passes ``OPTIONS`` of
6.1's ``MAILERS`` that way, and ``get_connection(**kwargs)`` before it); no ``EMAIL_*``
setting is read, and an unknown option raises :class:`TypeError`, so a typo never passes
silently. Messages go through routing (the From may be rewritten to the notifications
address) and are sent by the worker; ``send_messages`` returns how many were queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.mime.base import MIMEBase
from typing import Any

from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage, EmailMultiAlternatives
from django.db import transaction

from konvergo.errors import ValidationFailed
from konvergo.services.outbox_enqueue import AttachmentLike, enqueue
from konvergo.services.routing import PURPOSES

#: Extra headers the backend turns into enqueue() arguments instead of copying them.
_ARGUMENT_HEADERS = {"from": "from_", "reply-to": "reply_to", "in-reply-to": "in_reply_to"}
#: Headers Django lets callers override for display only; the outbox writes its own.
_DROPPED_HEADERS = frozenset({"to", "cc", "bcc", "references"})


class KonvergoEmailBackend(BaseEmailBackend):
    """Queue Django ``EmailMessage`` objects in the outbox.

    Args:
        fail_silently: skip (instead of raising for) messages that cannot be queued.
        purpose: ``"transactional"`` (default) or ``"mass_mailing"``.
        server_id: force this outgoing server instead of choosing one by the From address.
        username, password: accepted only as None (``send_mail`` always passes them);
            credentials belong to the Outgoing Email Servers.
    """

    def __init__(
        self,
        *,
        fail_silently: bool = False,
        purpose: str = "transactional",
        server_id: int | None = None,
        username: None = None,
        password: None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise TypeError(
                f"KonvergoEmailBackend got unknown option(s) {', '.join(sorted(unknown))}; "
                "it accepts fail_silently, purpose and server_id."
            )
        if username is not None or password is not None:
            raise TypeError(
                "KonvergoEmailBackend takes no username or password: credentials are set on "
                "the Outgoing Email Servers."
            )
        if purpose not in PURPOSES:
            raise TypeError(f"purpose must be one of {sorted(PURPOSES)}, not {purpose!r}.")
        if server_id is not None and (
            isinstance(server_id, bool) or not isinstance(server_id, int)
        ):
            raise TypeError(f"server_id must be an integer, not {server_id!r}.")
        super().__init__(fail_silently=fail_silently)
        self.purpose = purpose
        self.server_id = server_id

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Queue the messages (all or nothing unless fail_silently); returns how many."""
        if not email_messages:
            return 0
        queued = 0
        with transaction.atomic():
            for message in email_messages:
                try:
                    # A savepoint per message, so a skipped one leaves no partial row.
                    with transaction.atomic():
                        enqueue(**self._arguments(message))
                except ValidationFailed as exc:
                    if self.fail_silently:
                        continue
                    context = {k: v for k, v in exc.context.items() if k != "field"}
                    raise ValidationFailed(
                        exc.field, f"{exc.field}: {exc.message}", **context
                    ) from exc
                queued += 1
        return queued

    def _arguments(self, message: EmailMessage) -> dict[str, Any]:
        headers: dict[str, str] = {}
        arguments: dict[str, Any] = {
            "from_": message.from_email,
            "to": list(message.to),
            "cc": list(message.cc),
            "bcc": list(message.bcc),
            "subject": str(message.subject),
            "reply_to": ", ".join(message.reply_to) if message.reply_to else None,
            "purpose": self.purpose,
            "server_id": self.server_id,
        }
        references: list[str] = []
        for name, value in (message.extra_headers or {}).items():
            key = str(name).lower()
            if key in _ARGUMENT_HEADERS:
                arguments[_ARGUMENT_HEADERS[key]] = str(value)
            elif key == "references":
                references = str(value).split()
            elif key not in _DROPPED_HEADERS:
                headers[str(name)] = str(value)
        arguments["references"] = references
        arguments["headers"] = headers
        text, html = self._bodies(message)
        arguments["text"], arguments["html"] = text, html
        arguments["attachments"] = [self._attachment(a) for a in message.attachments]
        return arguments

    @staticmethod
    def _bodies(message: EmailMessage) -> tuple[str | None, str | None]:
        body = str(message.body) if message.body else ""
        if message.content_subtype == "html":
            text, html = None, body
        else:
            text, html = body, None
        if isinstance(message, EmailMultiAlternatives):
            for content, mimetype in message.alternatives:
                if mimetype == "text/html" and html is None and isinstance(content, str | bytes):
                    html = content if isinstance(content, str) else content.decode()
                else:
                    raise ValidationFailed(
                        "alternatives",
                        f"alternatives: only one text/html alternative is supported, not "
                        f"{mimetype}.",
                    )
        return text, html

    @staticmethod
    def _attachment(attachment: Any) -> AttachmentLike:
        if isinstance(attachment, MIMEBase):
            payload = attachment.get_payload(decode=True)
            if not isinstance(payload, bytes) or attachment.get_filename() is None:
                raise ValidationFailed(
                    "attachments", "attachments: a MIME attachment needs a filename and content."
                )
            return (attachment.get_filename() or "", payload, attachment.get_content_type())
        filename, content, mimetype = attachment
        return (filename or "attachment", content, mimetype)
