"""Test and Confirm, Reset Confirmation: the precise reason and fix when Exchange refuses."""

from __future__ import annotations

import pytest

from konvergo.sandbox.idp import IdentityPlatform
from konvergo.services import intake
from konvergo.store.models import IncomingServer, OAuthGrant
from tests.intake.conftest import grant_for

pytestmark = pytest.mark.dovecot


def test_test_and_confirm_succeeds_with_a_token_from_the_identity_platform(
    outlook_server: IncomingServer,
) -> None:
    """A valid XOAUTH2 token opens every folder and confirms the server."""
    outlook_server.state = IncomingServer.State.DRAFT
    outlook_server.folders = "INBOX,Archive"
    outlook_server.save()
    result = intake.test_and_confirm(outlook_server)
    outlook_server.refresh_from_db()
    assert result.ok, result.message
    assert set(result.folders) == {"INBOX", "Archive"}
    assert outlook_server.state == IncomingServer.State.DONE and outlook_server.last_error == ""
    assert OAuthGrant.objects.get().verified_at is not None


def test_wrong_token_reports_no_authenticate_failed_with_the_fix(
    outlook_server: IncomingServer, idp: IdentityPlatform
) -> None:
    """A token Exchange does not know fails with its words and the reconnect advice."""
    outlook_server.state = IncomingServer.State.DRAFT
    outlook_server.save()
    OAuthGrant.objects.filter(pk=outlook_server.grant_id).update(access_token="EwBnot-a-token")
    result = intake.test_and_confirm(outlook_server)
    outlook_server.refresh_from_db()
    assert not result.ok
    assert "NO AUTHENTICATE failed." in result.message
    assert "Connect your Outlook account" in result.fix
    assert outlook_server.last_error == result.message
    assert outlook_server.last_error_fix == result.fix
    assert outlook_server.state == IncomingServer.State.DRAFT
    assert OAuthGrant.objects.get().status == OAuthGrant.Status.INVALID


def test_token_of_another_user_reports_authenticated_but_not_connected(
    outlook_server: IncomingServer, idp: IdentityPlatform
) -> None:
    """Jane's token for John's mailbox fails with "User is authenticated but not connected"."""
    outlook_server.grant = grant_for(idp, upn="jane@example.com")
    outlook_server.save()
    result = intake.test_and_confirm(outlook_server)
    assert not result.ok
    assert "BAD User is authenticated but not connected." in result.message
    assert "not with an admin account" in result.fix


def test_password_server_confirms_and_reset_confirmation_returns_to_draft(
    password_server: IncomingServer,
) -> None:
    """A password server confirms over plain loopback IMAP; Reset Confirmation undoes it."""
    password_server.state = IncomingServer.State.DRAFT
    password_server.save()
    assert intake.test_and_confirm(password_server).ok
    intake.reset_confirmation(password_server)
    password_server.refresh_from_db()
    assert password_server.state == IncomingServer.State.DRAFT


def test_missing_folder_is_named_in_the_error(password_server: IncomingServer) -> None:
    """A folder that does not exist is reported with the server's words and a settings fix."""
    password_server.folders = "INBOX,Nope"
    password_server.save()
    result = intake.test_and_confirm(password_server)
    assert not result.ok and "Nope" in result.message and "folder" in result.fix
