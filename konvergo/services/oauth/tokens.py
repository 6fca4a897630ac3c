"""The token store: a current access token for a grant, refreshed once at a time.

Single flight across threads *and* processes: a refresh needs the grant's refresh lease,
taken with one conditional UPDATE (``refresh_lease_until`` empty or past, ``version``
unchanged). Whoever loses waits for the winner's new token instead of spending the refresh
token a second time, which a strictly rotating identity platform would reject. The result is
stored with a compare-and-swap on ``version``, so a rotated refresh token is never lost.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import threading
import time
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from konvergo.errors import AuthorizationError, ConfigurationError, TemporaryTransportError
from konvergo.providers.microsoft import endpoints
from konvergo.providers.microsoft.catalogue import personalize
from konvergo.providers.microsoft.errors import TokenEndpointError
from konvergo.services.oauth import client
from konvergo.store.models import OAuthGrant
from konvergo.transports.auth import token_digest as hashed_token

log = logging.getLogger("konvergo.oauth")

#: Refresh this long before the access token expires (Exchange drops expired sessions).
REFRESH_MARGIN = dt.timedelta(minutes=5)
#: How long a refresher may hold the lease; longer than one token call with its timeout.
LEASE = dt.timedelta(seconds=30)
#: How long a caller waits for another process's refresh before giving up for now.
WAIT_LIMIT = 45.0
#: Backoff after temporary token-endpoint failures: 5 s doubling to 15 minutes, with jitter.
BACKOFF_BASE, BACKOFF_CAP = 5.0, 900.0


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _fresh(grant: OAuthGrant, now: dt.datetime) -> bool:
    return bool(
        grant.access_token
        and grant.access_expires_at
        and grant.access_expires_at - now > REFRESH_MARGIN
    )


def _refusal(grant: OAuthGrant) -> AuthorizationError | ConfigurationError | None:
    """Why this grant cannot give a token right now (None when it can)."""
    if grant.status == OAuthGrant.Status.DISCONNECTED or not grant.refresh_token:
        return AuthorizationError(
            f"{grant.mailbox} is not connected: click 'Connect your Outlook account' on its "
            "server.",
            grant=grant.pk,
        )
    if grant.status == OAuthGrant.Status.INVALID and grant.failure_class != "temporary":
        fix = f" {grant.last_error_fix}" if grant.last_error_fix else ""
        cls = ConfigurationError if grant.failure_class == "configuration" else AuthorizationError
        return cls(
            f"Outlook Token Invalid for {grant.mailbox}: {grant.last_error}{fix}", grant=grant.pk
        )
    return None


def access_token(grant: OAuthGrant | int, *, force_refresh: bool = False) -> str:
    """A valid access token for ``grant``; refreshes (once, across processes) when needed.

    Raises AuthorizationError when the grant needs a reconnect, ConfigurationError when an
    administrator must fix the app registration, TemporaryTransportError when Microsoft is
    unreachable for now (callers retry later; mail is kept).
    """
    pk = grant.pk if isinstance(grant, OAuthGrant) else grant
    deadline = time.monotonic() + WAIT_LIMIT
    seen_version: int | None = None
    while True:
        current = OAuthGrant.objects.get(pk=pk)
        now = timezone.now()
        refusal = _refusal(current)
        if refusal is not None:
            raise refusal
        if _fresh(current, now) and not (force_refresh and seen_version is None):
            return current.access_token
        if force_refresh and seen_version is not None and current.version != seen_version:
            return current.access_token  # someone else refreshed while we waited
        seen_version = current.version if seen_version is None else seen_version
        if current.retry_after and current.retry_after > now:
            raise TemporaryTransportError(
                f"The Microsoft token endpoint failed for {current.mailbox}; next try at "
                f"{current.retry_after:%H:%M:%S} UTC. {current.last_error}",
                grant=pk,
            )
        if _take_lease(current, now):
            return _refresh(current)
        if time.monotonic() > deadline:
            raise TemporaryTransportError(
                f"Another process is refreshing the token of {current.mailbox}; try again.",
                grant=pk,
            )
        time.sleep(0.05 + random.random() * 0.1)


def _take_lease(grant: OAuthGrant, now: dt.datetime) -> bool:
    taken = (
        OAuthGrant.objects.filter(pk=grant.pk, version=grant.version)
        .filter(Q(refresh_lease_until__isnull=True) | Q(refresh_lease_until__lt=now))
        .update(refresh_lease_owner=_me(), refresh_lease_until=now + LEASE)
    )
    return taken == 1


@sensitive_variables()
def _refresh(grant: OAuthGrant) -> str:
    me = _me()
    try:
        token = client.refresh(grant.scope, grant.refresh_token)
    except TokenEndpointError as exc:
        _record_failure(grant, me, exc.failure_class, exc)
        raise
    except TemporaryTransportError as exc:
        _record_failure(grant, me, "temporary", exc)
        raise
    except ConfigurationError as exc:  # credentials removed from General Settings
        _release(grant, me)
        raise exc
    now = timezone.now()
    expires = now + dt.timedelta(seconds=int(token.get("expires_in", 3599)))
    stored = OAuthGrant.objects.filter(pk=grant.pk, version=grant.version).update(
        # Microsoft rotates the refresh token on every use: the new one must be stored.
        refresh_token=token.get("refresh_token") or grant.refresh_token,
        access_token=token["access_token"],
        access_expires_at=expires,
        version=F("version") + 1,
        refresh_lease_owner="",
        refresh_lease_until=None,
        refreshed_at=now,
        verified_at=now,
        status=OAuthGrant.Status.VALID,
        failure_class="",
        last_error="",
        last_error_code="",
        last_error_fix="",
        retry_after=None,
        consecutive_failures=0,
        alerted_at=None,
    )
    if stored != 1:
        # Our lease ran out and someone else changed the grant: their state wins, ours is
        # logged (without secrets) so an operator can see the race.
        log.warning(
            "grant %s changed during a refresh; keeping the other writer's tokens", grant.pk
        )
    log.info("refreshed the access token of %s (expires %s)", grant.mailbox, expires.isoformat())
    return str(token["access_token"])


def _release(grant: OAuthGrant, me: str) -> None:
    OAuthGrant.objects.filter(pk=grant.pk, refresh_lease_owner=me).update(
        refresh_lease_owner="", refresh_lease_until=None
    )


def _record_failure(grant: OAuthGrant, me: str, failure_class: str, exc: Exception) -> None:
    explanation = getattr(exc, "explanation", None)
    fix = personalize(explanation.entry.fix, user=grant.mailbox) if explanation is not None else ""
    code = getattr(exc, "aadsts", None)
    now = timezone.now()
    fields: dict[str, Any] = {
        "refresh_lease_owner": "",
        "refresh_lease_until": None,
        "last_error": str(exc)[:2000],
        "last_error_code": f"AADSTS{code}" if code else "",
        "last_error_fix": fix,
        "failure_class": failure_class,
        "consecutive_failures": F("consecutive_failures") + 1,
    }
    if failure_class == "temporary":
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(grant.consecutive_failures, 10))
        retry = getattr(exc, "retry_after", None)
        delay = max(delay, float(retry)) if retry else delay
        fields["retry_after"] = now + dt.timedelta(seconds=delay * (0.8 + random.random() * 0.4))
    else:
        fields["status"] = OAuthGrant.Status.INVALID
    # Only while we still hold the lease on the version we refreshed: if our lease ran out
    # and another process rotated the tokens, its newer grant must not be marked broken.
    written = OAuthGrant.objects.filter(
        pk=grant.pk, version=grant.version, refresh_lease_owner=me
    ).update(**fields)
    log.warning(
        "token refresh failed for %s: %s (%s)", grant.mailbox, str(exc)[:300], failure_class
    )
    if not written:
        return
    if failure_class != "temporary":
        from konvergo.services.oauth import alerts

        transaction.on_commit(lambda: alerts.grant_invalid(grant.pk))


def xoauth2(grant: OAuthGrant) -> str:
    """The SASL XOAUTH2 string for ``grant``'s mailbox: user=<mailbox>^Aauth=Bearer <token>^A^A."""
    return endpoints.xoauth2_string(grant.mailbox, access_token(grant))


