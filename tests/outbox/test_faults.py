"""Server faults: each reply class ends in the right state, and nothing is ever lost."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from konvergo.services import outbox
from konvergo.services.outbox_limits import POLICY
from konvergo.store.models import OutboxBody, OutboxItem, OutgoingServer
from tests.outbox.conftest import drain_until, states
from tests.outbox.sink import DROP

pytestmark = pytest.mark.django_db


def queue(count: int = 1, sender: str = "John Doe <john@example.com>") -> list[OutboxItem]:
    return outbox.enqueue_many(
        {"from_": sender, "to": "c@customer.test", "subject": f"m{i}", "text": "x"}
        for i in range(count)
    )


def left_by_a_dead_worker(items: list[OutboxItem], **fields: object) -> None:
    """Leave ``items`` as a worker killed mid-batch does: ``sending``, its lease run out."""
    OutboxItem.objects.filter(pk__in=[i.pk for i in items]).update(
        state="sending",
        claimed_by="gone-host:4242/99.0",
        lease_until=timezone.now() - dt.timedelta(seconds=1),
        **fields,
    )


@pytest.fixture
def setup(start_sink, make_server, example_params):  # type: ignore[no-untyped-def]
    sink = start_sink()
    server = make_server("Notifications", "notifications@example.com", sink, max_sessions=1)
    return sink, server


@pytest.mark.parametrize(
    "reply",
    [
        "421 4.3.0 Service shutting down",
        "451 4.3.0 Temporary server error. Please try again later",
        DROP,
    ],
    ids=["421", "451", "dropped-in-data"],
)
def test_temporary_failures_are_retried_with_backoff_until_delivered(
    setup, dispatcher, reply
) -> None:
    """421, 451 and a connection dropped in DATA re-queue the mail, which a later try delivers."""
    sink, _ = setup
    sink.state.script.extend([reply, reply])
    [item] = queue()

    dispatcher.drain()
    item.refresh_from_db()
    assert item.state == "queued" and item.failure_class == "temporary"
    assert item.attempts == 1 and item.next_attempt_at > timezone.now() - dt.timedelta(seconds=1)
    if reply != DROP:
        assert item.last_reply.endswith(reply.split(" ", 1)[1])

    drain_until(dispatcher, lambda: states() == {"sent": 1})
    item.refresh_from_db()
    assert item.attempts == 3 and item.failure_class == ""
    assert len(sink.messages) == 1


def test_a_temporary_failure_of_one_message_does_not_stop_the_others(setup, dispatcher) -> None:
    """Only the refused message waits; the rest of the batch goes out in the same session."""
    sink, _ = setup
    sink.state.script.extend([None, "451 4.7.500 Server busy", None])
    # Long enough that the refused mail is not due again before the batch is through.
    POLICY.backoff_base = POLICY.backoff_cap = 2.0
    queue(5)
    dispatcher.drain()
    assert states() == {"sent": 4, "queued": 1}
    assert sink.state.connections == 1
    drain_until(dispatcher, lambda: states() == {"sent": 5})
    assert len(sink.message_ids()) == 5


def test_authentication_refused_holds_the_servers_mail_without_burning_attempts(
    setup, dispatcher
) -> None:
    """A 535 holds every queued mail of the server (attempts untouched) until release_held."""
    sink, server = setup
    sink.state.auth_reply = "535 5.7.3 Authentication unsuccessful"
    queue(3)
    dispatcher.drain()
    held = list(OutboxItem.objects.all())
    assert {i.state for i in held} == {"held"}
    assert {i.failure_class for i in held} == {"authorization"}
    assert {i.attempts for i in held} == {0}
    assert "535 5.7.3 Authentication unsuccessful" in held[0].last_reply
    assert held[0].last_fix  # the catalogue's advice for Exchange's 535 5.7.3

    sink.state.auth_reply = None
    assert outbox.release_held(server) == 3
    dispatcher.drain()
    assert states() == {"sent": 3}


def test_permanent_refusal_fails_the_message_with_the_servers_exact_words(
    setup, dispatcher
) -> None:
    """A 550 at the end of DATA fails that message at once, keeping the reply text."""
    sink, _ = setup
    reply = "550 5.7.1 Message rejected: content looks like spam"
    sink.state.script.append(reply)
    first, second = queue(2)
    dispatcher.drain()
    first.refresh_from_db()
    assert first.state == "failed" and first.failure_class == "permanent"
    assert reply in first.last_reply and first.attempts == 1
    second.refresh_from_db()
    assert second.state == "sent"


def test_send_as_denied_is_held_with_the_fix_and_never_retried_blindly(setup, dispatcher) -> None:
    """Exchange's 554 5.2.0 SendAsDenied holds the mail with advice instead of retrying it."""
    sink, _ = setup
    sink.state.script.append(
        "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied;"
        " Failed to process message due to a permanent exception"
    )
    [item] = queue()
    dispatcher.drain()
    item.refresh_from_db()
    assert item.state == "held" and item.failure_class == "configuration"
    assert "Send as" in item.last_fix


