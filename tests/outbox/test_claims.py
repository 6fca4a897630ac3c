"""Claims on every database: how many rows a session takes at once."""

from __future__ import annotations

import pytest

from konvergo.services import outbox, outbox_claim
from konvergo.store.models import OutboxItem

pytestmark = pytest.mark.django_db


def queue(count: int) -> list[OutboxItem]:
    return outbox.enqueue_many(
        {
            "from_": "notifications@example.com",
            "to": "c@customer.test",
            "subject": f"m{i}",
            "text": "x",
        }
        for i in range(count)
    )


@pytest.mark.parametrize(
    ("sessions", "takes"), [(3, [3, 2, 1, 1]), (1, [7])], ids=["three-sessions", "one-session"]
)
def test_a_claim_takes_no_more_than_one_sessions_share_of_what_is_due(
    make_server, example_params, sessions: int, takes: list[int]
) -> None:  # type: ignore[no-untyped-def]
    """The server's sessions run out of work together instead of one sending a last batch alone;
    a session running alone takes its whole batch, whatever the server would allow."""
    server = make_server("Notifications", "notifications@example.com", None, max_sessions=3)
    queued = queue(7)
    taken = [
        len(outbox_claim.claim(server.pk, f"w/{server.pk}.0", 20, sessions=sessions).items)
        for _ in takes
    ]
    assert taken == takes
    assert OutboxItem.objects.filter(state="sending").count() == len(queued)