def record_use(
    grant: OAuthGrant | int,
    ok: bool,
    error: str = "",
    fix: str = "",
    *,
    token_digest: str | None = None,
) -> None:
    """Transports report whether Exchange accepted the token, so the tag shows verified health.

    A refusal with ``token_digest`` (:func:`konvergo.transports.auth.token_digest` of the
    token sent) turns the grant red only while the grant still holds that token: a session
    that authenticated before a reconnect or a refresh must not mark the new tokens invalid.
    """
    pk = grant.pk if isinstance(grant, OAuthGrant) else grant
    if ok:
        OAuthGrant.objects.filter(pk=pk, status=OAuthGrant.Status.VALID).update(
            verified_at=timezone.now()
        )
        return
    grants = OAuthGrant.objects.filter(pk=pk)
    if token_digest is not None:
        current = grants.only("access_token", "version").first()
        if current is None or hashed_token(current.access_token) != token_digest:
            log.info("grant %s: a refusal of a token it no longer holds was ignored", pk)
            return
        grants = grants.filter(version=current.version)  # unless it moves on meanwhile
    grants.update(
        status=OAuthGrant.Status.INVALID,
        failure_class="authorization",
        last_error=error[:2000],
        last_error_fix=fix,
    )


def credentials_changed() -> int:
    """A new client secret was saved: grants broken by app credentials may try again.

    Entering a new secret needs no reconnect (the refresh token is bound to user and app,
    not to the secret), so those grants go back to VALID and refresh on next use.
    """
    return OAuthGrant.objects.filter(
        status=OAuthGrant.Status.INVALID, failure_class="configuration"
    ).update(status=OAuthGrant.Status.VALID, failure_class="", retry_after=None, access_token="")


