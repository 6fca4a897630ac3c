"""Bad mail, expiring tokens, throttling, leases and memory: the fetch keeps going, correctly."""

from __future__ import annotations

import datetime as dt
import secrets
import tracemalloc
from pathlib import Path

import pytest
from django.utils import timezone

from konvergo.sandbox.idp import IdentityPlatform
from konvergo.sandbox.imap import SandboxImap
from konvergo.sandbox.tokens import IMAP_SCOPE
from konvergo.services import intake
from konvergo.services.intake_store import BatchOutcome
from konvergo.store.models import (
    FolderState,
    IncomingServer,
    Message,
    OAuthGrant,
    QuarantinedMessage,
)
from tests.intake.conftest import MAILBOX, message, sized_messages

pytestmark = pytest.mark.dovecot

CORPUS = Path(__file__).parents[1] / "mailparse" / "corpus"


def _malformed() -> list[bytes]:
    big = secrets.token_bytes(25 * 1024 * 1024)
    import base64

    encoded = base64.encodebytes(big)
    with_25mb = (
        b"From: big@external.test\r\nTo: john@example.com\r\nSubject: Big\r\n"
        b"Message-ID: <big@external.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\n"
        b'Content-Type: application/octet-stream; name="big.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="big.bin"\r\n\r\n' + encoded + b"--b--\r\n"
    )
    return [
        b"\x00\x01\x02 not a message at all \xff\xfe",
        b"Subject: =?x-unknown?B?SGVsbG8=?=\r\nFrom: \xff\xfe@bad\r\n\r\nbody \xe9\xe8\r\n",
        b"From: a@b.test\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nbroken",
        message("Intake probe without id", message_id=""),
        with_25mb,
    ]


