"""Incoming mail: fetch each Incoming Mail Server's folders into threads, never twice, never lost.

Per server and folder, :class:`~konvergo.store.models.FolderState` keeps UIDVALIDITY and the
highest UID stored. A fetch asks for the UIDs above it, reads them with ``BODY.PEEK[]`` in
batches (no flag changes unless the server's "Mark as read" is on) and commits each batch
together with the new high-water mark (:mod:`konvergo.services.intake_store`). Nothing here
depends on ``\\Seen`` (odoo.md weakness 15): a message read in Outlook first is still fetched.

A UIDVALIDITY change starts the folder again from UID 1; messages already stored are
recognised by (server, Message-ID), so a resync neither duplicates nor loses anything.

One fetcher per mailbox at a time: the server row carries a lease (``lease_owner``,
``lease_until``) taken with one conditional UPDATE, renewed after every batch; any number of
workers on one PostgreSQL database share the mailboxes that way. A lease held by a process
of this machine that no longer exists (``kill -9``) is taken over at once.

Every failure lands on the server row (``last_error`` in the server's own words,
``last_error_fix`` from the error catalogue); ``last_fetch_at`` moves on every attempt and
``last_success_at`` only on success (odoo.md weakness 18).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from django.db import close_old_connections
from django.db.models import F, Q
from django.utils import timezone

from konvergo.config import get_config
from konvergo.errors import ConfigurationError, KonvergoError
from konvergo.providers.microsoft.catalogue import explain
from konvergo.services import worker
from konvergo.services.intake_parse import (
    POOL_BYTES,
    POOL_MESSAGE_BYTES,
    Parsed,
    ParserPool,
    PendingBatch,
    parse_fetched,
    shared_parser,
    start_shared_parser,
    stop_shared_parser,
)
from konvergo.services.intake_store import BatchOutcome, store_batch
from konvergo.store.dbvalues import datetime_adapter, update
from konvergo.store.models import FolderState, IncomingServer
from konvergo.transports.auth import Credentials, PasswordAuth, XOAuth2Auth
from konvergo.transports.imap import (
    BATCH_SIZE,
    FetchedMessage,
    FolderStatus,
    ImapConnection,
    ImapSettings,
    ramp,
)
from konvergo.transports.imap_errors import (
    GENERIC_FIXES,
    ImapAuthorizationError,
    ImapFailure,
    ImapTemporaryError,
)

log = logging.getLogger("konvergo.intake")

#: How long a fetcher owns a mailbox without renewing (renewed after every batch).
LEASE = dt.timedelta(seconds=120)
#: Reconnects within one fetch after a dropped session (BYE, expired token).
MAX_RECONNECTS = 3
#: IDLE is re-issued this often, so the lease is renewed and a lost server is noticed.
IDLE_SLICE = 30.0
#: Worker job cadence (seconds); each server is fetched every ``poll_interval`` at most.
JOB_INTERVAL = 5.0

Progress = Callable[[int, int], None]
"""``progress(done, total)``: messages handled so far in this fetch, of those found."""


class LeaseLost(KonvergoError):
    """Another fetcher took this mailbox over (our lease expired): stop without writing."""


@dataclass
class FetchResult:
    """The outcome of one fetch of one server (all folders)."""

    server_id: int
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    found: int = 0
    folders: dict[str, FolderStatus] = field(default_factory=dict)
    error: str = ""
    fix: str = ""
    #: True when another fetcher held the mailbox: nothing was attempted.
    skipped: bool = False
    supports_idle: bool = False

    @property
    def ok(self) -> bool:
        return not self.error and not self.skipped


@dataclass
class ConfirmResult:
    """What "Test and Confirm" found: every folder opened, or the precise reason and fix."""

    ok: bool
    message: str
    fix: str = ""
    folders: dict[str, FolderStatus] = field(default_factory=dict)


# -- leases ------------------------------------------------------------------------------


def lease_owner_name() -> str:
    """``host:pid:thread``: unique per fetcher, and tells whether a local holder is alive."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _holder_is_dead(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's process: only the expiry tells
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def acquire_lease(server_id: int, owner: str) -> bool:
    """Take the mailbox for ``owner`` if it is free, expired, ours, or its holder died."""
    now = timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=owner)
    rows = IncomingServer.objects.filter(pk=server_id)
    if rows.filter(free).update(lease_owner=owner, lease_until=now + LEASE):
        return True
    holder = rows.values_list("lease_owner", flat=True).first()
    if holder and _holder_is_dead(holder):
        # Conditional on the same dead holder: two survivors cannot both take it over.
        return bool(
            rows.filter(lease_owner=holder).update(lease_owner=owner, lease_until=now + LEASE)
        )
    return False


