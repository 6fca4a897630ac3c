"""System Parameters: validated keys and values, known defaults, derived addresses."""

from __future__ import annotations

import pytest
from django.test import Client

from konvergo.errors import ValidationFailed
from konvergo.services import parameters
from konvergo.store.models import SystemParameter


@pytest.mark.parametrize(
    "key", ["Mail.Default", "mail..from", "mail from", ".mail", "mail.", "é.x"]
)
def test_malformed_keys_are_refused(key: str) -> None:
    """Keys must be lower-case dotted words; anything else is refused with the expected form."""
    with pytest.raises(ValidationFailed, match="not a valid key"):
        parameters.clean_key(key)


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("https://erp.example.com/", "https://erp.example.com"),
        ("http://127.0.0.1:8069", "http://127.0.0.1:8069"),
        ("HTTPS://ERP.Example.com", "https://erp.example.com"),
    ],
)
def test_base_url_is_normalised(value: str, stored: str) -> None:
    """The base URL loses its trailing slash and has a lower-case host."""
    assert parameters.clean("web.base.url", value)[1] == stored


@pytest.mark.parametrize(
    "value", ["erp.example.com", "https://erp.example.com/odoo", "https://x/?a=1"]
)
def test_base_url_with_path_or_without_scheme_is_refused(value: str) -> None:
    """A base URL without scheme, or with a path or query, cannot build a stable redirect URI."""
    with pytest.raises(ValidationFailed):
        parameters.clean("web.base.url", value)


def test_catchall_domain_must_be_a_domain() -> None:
    """mail.catchall.domain refuses an address and accepts an IDNA domain."""
    with pytest.raises(ValidationFailed):
        parameters.clean("mail.catchall.domain", "notifications@example.com")
    assert parameters.clean("mail.catchall.domain", "Bücher.Example")[1] == "bücher.example"


def test_outlook_endpoint_must_be_https_outside_loopback() -> None:
    """The Microsoft endpoint is https, except a loopback sandbox; a trailing slash is added."""
    with pytest.raises(ValidationFailed):
        parameters.clean(
            "microsoft_outlook.endpoint", "http://login.example.com/common/oauth2/v2.0"
        )
    assert parameters.clean(
        "microsoft_outlook.endpoint", "http://127.0.0.1:9000/common/oauth2/v2.0"
    )[1].endswith("/v2.0/")


@pytest.mark.django_db
def test_notifications_address_joins_default_from_and_catchall_domain() -> None:
    """mail.default.from 'notifications' and domain example.com make notifications@example.com."""
    parameters.set_value("mail.catchall.domain", "example.com")
    assert parameters.notifications_address() == "notifications@example.com"
    parameters.set_value("mail.default.from", "Contact@Example.org")
    assert parameters.notifications_address() == "contact@example.org"


@pytest.mark.django_db
def test_known_keys_fall_back_to_their_defaults() -> None:
    """An unset known key reads as its default (e.g. the global Microsoft endpoint)."""
    assert parameters.get("microsoft_outlook.endpoint") == (
        "https://login.microsoftonline.com/common/oauth2/v2.0/"
    )


@pytest.mark.django_db
def test_page_refuses_malformed_key_and_keeps_existing_rows(dev_admin_client: Client) -> None:
    """A malformed key gets a message on the form; rows already saved are untouched."""
    SystemParameter.objects.create(key="mail.catchall.domain", value="example.com")
    page = dev_admin_client.post(
        "/settings/technical/parameters", {"key": "Bad Key", "value": "x"}
    ).content.decode()
    assert "not a valid key" in page
    assert list(SystemParameter.objects.values_list("key", "value")) == [
        ("mail.catchall.domain", "example.com")
    ]


@pytest.mark.django_db
def test_page_sets_and_edits_a_parameter(dev_admin_client: Client) -> None:
    """An administrator in developer mode adds a parameter, then edits its value."""
    dev_admin_client.post(
        "/settings/technical/parameters", {"key": "mail.catchall.domain", "value": "example.com"}
    )
    row = SystemParameter.objects.get(key="mail.catchall.domain")
    dev_admin_client.post(
        f"/settings/technical/parameters/{row.pk}", {"key": row.key, "value": "example.org"}
    )
    assert parameters.get("mail.catchall.domain") == "example.org"


@pytest.mark.django_db
def test_invalid_value_for_known_key_is_refused_on_the_page(dev_admin_client: Client) -> None:
    """A known key validates its value on the page, e.g. a domain for mail.catchall.domain."""
    page = dev_admin_client.post(
        "/settings/technical/parameters", {"key": "mail.catchall.domain", "value": "not a domain"}
    ).content.decode()
    assert "is not a domain" in page and not SystemParameter.objects.exists()


@pytest.mark.django_db
def test_api_refuses_invalid_value_with_the_field_named(admin_client: Client) -> None:
    """PUT /api/v1/parameters/<key> answers 400 naming the field for an invalid value."""
    response = admin_client.put(
        "/api/v1/parameters/web.base.url", {"value": "nope"}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["field"] == "web.base.url"