def test_dead_server_is_temporary_with_growing_backoff_and_gives_up_after_max_attempts(
    make_server, example_params, dispatcher
) -> None:
    """Nothing listening: the mail waits longer each time and fails only after max_attempts."""
    outbox.POLICY.max_attempts = 3
    make_server("Down", "notifications@example.com", None, smtp_port=1)
    [item] = queue()
    dispatcher.drain()
    item.refresh_from_db()
    assert item.state == "queued" and item.failure_class == "temporary" and item.attempts == 1
    assert "Connecting failed" in item.last_reply
    drain_until(dispatcher, lambda: states() == {"failed": 1})
    item.refresh_from_db()
    assert item.attempts == 3 and item.last_reply.startswith("Gave up after 3 attempts")


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    """Delays double per attempt (with jitter within the upper half) and stop at the cap."""
    policy = outbox.OutboxPolicy(backoff_base=30, backoff_cap=3600)
    for attempts, full in [(1, 30), (2, 60), (3, 120), (8, 3600), (20, 3600)]:
        delay = outbox.backoff_seconds(attempts, policy)
        assert full / 2 <= delay <= full


def test_throttling_reply_pauses_the_server_without_counting_a_failure(setup, dispatcher) -> None:
    """432 4.3.2 sets throttled_until and re-queues; the mail is sent once the pause is over."""
    sink, server = setup
    sink.state.script.append("432 4.3.2 Concurrent connections limit exceeded.")
    item, _ = queue(2)
    started = time.monotonic()
    dispatcher.drain()
    server.refresh_from_db()
    assert server.throttled_until is not None and server.throttled_until > timezone.now()
    item.refresh_from_db()
    assert item.state == "queued" and item.attempts == 0 and item.failure_class == ""
    drain_until(dispatcher, lambda: states() == {"sent": 2})
    assert time.monotonic() - started >= outbox.POLICY.throttle_pause * 0.9
    item.refresh_from_db()
    assert item.attempts == 1


def test_expired_lease_of_a_dead_worker_is_reclaimed_and_sent(setup, dispatcher) -> None:
    """A row left `sending` by a dead worker whose lease ran out is claimed again and sent."""
    sink, _ = setup
    [item] = queue()
    left_by_a_dead_worker([item])
    dispatcher.drain()
    item.refresh_from_db()
    assert item.state == "sent" and item.attempts == 2  # the lost attempt counts
    assert len(sink.messages) == 1


def test_a_message_lost_with_its_worker_too_often_fails_with_the_reason(setup, dispatcher) -> None:
    """A row whose worker died mid-send ``max_attempts`` times fails instead of going out again."""
    sink, _ = setup
    [item] = queue()
    left_by_a_dead_worker([item], attempts=outbox.POLICY.max_attempts - 1)
    dispatcher.drain()
    item.refresh_from_db()
    assert (item.state, item.attempts) == ("failed", outbox.POLICY.max_attempts)
    assert "worker stopping while this message was being sent" in item.last_reply
    assert item.last_fix and sink.messages == []


def test_only_the_first_row_a_dead_session_left_counts_a_lost_attempt(setup, dispatcher) -> None:
    """Rows behind the one on the wire were never tried: they go back with no attempt counted,
    so a crashing message cannot make its batch-mates fail."""
    sink, _ = setup
    first, second = queue(2)
    left_by_a_dead_worker([first, second])
    OutboxItem.objects.filter(pk=first.pk).update(attempts=outbox.POLICY.max_attempts - 1)
    dispatcher.drain()
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, second.state) == ("failed", "sent")
    assert second.attempts == 1  # its one real attempt
    assert len(sink.messages) == 1


