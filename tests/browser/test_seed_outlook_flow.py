"""The seed page end to end in Chromium against the sandbox: connect, tag, test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from konvergo.sandbox.runner import Sandbox
from konvergo.store.models import IncomingServer, OutgoingServer
from tests.browser.conftest import login

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
SCREENSHOTS.mkdir(parents=True, exist_ok=True)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _setup_credentials(page: Any, base: str, sandbox: Sandbox) -> None:
    app = next(iter(sandbox.world.apps.values()))
    page.goto(f"{base}/settings/general")
    page.check("#id_custom_email_servers")
    page.fill("#id_base_url", base)
    page.fill("#id_outlook_client_id", app.client_id)
    page.fill("#id_outlook_client_secret", app.secrets[0][1])
    page.click("#general-settings button:has-text('Save')")
    page.wait_for_selector("text=Settings saved.")
    page.click("button:has-text('Activate the developer mode')")
    page.goto(f"{base}/settings/technical/parameters")
    for key, value in (
        ("microsoft_outlook.endpoint", sandbox.idp.endpoint("common")),
        ("mail.catchall.domain", "example.com"),
    ):
        page.fill("#id_key", key)
        page.fill("#id_value", value)
        page.click("#new-parameter button:has-text('Save')")
        page.wait_for_selector(f"text=Saved {key}.")


def _consent_at_microsoft(page: Any, upn: str) -> None:
    page.click("#connect-outlook")
    page.wait_for_selector("text=Sign in")  # the sandbox's account picker
    page.check(f"input[name=login][value='{upn}']")
    page.fill("input[name=passwd]", "sandbox")
    page.click("input[value='Sign in']")
    page.wait_for_selector("text=Permissions requested")
    page.click("input[value='Yes']")


def test_outgoing_server_connects_shows_the_green_tag_and_passes_test_connection(
    page: Any, live_server: Any, admin_user: Any, ms365: Sandbox
) -> None:
    """General Settings → Outlook server → Connect → consent → green tag → Test Connection."""
    base, sandbox = live_server.url, ms365
    login(page, base, "root", "admin-pass-123")
    _setup_credentials(page, base, sandbox)

    # "On the General Settings page, under the Custom Email Servers setting, click the
    # Outgoing Email Servers link"
    page.goto(f"{base}/settings/general")
    page.click("#outlook-credentials >> text=Outgoing Email Servers")
    page.click("text=Create")
    page.fill("#id_name", "Notifications")
    page.check("input[name=auth_type][value=outlook]")
    assert page.input_value("#id_smtp_host") == "smtp.office365.com"
    assert page.input_value("#id_smtp_port") == "587"
    assert not page.is_visible("#id_password")
    page.fill("#id_smtp_host", "127.0.0.1")
    page.fill("#id_smtp_port", str(sandbox.smtp.port))
    page.fill("#id_username", "notifications@example.com")
    page.dispatch_event("#id_username", "change")
    assert page.input_value("#id_from_filter") == "notifications@example.com"
    page.click("#server-form button:has-text('Save')")
    page.wait_for_selector("text=Saved Notifications.")

    _consent_at_microsoft(page, "notifications@example.com")
    page.wait_for_selector("#token-tag")
    assert page.inner_text("#token-tag") == "Outlook Token Valid"
    assert "tag-ok" in (page.get_attribute("#token-tag", "class") or "")

    page.click("#test-connection button:has-text('Test Connection')")
    page.wait_for_selector("text=Connection Test Successful!")
    page.screenshot(path=str(SCREENSHOTS / "outgoing-server-connected.png"), full_page=True)
    server = OutgoingServer.objects.get()
    assert server.last_test_ok is True and server.grant is not None


def test_incoming_server_connects_and_is_confirmed(
    page: Any, live_server: Any, admin_user: Any, ms365: Sandbox
) -> None:
    """Incoming Mail Servers → Outlook OAuth → Connect → consent → tag → Test and Confirm."""
    base, sandbox = live_server.url, ms365
    login(page, base, "root", "admin-pass-123")
    _setup_credentials(page, base, sandbox)
    assert sandbox.imap is not None

    page.click("text=Email → Incoming Mail Servers")  # the seed: "in the Technical Menu"
    page.click("text=Create")
    page.fill("#id_name", "John's inbox")
    page.check("input[name=server_type][value=outlook]")
    assert page.input_value("#id_host") == "outlook.office365.com"
    page.fill("#id_host", "127.0.0.1")
    page.fill("#id_port", str(sandbox.imap.port))
    page.fill("#id_username", "john@example.com")
    page.click("#server-form button:has-text('Save')")
    page.wait_for_selector("text=Saved John's inbox.")

    _consent_at_microsoft(page, "john@example.com")
    page.wait_for_selector("#token-tag")
    assert page.inner_text("#token-tag") == "Outlook Token Valid"
    page.click("button:has-text('Test and Confirm')")
    page.wait_for_selector("#server-state:has-text('Confirmed')")
    assert IncomingServer.objects.get().state == "done"
