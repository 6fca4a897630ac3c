"""The seed's two configurations, end to end: enqueue, claim, send over STARTTLS, check the wire."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from konvergo.services import outbox
from konvergo.store.models import OutboxItem
from tests.outbox.conftest import states

pytestmark = pytest.mark.django_db


def parsed(content: bytes):  # type: ignore[no-untyped-def]
    """The message as received; header values exactly as on the wire (compat32)."""
    return message_from_bytes(content, policy=policy.compat32)


def test_single_server_rewrites_from_keeps_the_name_and_sets_reply_to_catchall(
    start_sink, make_server, example_params, dispatcher
) -> None:
    """One server: John's mail leaves as "John Doe" <notifications@…>, Reply-To catchall."""
    sink = start_sink()
    server = make_server("Notifications", "notifications@example.com", sink)
    item = outbox.enqueue(
        from_="John Doe <john@example.com>",
        to=["client@customer.test"],
        cc=["Boss <boss@customer.test>"],
        bcc=["audit@example.com"],
        subject="Quotation S00042",
        text="Hello,\nplease find our quotation.\n",
        html="<p>Hello, please find our quotation.</p>",
        attachments=[("quote.pdf", b"%PDF-1.4 fake", "application/pdf")],
    )
    assert item.server_id == server.pk and item.route == "notifications"

    assert dispatcher.drain() == 1

    [received] = sink.messages
    msg = parsed(received.content)
    assert msg["From"] == '"John Doe" <notifications@example.com>'
    assert msg["Reply-To"] == "catchall@example.com"
    assert msg["Bcc"] is None
    assert msg["Message-ID"] == item.message_id
    # The server does not accept bounce@example.com, so the envelope is the mailbox itself.
    assert received.mail_from == "notifications@example.com"
    assert received.user == "notifications@example.com"
    assert sorted(received.rcpt_tos) == [
        "audit@example.com",
        "boss@customer.test",
        "client@customer.test",
    ]
    full = message_from_bytes(received.content, policy=policy.default)
    assert [p.get_filename() for p in full.iter_attachments()] == ["quote.pdf"]
    item.refresh_from_db()
    assert item.state == "sent" and item.sent_at is not None and item.attempts == 1
    assert item.last_reply.startswith("250")


def test_envelope_is_the_bounce_address_when_the_server_accepts_it(
    start_sink, make_server, example_params, dispatcher
) -> None:
    """A server whose From Filter covers the domain sends with MAIL FROM bounce@example.com."""
    sink = start_sink()
    make_server("Domain", "example.com", sink, username="notifications@example.com")
    outbox.enqueue(
        from_="John Doe <john@example.com>", to="a@customer.test", subject="Hi", text="x"
    )
    dispatcher.drain()
    [received] = sink.messages
    assert received.mail_from == "bounce@example.com"
    assert parsed(received.content)["From"] == '"John Doe" <john@example.com>'


def test_per_user_servers_send_as_their_owner_and_others_fall_back_to_notifications(
    start_sink, make_server, example_params, dispatcher
) -> None:
    """John's and Jane's mail goes through their own mailbox; anyone else through notifications."""
    sink = start_sink()
    john = make_server("John", "john@example.com", sink)
    jane = make_server("Jane", "jane@example.com", sink)
    notif = make_server("Notifications", "notifications@example.com", sink)
    senders = {
        "John Doe <john@example.com>": john.pk,
        "Jane Roe <jane@example.com>": jane.pk,
        "Bob Smith <bob@example.com>": notif.pk,
        "OdooBot <odoobot@example.com>": notif.pk,
    }
    for sender, server_id in senders.items():
        item = outbox.enqueue(from_=sender, to="c@customer.test", subject=sender, text="x")
        assert item.server_id == server_id

    assert dispatcher.drain() == 4

    seen = {parsed(m.content)["Subject"]: m for m in sink.messages}
    assert seen["John Doe <john@example.com>"].user == "john@example.com"
    assert seen["John Doe <john@example.com>"].mail_from == "john@example.com"
    assert parsed(seen["Jane Roe <jane@example.com>"].content)["From"] == (
        '"Jane Roe" <jane@example.com>'
    )
    bob = seen["Bob Smith <bob@example.com>"]
    assert bob.user == "notifications@example.com"
    assert parsed(bob.content)["From"] == '"Bob Smith" <notifications@example.com>'
    assert parsed(bob.content)["Reply-To"] == "catchall@example.com"
    assert states() == {"sent": 4}


def test_one_authenticated_connection_carries_many_messages(
    start_sink, make_server, example_params, dispatcher
) -> None:
    """Twenty messages to one server reuse a single SMTP session."""
    sink = start_sink()
    make_server("Notifications", "notifications@example.com", sink, max_sessions=1)
    outbox.enqueue_many(
        {"from_": "a@example.com", "to": "c@customer.test", "subject": f"n{i}", "text": "x"}
        for i in range(20)
    )
    assert dispatcher.drain() == 20
    assert len(sink.messages) == 20
    assert sink.state.connections == 1
    assert OutboxItem.objects.filter(state="sent").count() == 20