def app_changed() -> int:
    """The Client ID changed: every connected grant belongs to the previous app."""
    return OAuthGrant.objects.exclude(status=OAuthGrant.Status.DISCONNECTED).update(
        status=OAuthGrant.Status.INVALID,
        failure_class="authorization",
        last_error="The Outlook Client ID changed in General Settings: this mailbox was "
        "connected through the previous app.",
        last_error_fix="Click 'Reconnect your Outlook account' on this server.",
        access_token="",
    )


def store_new_grant(
    *,
    grant: OAuthGrant | None,
    mailbox: str,
    scope: str,
    owner: Any,
    token: dict[str, Any],
    claims: dict[str, Any],
) -> OAuthGrant:
    """Create or replace a grant with freshly redeemed tokens (Connect just succeeded)."""
    now = timezone.now()
    values = {
        "provider": "microsoft",
        "mailbox": mailbox,
        "scope": scope,
        "owner": owner if getattr(owner, "pk", None) else None,
        "status": OAuthGrant.Status.VALID,
        "tenant_id": str(claims.get("tid", "")),
        "object_id": str(claims.get("oid", "")),
        "signed_in_as": str(claims.get("preferred_username", "")).lower(),
        "refresh_token": token.get("refresh_token", ""),
        "access_token": token["access_token"],
        "access_expires_at": now + dt.timedelta(seconds=int(token.get("expires_in", 3599))),
        "refreshed_at": now,
        "verified_at": now,
        "failure_class": "",
        "last_error": "",
        "last_error_code": "",
        "last_error_fix": "",
        "retry_after": None,
        "consecutive_failures": 0,
        "alerted_at": None,
        "refresh_lease_owner": "",
        "refresh_lease_until": None,
    }
    if grant is None:
        return OAuthGrant.objects.create(**values)
    for key in ("refresh_lease_owner", "refresh_lease_until"):
        values.pop(key)
    # One UPDATE with F(): a refresher holding the lease on the old version then fails its
    # compare-and-swap instead of writing older tokens back.
    OAuthGrant.objects.filter(pk=grant.pk).update(**values, version=F("version") + 1)
    grant.refresh_from_db()
    return grant


def disconnect(grant: OAuthGrant) -> None:
    """Forget the tokens (Microsoft keeps the consent until the user removes the app)."""
    OAuthGrant.objects.filter(pk=grant.pk).update(
        refresh_token="",
        access_token="",
        access_expires_at=None,
        status=OAuthGrant.Status.DISCONNECTED,
        version=F("version") + 1,
    )
    grant.refresh_from_db()
