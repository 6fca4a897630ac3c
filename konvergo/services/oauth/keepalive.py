"""Keep idle grants alive: refresh any grant idle for 30 days.

Microsoft expires a refresh token after 90 days without use (AADSTS700082); a mailbox that
only receives mail rarely, or a notifications server used once a quarter, would otherwise
die silently. Nothing in the peers does this (research/peers.md §4).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db.models import Q
from django.utils import timezone

from konvergo.errors import KonvergoError
from konvergo.services import worker
from konvergo.services.oauth import tokens
from konvergo.store.models import OAuthGrant

log = logging.getLogger("konvergo.oauth")

IDLE_LIMIT = dt.timedelta(days=30)


def due_grants(now: dt.datetime | None = None) -> list[OAuthGrant]:
    now = now or timezone.now()
    return list(
        OAuthGrant.objects.filter(status=OAuthGrant.Status.VALID)
        .exclude(refresh_token="")
        .filter(Q(refreshed_at__isnull=True) | Q(refreshed_at__lt=now - IDLE_LIMIT))
    )


@worker.register("oauth-keepalive", interval=3600.0)
def keep_alive() -> int:
    done = 0
    for grant in due_grants():
        try:
            tokens.access_token(grant, force_refresh=True)
            done += 1
        except KonvergoError as exc:  # recorded on the grant by the token store
            log.warning("keep-alive refresh failed for %s: %s", grant.mailbox, exc)
    return done
