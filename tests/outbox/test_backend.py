"""The Django email backend: send_mail goes through routing and the queue."""

from __future__ import annotations

import pytest
from django.core import mail as django_mail
from django.core.mail import EmailMultiAlternatives, get_connection, send_mail

from konvergo.errors import ValidationFailed
from konvergo.mail.backend import KonvergoEmailBackend
from konvergo.store.models import OutboxItem

BACKEND = "konvergo.mail.backend.KonvergoEmailBackend"

pytestmark = pytest.mark.django_db


@pytest.fixture
def servers(start_sink, make_server, example_params):  # type: ignore[no-untyped-def]
    sink = start_sink()
    make_server("John", "john@example.com", sink)
    make_server("Notifications", "notifications@example.com", sink)
    return sink


def test_send_mail_is_routed_queued_and_delivered(servers, settings, dispatcher) -> None:
    """Django's send_mail queues through routing; the worker delivers it with the rewritten From."""
    settings.EMAIL_BACKEND = BACKEND
    count = send_mail(
        "Invoice",
        "Text body",
        "Bob <bob@example.com>",
        ["c@customer.test"],
        html_message="<b>HTML body</b>",
    )
    assert count == 1
    item = OutboxItem.objects.get()
    assert item.route == "notifications" and item.state == "queued"
    dispatcher.drain()
    [received] = servers.messages
    assert b'From: "Bob" <notifications@example.com>' in received.content
    assert b"text/html" in received.content


def test_email_message_fields_reach_the_wire(servers, dispatcher) -> None:
    """To, Cc, Bcc, Reply-To, alternatives, attachments and extra headers are all kept."""
    message = EmailMultiAlternatives(
        subject="Report",
        body="See attached.",
        from_email="John Doe <john@example.com>",
        to=["a@customer.test"],
        cc=["b@customer.test"],
        bcc=["c@customer.test"],
        reply_to=["sales@example.com"],
        headers={"X-Konvergo-Record": "sale.order,42", "In-Reply-To": "<prev@example.com>"},
    )
    message.attach_alternative("<p>See attached.</p>", "text/html")
    message.attach("report.csv", "a,b\n1,2\n", "text/csv")
    backend = KonvergoEmailBackend(purpose="transactional")
    assert backend.send_messages([message]) == 1
    dispatcher.drain()
    [received] = servers.messages
    assert sorted(received.rcpt_tos) == ["a@customer.test", "b@customer.test", "c@customer.test"]
    assert received.user == "john@example.com"
    for expected in (
        b"Reply-To: sales@example.com",
        b"X-Konvergo-Record: sale.order,42",
        b"In-Reply-To: <prev@example.com>",
        b'filename="report.csv"',
        b"Cc: b@customer.test",
    ):
        assert expected in received.content
    assert b"Bcc" not in received.content


def test_unknown_option_is_a_type_error() -> None:
    """Options come only as keyword arguments, and a misspelt one raises TypeError."""
    with pytest.raises(TypeError, match="purpos"):
        KonvergoEmailBackend(purpos="transactional")
    with pytest.raises(TypeError):
        get_connection(BACKEND, host="smtp.example.com")
    with pytest.raises(TypeError):
        KonvergoEmailBackend(purpose="newsletter")


def test_invalid_message_raises_value_error_naming_the_field_and_queues_nothing(servers) -> None:
    """A bad recipient raises ValueError naming the field; the batch is all or nothing."""
    good = django_mail.EmailMessage("ok", "x", "john@example.com", ["a@customer.test"])
    bad = django_mail.EmailMessage("bad", "x", "john@example.com", ["not-an-address"])
    with pytest.raises(ValueError, match=r"^to: ") as caught:
        KonvergoEmailBackend().send_messages([good, bad])
    assert isinstance(caught.value, ValidationFailed) and caught.value.field == "to"
    assert OutboxItem.objects.count() == 0
    assert KonvergoEmailBackend(fail_silently=True).send_messages([good, bad]) == 1
