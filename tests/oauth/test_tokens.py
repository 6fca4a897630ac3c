"""The token store: refresh before expiry, one refresh across processes, rotation, failures."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from konvergo.errors import AuthorizationError, ConfigurationError, TemporaryTransportError
from konvergo.sandbox.idp import IdentityPlatform
from konvergo.sandbox.world import World
from konvergo.services import parameters
from konvergo.services.oauth import keepalive, tokens
from konvergo.store.models import OAuthGrant, OutgoingServer
from konvergo.transports.auth import XOAuth2Auth
from tests.oauth.conftest import connect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def idp(world: World) -> Iterator[IdentityPlatform]:
    """A strictly rotating platform: a used refresh token is dead at once (no grace)."""
    platform = IdentityPlatform(world, refresh_grace_seconds=0).start()
    try:
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def grant(admin_client: Client, john_server: OutgoingServer, idp: IdentityPlatform) -> OAuthGrant:
    """John's mailbox connected through the real consent flow."""
    assert connect(admin_client, idp, john_server, "john@example.com").status_code == 302
    john_server.refresh_from_db()
    assert john_server.grant is not None
    return john_server.grant


def _expire_soon(grant: OAuthGrant, seconds: int = 60) -> None:
    OAuthGrant.objects.filter(pk=grant.pk).update(
        access_expires_at=timezone.now() + dt.timedelta(seconds=seconds)
    )


def test_fresh_token_is_reused_without_calling_microsoft(
    grant: OAuthGrant, idp: IdentityPlatform
) -> None:
    """A token with more than 5 minutes left is returned as is."""
    idp.reset_counters()
    assert tokens.access_token(grant) == grant.access_token
    assert idp.token_requests["refresh_token"] == 0


def test_token_is_refreshed_five_minutes_before_expiry_and_rotation_stored(
    grant: OAuthGrant, idp: IdentityPlatform
) -> None:
    """Within 5 minutes of expiry a refresh happens and the rotated refresh token is kept."""
    old_refresh, old_access, old_version = grant.refresh_token, grant.access_token, grant.version
    _expire_soon(grant, 240)
    new_access = tokens.access_token(grant)
    grant.refresh_from_db()
    assert new_access != old_access and grant.access_token == new_access
    assert grant.refresh_token != old_refresh and grant.version == old_version + 1
    assert idp.introspect(new_access).active
    # The stored (rotated) refresh token works; the old one is dead under strict rotation.
    _expire_soon(grant, 10)
    assert idp.introspect(tokens.access_token(grant)).active


def _database_url() -> str:
    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    return (
        f"postgresql://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"
    )


WORKER = """
import os, sys, time
import django
django.setup()
from konvergo.services.oauth import tokens
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
print(tokens.access_token(int(sys.argv[1])), flush=True)
"""


def test_eight_processes_at_expiry_cause_exactly_one_refresh(
    grant: OAuthGrant, idp: IdentityPlatform
) -> None:
    """8 worker processes needing a token at once make one refresh call and all get a token."""
    _expire_soon(grant, 30)
    idp.reset_counters()
    env = {
        **os.environ,
        "KONVERGO_DATABASE_URL": _database_url(),
        "DJANGO_SETTINGS_MODULE": "konvergo.conf.settings",
    }
    start = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(grant.pk), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=90) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    issued = {out.strip() for out, _ in outputs}
    assert idp.token_requests["refresh_token"] == 1
    assert len(issued) == 1 and idp.introspect(issued.pop()).active


