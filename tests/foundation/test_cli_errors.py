"""The CLI shows the same advice as the pages: explain and status."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from konvergo.store.models import OAuthGrant, OutboxItem, OutgoingServer


def test_explain_gives_cause_owner_and_portal_path() -> None:
    """`konvergo explain` maps an AADSTS code to who must act and where to click."""
    out = StringIO()
    call_command(
        "explain", "AADSTS700082: The refresh token has expired due to inactivity.", stdout=out
    )
    text = out.getvalue()
    assert "E-17" in text and "Who must act" in text and "Connect your Outlook account" in text


def test_explain_refuses_unknown_text() -> None:
    """An unknown text is not dressed up as advice."""
    with pytest.raises(CommandError, match="Not in the catalogue"):
        call_command("explain", "something odd happened")


@pytest.mark.django_db
def test_status_lists_invalid_grants_and_held_mail_with_fixes() -> None:
    """`konvergo status` shows a red grant's error and fix, and held mail with its fix."""
    grant = OAuthGrant.objects.create(
        mailbox="john@example.com",
        scope="x",
        status="invalid",
        last_error="AADSTS50173: The provided grant has expired",
        last_error_fix="Reconnect",
    )
    server = OutgoingServer.objects.create(
        name="John",
        auth_type="outlook",
        smtp_host="smtp.office365.com",
        username="john@example.com",
        grant=grant,
    )
    OutboxItem.objects.create(
        state="held",
        server=server,
        message_id="<a@b>",
        header_from="john@example.com",
        envelope_from="john@example.com",
        recipients=["c@d.test"],
        raw=b"x",
        last_reply="AADSTS50173",
        last_fix="Reconnect john@example.com",
    )
    out = StringIO()
    call_command("status", stdout=out)
    text = out.getvalue()
    assert "Outlook Token Invalid" in text and "AADSTS50173" in text
    assert "held 1" in text and "Reconnect john@example.com" in text
