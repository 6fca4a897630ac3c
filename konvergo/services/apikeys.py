"""Per-user API keys: shown once at creation, stored only as a SHA-256 digest."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any

from django.utils import timezone

from konvergo.store.models import ApiKey, AuditEvent

PREFIX = "kvg_"
#: Writing last_used_at on every call would turn reads into writes; once a minute is enough.
TOUCH_EVERY = dt.timedelta(minutes=1)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create(user: Any, name: str) -> tuple[ApiKey, str]:
    """A new key for ``user``; the clear key is returned once and never stored."""
    key = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey.objects.create(
        user=user, name=name.strip() or "API key", prefix=key[:10], digest=_digest(key)
    )
    AuditEvent.record("apikey.created", row.prefix, name, actor=user)
    return row, key


def revoke(row: ApiKey, actor: Any) -> None:
    row.revoked = True
    row.save(update_fields=["revoked"])
    AuditEvent.record("apikey.revoked", row.prefix, row.name, actor=actor)


def user_for_key(key: str) -> Any:
    """The active user owning ``key``, or None (unknown, revoked, or user deactivated)."""
    if not key.startswith(PREFIX):
        return None
    row = (
        ApiKey.objects.select_related("user")
        .filter(digest=_digest(key), revoked=False, user__is_active=True)
        .first()
    )
    if row is None:
        return None
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
        ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
    return row.user
