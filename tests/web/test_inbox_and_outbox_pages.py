"""The Inbox and Outbox pages: who sees what, safe HTML, downloads, Retry and Cancel."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from konvergo.services import parameters
from konvergo.store.models import (
    Attachment,
    Message,
    OutboxItem,
    OutgoingServer,
    Thread,
    ThreadParticipant,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def johns_thread(db: Any) -> Thread:
    thread = Thread.objects.create(subject="Delivery date")
    ThreadParticipant.objects.create(thread=thread, address="john@example.com")
    message = Message.objects.create(
        thread=thread,
        direction="in",
        message_id="<m1@customer.test>",
        subject="Delivery date",
        from_address="Customer <c@customer.test>",
        to="john@example.com",
        body_html='<p>When?</p><img src="cid:logo">',
        body_text="When?",
    )
    Attachment.objects.create(
        message=message,
        filename="evil.html",
        content_type="text/html",
        size=30,
        content=b"<script>alert(1)</script>",
    )
    return thread


def test_user_sees_own_threads_and_not_others(user_client: Client, johns_thread: Thread) -> None:
    """John sees his thread; a thread without him is 404 for him."""
    assert "Delivery date" in user_client.get("/inbox").content.decode()
    other = Thread.objects.create(subject="Board meeting")
    ThreadParticipant.objects.create(thread=other, address="ceo@example.com")
    assert "Board meeting" not in user_client.get("/inbox").content.decode()
    assert user_client.get(f"/inbox/{other.pk}").status_code == 404


def test_thread_page_shows_the_text_of_mail_stored_once(
    user_client: Client, johns_thread: Thread
) -> None:
    """A plain-text message kept only in its raw bytes is shown with its decoded text."""
    Message.objects.create(
        thread=johns_thread,
        direction="in",
        message_id="<m2@customer.test>",
        raw=b"From: c@customer.test\r\nSubject: Re\r\nContent-Type: text/plain; charset=utf-8"
        b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\nFriday at 9, \xc3\xa0 bient\xc3\xb4t.\r\n",
        text_in_raw=True,
    )
    page = user_client.get(f"/inbox/{johns_thread.pk}").content.decode()
    assert "Friday at 9, à bientôt." in page


def test_html_mail_is_shown_in_a_sandboxed_frame(user_client: Client, johns_thread: Thread) -> None:
    """A message's HTML is rendered only inside an iframe with sandbox, escaped in srcdoc."""
    page = user_client.get(f"/inbox/{johns_thread.pk}").content.decode()
    assert '<iframe class="mail-html" sandbox srcdoc="&lt;p&gt;When?&lt;/p&gt;' in page


def test_attachments_download_and_never_render(user_client: Client, johns_thread: Thread) -> None:
    """An attached HTML file is served as a download with a neutral content type."""
    attachment = Attachment.objects.get()
    response = user_client.get(f"/inbox/attachments/{attachment.pk}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment;")


def test_reply_from_the_thread_page_is_queued_in_the_thread(
    user_client: Client, johns_thread: Thread
) -> None:
    """Replying from the thread page queues a mail and adds it to the same thread."""
    parameters.set_value("mail.catchall.domain", "example.com")
    OutgoingServer.objects.create(
        name="Example",
        auth_type="none",
        smtp_host="127.0.0.1",
        encryption="none",
        from_filter="example.com",
    )
    response = user_client.post(
        f"/inbox/{johns_thread.pk}",
        {"to": "c@customer.test", "subject": "Re: Delivery date", "text": "Tomorrow."},
    )
    assert response.status_code == 302
    out = johns_thread.messages.get(direction="out")
    assert out.in_reply_to == "<m1@customer.test>"
    assert OutboxItem.objects.get().thread_id == johns_thread.pk


def test_outbox_shows_failures_with_fix_and_retry_requeues(admin_client: Client) -> None:
    """A failed row shows its class, reply and fix; Retry puts it back in the queue."""
    server = OutgoingServer.objects.create(
        name="Example", auth_type="none", smtp_host="127.0.0.1", encryption="none"
    )
    item = OutboxItem.objects.create(
        state="failed",
        server=server,
        route="sender",
        message_id="<x@example.com>",
        header_from="a@example.com",
        envelope_from="a@example.com",
        recipients=["b@x.test"],
        raw=b"Subject: x\r\n\r\nx\r\n",
        failure_class="permanent",
        last_reply="550 5.1.1 User unknown",
        last_fix="Check the recipient address.",
    )
    page = admin_client.get("/outbox").content.decode()
    assert "550 5.1.1 User unknown" in page and "Check the recipient address." in page
    admin_client.post(f"/outbox/{item.pk}/retry")
    item.refresh_from_db()
    assert item.state == "queued"
    admin_client.post(f"/outbox/{item.pk}/cancel")
    item.refresh_from_db()
    assert item.state == "cancelled"


def test_user_cannot_retry_someone_elses_mail(user_client: Client, admin_user: Any) -> None:
    """A plain user does not see, nor act on, mail created by others."""
    item = OutboxItem.objects.create(
        state="failed",
        created_by=admin_user,
        message_id="<y@example.com>",
        header_from="a@example.com",
        envelope_from="a@example.com",
        recipients=["b@x.test"],
        raw=b"x",
    )
    assert "y@example.com" not in user_client.get("/outbox").content.decode()
    assert user_client.post(f"/outbox/{item.pk}/retry").status_code == 404
