"""The Inbox: who sees which thread, and sending in a thread (through the outbox)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from konvergo.errors import ValidationFailed
from konvergo.mailparse import plain_text
from konvergo.services import outbox
from konvergo.store.models import Message, Thread, ThreadParticipant


def visible_threads(user: Any) -> QuerySet[Thread]:
    """Administrators see every thread; a user the threads their address or account is in."""
    threads = Thread.objects.all()
    if getattr(user, "is_administrator", False):
        return threads
    email = (getattr(user, "email", "") or "").lower()
    match = Q(participants__user=user)
    if email:
        match |= Q(participants__address=email)
    return threads.filter(match).distinct()


def with_text(messages: Iterable[Message]) -> list[Message]:
    """``messages`` with ``body_text`` filled in where intake kept the text only in ``raw``.

    One query reads the raw bytes of those (pages defer ``raw``); ``body_text`` is set on the
    instances only, never saved.
    """
    messages = list(messages)
    stored_once = [m.pk for m in messages if m.text_in_raw and not m.body_text]
    if stored_once:
        raws = Message.objects.filter(pk__in=stored_once).values_list("pk", "raw")
        texts = {pk: plain_text(bytes(raw)) for pk, raw in raws if raw is not None}
        for message in messages:
            if message.pk in texts:
                message.body_text = texts[message.pk]
    return messages


def sender_of(user: Any) -> str:
    """The From of mail a user sends: their name and address (routing may rewrite it)."""
    email = getattr(user, "email", "")
    if not email:
        where = (
            "set it in Settings → Users"
            if getattr(user, "is_administrator", False)
            else "ask an administrator to set one in Settings → Users"
        )
        raise ValidationFailed("from", f"Your user has no email address: {where}.")
    name = user.get_full_name() or user.get_username()
    from konvergo.services.routing import format_mailbox

    return format_mailbox(name, email)


def _participants(thread: Thread, addresses: Sequence[str]) -> None:
    from konvergo.store.models import User

    for address in {a.strip().lower() for a in addresses if a and "@" in a}:
        user = User.objects.filter(email__iexact=address, is_active=True).first()
        ThreadParticipant.objects.get_or_create(
            thread=thread, address=address, defaults={"user": user}
        )


def send(
    *,
    user: Any,
    to: Sequence[str],
    subject: str,
    text: str,
    cc: Sequence[str] = (),
    thread: Thread | None = None,
    attachments: Sequence[Any] = (),
    from_: str | None = None,
) -> Message:
    """Queue a mail (a new conversation or a reply) and record it in its thread.

    A reply carries In-Reply-To and References of the thread's last message, so the answer
    to it comes back into the same thread.
    """
    in_reply_to, references = None, []
    if thread is not None:
        last = thread.messages.order_by("-date", "-id").first()
        if last is not None:
            in_reply_to = last.message_id
            references = [*last.references.split(), last.message_id][-32:]
    with transaction.atomic():
        if thread is None:
            thread = Thread.objects.create(subject=subject, kind="inbox")
        item = outbox.enqueue(
            from_=from_ or sender_of(user),
            to=list(to),
            cc=list(cc),
            subject=subject,
            text=text,
            attachments=attachments,
            created_by=user,
            in_reply_to=in_reply_to,
            references=references,
            thread=thread,
        )
        now = timezone.now()
        message = Message.objects.create(
            thread=thread,
            direction=Message.Direction.OUT,
            message_id=item.message_id,
            subject=subject,
            from_address=item.header_from,
            to=", ".join(to),
            cc=", ".join(cc),
            date=now,
            in_reply_to=in_reply_to or "",
            references=" ".join(references),
            body_text=text,
            outbox_item=item,
            author=user,
        )
        Thread.objects.filter(pk=thread.pk).update(last_message_at=now)
        _participants(thread, [getattr(user, "email", ""), *to, *cc])
    return message
