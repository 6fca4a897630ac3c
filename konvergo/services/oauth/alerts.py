"""Tell people when a grant breaks: a banner for administrators and the owner, and a mail.

The mail goes through the outbox like any other, so it leaves through whichever server still
works (routing picks it); it is sent once per incident (``alerted_at``).
"""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.utils import timezone

from konvergo.store.models import IncomingServer, OAuthGrant, OutgoingServer, User

log = logging.getLogger("konvergo.oauth")


def grant_invalid(grant_pk: int) -> None:
    claimed = OAuthGrant.objects.filter(pk=grant_pk, alerted_at__isnull=True).update(
        alerted_at=timezone.now()
    )
    if not claimed:
        return
    grant = OAuthGrant.objects.get(pk=grant_pk)
    recipients = sorted(
        {u.email for u in User.objects.filter(is_active=True) if u.is_administrator and u.email}
        | ({grant.owner.email} if grant.owner and grant.owner.email else set())
    )
    if not recipients:
        return
    try:
        from konvergo.services import outbox, parameters
    except ImportError:  # the outbox is not installed in this build
        return
    sender = parameters.notifications_address()
    if not sender:
        return
    fix = grant.last_error_fix or (
        "open the mail server in Konvergo and click Connect your Outlook account, signed in "
        f"as {grant.mailbox}."
    )
    text = (
        f"Konvergo can no longer use the Outlook mailbox {grant.mailbox}.\n\n"
        f"Microsoft said: {grant.last_error}\n\n"
        f"What to do: {fix}\n\n"
        "Mail that needs this mailbox is kept and will be sent once it is reconnected.\n"
    )
    try:
        outbox.enqueue(
            from_=f"Konvergo <{sender}>",
            to=recipients,
            subject=f"Action needed: Outlook Token Invalid for {grant.mailbox}",
            text=text,
        )
    except Exception:  # an alert that cannot be queued must not break the caller
        log.exception("could not queue the alert for grant %s", grant_pk)


def banners_for(user: object) -> list[dict[str, str]]:
    """Banners about broken grants: administrators see all, owners see theirs."""
    try:
        grants = OAuthGrant.objects.filter(status=OAuthGrant.Status.INVALID)
        if not getattr(user, "is_administrator", False):
            # Whoever owns the server now, not whoever owned it when it was connected.
            owner = getattr(user, "pk", None)
            mine = set(
                OutgoingServer.objects.filter(owner_id=owner).values_list("grant_id", flat=True)
            ) | set(
                IncomingServer.objects.filter(owner_id=owner).values_list("grant_id", flat=True)
            )
            grants = grants.filter(pk__in=[g for g in mine if g is not None])
        return [
            {
                "level": "error",
                "text": f"Outlook Token Invalid for {g.mailbox}: {g.last_error[:300]} "
                f"{g.last_error_fix}".strip(),
                "link": "",
            }
            for g in grants[:10]
        ]
    except DatabaseError:
        return []
