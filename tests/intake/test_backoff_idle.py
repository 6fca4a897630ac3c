"""Throttling backoff on the server row, IDLE support and IDLE wake-ups, forced token refresh."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.test import Client
from django.utils import timezone

from konvergo.sandbox.idp import IdentityPlatform
from konvergo.sandbox.imap import SandboxImap
from konvergo.services import intake
from konvergo.services.intake_store import BatchOutcome
from konvergo.store.models import IncomingServer, Message, OAuthGrant
from konvergo.transports.imap import ImapConnection
from tests.oauth.conftest import confirm, microsoft_leg, outlook_configured, start_connect

from .conftest import MAILBOX, message, sized_messages

__all__ = ["outlook_configured"]  # the fixture, imported for the token-refresh test


def test_throttled_server_is_skipped_by_the_worker_until_its_backoff_passes(
    outlook_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """Exchange's suggested backoff lands in retry_after; the worker job skips the server
    until then, then fetches it and clears the backoff."""
    imap_server.populate(MAILBOX, sized_messages(2, 300))
    imap_server.throttle(MAILBOX, 120_000)
    before = timezone.now()
    assert intake.fetch_due_servers() == 0
    outlook_server.refresh_from_db()
    assert outlook_server.retry_after is not None
    assert abs((outlook_server.retry_after - before).total_seconds() - 120) < 10

    imap_server.unthrottle(MAILBOX)
    long_ago = timezone.now() - dt.timedelta(hours=1)
    IncomingServer.objects.filter(pk=outlook_server.pk).update(last_fetch_at=long_ago)
    assert intake.fetch_due_servers() == 0  # due by its poll interval, but still backing off
    assert IncomingServer.objects.get(pk=outlook_server.pk).last_fetch_at == long_ago

    IncomingServer.objects.filter(pk=outlook_server.pk).update(retry_after=long_ago)
    assert intake.fetch_due_servers() == 2
    outlook_server.refresh_from_db()
    assert outlook_server.retry_after is None and outlook_server.last_error == ""


def test_idle_support_is_recorded_from_the_capabilities_at_each_connection(
    password_server: IncomingServer, imap_server: SandboxImap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """supports_idle follows what the server announced at the latest connection."""
    assert password_server.supports_idle is None
    assert intake.fetch_now(password_server).ok
    assert IncomingServer.objects.get(pk=password_server.pk).supports_idle is True

    monkeypatch.setattr(ImapConnection, "supports_idle", property(lambda self: False))
    assert intake.test_and_confirm(password_server).ok
    assert IncomingServer.objects.get(pk=password_server.pk).supports_idle is False


def test_watch_fetches_a_message_delivered_while_it_idles(
    outlook_server: IncomingServer, imap_server: SandboxImap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message delivered during IDLE is stored at once, long before the poll interval."""
    stop = threading.Event()
    idling = threading.Event()
    real_idle = ImapConnection.idle

    def idle(self: ImapConnection, timeout: float) -> bool:
        idling.set()
        return real_idle(self, timeout)

    monkeypatch.setattr(ImapConnection, "idle", idle)
    # The test's database transaction looks "obsolete" to Django's connection hygiene.
    monkeypatch.setattr(intake, "close_old_connections", lambda: None)

    def deliver_during_idle() -> None:
        if idling.wait(10):
            time.sleep(0.3)  # let IDLE be established before the message arrives
            imap_server.deliver(MAILBOX, message("Arrived while idling"))

    def stored(done: int, total: int) -> None:
        stop.set()

    deliverer = threading.Thread(target=deliver_during_idle, daemon=True)
    deliverer.start()
    timer = threading.Timer(20, stop.set)  # a safety net: the test fails, it does not hang
    timer.start()
    started = time.monotonic()
    try:
        intake.watch(outlook_server, stop, progress=stored, idle_slice=15)
    finally:
        timer.cancel()
        deliverer.join(5)
    assert outlook_server.poll_interval >= 60
    assert list(Message.objects.values_list("subject", flat=True)) == ["Arrived while idling"]
    assert time.monotonic() - started < 15


def test_token_exchange_calls_expired_is_refreshed_although_the_database_thinks_it_fresh(
    admin_client: Client,
    outlook_configured: IdentityPlatform,
    imap_server: SandboxImap,
) -> None:
    """After "BYE ... AccessTokenExpired" the same stored token is never reused: the fetch
    forces a refresh at the identity platform and finishes with the new token."""
    idp = outlook_configured
    server = IncomingServer.objects.create(
        name="John (Outlook)",
        server_type=IncomingServer.Type.OUTLOOK,
        host="127.0.0.1",
        port=imap_server.port,
        ssl=True,
        username=MAILBOX,
        state=IncomingServer.State.DONE,
    )
    url = start_connect(admin_client, server, kind="incoming")  # type: ignore[arg-type]
    params = microsoft_leg(idp, url, MAILBOX)
    assert confirm(admin_client, params).status_code == 302
    server.refresh_from_db()
    assert server.grant is not None
    first_token = server.grant.access_token
    # Ten batches: the next two are read ahead while one is stored, so the expiry must come
    # with more of the mailbox still on the server.
    imap_server.populate(MAILBOX, sized_messages(200, 300))

    batches: list[BatchOutcome] = []

    def outlive_the_token(outcome: BatchOutcome) -> None:
        batches.append(outcome)
        if len(batches) == 1:
            # Exchange's clock passes the token's expiry (tokens live 60-90 minutes); the
            # database, on the real clock, still thinks it fresh.
            idp.advance_clock(2 * 3600)

    owner = intake.lease_owner_name()
    assert intake.acquire_lease(server.pk, owner)
    idp.reset_counters()
    fetcher = intake.Fetcher(server, owner, batch_size=20, on_batch=outlive_the_token)
    try:
        result = fetcher.run()
    finally:
        fetcher.close()

    grant = OAuthGrant.objects.get(pk=server.grant.pk)
    assert result.stored == 200 and Message.objects.count() == 200 and len(batches) == 10
    assert grant.access_token != first_token
    assert grant.access_expires_at is not None
    assert grant.access_expires_at > timezone.now() + dt.timedelta(minutes=30)
    assert sum(idp.token_requests.values()) == 1
