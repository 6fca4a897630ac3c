"""The seed's "Setup in Konvergo ERP" section, clicked through in Chromium."""

from __future__ import annotations

from typing import Any

import pytest

from konvergo.services import parameters
from konvergo.store.models import MailSettings
from tests.browser.conftest import login

CLIENT_ID = "11111111-2222-4333-8444-555555555555"
SECRET = "sandbox~Secret.Value_1234567890"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_enters_outlook_credentials_and_sets_catchall_domain(
    page: Any, live_server: Any, admin_user: Any
) -> None:
    """An administrator ticks Custom Email Servers, saves the credentials, then sets a parameter."""
    base = live_server.url
    parameters.set_value("web.base.url", base)
    login(page, base, "root", "admin-pass-123")

    page.click("text=General Settings")
    assert not page.is_visible("text=Outlook Credentials")
    page.check("#id_custom_email_servers")
    assert page.is_visible("legend:has-text('Outlook Credentials')")
    page.fill("#id_outlook_client_id", CLIENT_ID)
    page.fill("#id_outlook_client_secret", SECRET)
    page.click("button:has-text('Save')")
    page.wait_for_selector("text=Settings saved.")

    page.reload()
    assert page.input_value("#id_outlook_client_id") == CLIENT_ID
    assert page.input_value("#id_outlook_client_secret") == ""
    assert "A client secret is set" in page.inner_text("#secret-state")
    assert SECRET not in page.content()
    assert page.inner_text("#redirect-uri") == f"{base}/microsoft_outlook/confirm"
    assert page.is_visible("a:has-text('Outgoing Email Servers')")
    assert page.is_visible("a:has-text('Incoming Mail Servers')")

    page.click("button:has-text('Activate the developer mode')")
    page.click("text=Parameters → System Parameters")
    page.fill("#id_key", "mail.catchall.domain")
    page.fill("#id_value", "example.com")
    page.click("#new-parameter button:has-text('Save')")
    page.wait_for_selector("text=Saved mail.catchall.domain.")
    assert parameters.get("mail.catchall.domain") == "example.com"
    settings = MailSettings.load()
    assert settings.outlook_client_id == CLIENT_ID and settings.outlook_client_secret == SECRET


def test_bad_client_id_is_explained_on_the_form_and_nothing_is_lost(
    page: Any, live_server: Any, admin_user: Any
) -> None:
    """A mistyped Client ID shows a message on the form; the saved credentials remain."""
    base = live_server.url
    settings = MailSettings.load()
    settings.custom_email_servers = True
    settings.outlook_client_id = CLIENT_ID
    settings.outlook_client_secret = SECRET
    settings.save()
    login(page, base, "root", "admin-pass-123")
    page.goto(f"{base}/settings/general")
    page.fill("#id_outlook_client_id", "john@example.com")
    page.click("button:has-text('Save')")
    assert page.is_visible("text=Application (client) ID, a GUID")
    assert MailSettings.load().outlook_client_id == CLIENT_ID
