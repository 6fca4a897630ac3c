"""Enqueueing: in the caller's transaction, all or nothing, routed once, cheap."""

from __future__ import annotations

import pytest
from django.db import transaction

from konvergo.errors import RoutingError, ValidationFailed
from konvergo.services import outbox
from konvergo.store.models import OutboxItem

pytestmark = pytest.mark.django_db


@pytest.fixture
def notifications(make_server, example_params):  # type: ignore[no-untyped-def]
    return make_server("Notifications", "notifications@example.com", None)


def mail(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "from_": "John Doe <john@example.com>",
        "to": ["c@customer.test"],
        "subject": "Hello",
        "text": "Body",
    }
    values.update(overrides)
    return values


def test_enqueue_in_a_rolled_back_transaction_leaves_nothing(notifications) -> None:
    """A mail queued in a transaction that rolls back is not queued at all."""

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        outbox.enqueue(**mail())  # type: ignore[arg-type]
        assert OutboxItem.objects.count() == 1
        raise Abort
    assert OutboxItem.objects.count() == 0


def test_enqueue_stores_the_finished_bytes_and_the_routing_decision(notifications) -> None:
    """The row carries the final message, server, route, envelope and all envelope recipients."""
    item = outbox.enqueue(
        **mail(cc="Boss <boss@customer.test>", bcc=["audit@example.com"])  # type: ignore[arg-type]
    )
    item.refresh_from_db()
    raw = bytes(item.raw)
    assert raw.startswith(b'From: "John Doe" <notifications@example.com>\r\n')
    assert b"\r\nMessage-ID: " + item.message_id.encode() in raw
    assert b"audit@example.com" not in raw  # Bcc is envelope only
    assert item.size == len(raw)
    assert (item.server_id, item.route) == (notifications.pk, "notifications")
    assert item.envelope_from == "notifications@example.com"
    assert item.recipients == ["c@customer.test", "boss@customer.test", "audit@example.com"]
    assert item.state == "queued" and item.next_attempt_at is not None


def test_a_bad_address_raises_naming_the_field_and_queues_nothing(notifications) -> None:
    """Invalid input raises ValidationFailed whose field names the argument."""
    for field, value in [("to", ["not an address"]), ("cc", ["x@"]), ("bcc", "a\r\nb@x.com")]:
        with pytest.raises(ValidationFailed) as caught:
            outbox.enqueue(**mail(**{field: value}))  # type: ignore[arg-type]
        assert caught.value.field == field
    with pytest.raises(ValidationFailed) as caught:
        outbox.enqueue(**mail(to=[]))  # type: ignore[arg-type]
    assert caught.value.field == "to"
    assert OutboxItem.objects.count() == 0


def test_a_mail_no_server_may_send_is_refused_with_the_setting_to_change(
    make_server, example_params
) -> None:
    """Without a server for the sender or the notifications address, enqueue raises clearly."""
    make_server("Jane", "jane@example.com", None)
    with pytest.raises(RoutingError) as caught:
        outbox.enqueue(**mail())  # type: ignore[arg-type]
    assert isinstance(caught.value, ValidationFailed) and caught.value.field == "from_"
    assert "FROM Filtering" in str(caught.value)
    assert OutboxItem.objects.count() == 0


def test_enqueue_many_is_all_or_nothing(notifications) -> None:
    """One invalid mail in a batch queues none of them."""
    batch = [mail(subject=f"n{i}") for i in range(5)] + [mail(to=["broken"])]
    with pytest.raises(ValidationFailed):
        outbox.enqueue_many(batch)
    assert OutboxItem.objects.count() == 0
    assert len(outbox.enqueue_many(batch[:5])) == 5


def test_routing_cost_does_not_grow_with_servers_or_messages(
    make_server, example_params, django_assert_max_num_queries
) -> None:
    """With 200 servers, an enqueue costs one signature query and two inserts (the row and
    its bytes) once the routing table is cached."""
    for i in range(200):
        make_server(f"User {i}", f"user{i}@example.com", None)
    make_server("Notifications", "notifications@example.com", None)
    outbox.enqueue(**mail())  # type: ignore[arg-type]  # builds and caches the table
    with django_assert_max_num_queries(3):
        item = outbox.enqueue(**mail(from_="user150@example.com"))  # type: ignore[arg-type]
    assert item.route == "sender"


def test_the_routing_table_follows_server_changes(make_server, example_params) -> None:
    """Saving a server changes the signature, so the next enqueue routes with it."""
    make_server("Notifications", "notifications@example.com", None)
    assert outbox.enqueue(**mail()).route == "notifications"  # type: ignore[arg-type]
    john = make_server("John", "john@example.com", None)
    item = outbox.enqueue(**mail())  # type: ignore[arg-type]
    assert (item.route, item.server_id) == ("sender", john.pk)


def test_owned_headers_cannot_be_smuggled_through_extra_headers(notifications) -> None:
    """From/To/Bcc in extra headers are refused: routing and the arguments own them."""
    with pytest.raises(ValidationFailed) as caught:
        outbox.enqueue(**mail(headers={"Bcc": "spy@evil.test"}))  # type: ignore[arg-type]
    assert caught.value.field == "headers"


def test_enqueue_many_returns_saved_rows_equal_to_what_the_database_holds(notifications) -> None:
    """The fast multi-row INSERT stores every field the ORM would, original From included."""
    items = outbox.enqueue_many(
        [mail(), mail(to="Client <C.Two@Customer.TEST>", subject="Second", html="<p>x</p>")]
    )
    assert [i.pk for i in items] == sorted(i.pk for i in items) and None not in items
    for item in items:
        stored = OutboxItem.objects.get(pk=item.pk)
        for field in OutboxItem._meta.concrete_fields:
            got, want = getattr(item, field.attname), getattr(stored, field.attname)
            assert (bytes(got) if field.attname == "raw" else got) == (
                bytes(want) if field.attname == "raw" else want
            ), field.attname
        assert stored.original_from == "John Doe <john@example.com>"
        assert stored.header_from == '"John Doe" <notifications@example.com>'
    assert items[1].recipients == ["C.Two@customer.test"]
    assert b'\r\nTo: "Client" <C.Two@customer.test>\r\n' in bytes(items[1].raw)
    assert b"\r\nTo: c@customer.test\r\n" in bytes(items[0].raw)


def test_the_stored_message_is_the_built_one_byte_for_byte(notifications) -> None:
    """What the database keeps of 8-bit text and a binary attachment is exactly what was built."""
    items = outbox.enqueue_many(
        [
            mail(text="Grüße aus Köln — ☃\n" * 50),
            mail(
                attachments=[("all-bytes.bin", bytes(range(256)) * 40, "application/octet-stream")]
            ),
        ]
    )
    for item in items:
        assert bytes(OutboxItem.objects.get(pk=item.pk).raw) == bytes(item.raw)
