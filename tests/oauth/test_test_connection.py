"""Test Connection against the sandbox's Exchange: success, and failures explained."""

from __future__ import annotations

import pytest
from django.test import Client

from konvergo.sandbox.runner import Sandbox
from konvergo.services.servers import run_smtp_test
from konvergo.store.models import OutgoingServer
from tests.oauth.conftest import connect
from tests.support import use_sandbox_identity

pytestmark = pytest.mark.django_db(transaction=True)


def _connected(sandbox: Sandbox, client: Client, upn: str) -> OutgoingServer:
    use_sandbox_identity(sandbox)
    server = OutgoingServer.objects.create(
        name=upn,
        auth_type="outlook",
        smtp_host="127.0.0.1",
        smtp_port=sandbox.smtp.port,
        encryption="starttls",
        username=upn,
        from_filter=upn,
    )
    assert connect(client, sandbox.idp, server, upn).status_code == 302
    server.refresh_from_db()
    return server


def test_smtp_auth_disabled_is_explained_with_both_switches(
    ms365: Sandbox, admin_client: Client
) -> None:
    """535 5.7.139 shows Microsoft's text and where to switch Authenticated SMTP on."""
    sandbox = ms365
    server = _connected(sandbox, admin_client, "john@example.com")
    sandbox.world.mailboxes["john@example.com"].smtp_auth_enabled = False
    response = admin_client.post(f"/settings/outgoing-servers/{server.pk}/test", follow=True)
    page = response.content.decode()
    assert "535 5.7.139" in page and "SmtpClientAuthentication is disabled" in page
    assert "Authenticated SMTP" in page
    server.refresh_from_db()
    assert server.last_test_ok is False and "5.7.139" in server.last_test_message


def test_send_as_refusal_is_caught_only_by_a_real_test_email(
    ms365: Sandbox, admin_client: Client
) -> None:
    """Exchange refuses a From the mailbox may not use at end of DATA: the optional send sees it."""
    sandbox = ms365
    server = _connected(sandbox, admin_client, "nosendas@example.com")
    server.from_filter = "other@example.com"  # a sender this mailbox has no SendAs right for
    server.save()
    assert run_smtp_test(server).ok  # stops before the end of DATA: nothing to refuse yet
    outcome = run_smtp_test(server, send_to="jane@example.com")
    assert not outcome.ok and "SendAsDenied" in outcome.message
    assert "Send as" in outcome.fix or "SendAs" in outcome.fix


def test_token_refused_by_exchange_turns_the_tag_red_but_smtp_auth_off_does_not(
    ms365: Sandbox, admin_client: Client
) -> None:
    """A 535 5.7.3 marks the grant invalid; a 535 5.7.139 (a tenant switch) leaves it valid."""
    sandbox = ms365
    server = _connected(sandbox, admin_client, "john@example.com")
    sandbox.world.mailboxes["john@example.com"].smtp_auth_enabled = False
    assert not run_smtp_test(server).ok
    server.grant.refresh_from_db()  # type: ignore[union-attr]
    assert server.grant.status == "valid"  # type: ignore[union-attr]
    sandbox.world.mailboxes["john@example.com"].smtp_auth_enabled = None
    server.username = "jane@example.com"  # a token of john@ presented for jane@: 5.7.3
    assert not run_smtp_test(server).ok
    server.grant.refresh_from_db()  # type: ignore[union-attr]
    assert server.grant.status == "invalid"  # type: ignore[union-attr]