def renew_lease(server_id: int, owner: str) -> None:
    """Extend our lease; raises LeaseLost when someone else holds the mailbox now."""
    until = datetime_adapter()(timezone.now() + LEASE)
    updated = update(
        IncomingServer, "{lease_until} = %s", "{id} = %s AND {lease_owner} = %s",
        [until, server_id, owner],
    )  # fmt: skip
    if not updated:
        raise LeaseLost(f"the lease on incoming server {server_id} was taken over")


def release_lease(server_id: int, owner: str) -> None:
    IncomingServer.objects.filter(pk=server_id, lease_owner=owner).update(
        lease_owner="", lease_until=None
    )


# -- credentials -------------------------------------------------------------------------


def _token_store() -> ModuleType | None:
    """The OAuth token store, imported late (it imports the identity-platform client)."""
    try:
        from konvergo.services.oauth import tokens
    except ImportError:  # pragma: no cover - only while the token store is being built
        return None
    return tokens


class _TokenSource:
    """Access tokens for an Outlook server; after an expiry BYE, never the same token again."""

    def __init__(self, server: IncomingServer) -> None:
        self.server = server
        self.current = ""
        self.expired = ""

    def __call__(self) -> str:
        tokens = _token_store()
        if tokens is None or self.server.grant_id is None:
            raise ConfigurationError(
                f"{self.server.name}: no Outlook account is connected. Click 'Connect your "
                "Outlook account' on the server.",
                server=self.server.pk,
            )
        token: str = tokens.access_token(self.server.grant_id)
        if token == self.expired:
            # Exchange said this token expired, whatever our clock thinks: get a new one.
            token = tokens.access_token(self.server.grant_id, force_refresh=True)
        self.current = token
        return token

    def mark_expired(self) -> None:
        self.expired = self.current


def credentials_for(server: IncomingServer, tokens: _TokenSource | None = None) -> Credentials:
    """XOAUTH2 with the grant's token for Outlook servers; LOGIN with the password otherwise."""
    if server.server_type == IncomingServer.Type.OUTLOOK:
        return XOAuth2Auth(server.username, tokens or _TokenSource(server))
    return PasswordAuth(server.username, server.password)


def settings_for(server: IncomingServer, tokens: _TokenSource | None = None) -> ImapSettings:
    return ImapSettings(server.host, server.port, server.ssl, credentials_for(server, tokens))


def folders_of(server: IncomingServer) -> list[str]:
    """The server's folders, in order, without blanks or repeats (INBOX when none)."""
    names = [f.strip() for f in server.folders.split(",") if f.strip()]
    return list(dict.fromkeys(names)) or ["INBOX"]


def _report_token_use(
    server: IncomingServer, exc: BaseException | None, credentials: Credentials | None = None
) -> None:
    tokens = _token_store()
    if tokens is None or server.grant_id is None:
        return
    if exc is None:
        tokens.record_use(server.grant_id, True)
    elif isinstance(exc, ImapAuthorizationError) and exc.stage == "auth":
        # The refused token, so a fetch that began before a reconnect cannot undo it.
        digest = credentials.token_digest if isinstance(credentials, XOAuth2Auth) else None
        tokens.record_use(
            server.grant_id, False, exc.reply_text or str(exc), exc.fix, token_digest=digest
        )


# -- outcome on the server row -----------------------------------------------------------


def describe(exc: BaseException) -> tuple[str, str]:
    """``(last_error, last_error_fix)`` for a failure: the exact text and the catalogue's fix."""
    if isinstance(exc, ImapFailure):
        return str(exc), exc.fix
    text = str(exc) or type(exc).__name__
    explanation = explain(text, surface="imap")
    if explanation is not None:
        return text, explanation.entry.fix
    if isinstance(exc, ConfigurationError):
        return text, GENERIC_FIXES["configuration"]
    if isinstance(exc, PermissionError):
        return text, GENERIC_FIXES["authorization"]
    return text, GENERIC_FIXES["temporary"]


