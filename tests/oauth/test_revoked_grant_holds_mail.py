"""A revoked grant holds mail instead of losing it, and a reconnect sends it."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from konvergo.sandbox.runner import Sandbox
from konvergo.services import outbox
from konvergo.store.models import OAuthGrant, OutboxItem, OutgoingServer
from tests.oauth.conftest import connect
from tests.support import use_sandbox_identity

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def notifications(ms365: Sandbox, admin_client: Client) -> OutgoingServer:
    """The seed's single notifications server, connected through the consent flow."""
    sandbox = ms365
    use_sandbox_identity(sandbox)
    server = OutgoingServer.objects.create(
        name="Notifications",
        auth_type="outlook",
        smtp_host="127.0.0.1",
        smtp_port=sandbox.smtp.port,
        encryption="starttls",
        username="notifications@example.com",
        from_filter="notifications@example.com",
    )
    assert (
        connect(admin_client, sandbox.idp, server, "notifications@example.com").status_code == 302
    )
    server.refresh_from_db()
    return server


def _queue(count: int) -> list[int]:
    return [
        outbox.enqueue(
            from_="John Doe <john@example.com>",
            to=[f"customer{i}@external.test"],
            subject=f"Order {i}",
            text="Thank you.",
        ).pk
        for i in range(count)
    ]


def test_revoked_grant_turns_red_holds_mail_and_reconnect_sends_it(
    ms365: Sandbox, notifications: OutgoingServer, admin_client: Client
) -> None:
    """Revoke at Microsoft → server red, mail held (not failed) → reconnect → all delivered."""
    sandbox = ms365
    ids = _queue(2)
    assert outbox.send_due(timeout=30) >= 2
    assert set(OutboxItem.objects.values_list("state", flat=True)) == {"sent"}
    delivered = {m.mail_from for m in sandbox.smtp.accepted}
    assert delivered == {"notifications@example.com"}  # the notifications fallback

    sandbox.idp.revoke_sessions("notifications@example.com")
    OAuthGrant.objects.update(access_expires_at=timezone.now() + dt.timedelta(seconds=30))
    held = _queue(3)
    outbox.send_due(timeout=30)
    states = dict(OutboxItem.objects.filter(pk__in=held).values_list("pk", "state"))
    assert set(states.values()) == {"held"}, states
    assert OutboxItem.objects.filter(pk__in=held, attempts__gt=0).count() == 0
    page = admin_client.get(f"/settings/outgoing-servers/{notifications.pk}").content.decode()
    assert "Outlook Token Invalid" in page

    before = len(sandbox.smtp.accepted)
    assert (
        connect(admin_client, sandbox.idp, notifications, "notifications@example.com").status_code
        == 302
    )
    outbox.send_due(timeout=30)
    assert set(OutboxItem.objects.filter(pk__in=held).values_list("state", flat=True)) == {"sent"}
    new = sandbox.smtp.accepted[before:]
    # The three held orders, plus the alert sent to the administrators about the grant.
    assert len(new) == 4
    alerts = [m for m in new if b"Action needed: Outlook Token Invalid" in m.raw]
    assert len(alerts) == 1 and alerts[0].rcpt_tos == ("root@example.com",)
    assert OutboxItem.objects.filter(pk__in=ids + held).count() == 5
