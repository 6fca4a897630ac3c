"""Helpers shared by test folders: the sandbox Microsoft 365, trusted and configured."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from konvergo import config as config_module
from konvergo.config import get_config
from konvergo.sandbox.runner import Sandbox
from konvergo.services import parameters
from konvergo.store.models import MailSettings

#: The redirect URI registered for the sandbox's default app (any loopback port matches).
SANDBOX_BASE_URL = "http://127.0.0.1:8069"


@contextmanager
def trusted_sandbox(monkeypatch: pytest.MonkeyPatch, **options: object) -> Iterator[Sandbox]:
    """A running sandbox whose CA Konvergo trusts, as KONVERGO_CA_BUNDLE would make it."""
    with Sandbox(**options) as running:  # type: ignore[arg-type]
        trusted = dataclasses.replace(get_config(), ca_bundle=running.tls.ca_file)
        monkeypatch.setattr(config_module, "_CONFIG", trusted)
        yield running


def use_sandbox_identity(sandbox: Sandbox, base_url: str = SANDBOX_BASE_URL) -> None:
    """General Settings and System Parameters as the seed page sets them, for the sandbox."""
    app = next(iter(sandbox.world.apps.values()))
    settings = MailSettings.load()
    settings.custom_email_servers = True
    settings.outlook_client_id = app.client_id
    settings.outlook_client_secret = app.secrets[0][1]
    settings.save()
    parameters.set_value("web.base.url", base_url)
    parameters.set_value("microsoft_outlook.endpoint", sandbox.idp.endpoint("common"))
    parameters.set_value("mail.catchall.domain", "example.com")