def test_revoked_grant_turns_invalid_and_holds_with_the_reason(
    grant: OAuthGrant, idp: IdentityPlatform, admin_client: Client, john_server: OutgoingServer
) -> None:
    """Revoke sessions at Microsoft → AADSTS50173 → Outlook Token Invalid with the fix shown."""
    idp.revoke_sessions("john@example.com")
    _expire_soon(grant)
    with pytest.raises(AuthorizationError):
        tokens.access_token(grant)
    grant.refresh_from_db()
    assert grant.status == "invalid" and grant.failure_class == "authorization"
    assert grant.last_error_code == "AADSTS50173" and grant.last_error_fix
    idp.reset_counters()
    with pytest.raises(AuthorizationError):  # no retry storm against Microsoft (LoopDetected)
        tokens.access_token(grant)
    assert idp.token_requests["refresh_token"] == 0
    page = admin_client.get(f"/settings/outgoing-servers/{john_server.pk}").content.decode()
    assert "Outlook Token Invalid" in page and "Reconnect your Outlook account" in page


def test_unreachable_token_endpoint_is_temporary_with_backoff(
    grant: OAuthGrant, idp: IdentityPlatform
) -> None:
    """A dead token endpoint keeps the grant valid, sets a retry time, and raises temporary."""
    _expire_soon(grant)
    idp.stop()
    with pytest.raises(TemporaryTransportError):
        tokens.access_token(grant)
    grant.refresh_from_db()
    assert grant.status == "valid" and grant.retry_after is not None
    assert grant.retry_after > timezone.now()
    with pytest.raises(TemporaryTransportError, match="next try"):
        tokens.access_token(grant)


def test_expired_client_secret_needs_no_reconnect_once_replaced(
    grant: OAuthGrant, idp: IdentityPlatform, world: World, admin_client: Client
) -> None:
    """AADSTS7000222 marks a configuration problem; a new secret in General Settings heals it."""
    app = world.apps["11111111-2222-4333-8444-555555555555"]
    secret_id, secret, _ = app.secrets[0]
    app.secrets[0] = (secret_id, secret, dt.date(2020, 1, 1))
    _expire_soon(grant)
    with pytest.raises(AuthorizationError) as raised:
        tokens.access_token(grant)
    assert getattr(raised.value, "failure_class", "") == "configuration"
    with pytest.raises(ConfigurationError, match="Outlook Token Invalid"):
        tokens.access_token(grant)  # later callers learn an admin must act, without a call
    grant.refresh_from_db()
    assert grant.failure_class == "configuration" and grant.last_error_code == "AADSTS7000222"
    app.secrets.append(
        ("bbbbbbbb-cccc-4ddd-8eee-ffffffffffff", "new~Secret.Value_42", dt.date(2099, 1, 1))
    )
    admin_client.post(
        "/settings/general",
        {
            "custom_email_servers": "on",
            "base_url": parameters.base_url(),
            "outlook_client_id": app.client_id,
            "outlook_client_secret": "new~Secret.Value_42",
        },
    )
    assert idp.introspect(tokens.access_token(grant)).active


def test_idle_grants_are_refreshed_before_the_90_day_limit(
    grant: OAuthGrant, idp: IdentityPlatform
) -> None:
    """The keep-alive job refreshes a grant unused for 30 days, and only such grants."""
    idp.reset_counters()
    assert keepalive.keep_alive() == 0
    OAuthGrant.objects.filter(pk=grant.pk).update(
        refreshed_at=timezone.now() - dt.timedelta(days=31)
    )
    assert keepalive.keep_alive() == 1
    assert idp.token_requests["refresh_token"] == 1
    grant.refresh_from_db()
    assert grant.refreshed_at is not None and grant.refreshed_at > timezone.now() - dt.timedelta(
        minutes=1
    )


def test_tokens_never_reach_the_logs(grant: OAuthGrant, idp: IdentityPlatform, caplog: Any) -> None:
    """Refreshing logs what happened without the refresh or access token."""
    caplog.set_level(logging.DEBUG)
    _expire_soon(grant)
    access = tokens.access_token(grant)
    grant.refresh_from_db()
    for secret in (access, grant.refresh_token):
        assert secret not in caplog.text


def test_xoauth2_string_has_microsofts_format(grant: OAuthGrant) -> None:
    """The transports get user=<mailbox>^Aauth=Bearer <token>^A^A."""
    value = tokens.xoauth2(grant)
    assert value == f"user=john@example.com\x01auth=Bearer {grant.access_token}\x01\x01"


