"""OAuth tests run against the sandbox identity platform, started per test on loopback."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from konvergo.sandbox.idp import IdentityPlatform
from konvergo.services import parameters
from konvergo.store.models import MailSettings, OutgoingServer
from tests.sandbox.fixtures_idp import APP, SECRET, Browser
from tests.sandbox.fixtures_idp import idp as idp
from tests.sandbox.fixtures_idp import world as world

BASE_URL = "http://127.0.0.1:8069"


@pytest.fixture
def outlook_configured(db: Any, idp: IdentityPlatform) -> IdentityPlatform:
    """General Settings and System Parameters pointing at the sandbox identity platform."""
    settings = MailSettings.load()
    settings.custom_email_servers = True
    settings.outlook_client_id = APP
    settings.outlook_client_secret = SECRET
    settings.save()
    parameters.set_value("web.base.url", BASE_URL)
    parameters.set_value("microsoft_outlook.endpoint", idp.endpoint("common"))
    return idp


@pytest.fixture
def john_server(db: Any, outlook_configured: IdentityPlatform) -> OutgoingServer:
    return OutgoingServer.objects.create(
        name="John",
        auth_type="outlook",
        smtp_host="127.0.0.1",
        smtp_port=587,
        username="john@example.com",
        from_filter="john@example.com",
    )


def start_connect(client: Client, server: OutgoingServer, kind: str = "outgoing") -> str:
    """Click 'Connect your Outlook account'; return Microsoft's authorize URL."""
    response = client.post(f"/microsoft_outlook/connect/{kind}/{server.pk}")
    assert response.status_code == 302, response.content[:500]
    return str(response["Location"])


def microsoft_leg(
    idp: IdentityPlatform, authorize_url: str, upn: str, button: str = "Yes"
) -> dict[str, str]:
    """What the person does at Microsoft: pick the account, sign in, answer the consent."""
    browser = Browser(idp)
    browser.open(authorize_url)
    browser.sign_in(upn)
    if browser.page is not None and browser.page.status_code == 200:
        browser.consent(button)
    assert browser.page is not None and browser.page.status_code == 302, browser.text
    location = browser.page.headers["Location"]
    assert location.startswith(f"{BASE_URL}/microsoft_outlook/confirm?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def confirm(client: Client, params: dict[str, str]) -> Any:
    return client.get("/microsoft_outlook/confirm", params)


def connect(client: Client, idp: IdentityPlatform, server: OutgoingServer, upn: str) -> Any:
    return confirm(client, microsoft_leg(idp, start_connect(client, server), upn))