def _record_idle_support(server: IncomingServer, supported: bool) -> None:
    """Keep ``supports_idle`` as the server's capabilities said at the last connection."""
    if server.supports_idle is not supported:
        IncomingServer.objects.filter(pk=server.pk).update(supports_idle=supported)
        server.supports_idle = supported


def _record(server: IncomingServer, exc: BaseException | None) -> None:
    now = timezone.now()
    fields: dict[str, Any] = {"last_fetch_at": now}
    if exc is None:
        fields.update(last_success_at=now, last_error="", last_error_fix="", retry_after=None)
    else:
        fields["last_error"], fields["last_error_fix"] = describe(exc)
        backoff = exc.retry_after if isinstance(exc, ImapFailure) else None
        if backoff is not None:
            # Exchange's "Suggested Backoff Time": the worker leaves the server alone until
            # then (connecting earlier only extends the throttling).
            fields["retry_after"] = now + dt.timedelta(seconds=backoff)
    IncomingServer.objects.filter(pk=server.pk).update(**fields)
    for name, value in fields.items():
        setattr(server, name, value)


# -- the fetch ---------------------------------------------------------------------------


def _batched(items: Iterator[Any], size: int) -> Generator[list[Any], None, None]:
    """Lists of ``items``, growing as :meth:`ImapConnection.fetch_batch`'s requests do."""
    limits = ramp(size)
    limit = next(limits)
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= limit:
            yield batch
            batch = []
            limit = next(limits)
    if batch:
        yield batch


_END = object()


