"""Large messages: parsing moves to parser processes mid-fetch, with the same guarantees."""

from __future__ import annotations

from typing import Any

import pytest

from konvergo.sandbox.imap import SandboxImap
from konvergo.services import intake
from konvergo.services.intake_parse import ParserPool
from konvergo.store.models import FolderState, IncomingServer, Message, QuarantinedMessage
from tests.intake.conftest import MAILBOX, sized_messages


def test_large_messages_are_parsed_in_processes_and_stored_once_with_quarantine(
    password_server: IncomingServer, imap_server: SandboxImap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once batches prove large, the rest is parsed in a process pool; every message is
    stored once, an unparseable one is quarantined, and the high-water mark reaches the end."""
    # What counts as large, scaled down so a few small messages make a "large" fetch.
    monkeypatch.setattr(intake, "POOL_MESSAGE_BYTES", 1000)
    monkeypatch.setattr(intake, "POOL_BYTES", 10_000)
    pools: list[ParserPool] = []

    class CountedPool(ParserPool):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pools.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(intake, "ParserPool", CountedPool)
    imap_server.populate(MAILBOX, [*sized_messages(35, 2000), b"\r\n\r\nnot a message at all\r\n"])

    owner = intake.lease_owner_name()
    assert intake.acquire_lease(password_server.pk, owner)
    fetcher = intake.Fetcher(password_server, owner, batch_size=10)
    try:
        result = fetcher.run()
    finally:
        fetcher.close()

    assert len(pools) == 1  # the first batch was parsed here, the other three there
    assert result.stored == 35 and result.quarantined == 1
    assert Message.objects.count() == 35 and QuarantinedMessage.objects.count() == 1
    assert len(set(Message.objects.values_list("message_id", flat=True))) == 35
    assert FolderState.objects.get(server=password_server).last_uid == 36
