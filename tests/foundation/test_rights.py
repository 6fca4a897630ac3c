"""Rights are enforced on the server for every settings page and API call."""

from __future__ import annotations

import pytest
from django.test import Client

SETTINGS_PAGES = [
    ("get", "/settings/general"),
    ("post", "/settings/general"),
    ("post", "/settings/developer-mode"),
    ("get", "/settings/users"),
    ("get", "/settings/users/new"),
    ("post", "/settings/users/new"),
    ("get", "/settings/technical/parameters"),
    ("post", "/settings/technical/parameters"),
    ("get", "/settings/outgoing-servers"),
    ("get", "/settings/outgoing-servers/new"),
    ("post", "/settings/outgoing-servers/new"),
    ("get", "/settings/incoming-servers"),
    ("get", "/settings/incoming-servers/new"),
    ("post", "/settings/incoming-servers/new"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "url"), SETTINGS_PAGES)
def test_plain_user_gets_403_on_every_settings_url(
    user_client: Client, method: str, url: str
) -> None:
    """An Internal User is refused with 403 on each settings URL, whatever the menu shows."""
    assert getattr(user_client, method)(url).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "url"), SETTINGS_PAGES)
def test_anonymous_visitor_is_sent_to_login(method: str, url: str) -> None:
    """Someone not logged in is redirected to the login page instead of seeing settings."""
    response = getattr(Client(), method)(url)
    assert response.status_code == 302 and response["Location"].startswith("/login")


@pytest.mark.django_db
def test_plain_user_cannot_edit_another_user(user_client: Client, admin_user) -> None:  # type: ignore[no-untyped-def]
    """Editing a user (e.g. to promote oneself) is refused to an Internal User."""
    response = user_client.post(f"/settings/users/{admin_user.pk}", {"role": "admin"})
    assert response.status_code == 403


@pytest.mark.django_db
def test_api_parameters_are_admin_only(user_client: Client, admin_client: Client) -> None:
    """The System Parameters API answers 403 to a plain user and 200 to an administrator."""
    assert user_client.get("/api/v1/parameters").status_code == 403
    assert admin_client.get("/api/v1/parameters").status_code == 200


@pytest.mark.django_db
def test_api_requires_authentication() -> None:
    """An anonymous API call gets 401 with a JSON body, not a login page."""
    response = Client().get("/api/v1/me")
    assert response.status_code == 401 and response.json()["detail"]


@pytest.mark.django_db
def test_system_parameters_need_developer_mode(admin_client: Client) -> None:
    """Even an administrator sees System Parameters only once developer mode is on."""
    assert admin_client.get("/settings/technical/parameters").status_code == 403
    admin_client.post("/settings/developer-mode")
    assert admin_client.get("/settings/technical/parameters").status_code == 200


@pytest.mark.django_db
def test_openapi_document_is_served(admin_client: Client) -> None:
    """The API describes itself in an OpenAPI document."""
    response = admin_client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and "/api/v1/parameters" in response.json()["paths"]