def _prefetched(batches: Iterator[list[Any]]) -> Generator[list[Any], None, None]:
    """Yield ``batches`` while a thread already reads the next one from the server.

    Reading a batch is mostly waiting for the server's bytes, which a thread does without the
    interpreter lock: batch N+1 travels while batch N is parsed and stored. At most two
    batches are held besides the one being stored, so memory stays bounded. An error of the
    reader (a dropped connection, ``BYE``) is raised here, in the caller's thread, after the
    batches read before it. The connection must not be used by the caller meanwhile.
    """
    handoff: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(item: Any) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                handoff.put(item, timeout=0.05)
                return True
        return False  # the caller has gone: drop it

    def pump() -> None:
        try:
            for batch in batches:
                if not hand_over(batch):
                    return
            hand_over(_END)
        except BaseException as exc:  # handed to the caller, which raises it
            hand_over(exc)

    reader = threading.Thread(target=pump, name="imap-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # Wait for the command in progress, so the connection is between commands again; a
        # stopped reader hands nothing over, so it never waits for us.
        reader.join()


class Fetcher:
    """Fetches all folders of one server over one connection, reconnecting when dropped."""

    def __init__(
        self,
        server: IncomingServer,
        owner: str,
        *,
        progress: Progress | None = None,
        batch_size: int = BATCH_SIZE,
        on_batch: Callable[[BatchOutcome], None] | None = None,
    ) -> None:
        self.server = server
        self.owner = owner
        self.progress = progress
        self.batch_size = batch_size
        #: Called after each committed batch (tests use it to act in the middle of a fetch).
        self.on_batch = on_batch
        self.tokens = _TokenSource(server)
        self.connection: ImapConnection | None = None
        self.result = FetchResult(server.pk)

    def connect(self) -> ImapConnection:
        if self.connection is None or not self.connection.is_open:
            settings = settings_for(self.server, self.tokens)
            conn = ImapConnection(settings)
            try:
                conn.open()
            except ImapFailure as exc:
                _report_token_use(self.server, exc, settings.auth)
                raise
            _report_token_use(self.server, None)
            self.connection = conn
            self.result.supports_idle = conn.supports_idle
            _record_idle_support(self.server, conn.supports_idle)
        return self.connection

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def run(self) -> FetchResult:
        """Fetch every folder; reconnects after BYE (a fresh token after AccessTokenExpired)."""
        IncomingServer.objects.filter(pk=self.server.pk).update(progress_done=0, progress_total=0)
        pending = folders_of(self.server)
        reconnects = 0
        while pending:
            try:
                conn = self.connect()
                while pending:
                    self.fetch_folder(conn, pending[0])
                    pending.pop(0)
            except ImapTemporaryError as exc:
                self.close()
                if exc.retry_after is not None or reconnects >= MAX_RECONNECTS:
                    raise  # throttled: reconnecting now would only prolong it
                reconnects += 1
                if "AccessTokenExpired" in exc.reply_text:
                    self.tokens.mark_expired()
                log.info("%s: reconnecting after %s", self.server.name, exc)
        return self.result

    def fetch_folder(self, conn: ImapConnection, folder: str) -> None:
        server = self.server
        status = conn.select(folder, readonly=not server.mark_read)
        self.result.folders[folder] = status
        state, _ = FolderState.objects.get_or_create(server=server, folder=folder)
        if state.uidvalidity != status.uidvalidity:
            # New folder, or the server renumbered it: every stored UID is void. Start from
            # UID 1; what is already stored is recognised by Message-ID and skipped.
            if state.uidvalidity:
                log.warning(
                    "%s/%s: UIDVALIDITY %s -> %s, resyncing",
                    server.name,
                    folder,
                    state.uidvalidity,
                    status.uidvalidity,
                )
            FolderState.objects.filter(pk=state.pk).update(
                uidvalidity=status.uidvalidity, last_uid=0
            )
            state.uidvalidity, state.last_uid = status.uidvalidity, 0
        if status.exists == 0 or (status.uidnext and status.uidnext <= state.last_uid + 1):
            return  # nothing above the high-water mark: no SEARCH needed
        # SINCE filters on delivery date, so it can stay on for every fetch: new mail is
        # always newer than fetch_since, and a first fetch interrupted midway resumes filtered.
        uids = conn.uid_search_since(state.last_uid, server.fetch_since)
        if not uids:
            return
        self.result.found += len(uids)
        IncomingServer.objects.filter(pk=server.pk).update(
            progress_total=F("progress_total") + len(uids)
        )
        batches = _batched(conn.fetch_batch(uids, self.batch_size), self.batch_size)
        if not server.mark_read:  # marking read uses the connection between batches
            batches = _prefetched(batches)
        # Closing stops the reader thread at once when storing fails, before anyone closes
        # the connection it reads from.
        with contextlib.closing(batches):
            self._consume(conn, folder, status, batches, len(uids))

    def _consume(
        self,
        conn: ImapConnection,
        folder: str,
        status: FolderStatus,
        batches: Iterator[list[FetchedMessage]],
        remaining: int,
    ) -> None:
        """Parse and store ``batches`` in order."""
        # Parsing runs here unless the messages are large (attachments): parse time grows with
        # size (~1 ms + 30 ms per MB), and once the rest of the fetch holds enough of such
        # work, parser processes take it over, batch N+1 parsed while N is stored. Everyday
        # mail (~0.15 ms per 10 KB message) costs less than starting those processes and
        # pickling messages to them and back. Decided by size, not by timing, so a slow
        # machine (or tracemalloc in a test) does not change the path.
        # ``konvergo worker`` keeps a parser process running: every batch goes there.
        shared = shared_parser()
        pool: ParserPool | None = shared
        try:
            pending: PendingBatch | None = None
            for batch in batches:
                remaining -= len(batch)
                if pool is None:
                    self._store(conn, folder, status, [parse_fetched(m) for m in batch])
                    average = sum(len(m.raw) for m in batch) / len(batch)
                    if average >= POOL_MESSAGE_BYTES and average * remaining >= POOL_BYTES:
                        pool = ParserPool()
                    continue
                ahead = pool.submit(batch)
                if pending is not None:
                    self._store(conn, folder, status, pending.result())
                pending = ahead
            if pending is not None:
                self._store(conn, folder, status, pending.result())
        finally:
            if pool is not None and pool is not shared:
                pool.close()

    def _store(
        self, conn: ImapConnection, folder: str, status: FolderStatus, parsed: list[Parsed]
    ) -> None:
        server_id, owner = self.server.pk, self.owner
        outcome = store_batch(
            self.server,
            folder,
            status.uidvalidity,
            parsed,
            first=lambda: renew_lease(server_id, owner),
        )
        self.result.stored += outcome.stored
        self.result.duplicates += outcome.duplicates
        self.result.quarantined += outcome.quarantined
        if self.server.mark_read:
            conn.mark_seen(outcome.uids)
        if self.progress is not None:
            done = self.result.stored + self.result.duplicates + self.result.quarantined
            self.progress(done, self.result.found)
        if self.on_batch is not None:
            self.on_batch(outcome)


def fetch_server(
    server: IncomingServer,
    *,
    progress: Progress | None = None,
    owner: str | None = None,
    on_batch: Callable[[BatchOutcome], None] | None = None,
    keep: Callable[[Fetcher], bool] | None = None,
) -> FetchResult:
    """Fetch ``server`` now if no other fetcher holds it; records the outcome on its row.

    Never raises for mail or network problems: the result (and the row) carry the error.
    ``keep(fetcher)`` may take over the open connection and the lease (IDLE watchers).
    """
    owner = owner or lease_owner_name()
    if not acquire_lease(server.pk, owner):
        return FetchResult(server.pk, skipped=True, error="Another worker is fetching it now.")
    fetcher = Fetcher(server, owner, progress=progress, on_batch=on_batch)
    kept = False
    try:
        result = fetcher.run()
        _record(server, None)
        kept = keep is not None and keep(fetcher)
        return result
    except LeaseLost as exc:
        fetcher.result.error = str(exc)
        return fetcher.result
    except (KonvergoError, OSError) as exc:
        _record(server, exc)
        fetcher.result.error, fetcher.result.fix = server.last_error, server.last_error_fix
        log.warning("fetch of %s failed: %s", server.name, exc)
        return fetcher.result
    finally:
        if not kept:
            fetcher.close()
            release_lease(server.pk, owner)


def fetch_now(server: IncomingServer, progress: Progress | None = None) -> FetchResult:
    """The "Fetch Now" button: fetch at once (unless a worker is fetching it right now)."""
    return fetch_server(server, progress=progress)


def test_and_confirm(server: IncomingServer) -> ConfirmResult:
    """The "Test and Confirm" button: connect, authenticate, open every folder.

    Success confirms the server (state done) and clears its error; a failure stores the
    server's exact words and the fix on the row and leaves the state alone.
    """
    statuses: dict[str, FolderStatus] = {}
    settings: ImapSettings | None = None
    try:
        settings = settings_for(server)
        with ImapConnection(settings) as conn:
            _record_idle_support(server, conn.supports_idle)
            for folder in folders_of(server):
                statuses[folder] = conn.select(folder, readonly=True)
    except (KonvergoError, OSError) as exc:
        if isinstance(exc, ImapFailure):
            _report_token_use(server, exc, settings.auth if settings is not None else None)
        message, fix = describe(exc)
        IncomingServer.objects.filter(pk=server.pk).update(last_error=message, last_error_fix=fix)
        server.last_error, server.last_error_fix = message, fix
        return ConfirmResult(False, message, fix, statuses)
    _report_token_use(server, None)
    IncomingServer.objects.filter(pk=server.pk).update(
        state=IncomingServer.State.DONE, last_error="", last_error_fix=""
    )
    server.state, server.last_error, server.last_error_fix = IncomingServer.State.DONE, "", ""
    counts = ", ".join(f"{name}: {s.exists}" for name, s in statuses.items())
    return ConfirmResult(True, f"Connection test succeeded ({counts} messages).", "", statuses)


def reset_confirmation(server: IncomingServer) -> None:
    """The "Reset Confirmation" button: back to draft; workers stop fetching it."""
    IncomingServer.objects.filter(pk=server.pk).update(state=IncomingServer.State.DRAFT)
    server.state = IncomingServer.State.DRAFT


# -- waiting for new mail: IDLE, or polling ----------------------------------------------


def watch(
    server: IncomingServer,
    stop: threading.Event,
    *,
    progress: Progress | None = None,
    fetcher: Fetcher | None = None,
    idle_slice: float = IDLE_SLICE,
) -> None:
    """Fetch, then wait for new mail and fetch again until ``stop`` is set.

    IDLE on the first folder where the server offers it (other folders are fetched with
    it whenever INBOX wakes up or the poll interval passes); otherwise a fetch every
    ``poll_interval`` seconds. Errors are recorded on the row; the watch then waits one
    poll interval and starts again with a new connection (a fresh token included).
    """
    owner = fetcher.owner if fetcher is not None else lease_owner_name()
    last_full = time.monotonic() if fetcher is not None else 0.0
    while not stop.is_set():
        try:
            if fetcher is None:
                if not acquire_lease(server.pk, owner):
                    stop.wait(server.poll_interval)
                    continue
                fetcher = Fetcher(server, owner, progress=progress)
            if time.monotonic() - last_full >= server.poll_interval or last_full == 0.0:
                fetcher.run()
                _record(server, None)
                last_full = time.monotonic()
            conn = fetcher.connect()
            if not conn.supports_idle:
                renew_lease(server.pk, owner)
                stop.wait(max(0.0, server.poll_interval - (time.monotonic() - last_full)))
                continue
            folder = folders_of(server)[0]
            if conn.selected != folder:
                conn.select(folder, readonly=not server.mark_read)
            renew_lease(server.pk, owner)
            if stop.is_set():
                break  # stopped during the fetch: do not sit in IDLE for another slice
            if conn.idle(idle_slice):
                last_full = 0.0  # new mail: fetch at once
        except LeaseLost:
            _drop(fetcher, server, owner, release=False)
            fetcher = None
            stop.wait(server.poll_interval)
        except (KonvergoError, OSError) as exc:
            if isinstance(exc, ImapTemporaryError) and "AccessTokenExpired" in exc.reply_text:
                assert fetcher is not None
                fetcher.tokens.mark_expired()
                fetcher.close()
                continue
            _record(server, exc)
            _drop(fetcher, server, owner)
            fetcher = None
            retry = exc.retry_after if isinstance(exc, ImapFailure) else None
            stop.wait(retry if retry is not None else server.poll_interval)
        finally:
            close_old_connections()
    _drop(fetcher, server, owner)


def _drop(
    fetcher: Fetcher | None, server: IncomingServer, owner: str, release: bool = True
) -> None:
    if fetcher is not None:
        fetcher.close()
    if release:
        release_lease(server.pk, owner)


# -- the worker job ----------------------------------------------------------------------

#: IDLE watchers this process runs: server id -> (thread, stop event).
_WATCHERS: dict[int, tuple[threading.Thread, threading.Event]] = {}
#: At most this many mailboxes held open in IDLE per worker process.
MAX_WATCHERS = 16
#: Off in tests that call the job directly; on in ``konvergo worker``.
IDLE_IN_WORKER = get_config().intake_idle


def _due(server: IncomingServer, now: dt.datetime) -> bool:
    if server.last_fetch_at is None:
        return True
    return server.last_fetch_at + dt.timedelta(seconds=server.poll_interval) <= now


# A worker fetches all day: its parser process is started with it, not by the first fetch.
worker.on_start(start_shared_parser, stop_shared_parser)


@worker.register("intake", interval=JOB_INTERVAL)
def fetch_due_servers() -> int:
    """Fetch every confirmed, active server whose poll interval and throttling backoff
    (``retry_after``) have passed and that no other worker holds; hand IDLE-capable ones to
    a watcher thread. Returns messages stored."""
    for server_id, (thread, _) in list(_WATCHERS.items()):
        if not thread.is_alive():
            del _WATCHERS[server_id]
    now = timezone.now()
    candidates = (
        IncomingServer.objects.filter(state=IncomingServer.State.DONE, active=True)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=""))
        # Throttled by the server: not before its suggested backoff has passed.
        .filter(Q(retry_after__isnull=True) | Q(retry_after__lte=now))
    )
    stored = 0
    for server in candidates:
        if server.pk in _WATCHERS or not _due(server, now):
            continue

        def keep(fetcher: Fetcher, server: IncomingServer = server) -> bool:
            if not (IDLE_IN_WORKER and fetcher.result.supports_idle):
                return False
            if len(_WATCHERS) >= MAX_WATCHERS:
                return False
            stop = threading.Event()
            thread = threading.Thread(
                target=_watch_thread,
                args=(server, stop, fetcher),
                name=f"intake-idle-{server.pk}",
                daemon=True,
            )
            _WATCHERS[server.pk] = (thread, stop)
            thread.start()
            return True

        result = fetch_server(server, keep=keep)
        stored += result.stored
    return stored


def _watch_thread(server: IncomingServer, stop: threading.Event, fetcher: Fetcher) -> None:
    try:
        watch(server, stop, fetcher=fetcher)
    finally:
        with contextlib.suppress(Exception):
            close_old_connections()


def stop_watchers(timeout: float = 5.0) -> None:
    """Stop this process's IDLE watchers (worker shutdown, tests)."""
    for _thread, stop in list(_WATCHERS.values()):
        stop.set()
    for thread, _ in list(_WATCHERS.values()):
        thread.join(timeout)
    _WATCHERS.clear()