def test_a_row_without_its_message_fails_visibly_and_the_queue_goes_on(setup, dispatcher) -> None:
    """A row whose bytes are missing fails with the reason instead of blocking its server."""
    sink, _ = setup
    broken, fine = queue(2)
    OutboxBody.objects.filter(item_id=broken.pk).delete()
    dispatcher.drain()
    broken.refresh_from_db()
    fine.refresh_from_db()
    assert (broken.state, broken.failure_class) == ("failed", "permanent")
    assert "no message content" in broken.last_reply
    assert fine.state == "sent" and len(sink.messages) == 1


def test_a_live_lease_is_left_alone(setup, dispatcher) -> None:
    """A row another live worker is sending (slot held, lease valid) is not sent twice."""
    sink, _ = setup
    [item] = queue()
    OutboxItem.objects.filter(pk=item.pk).update(
        state="sending",
        claimed_by="other-host:1/99.0",
        lease_until=timezone.now() + dt.timedelta(seconds=60),
    )
    dispatcher.drain()
    item.refresh_from_db()
    assert item.state == "sending" and sink.messages == []


def test_the_session_slot_of_a_dead_worker_is_reclaimed_before_its_lease_ends(
    setup, dispatcher
) -> None:
    """Taking a slot re-queues what the slot's previous (dead) holder left in `sending`."""
    sink, server = setup
    [item] = queue()
    OutboxItem.objects.filter(pk=item.pk).update(
        state="sending",
        claimed_by=f"killed-host:7/{server.pk}.0",
        lease_until=timezone.now() + dt.timedelta(seconds=600),
    )
    dispatcher.drain()
    item.refresh_from_db()
    assert item.state == "sent" and len(sink.messages) == 1


def test_per_minute_limit_is_a_sliding_window_across_the_server(
    start_sink, make_server, example_params, dispatcher
) -> None:
    """With 5 messages per window, no window at the server ever sees more than 5."""
    outbox.POLICY.rate_window = 1.0
    sink = start_sink()
    make_server("Slow", "notifications@example.com", sink, messages_per_minute=5)
    queue(12)
    drain_until(dispatcher, lambda: states() == {"sent": 12}, timeout=20)
    times = sorted(m.at for m in sink.messages)
    assert len(times) == 12
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t < start + 1.0) <= 5
    assert times[-1] - times[0] >= 2.0  # 12 messages need at least three windows


def test_unrouted_rows_of_a_deleted_server_are_held_and_retry_routes_them_again(
    start_sink, make_server, example_params, dispatcher
) -> None:
    """Mail whose server was deleted is held visibly; Retry routes it to a server accepting it."""
    sink = start_sink()
    john = make_server("John", "john@example.com", sink)
    make_server("Notifications", "notifications@example.com", sink)
    [item] = queue()
    assert item.server_id == john.pk
    OutgoingServer.objects.filter(pk=john.pk).delete()
    dispatcher.drain()
    item.refresh_from_db()
    assert item.state == "held" and item.server_id is None
    item = outbox.retry(item)
    assert item.route == "notifications"
    dispatcher.drain()
    [received] = sink.messages
    assert received.user == "notifications@example.com"
    assert b'From: "John Doe" <notifications@example.com>' in received.content
    assert b"Reply-To: catchall@example.com" in received.content


def test_retry_keeps_the_server_and_resets_attempts(setup, dispatcher) -> None:
    """Retry of a failed mail queues it again through the same server with fresh attempts."""
    sink, server = setup
    sink.state.script.append("550 5.1.1 User unknown")
    [item] = queue()
    dispatcher.drain()
    item = outbox.retry(item)
    assert item.state == "queued" and item.attempts == 0 and item.server_id == server.pk
    dispatcher.drain()
    item.refresh_from_db()
    assert item.state == "sent"


def test_cancel_stops_queued_mail_but_not_mail_being_sent(setup, dispatcher) -> None:
    """Cancel works on queued mail; a row in `sending` or `sent` refuses with a clear error."""
    sink, _ = setup
    first, second = queue(2)
    assert outbox.cancel(first).state == "cancelled"
    dispatcher.drain()
    assert [m.message_id for m in sink.messages] == [second.message_id]
    with pytest.raises(ValueError, match="cannot be cancelled"):
        outbox.cancel(second)
