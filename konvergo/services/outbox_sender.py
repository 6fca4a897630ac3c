"""Sending: sessions per server, each holding a slot, reusing one authenticated connection.

A *session* is one SMTP connection to one server, opened lazily on the first message and
reused for every batch it claims; the transport reconnects once when the server dropped an
idle connection. A session runs only while it holds one of the server's session slots
(:class:`~konvergo.services.outbox_limits.SessionSlots`), so every worker on every machine
together opens at most ``max_sessions`` connections per mailbox.

A session claims at most ``batch_size`` rows, and fewer on a slow server (about
``batch_seconds`` of sending at the pace it measured), so that the last rows of a queue are
spread over the server's sessions instead of waiting behind one of them. It sends one message
at a time and commits its outcome before the next one starts: killing the process re-sends at
most the one message per session whose DATA was answered but not yet recorded.

The :class:`Dispatcher` starts sessions for servers with due mail: in background threads
(the worker's job returns at once and the threads keep sending while the worker loop also
runs intake and token jobs), or inline in the caller's thread (``threads=False``, for tests
that run inside one database transaction).
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from django.db import connections
from django.utils import timezone

from konvergo.errors import KonvergoError
from konvergo.services import outbox_claim as store
from konvergo.services.credentials import smtp_auth_for
from konvergo.services.outbox_limits import POLICY, OutboxPolicy, SessionSlots, Verdict, classify
from konvergo.store.models import OutboxItem, OutgoingServer
from konvergo.transports.auth import XOAuth2Auth
from konvergo.transports.smtp import (
    SendResult,
    SmtpConnection,
    SmtpSettings,
    SmtpTemporaryError,
    Submission,
)
from konvergo.transports.smtp_errors import SmtpAuthorizationError

log = logging.getLogger("konvergo.outbox")

State = OutboxItem.State

#: A session that hits the rate limit waits this long at most, keeping its connection,
#: before giving its slot back.
MAX_IDLE_WAIT = 10.0


def smtp_settings_for(server: OutgoingServer, policy: OutboxPolicy | None = None) -> SmtpSettings:
    """The transport settings of an outgoing server row."""
    p = policy or POLICY
    return SmtpSettings(
        host=server.smtp_host,
        port=server.smtp_port,
        encryption=server.encryption,  # type: ignore[arg-type]  # choices match Encryption
        auth=smtp_auth_for(server),
        timeout=p.smtp_timeout,
    )


def _reply_text(result: SendResult) -> str:
    text = str(result.reply)
    if result.refused:
        refused = "; ".join(f"{address}: {reply}" for address, reply in result.refused.items())
        text += f" (refused: {refused})"
    return text


def _record_grant_use(
    server: OutgoingServer,
    ok: bool,
    verdict: Verdict | None = None,
    auth: object = None,
) -> None:
    """Tell the token store whether Exchange accepted the token (the tag on the server form).

    ``auth`` is the session's credentials: a refusal names the token it concerns, so a
    session that authenticated before a reconnect does not turn the new grant red.
    """
    if server.auth_type != "outlook" or server.grant_id is None:
        return
    try:
        from konvergo.services.oauth.tokens import record_use
    except ImportError:  # pragma: no cover - the token store ships with the product
        return
    try:
        if verdict is None:
            record_use(server.grant_id, ok)
        else:
            digest = auth.token_digest if isinstance(auth, XOAuth2Auth) else None
            record_use(server.grant_id, ok, verdict.reply, verdict.fix, token_digest=digest)
    except Exception:  # reporting health must never stop sending
        log.exception("could not record the token use of grant %s", server.grant_id)


class Dispatcher:
    """Starts and tracks the sessions of one worker process."""

    def __init__(
        self,
        *,
        threads: bool = True,
        cafile: str | os.PathLike[str] | None = None,
        policy: OutboxPolicy | None = None,
        name: str | None = None,
    ) -> None:
        self.threads = threads
        self.cafile = cafile
        self.policy = policy or POLICY
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._slots: SessionSlots | None = None
        self._sessions: dict[int, list[threading.Thread]] = {}
        self._not_before: dict[int, dt.datetime] = {}
        self._lock = threading.Lock()
        self._done = 0
        self._scanned = 0.0
        self._housekept = float("-inf")
        self._stop = threading.Event()

    # --- public ------------------------------------------------------------------------

    def tick(self) -> int:
        """Start sessions for servers with due mail; returns messages finished since last tick."""
        if self._stop.is_set():
            return self._take_done()
        # The worker loop calls again at once while work gets done; the sessions do that
        # work, so do not scan the queue on every call while they run.
        if self._alive() and time.monotonic() - self._scanned < self.policy.scan_interval:
            return self._take_done()
        self._scanned = time.monotonic()
        # Both write: on SQLite every write waits for the single writer, so while sessions
        # are sending they run at a slower pace than the scan for due mail.
        if (
            not self._alive()
            or self._scanned - self._housekept >= self.policy.housekeeping_interval
        ):
            self._housekept = self._scanned
            self._hold_orphans()
            self._reclaim_dead_sessions()
            requeued = store.requeue_expired(self.policy)
            if requeued:
                log.warning("re-queued %d message(s) whose lease ran out", requeued)
        now = timezone.now()
        due = {
            sid: n
            for sid, n in store.due_servers(now).items()
            if self._not_before.get(sid, now) <= now
        }
        if due:
            servers = OutgoingServer.objects.filter(pk__in=due, active=True).values(
                "id", "max_sessions", "messages_per_minute"
            )
            for server in servers:
                wanted = self._sessions_wanted(
                    server["max_sessions"], server["messages_per_minute"], due[server["id"]]
                )
                if self.threads:
                    self._start_threads(server["id"], server["max_sessions"], wanted)
                else:
                    slot = self.slots.acquire(server["id"], server["max_sessions"])
                    if slot is not None:
                        self._session(server["id"], slot)
        return self._take_done()

    def drain(self, timeout: float = 60.0) -> int:
        """Send until nothing is due now and no session runs; returns messages finished."""
        deadline = time.monotonic() + timeout
        total = 0
        while time.monotonic() < deadline:
            total += self.tick()
            if not self._alive():
                now = timezone.now()
                pending = [
                    sid for sid in store.due_servers(now) if self._not_before.get(sid, now) <= now
                ]
                if not pending:
                    break
            time.sleep(0.01 if self._alive() else 0.05)
        return total + self._take_done()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask sessions to stop after their current message and wait for them."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads():
            thread.join(max(0.0, deadline - time.monotonic()))

    # --- internals ---------------------------------------------------------------------

    @property
    def slots(self) -> SessionSlots:
        if self._slots is None:
            self._slots = SessionSlots()
        return self._slots

    def _take_done(self) -> int:
        with self._lock:
            done, self._done = self._done, 0
        return done

    def _finished(self, count: int = 1) -> None:
        with self._lock:
            self._done += count

    def _threads(self) -> list[threading.Thread]:
        with self._lock:
            return [t for threads in self._sessions.values() for t in threads]

    def _running(self, server_id: int) -> int:
        """Sessions of ``server_id`` this process runs now (1 when run inline)."""
        with self._lock:
            return max(1, sum(1 for t in self._sessions.get(server_id, []) if t.is_alive()))

    def _alive(self) -> bool:
        return any(t.is_alive() for t in self._threads())

    def _sessions_wanted(self, max_sessions: int, per_minute: int, due: int) -> int:
        p = self.policy
        cap = max(1, max_sessions)
        if 0 < per_minute <= 60:
            return 1  # one connection already sends a message a second or more
        return min(cap, 1 + (due - 1) // max(1, p.messages_per_session))

    def _start_threads(self, server_id: int, max_sessions: int, wanted: int) -> None:
        # The slot is taken before the thread exists: a thread that could not get one would
        # still use up room that another server with free slots needs.
        with self._lock:
            alive = [t for t in self._sessions.get(server_id, []) if t.is_alive()]
            running = sum(1 for threads in self._sessions.values() for t in threads if t.is_alive())
            room = max(0, self.policy.max_threads - running)
            for _ in range(min(room, wanted - len(alive))):
                slot = self.slots.acquire(server_id, max_sessions)
                if slot is None:
                    break
                thread = threading.Thread(
                    target=self._thread_main,
                    args=(server_id, slot),
                    name=f"outbox-{server_id}.{slot}",
                    daemon=True,
                )
                alive.append(thread)
                thread.start()
            self._sessions[server_id] = alive

    def _thread_main(self, server_id: int, slot: int) -> None:
        try:
            self._session(server_id, slot)
        except Exception:
            log.exception("outbox session for server %s failed", server_id)
        finally:
            connections.close_all()  # this thread's connections only

    def _hold_orphans(self) -> None:
        """Queued mail whose server was deleted or archived waits for a person, visibly."""
        now = timezone.now()
        OutboxItem.objects.filter(
            state=State.QUEUED, next_attempt_at__lte=now, server__isnull=True
        ).update(
            state=State.HELD,
            failure_class="configuration",
            last_reply="The outgoing server chosen for this mail was deleted.",
            last_fix="Click Retry: the mail is routed again to a server that accepts it.",
        )
        OutboxItem.objects.filter(
            state=State.QUEUED, next_attempt_at__lte=now, server__active=False
        ).update(
            state=State.HELD,
            failure_class="configuration",
            last_reply="The outgoing server chosen for this mail is archived.",
            last_fix="Unarchive the server, then click Retry on the mail.",
        )

    def _reclaim_dead_sessions(self) -> None:
        """Re-queue rows of sessions whose slot is free: their worker died mid-batch.

        A live session always holds its slot, so a free slot with rows still ``sending`` under
        its name means a dead process; this re-sends them now rather than when the lease ends.
        """
        for server_id, slot in store.sending_slots():
            if self.slots.try_slot(server_id, slot):
                try:
                    count = store.reclaim_slot(server_id, slot, self.policy)
                    log.warning(
                        "re-queued %d message(s) of a dead session of server %s", count, server_id
                    )
                finally:
                    self.slots.release(server_id, slot)

    def _session(self, server_id: int, slot: int) -> None:
        """Send the server's due mail while holding ``slot``; releases it when done."""
        worker = f"{self.name}{store.slot_suffix(server_id, slot)}"
        connection: SmtpConnection | None = None
        try:
            reclaimed = store.reclaim_slot(server_id, slot, self.policy)
            if reclaimed:
                log.warning(
                    "re-queued %d message(s) of a dead session of server %s", reclaimed, server_id
                )
            server = OutgoingServer.objects.get(pk=server_id)
            limit = self.policy.batch_size
            while not self._stop.is_set():
                result = store.claim(
                    server_id, worker, limit, self.policy, sessions=self._running(server_id)
                )
                if not result.items:
                    if result.wait_until is None:
                        break
                    wait = (result.wait_until - timezone.now()).total_seconds()
                    if wait > MAX_IDLE_WAIT:
                        self._not_before[server_id] = result.wait_until
                        break
                    self._stop.wait(max(0.0, wait) + 0.01)
                    continue
                if connection is None:
                    try:
                        connection = SmtpConnection(
                            smtp_settings_for(server, self.policy), cafile=self.cafile
                        )
                    except KonvergoError as exc:  # the server row itself is unusable
                        self._server_failed(server, result.items, worker, classify(exc))
                        break
                started = time.monotonic()
                if not self._send_batch(server, connection, worker, result.items):
                    break
                per_message = (time.monotonic() - started) / len(result.items)
                limit = self._batch_limit(per_message)
        finally:
            if connection is not None:
                connection.close()
            self.slots.release(server_id, slot)

    def _batch_limit(self, per_message: float) -> int:
        """How many rows the next claim takes, given the seconds one message took."""
        p = self.policy
        if per_message <= 0:
            return p.batch_size
        return max(1, min(p.batch_size, int(p.batch_seconds / per_message)))

    def _send_batch(
        self,
        server: OutgoingServer,
        connection: SmtpConnection,
        worker: str,
        items: list[store.Claimed],
    ) -> bool:
        """Send ``items`` one by one; False when the session must end (server-level failure).

        Each accepted message's outcome is committed while the next message's envelope
        travels (``before_commit``) and always before that message's final dot: the database
        round trip overlaps the server's work, and a crash still leaves at most one message of
        the session sent but not recorded.
        """
        renewed = time.monotonic()
        first_ok = not connection.is_open
        pending: Callable[[], None] | None = None
        try:
            for index, item in enumerate(items):
                if self._stop.is_set():
                    store.release(items[index:], worker)
                    return False  # the previous outcome is recorded below
                record, pending = pending, None
                following = None
                if index + 1 < len(items):
                    after = items[index + 1]
                    following = Submission(after.envelope_from, after.recipients, after.raw)
                try:
                    # ``send`` runs ``record`` exactly once, whatever happens; the next
                    # message's envelope goes out behind this one's final dot.
                    result = connection.send(
                        item.envelope_from,
                        item.recipients,
                        item.raw,
                        before_commit=record,
                        then=following,
                    )
                except (KonvergoError, OSError) as exc:
                    if not self._message_failed(server, connection, worker, items, index, exc):
                        return False
                    continue
                pending = functools.partial(self._record_sent, item.id, worker, result)
                if first_ok:
                    first_ok = False
                    _record_grant_use(server, True)
                if time.monotonic() - renewed > self.policy.lease_seconds / 3:
                    # This message's row too: its outcome is recorded with the next one.
                    store.renew([i.id for i in items[index:]], worker, self.policy)
                    renewed = time.monotonic()
        finally:
            if pending is not None:
                pending()
        return True

    def _record_sent(self, item_id: int, worker: str, result: SendResult) -> None:
        if not store.mark_sent(item_id, worker, _reply_text(result)):
            log.warning("outbox row %s was taken over while being sent", item_id)
        self._finished()

    def _message_failed(
        self,
        server: OutgoingServer,
        connection: SmtpConnection,
        worker: str,
        items: list[store.Claimed],
        index: int,
        exc: KonvergoError | OSError,
    ) -> bool:
        """Apply the failure of ``items[index]``; False when the session must end."""
        verdict = classify(exc, self.policy)
        rest = items[index:]
        if verdict.throttled:
            until = timezone.now() + dt.timedelta(seconds=verdict.throttle_pause or 0)
            log.info("server %s asks us to slow down until %s: %s", server.pk, until, verdict.reply)
            store.throttle(server.pk, until)
            store.release(rest, worker, at=until, reply=verdict.reply)
            connection.close()
            return False
        if verdict.scope == "server":
            self._server_failed(server, rest, worker, verdict)
            if isinstance(exc, SmtpAuthorizationError):
                _record_grant_use(server, False, verdict, connection.settings.auth)
            connection.close()
            return False
        store.mark_failed([items[index]], worker, verdict, self.policy)
        self._finished()
        if isinstance(exc, SmtpTemporaryError) and not connection.is_open:
            log.info("server %s dropped the session: %s", server.pk, verdict.reply)
        return True

    def _server_failed(
        self, server: OutgoingServer, items: list[store.Claimed], worker: str, verdict: Verdict
    ) -> None:
        """A failure before the message was said: it concerns every message of the server."""
        log.warning("server %s failed (%s): %s", server.pk, verdict.failure_class, verdict.reply)
        store.mark_failed(items, worker, verdict, self.policy)
        self._finished(len(items))
        if verdict.failure_class in ("authorization", "configuration"):
            store.hold_server_queue(server.pk, verdict)


_default: Dispatcher | None = None
_default_lock = threading.Lock()


def default_dispatcher() -> Dispatcher:
    """The process's dispatcher (threads), stopped cleanly when the process exits."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Dispatcher(threads=True)
            atexit.register(_default.shutdown)
        return _default