def test_malformed_corpus_is_quarantined_or_stored_and_the_rest_continues(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """Garbage bytes, bad charsets, broken MIME, a 25 MB attachment, no Message-ID: no crash."""
    corpus = sorted(CORPUS.glob("*.eml")) if CORPUS.is_dir() else []
    raws = [
        message("Probe before"),
        *_malformed(),
        *(p.read_bytes() for p in corpus),
        message("Probe after"),
    ]
    imap_server.populate(MAILBOX, raws)

    result = intake.fetch_now(password_server)
    again = intake.fetch_now(password_server)

    assert result.ok, result.error
    assert result.stored + result.quarantined + result.duplicates == len(raws)
    assert again.found == 0
    subjects = set(Message.objects.values_list("subject", flat=True))
    assert {
        "Probe before",
        "Probe after",
        "Intake probe without id",
        "Big",
    } <= subjects
    big = Message.objects.get(subject="Big")
    assert big.attachments.get().size == 25 * 1024 * 1024
    no_id = Message.objects.get(subject="Intake probe without id")
    assert no_id.message_id.startswith("<") and no_id.message_id.endswith(">")
    quarantined = QuarantinedMessage.objects.get()
    # IMAP cannot carry NUL: Dovecot serves it as 0x80; the rest of the bytes are as sent.
    assert b"not a message at all" in bytes(quarantined.raw) and quarantined.reason


def test_token_expiry_bye_mid_fetch_reconnects_with_a_new_token_and_continues(
    outlook_server: IncomingServer, imap_server: SandboxImap, idp: IdentityPlatform
) -> None:
    """Exchange's "BYE Session invalidated - AccessTokenExpired" costs a reconnect, no mail."""
    imap_server.populate(MAILBOX, sized_messages(120, 500))
    batches: list[BatchOutcome] = []

    def expire_after_first_batch(outcome: BatchOutcome) -> None:
        batches.append(outcome)
        if len(batches) == 1:
            # The keep-alive stored a new token; the session's token now runs out.
            idp.advance_clock(3700)
            fresh = idp.mint_access_token(MAILBOX, [IMAP_SCOPE])
            OAuthGrant.objects.filter(pk=outlook_server.grant_id).update(access_token=fresh)

    owner = intake.lease_owner_name()
    assert intake.acquire_lease(outlook_server.pk, owner)
    fetcher = intake.Fetcher(
        outlook_server, owner, batch_size=40, on_batch=expire_after_first_batch
    )
    result = fetcher.run()
    fetcher.close()

    assert result.stored == 120 and Message.objects.count() == 120
    # Every message was committed in exactly one batch: none lost or stored twice.
    assert sum(len(b.uids) for b in batches) == 120
    assert sum(b.stored for b in batches) == 120 and not any(b.duplicates for b in batches)


def test_throttling_is_recorded_with_exchanges_backoff(
    outlook_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """ "Request is throttled" stops the fetch and leaves the reason and backoff on the row."""
    imap_server.populate(MAILBOX, sized_messages(3, 300))
    imap_server.throttle(MAILBOX, 1500)
    result = intake.fetch_now(outlook_server)
    outlook_server.refresh_from_db()
    assert not result.ok
    assert "Request is throttled. Suggested Backoff Time: 1500 milliseconds" in (
        outlook_server.last_error
    )
    assert "backoff" in outlook_server.last_error_fix
    imap_server.unthrottle(MAILBOX)
    assert intake.fetch_now(outlook_server).stored == 3


def test_lease_lets_only_one_fetcher_work_a_mailbox(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """While another live worker holds the lease, Fetch Now does nothing; an expired lease
    or one held by a dead local process is taken over."""
    imap_server.populate(MAILBOX, sized_messages(2, 300))
    other = "other-host:4242:1"
    assert intake.acquire_lease(password_server.pk, other)
    assert not intake.acquire_lease(password_server.pk, "third-host:1:1")
    skipped = intake.fetch_now(password_server)
    assert skipped.skipped and Message.objects.count() == 0

    IncomingServer.objects.filter(pk=password_server.pk).update(
        lease_until=timezone.now() - dt.timedelta(seconds=1)
    )
    assert intake.fetch_now(password_server).stored == 2

    import socket

    dead = f"{socket.gethostname()}:999999:1"
    assert intake.acquire_lease(password_server.pk, dead)
    result = intake.fetch_now(password_server)  # the holder was kill -9'd: no need to wait
    assert result.ok and not result.skipped


def test_a_fetcher_whose_lease_was_taken_over_stores_no_further_batch(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """The lease is renewed in each batch's own transaction: once another worker holds the
    mailbox, the batch in hand is not stored and the high-water mark stays where it was."""
    imap_server.populate(MAILBOX, sized_messages(120, 300))
    batches: list[BatchOutcome] = []

    def taken_over_after_first_batch(outcome: BatchOutcome) -> None:
        batches.append(outcome)
        IncomingServer.objects.filter(pk=password_server.pk).update(
            lease_owner="other-host:4242:1", lease_until=timezone.now() + dt.timedelta(minutes=5)
        )

    result = intake.fetch_server(password_server, on_batch=taken_over_after_first_batch)

    first = batches[0]
    assert len(batches) == 1 and "taken over" in (result.error or "")
    assert Message.objects.count() == first.stored > 0
    state = FolderState.objects.get(server=password_server)
    assert state.last_uid == max(first.uids)


def test_worker_job_fetches_due_confirmed_servers_only(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """The intake job fetches confirmed, active servers whose poll interval has passed."""
    imap_server.populate(MAILBOX, sized_messages(4, 300))
    draft = IncomingServer.objects.create(
        name="Draft", host="127.0.0.1", port=1, username="x", state=IncomingServer.State.DRAFT
    )
    assert intake.fetch_due_servers() == 4
    assert intake.fetch_due_servers() == 0  # not due again before poll_interval
    draft.refresh_from_db()
    assert draft.last_fetch_at is None


def test_memory_stays_flat_over_a_large_mailbox(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """Fetching 20,000 messages (100 MB) peaks about as high as 1,000: memory follows the
    batch, not the mailbox."""

    def peak_of_fetch(count: int) -> int:
        imap_server.populate(MAILBOX, sized_messages(count, 5000))
        tracemalloc.start()
        try:
            assert intake.fetch_now(password_server).stored == count
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small = peak_of_fetch(1000)
    large = peak_of_fetch(20_000)
    assert large < 1.5 * small, f"1,000: {small / 1e6:.1f} MB, 20,000: {large / 1e6:.1f} MB"
    assert large < 100_000_000 * 0.2


def test_a_database_error_renewing_the_lease_stores_nothing_of_the_batch(
    password_server: IncomingServer,
) -> None:
    """A failure of the lease renewal ends the batch: it is not stored message by message."""
    from django.db import DatabaseError

    from konvergo.services.intake_parse import parse_fetched
    from konvergo.services.intake_store import store_batch
    from konvergo.transports.imap import FetchedMessage

    FolderState.objects.create(server=password_server, folder="INBOX", uidvalidity=7)
    items = [parse_fetched(FetchedMessage(n, message(f"Lease {n}"), ())) for n in (1, 2)]

    calls: list[int] = []

    def renew() -> None:  # fails once, as a lock timeout does
        calls.append(1)
        if len(calls) == 1:
            raise DatabaseError("could not obtain lock on row")

    with pytest.raises(DatabaseError):
        store_batch(password_server, "INBOX", 7, items, first=renew)
    assert Message.objects.count() == 0
    assert FolderState.objects.get(server=password_server).last_uid == 0 and len(calls) == 1


def test_a_message_stored_meanwhile_by_another_worker_counts_as_a_duplicate(
    password_server: IncomingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the unique index catches a Message-ID the lookup did not see (another worker
    stored it in between), the batch is stored message by message: that one is a duplicate,
    the others are stored once, and the high-water mark passes them all."""
    from konvergo.services import intake_store
    from konvergo.services.intake_parse import parse_fetched
    from konvergo.transports.imap import FetchedMessage

    FolderState.objects.create(server=password_server, folder="INBOX", uidvalidity=7)
    items = [parse_fetched(FetchedMessage(n, message(f"Race {n}"), ())) for n in (1, 2, 3)]
    assert intake_store.store_batch(password_server, "INBOX", 7, items[1:2]).stored == 1
    # The other worker's commit lands between this batch's lookup and its INSERT.
    monkeypatch.setattr(intake_store, "select_in", lambda *args, **kwargs: iter(()))

    outcome = intake_store.store_batch(password_server, "INBOX", 7, items)

    assert (outcome.stored, outcome.duplicates, outcome.quarantined) == (2, 1, 0)
    ids = sorted(Message.objects.values_list("message_id", flat=True))
    assert ids == sorted(i.message.message_id for i in items if i.message is not None)
    assert FolderState.objects.get(server=password_server).last_uid == 3
