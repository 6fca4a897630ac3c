"""Upgrading keeps queued mail: the bytes move from the outbox row to ``OutboxBody``."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from konvergo.store.models import OutboxBody, OutboxItem

BEFORE = [("store", "0007_outbox_claim_index")]
AFTER = [("store", "0008_outbox_body")]


def _migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


@pytest.mark.django_db(transaction=True)
def test_mail_queued_before_the_upgrade_keeps_its_bytes_and_can_be_sent() -> None:
    """A row queued by the previous version still has its exact message after migrating."""
    old_state = _migrate(BEFORE).loader.project_state(BEFORE).apps
    old_item = old_state.get_model("store", "OutboxItem")
    raw = b"Subject: queued before the upgrade\r\n\r\n" + bytes(range(256)) * 40
    pk = old_item.objects.create(
        message_id="<before@example.com>",
        header_from="a@example.com",
        envelope_from="a@example.com",
        recipients=["b@example.test"],
        raw=raw,
        size=len(raw),
    ).pk
    try:
        _migrate(AFTER)
        assert bytes(OutboxBody.objects.get(item_id=pk).raw) == raw
        assert OutboxItem.objects.get(pk=pk).raw == raw
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
