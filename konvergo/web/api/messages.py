"""API: send a message (``POST /api/v1/messages``) and follow it (``GET /api/v1/messages/<id>``)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Literal

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Schema
from ninja.responses import Status

from konvergo.errors import ValidationFailed
from konvergo.services import outbox
from konvergo.services.inbox import sender_of
from konvergo.store.models import OutboxItem
from konvergo.web.access import is_admin
from konvergo.web.api.base import Forbidden, api

#: A JSON body carries attachments in base64; beyond this the request is refused early.
MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024


class AttachmentIn(Schema):
    filename: str
    content_type: str = "application/octet-stream"
    content_base64: str


class MessageIn(Schema):
    from_: str | None = Field(
        None, alias="from", description="Administrators only; default: the calling user."
    )
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    subject: str
    text: str | None = None
    html: str | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list)
    server_id: int | None = Field(None, description="Force an outgoing server (administrators).")
    purpose: Literal["transactional", "mass_mailing"] = "transactional"
    reply_to: str | None = None


class MessageOut(Schema):
    id: int
    state: str
    message_id: str
    header_from: str
    recipients: list[str]
    server_id: int | None
    route: str
    attempts: int
    next_attempt_at: dt.datetime | None
    failure_class: str
    last_reply: str
    fix: str
    sent_at: dt.datetime | None
    created_at: dt.datetime


def _out(item: OutboxItem) -> MessageOut:
    return MessageOut(
        id=item.pk,
        state=item.state,
        message_id=item.message_id,
        header_from=item.header_from,
        recipients=list(item.recipients),
        server_id=item.server_id,
        route=item.route,
        attempts=item.attempts,
        next_attempt_at=item.next_attempt_at,
        failure_class=item.failure_class,
        last_reply=item.last_reply,
        fix=item.last_fix,
        sent_at=item.sent_at,
        created_at=item.created_at,
    )


def _attachments(items: list[AttachmentIn]) -> list[tuple[str, bytes, str]]:
    decoded = []
    for index, item in enumerate(items):
        try:
            content = base64.b64decode(item.content_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValidationFailed(
                f"attachments[{index}].content_base64", "This is not valid base64."
            ) from exc
        if len(content) > MAX_ATTACHMENT_BYTES:
            raise ValidationFailed(f"attachments[{index}]", "Attachments are limited to 25 MB.")
        decoded.append((item.filename, content, item.content_type))
    return decoded


@api.post("/messages", response={201: MessageOut}, tags=["messages"])
def send_message(request: HttpRequest, body: MessageIn) -> Status[MessageOut]:
    """Queue a message; it is routed now and sent by the worker."""
    admin = is_admin(request.user)
    if (body.from_ or body.server_id) and not admin:
        raise Forbidden("Only administrators may name another sender or force a server.")
    item = outbox.enqueue(
        from_=body.from_ or sender_of(request.user),
        to=body.to,
        cc=body.cc,
        bcc=body.bcc,
        subject=body.subject,
        text=body.text,
        html=body.html,
        attachments=_attachments(body.attachments),
        purpose=body.purpose,
        server_id=body.server_id,
        created_by=request.user,
        reply_to=body.reply_to,
    )
    return Status(201, _out(item))


@api.get("/messages/{message_id}", response=MessageOut, tags=["messages"])
def get_message(request: HttpRequest, message_id: int) -> MessageOut:
    """State, server, attempts and failure of a queued message (yours, or any for admins)."""
    items = OutboxItem.objects.all()
    if not is_admin(request.user):
        items = items.filter(created_by_id=request.user.pk)
    return _out(get_object_or_404(items, pk=message_id))
