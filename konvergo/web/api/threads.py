"""API: threads and their messages (``GET /api/v1/threads``, ``GET /api/v1/threads/<id>``)."""

from __future__ import annotations

import datetime as dt

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Schema

from konvergo.services.inbox import visible_threads, with_text
from konvergo.store.models import Message
from konvergo.web.api.base import api


class ThreadOut(Schema):
    id: int
    subject: str
    kind: str
    last_message_at: dt.datetime | None
    participants: list[str]


class AttachmentOut(Schema):
    id: int
    filename: str
    content_type: str
    size: int
    download_url: str


class MessageItem(Schema):
    id: int
    direction: str
    message_id: str
    subject: str
    from_address: str
    to: str
    cc: str
    date: dt.datetime | None
    in_reply_to: str
    body_text: str
    body_html: str
    attachments: list[AttachmentOut]


class ThreadDetail(ThreadOut):
    messages: list[MessageItem]


def _thread_out(thread: object) -> ThreadOut:
    return ThreadOut(
        id=thread.pk,  # type: ignore[attr-defined]
        subject=thread.subject,  # type: ignore[attr-defined]
        kind=thread.kind,  # type: ignore[attr-defined]
        last_message_at=thread.last_message_at,  # type: ignore[attr-defined]
        participants=[p.address for p in thread.participants.all()],  # type: ignore[attr-defined]
    )


@api.get("/threads", response=list[ThreadOut], tags=["threads"])
def list_threads(request: HttpRequest, limit: int = 50, offset: int = 0) -> list[ThreadOut]:
    """Threads you take part in (all threads for administrators), newest first."""
    limit = max(1, min(limit, 200))
    threads = visible_threads(request.user).prefetch_related("participants")
    return [_thread_out(t) for t in threads[offset : offset + limit]]


def _message(message: Message) -> MessageItem:
    return MessageItem(
        id=message.pk,
        direction=message.direction,
        message_id=message.message_id,
        subject=message.subject,
        from_address=message.from_address,
        to=message.to,
        cc=message.cc,
        date=message.date,
        in_reply_to=message.in_reply_to,
        body_text=message.body_text,
        body_html=message.body_html,
        attachments=[
            AttachmentOut(
                id=a.pk,
                filename=a.filename,
                content_type=a.content_type,
                size=a.size,
                download_url=f"/inbox/attachments/{a.pk}",
            )
            for a in message.attachments.all()
        ],
    )


@api.get("/threads/{thread_id}", response=ThreadDetail, tags=["threads"])
def get_thread(request: HttpRequest, thread_id: int) -> ThreadDetail:
    """One thread with its incoming and outgoing messages."""
    thread = get_object_or_404(visible_threads(request.user), pk=thread_id)
    messages = with_text(thread.messages.defer("raw").prefetch_related("attachments"))
    base = _thread_out(thread)
    return ThreadDetail(**base.dict(), messages=[_message(m) for m in messages])
