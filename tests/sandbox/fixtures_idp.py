"""Fixtures that start the sandbox identity platform (owned by the IdP work).

``world``: a fresh default sandbox world per test (tests may flip its switches).
``idp``: a started :class:`IdentityPlatform` on 127.0.0.1, stopped after the test.
``Browser``: drives the sign-in and consent pages with ``requests`` by parsing and posting
their HTML forms, the way a person clicks them.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests

from konvergo.sandbox import world as world_module
from konvergo.sandbox.idp import IdentityPlatform
from konvergo.sandbox.world import World

# Only the fixtures go to conftest's star import; tests import the helpers by name.
__all__ = ["idp", "world"]

#: The default world's apps: personal + work accounts, single tenant, work accounts only.
APP = "11111111-2222-4333-8444-555555555555"
SECRET = "sandbox~Secret.Value_1234567890"
SECRET_ID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
SINGLE_APP = "22222222-3333-4444-8555-666666666666"
SINGLE_SECRET = "single~Secret.Value_0987654321"
MULTI_APP = "44444444-5555-4666-8777-888888888888"
MULTI_SECRET = "multi~Secret.Value_1122334455"
TENANT = "4a1c6b2e-5f0d-4c7e-9a3b-2d8e1f6c0a11"
LOCKED_TENANT = "7d3e9f10-2b4c-4e5a-8f6d-1c2b3a4d5e66"
REDIRECT = "http://127.0.0.1:8069/microsoft_outlook/confirm"
SCOPES = "https://outlook.office.com/SMTP.Send offline_access openid profile"


@pytest.fixture
def world() -> World:
    return world_module.load()


@pytest.fixture
def idp(world: World) -> Iterator[IdentityPlatform]:
    platform = IdentityPlatform(world).start()
    try:
        yield platform
    finally:
        platform.stop()


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Form:
    """One HTML form: its action, field values, radio choices and submit buttons."""

    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    radios: dict[str, list[str]] = field(default_factory=dict)
    submits: list[tuple[str, str]] = field(default_factory=list)
    checkboxes: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.links: dict[str, str] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif tag == "a" and "id" in a:
            self.links[a["id"]] = a.get("href", "")
        elif tag == "input" and self.forms:
            form, kind, name = self.forms[-1], a.get("type", "text"), a.get("name", "")
            if kind == "submit":
                form.submits.append((name, a.get("value", "")))
            elif kind == "radio":
                form.radios.setdefault(name, []).append(a.get("value", ""))
                if "checked" in a:
                    form.fields[name] = a.get("value", "")
            elif kind == "checkbox":
                form.checkboxes[name] = a.get("value", "on")
            elif name:
                form.fields[name] = a.get("value", "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


class Browser:
    """A person at a browser: follows the platform's pages, stops at the app's redirect URI."""

    def __init__(self, idp: IdentityPlatform) -> None:
        self.idp = idp
        self.http = requests.Session()
        self.page: requests.Response | None = None

    # --- reading the current page -------------------------------------------------------------
    def _parsed(self) -> _FormParser:
        assert self.page is not None
        parser = _FormParser()
        parser.feed(self.page.text)
        return parser

    @property
    def forms(self) -> list[Form]:
        return self._parsed().forms

    @property
    def text(self) -> str:
        return " ".join(" ".join(self._parsed().text).split())

    def link(self, link_id: str) -> str:
        return self._parsed().links[link_id]

    @property
    def callback(self) -> dict[str, str]:
        """Query parameters of the redirect to the app (the page must be a redirect)."""
        assert self.page is not None and self.page.status_code == 302, self.page
        location = self.page.headers["Location"]
        assert location.startswith(REDIRECT.split("?")[0]) or "://" in location
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

    # --- acting --------------------------------------------------------------------------------
    def open(self, url: str) -> requests.Response:
        self.page = self.http.get(url, allow_redirects=False, timeout=10)
        return self.page

    def authorize(
        self, tenant: str = "common", client_id: str = APP, **params: str
    ) -> requests.Response:
        query = {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "response_mode": "query",
            "scope": SCOPES,
            "state": "st-" + secrets.token_hex(4),
            **params,
        }
        return self.open(self.idp.endpoint(tenant) + "authorize?" + urlencode(query))

    def submit(self, button: str | None = None, **values: str) -> requests.Response:
        """Post the page's first form with ``values`` filled in and ``button`` clicked."""
        form = self.forms[0]
        data = dict(form.fields)
        data.update(values)
        if button is not None:
            name = next(n for n, v in form.submits if v == button)
            data[name] = button
        assert self.page is not None
        url = urljoin(self.page.url, form.action)
        self.page = self.http.post(url, data=data, allow_redirects=False, timeout=10)
        return self.page

    def sign_in(self, upn: str, password: str = "sandbox") -> requests.Response:
        return self.submit("Sign in", login=upn, passwd=password)

    def consent(self, button: str = "Yes", **values: str) -> requests.Response:
        return self.submit(button, **values)

    def login_and_consent(
        self, upn: str = "john@example.com", tenant: str = "common", **params: str
    ) -> dict[str, str]:
        """The whole browser leg; returns the callback's query parameters."""
        self.authorize(tenant, login_hint=upn, **params)
        self.sign_in(upn)
        if self.page is not None and self.page.status_code == 200:
            self.consent("Yes")
        return self.callback


def token_request(
    idp: IdentityPlatform, tenant: str = "common", auth: Any = None, **form: str
) -> requests.Response:
    """POST the token endpoint, form-encoded, as the product does."""
    return requests.post(idp.endpoint(tenant) + "token", data=form, auth=auth, timeout=10)