def test_stale_refresher_failure_does_not_break_a_newer_grant(
    grant: OAuthGrant, idp: IdentityPlatform
) -> None:
    """A refresh whose lease ran out and whose token was spent leaves the rotated grant valid."""
    _expire_soon(grant)
    stale = OAuthGrant.objects.get(pk=grant.pk)
    assert tokens._take_lease(stale, timezone.now())
    OAuthGrant.objects.filter(pk=grant.pk).update(  # the lease runs out...
        refresh_lease_until=timezone.now() - dt.timedelta(seconds=1)
    )
    fresh = tokens.access_token(grant)  # ...another process refreshes and rotates
    with pytest.raises(AuthorizationError):
        tokens._refresh(stale)  # the stale process spends the old refresh token
    grant.refresh_from_db()
    assert grant.status == "valid" and idp.introspect(fresh).active


def test_disconnect_during_a_refresh_is_not_undone(
    grant: OAuthGrant, idp: IdentityPlatform
) -> None:
    """Disconnect wins over a refresh that was already under way."""
    _expire_soon(grant)
    refreshing = OAuthGrant.objects.get(pk=grant.pk)
    assert tokens._take_lease(refreshing, timezone.now())
    tokens.disconnect(OAuthGrant.objects.get(pk=grant.pk))
    tokens._refresh(refreshing)
    grant.refresh_from_db()
    assert grant.status == "disconnected" and grant.refresh_token == ""


def test_changing_the_username_drops_the_grant(
    grant: OAuthGrant, admin_client: Client, john_server: OutgoingServer
) -> None:
    """A grant consented by john@ never authenticates as the mailbox typed in afterwards."""
    admin_client.post(
        f"/settings/outgoing-servers/{john_server.pk}",
        {
            "name": "John",
            "priority": "10",
            "from_filter": "jane@example.com",
            "auth_type": "outlook",
            "smtp_host": "127.0.0.1",
            "smtp_port": "587",
            "encryption": "starttls",
            "username": "jane@example.com",
            "active": "on",
            "max_sessions": "3",
            "messages_per_minute": "30",
        },
    )
    grant.refresh_from_db()
    assert grant.status == "disconnected" and grant.refresh_token == ""


def _authenticated(grant: OAuthGrant) -> XOAuth2Auth:
    """Credentials as an SMTP session holds them after sending the grant's current token."""
    auth = XOAuth2Auth("john@example.com", lambda: tokens.access_token(grant))
    auth.xoauth2_string()
    return auth


def _refused(grant: OAuthGrant, auth: XOAuth2Auth) -> None:
    """Exchange refused the token ``auth`` sent (535 5.7.3)."""
    tokens.record_use(
        grant.pk, False, "535 5.7.3 Authentication unsuccessful", token_digest=auth.token_digest
    )


def test_a_refusal_of_a_token_the_grant_no_longer_holds_leaves_it_valid(
    grant: OAuthGrant, idp: IdentityPlatform
) -> None:
    """A session that authenticated before a refresh cannot turn the refreshed grant red."""
    before = _authenticated(grant)
    tokens.access_token(grant, force_refresh=True)  # then the grant moves on
    _refused(grant, before)
    grant.refresh_from_db()
    assert grant.status == "valid"

    _refused(grant, _authenticated(grant))
    grant.refresh_from_db()
    assert grant.status == "invalid" and "5.7.3" in grant.last_error


def test_the_credentials_remember_a_digest_never_the_token(grant: OAuthGrant) -> None:
    """What a session keeps to name the refused token is its SHA-256, not the token."""
    assert XOAuth2Auth("john@example.com", lambda: "unused").token_digest is None
    auth = _authenticated(grant)
    token = OAuthGrant.objects.get(pk=grant.pk).access_token
    assert auth.token_digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(auth) and token not in repr(vars(auth))
