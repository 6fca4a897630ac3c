"""Server forms: Outlook defaults, save-time checks with clear messages, write-only passwords."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from konvergo.store.models import IncomingServer, OutgoingServer

pytestmark = pytest.mark.django_db

OUTLOOK = {
    "name": "Notifications",
    "priority": "10",
    "from_filter": "",
    "auth_type": "outlook",
    "smtp_host": "",
    "smtp_port": "587",
    "encryption": "starttls",
    "username": "Notifications@Example.com",
    "active": "on",
    "max_sessions": "3",
    "messages_per_minute": "30",
}


def _save(client: Client, **changes: str) -> Any:
    return client.post("/settings/outgoing-servers/new", {**OUTLOOK, **changes})


def test_outlook_server_gets_defaults_and_filter_from_username(admin_client: Client) -> None:
    """An Outlook server gets smtp.office365.com and its FROM Filtering defaults to the mailbox."""
    assert _save(admin_client).status_code == 302
    server = OutgoingServer.objects.get()
    assert server.smtp_host == "smtp.office365.com" and server.smtp_port == 587
    assert server.username == "notifications@example.com"
    assert server.from_filter == "notifications@example.com"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"password": "secret"}, "Please leave the password field empty"),
        ({"encryption": "none"}, "TLS (STARTTLS)"),
        ({"username": "notifications"}, "your email address"),
        ({"from_filter": "*.example.com"}, "FROM Filtering"),
    ],
)
def test_inconsistent_outlook_server_is_refused_with_a_clear_message(
    admin_client: Client, changes: dict[str, str], message: str
) -> None:
    """Each of the cases users meet (odoo.md §5.2/5.4) is refused naming what to change."""
    page = _save(admin_client, **changes).content.decode()
    assert message in page and not OutgoingServer.objects.exists()


def test_password_is_write_only_and_kept_when_left_empty(admin_client: Client) -> None:
    """A password server's password never shows in the form and survives an empty save."""
    data = {
        **OUTLOOK,
        "auth_type": "login",
        "smtp_host": "mail.example.com",
        "username": "relay",
        "password": "Pa55word!",
        "from_filter": "example.com",
    }
    admin_client.post("/settings/outgoing-servers/new", data)
    server = OutgoingServer.objects.get()
    page = admin_client.get(f"/settings/outgoing-servers/{server.pk}").content.decode()
    assert "Pa55word!" not in page
    admin_client.post(f"/settings/outgoing-servers/{server.pk}", {**data, "password": ""})
    server.refresh_from_db()
    assert server.password == "Pa55word!"


def test_incoming_outlook_server_requires_ssl(admin_client: Client) -> None:
    """Outlook IMAP needs SSL/TLS; the form says so and saves nothing."""
    page = admin_client.post(
        "/settings/incoming-servers/new",
        {
            "name": "Inbox",
            "server_type": "outlook",
            "host": "outlook.office365.com",
            "port": "993",
            "username": "john@example.com",
            "folders": "INBOX",
            "create_record": "inbox",
            "active": "on",
            "poll_interval": "60",
        },
    ).content.decode()
    assert "SSL is required" in page and not IncomingServer.objects.exists()


def test_server_list_shows_filter_owner_token_and_last_test(admin_client: Client) -> None:
    """The list shows each server's filter, owner, token state and last test at a glance."""
    _save(admin_client)
    page = admin_client.get("/settings/outgoing-servers").content.decode()
    assert "notifications@example.com" in page and "Not connected" in page and "never" in page


def test_fetch_now_reports_a_sentence_not_a_data_dump(admin_client: Client) -> None:
    """Fetch Now answers in words (stored, duplicates), never with a Python repr."""
    from konvergo.web.views.incoming import _describe

    class Result:
        stored, duplicates, quarantined, error, fix = 3, 1, 0, "", ""

    ok, text = _describe(Result())
    assert ok and text == "Fetched 3 new message(s), 1 already stored."
    Result.error, Result.fix = "NO AUTHENTICATE failed.", "Reconnect"
    assert _describe(Result()) == (False, "NO AUTHENTICATE failed. — Fix: Reconnect")


def test_no_per_minute_limit_is_for_a_relay_of_your_own_not_for_outlook(
    admin_client: Client,
) -> None:
    """0 messages per minute means no limit on a password server; Outlook servers must count."""
    page = _save(admin_client, messages_per_minute="0").content.decode()
    assert "at least 1 for an Outlook server" in page and not OutgoingServer.objects.exists()
    relay = {
        "auth_type": "login",
        "smtp_host": "relay.example.com",
        "username": "relay",
        "password": "secret",
        "from_filter": "example.com",
        "messages_per_minute": "0",
    }
    assert _save(admin_client, **relay).status_code == 302
    assert OutgoingServer.objects.get().messages_per_minute == 0
