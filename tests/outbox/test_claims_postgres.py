"""PostgreSQL claims: prepared once per connection, and locking only what a rate limit needs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psycopg
import pytest
from django.db import OperationalError, connection

from konvergo.services import outbox_claim
from konvergo.store.models import OutboxItem, OutgoingServer
from tests.outbox.test_claims import queue

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("KONVERGO_DATABASE_URL", "").startswith("postgres"),
        reason="needs PostgreSQL (KONVERGO_DATABASE_URL=postgresql://...)",
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def server(make_server, example_params) -> OutgoingServer:  # type: ignore[no-untyped-def]
    return make_server("Notifications", "notifications@example.com", None, max_sessions=3)


@contextlib.contextmanager
def server_row_locked_elsewhere(server: OutgoingServer) -> Iterator[None]:
    """Another connection holds the server row's lock, as a claim of a rate-limited server does."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg.connect(**params) as other:
        other.execute("SELECT id FROM store_outgoingserver WHERE id = %s FOR UPDATE", [server.pk])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '1s'")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")


def test_claims_of_a_server_without_a_rate_limit_do_not_wait_for_each_other(
    server: OutgoingServer,
) -> None:
    """Without a per-minute limit there is nothing to count, so a claim takes no server lock."""
    queued = queue(3)
    with server_row_locked_elsewhere(server):
        claimed = outbox_claim.claim(server.pk, "w/1.0", 10)
    assert [(c.id, c.raw) for c in claimed.items] == [(i.pk, i.raw) for i in queued]


def test_claims_of_a_rate_limited_server_wait_their_turn(server: OutgoingServer) -> None:
    """With a per-minute limit, claims of the server are serialised so the budget is exact."""
    OutgoingServer.objects.filter(pk=server.pk).update(messages_per_minute=30)
    queue(3)
    with server_row_locked_elsewhere(server), pytest.raises(OperationalError, match="lock timeout"):
        outbox_claim.claim(server.pk, "w/1.0", 10)
    assert OutboxItem.objects.filter(state="queued").count() == 3


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_the_claim_and_the_outcome_are_prepared_once_per_connection(server: OutgoingServer) -> None:
    """The per-message statements are parsed and planned once, then only executed."""
    items = queue(2)
    for _ in items:  # twice on one connection: prepared the first time, reused after
        claimed = outbox_claim.claim(server.pk, "w/1.0", 1)
        assert outbox_claim.mark_sent(claimed.items[0].id, "w/1.0", "250 OK")
    statements = _prepared()
    assert sum("WITH claimed AS (UPDATE" in s for s in statements) == 1
    assert sum("SET state" in s and "sync_off" in s for s in statements) == 1
    assert {OutboxItem.objects.get(pk=i.pk).state for i in items} == {"sent"}


def test_with_preparing_turned_off_the_queue_still_works(server: OutgoingServer) -> None:
    """Behind a pooler that cannot keep prepared statements, nothing is prepared and mail goes."""
    connection.ensure_connection()
    connection.connection.prepare_threshold = None  # what KONVERGO_DATABASE_PREPARED=0 sets
    try:
        item = queue(1)[0]
        claimed = outbox_claim.claim(server.pk, "w/1.0", 10)
        assert outbox_claim.mark_sent(claimed.items[0].id, "w/1.0", "250 OK")
        assert _prepared() == []
        assert OutboxItem.objects.get(pk=item.pk).state == "sent"
    finally:
        connection.close()
