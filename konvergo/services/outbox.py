"""The durable outgoing queue: enqueue, send, retry, cancel, release.

Public API (the rest lives in ``outbox_*`` modules)::

    enqueue(*, from_, to, cc=(), bcc=(), subject, text=None, html=None, attachments=(),
            purpose="transactional", server_id=None, created_by=None, reply_to=None,
            in_reply_to=None, references=(), thread=None, headers=None) -> OutboxItem
    enqueue_many(mails: Iterable[Mapping[str, Any]]) -> list[OutboxItem]
    retry(item) -> OutboxItem          # the Retry button
    cancel(item) -> OutboxItem         # the Cancel button
    release_held(server) -> int        # after "Connect your Outlook account" / a fixed setting
    send_due(timeout=60.0, threads=False) -> int   # send everything due now (CLI, tests)
    POLICY                              # tunables (batch size, backoff, attempts, windows)

Life of a row: ``queued`` → ``sending`` (claimed, leased) → ``sent``; or back to ``queued``
with a backoff after a temporary failure (``failed`` after ``POLICY.max_attempts``); or
``failed`` at once after a permanent refusal; or ``held`` when the credentials or a setting
were refused (no attempt is counted; :func:`release_held` or Retry puts it back). A throttling
reply pauses the server (``throttled_until``) and re-queues without counting an attempt.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from konvergo.errors import ValidationFailed
from konvergo.services import worker
from konvergo.services.outbox_enqueue import (
    Attachment,
    UnroutableMail,
    enqueue,
    enqueue_many,
    prepare,
    rewrite_from,
    routing_table,
)
from konvergo.services.outbox_limits import POLICY, OutboxPolicy, backoff_seconds, classify
from konvergo.services.outbox_sender import Dispatcher, default_dispatcher
from konvergo.store.models import OutboxItem, OutgoingServer

State = OutboxItem.State

__all__ = [
    "POLICY",
    "Attachment",
    "Dispatcher",
    "OutboxPolicy",
    "UnroutableMail",
    "backoff_seconds",
    "cancel",
    "classify",
    "enqueue",
    "enqueue_many",
    "prepare",
    "release_held",
    "retry",
    "run_job",
    "send_due",
]

#: States a person may retry or cancel (``sending`` belongs to a worker right now).
RETRYABLE = frozenset({State.FAILED, State.HELD, State.QUEUED, State.CANCELLED})
CANCELLABLE = frozenset({State.QUEUED, State.HELD, State.FAILED})


def retry(item: OutboxItem | int) -> OutboxItem:
    """Queue ``item`` again now, with a fresh attempt count.

    The stored routing is kept (a retry goes through the same server, so the same mailbox
    sends the whole conversation); only when that server was deleted is the mail routed again,
    and its From/Reply-To rewritten if the new route demands it.
    """
    pk = item if isinstance(item, int) else item.pk
    with transaction.atomic():
        row = OutboxItem.objects.select_for_update().get(pk=pk)
        if row.state not in RETRYABLE:
            raise ValidationFailed(
                "state", f"This mail is {row.get_state_display().lower()}; it cannot be retried."
            )
        if row.server_id is None:
            # Route from the From the caller wrote (rows queued before it was stored: the
            # From they carry, which keeps the sender's name).
            decision = routing_table().decide(
                row.original_from or row.header_from,
                purpose=row.purpose,  # type: ignore[arg-type]  # stored from PURPOSES
            )
            if decision.header_from != row.header_from or decision.reply_to is not None:
                row.raw = rewrite_from(bytes(row.raw), decision.header_from, decision.reply_to)
                row.size = len(row.raw)
            row.server_id = decision.server_id
            row.route = decision.route
            row.header_from = decision.header_from
            row.envelope_from = decision.envelope_from
        row.state = State.QUEUED
        row.attempts = 0
        row.next_attempt_at = timezone.now()
        row.failure_class = ""
        row.last_fix = ""
        row.claimed_by = ""
        row.lease_until = None
        row.save()
    return row


def cancel(item: OutboxItem | int) -> OutboxItem:
    """Cancel ``item`` unless it is being sent or already sent (a conditional update)."""
    pk = item if isinstance(item, int) else item.pk
    changed = OutboxItem.objects.filter(pk=pk, state__in=CANCELLABLE).update(
        state=State.CANCELLED, lease_until=None
    )
    row = OutboxItem.objects.get(pk=pk)
    if not changed:
        raise ValidationFailed(
            "state", f"This mail is {row.get_state_display().lower()}; it cannot be cancelled."
        )
    return row


def release_held(server: OutgoingServer | int) -> int:
    """Re-queue the held mail of ``server`` (after a reconnect or a fixed setting)."""
    pk = server if isinstance(server, int) else server.pk
    return OutboxItem.objects.filter(server_id=pk, state=State.HELD).update(
        state=State.QUEUED,
        next_attempt_at=timezone.now(),
        failure_class="",
        last_fix="",
    )


def send_due(timeout: float = 60.0, *, threads: bool = False) -> int:
    """Send everything due now and return how many messages got an outcome."""
    return Dispatcher(threads=threads).drain(timeout)


@worker.register("outbox", interval=1.0)
def run_job() -> int:
    """The worker's job: start sessions for due mail (they send in background threads)."""
    return default_dispatcher().tick()
