"""General Settings: Custom Email Servers, the Outlook Credentials, and the redirect URI."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client

from konvergo.services import parameters
from konvergo.services.mailsettings import secret_expiry_warning
from konvergo.store.models import MailSettings

CLIENT_ID = "11111111-2222-4333-8444-555555555555"
SECRET = "sandbox~Secret.Value_1234567890"


def _save(client: Client, **fields: str) -> str:
    data = {"base_url": "http://127.0.0.1:8069", **fields}
    return client.post("/settings/general", data, follow=True).content.decode()


@pytest.mark.django_db
def test_credentials_are_kept_after_save(admin_client: Client) -> None:
    """Client ID and secret survive a save and a reload; the page says a secret is set."""
    _save(
        admin_client,
        custom_email_servers="on",
        outlook_client_id=CLIENT_ID,
        outlook_client_secret=SECRET,
    )
    page = admin_client.get("/settings/general").content.decode()
    assert CLIENT_ID in page and "A client secret is set" in page
    assert SECRET not in page


@pytest.mark.django_db
def test_empty_secret_field_keeps_the_stored_secret(admin_client: Client) -> None:
    """Saving with the Client Secret field empty keeps the secret that was set before."""
    _save(
        admin_client,
        custom_email_servers="on",
        outlook_client_id=CLIENT_ID,
        outlook_client_secret=SECRET,
    )
    _save(admin_client, custom_email_servers="on", outlook_client_id=CLIENT_ID)
    assert MailSettings.load().outlook_client_secret == SECRET


@pytest.mark.django_db
def test_secret_expiry_is_shown_next_to_secret_state(admin_client: Client) -> None:
    """The optional expiry date of the secret is shown with the 'secret set' state."""
    _save(
        admin_client,
        custom_email_servers="on",
        outlook_client_id=CLIENT_ID,
        outlook_client_secret=SECRET,
        outlook_client_secret_expires="2099-01-31",
    )
    assert "(expires 2099-01-31)" in admin_client.get("/settings/general").content.decode()


@pytest.mark.django_db
def test_redirect_uri_is_built_from_the_base_url(admin_client: Client) -> None:
    """The page shows <web.base.url>/microsoft_outlook/confirm to paste into Azure."""
    _save(admin_client, custom_email_servers="on", base_url="https://erp.example.com/")
    page = admin_client.get("/settings/general").content.decode()
    assert "https://erp.example.com/microsoft_outlook/confirm" in page


@pytest.mark.django_db
def test_links_to_server_lists_are_present(admin_client: Client) -> None:
    """The Outlook Credentials block links to Outgoing Email Servers and Incoming Mail Servers."""
    page = admin_client.get("/settings/general").content.decode()
    for label in (
        "Custom Email Servers",
        "Outlook Credentials",
        "Client ID",
        "Client Secret",
        "Outgoing Email Servers",
        "Incoming Mail Servers",
    ):
        assert label in page


@pytest.mark.django_db
def test_invalid_base_url_is_refused_and_nothing_is_lost(admin_client: Client) -> None:
    """A base URL with a path gets a clear message; the stored settings stay as they were."""
    _save(
        admin_client,
        custom_email_servers="on",
        outlook_client_id=CLIENT_ID,
        outlook_client_secret=SECRET,
    )
    page = _save(
        admin_client,
        custom_email_servers="on",
        outlook_client_id="",
        base_url="ftp://erp.example.com/odoo",
    )
    assert "base URL must look like" in page
    settings = MailSettings.load()
    assert settings.outlook_client_id == CLIENT_ID and settings.outlook_client_secret == SECRET
    assert parameters.base_url() == "http://127.0.0.1:8069"


@pytest.mark.django_db
def test_empty_client_id_with_a_secret_is_refused(admin_client: Client) -> None:
    """With Custom Email Servers on, a secret without a Client ID is refused with a message."""
    page = _save(admin_client, custom_email_servers="on", outlook_client_secret=SECRET)
    assert "Enter the Client ID" in page
    assert MailSettings.load().outlook_client_secret == ""


@pytest.mark.django_db
def test_ticking_custom_email_servers_alone_can_be_saved(admin_client: Client) -> None:
    """The seed's first step (tick the checkbox, Save) works before any credential is typed."""
    _save(admin_client, custom_email_servers="on")
    assert MailSettings.load().custom_email_servers is True


@pytest.mark.django_db
def test_email_address_as_client_id_is_explained(admin_client: Client) -> None:
    """Pasting an email address as Client ID (AADSTS700016 later) is refused with where to look."""
    page = _save(admin_client, custom_email_servers="on", outlook_client_id="g.schiavo@example.com")
    assert "Application (client) ID" in page


@pytest.mark.django_db
def test_secret_id_instead_of_value_is_explained(admin_client: Client) -> None:
    """Pasting the Secret ID (a GUID) instead of its Value (AADSTS7000215 later) is refused."""
    page = _save(
        admin_client,
        custom_email_servers="on",
        outlook_client_id=CLIENT_ID,
        outlook_client_secret="aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
    )
    assert "Secret ID" in page and MailSettings.load().outlook_client_secret == ""


@pytest.mark.django_db
def test_base_url_is_not_changed_by_logging_in_from_another_host(admin_user) -> None:  # type: ignore[no-untyped-def]
    """Logging in through another host name leaves web.base.url (and the redirect URI) alone."""
    parameters.set_value("web.base.url", "https://erp.example.com")
    client = Client(HTTP_HOST="localhost")
    client.post("/login", {"username": "root", "password": "admin-pass-123"})
    client.get("/settings/general")
    assert parameters.base_url() == "https://erp.example.com"


@pytest.mark.django_db
@pytest.mark.parametrize(("days_left", "warned"), [(45, False), (30, True), (3, True), (-1, True)])
def test_secret_expiry_warning_starts_30_days_before(days_left: int, warned: bool) -> None:
    """Administrators are warned from 30 days before the client secret expires, and after."""
    settings = MailSettings.load()
    settings.custom_email_servers = True
    settings.outlook_client_id = CLIENT_ID
    settings.outlook_client_secret = SECRET
    today = dt.date(2026, 11, 27)
    settings.outlook_client_secret_expires = today + dt.timedelta(days=days_left)
    settings.save()
    assert bool(secret_expiry_warning(today)) is warned


@pytest.mark.django_db
def test_expiring_secret_shows_a_banner_to_administrators(admin_client: Client) -> None:
    """A secret expiring in a few days puts a banner with the fix on every admin page."""
    _save(
        admin_client,
        custom_email_servers="on",
        outlook_client_id=CLIENT_ID,
        outlook_client_secret=SECRET,
        outlook_client_secret_expires=(dt.date.today() + dt.timedelta(days=5)).isoformat(),
    )
    assert "Certificates &amp; secrets" in admin_client.get("/").content.decode()


@pytest.mark.django_db
def test_page_warns_when_the_browser_is_not_at_the_base_url(admin_client: Client) -> None:
    """Using Konvergo at another address than web.base.url shows where Microsoft will return."""
    parameters.set_value("web.base.url", "http://127.0.0.1:8069")
    page = admin_client.get("/settings/general", HTTP_HOST="127.0.0.1:8269").content.decode()
    assert 'id="origin-mismatch"' in page and "http://127.0.0.1:8269" in page
    same = admin_client.get("/settings/general", HTTP_HOST="127.0.0.1:8069").content.decode()
    assert 'id="origin-mismatch"' not in same
