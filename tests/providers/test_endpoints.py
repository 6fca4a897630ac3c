"""Microsoft endpoints, scopes, hosts and the XOAUTH2 string match research/microsoft.md."""

from __future__ import annotations

import pytest

from konvergo.providers.microsoft import endpoints
from konvergo.providers.microsoft.endpoints import (
    CLOUDS,
    DEFAULT_ENDPOINT,
    authorize_url,
    scope_for,
    token_url,
    xoauth2_b64,
    xoauth2_string,
)


def test_xoauth2_matches_microsofts_golden_vector() -> None:
    """The base64 string equals Microsoft's documented example (§1.13) byte for byte."""
    encoded = xoauth2_b64(
        "test@contoso.onmicrosoft.com", "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA"
    )

    assert encoded == (
        "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZw"
        "VUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ=="
    )


def test_xoauth2_string_uses_ctrl_a_separators() -> None:
    """The raw SASL string is user, auth=Bearer, and two closing ^A characters."""
    assert xoauth2_string("u@x.com", "tok") == "user=u@x.com\x01auth=Bearer tok\x01\x01"


@pytest.mark.parametrize(
    ("user", "token"), [("a\x01b@x.com", "t"), ("a@x.com", "t\r\n"), ("", "t")]
)
def test_xoauth2_refuses_control_characters_and_empty_values(user: str, token: str) -> None:
    """A username with ^A or a newline would inject SASL fields, so it is refused."""
    with pytest.raises(ValueError):
        xoauth2_string(user, token)


def test_default_endpoint_yields_microsofts_authorize_and_token_urls() -> None:
    """The default system parameter joins to the /common v2.0 endpoints (§1.1)."""
    assert DEFAULT_ENDPOINT == "https://login.microsoftonline.com/common/oauth2/v2.0/"
    assert authorize_url() == "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
    assert token_url() == "https://login.microsoftonline.com/common/oauth2/v2.0/token"


def test_endpoint_without_trailing_slash_keeps_the_v2_segment() -> None:
    """A hand-edited parameter without "/" still reaches v2.0, not the v1 endpoint."""
    base = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0"

    assert token_url(base) == base + "/token"
    assert authorize_url(base + "/") == base + "/authorize"


def test_empty_endpoint_is_refused() -> None:
    """An empty system parameter is a configuration error, not a relative URL."""
    with pytest.raises(ValueError, match=r"microsoft_outlook\.endpoint"):
        token_url("  ")


def test_scopes_use_the_outlook_resource_and_oidc_scopes() -> None:
    """Each server kind requests one Outlook resource plus offline_access openid profile."""
    assert scope_for("outgoing") == (
        "offline_access openid profile https://outlook.office.com/SMTP.Send"
    )
    assert scope_for("incoming") == (
        "offline_access openid profile https://outlook.office.com/IMAP.AccessAsUser.All"
    )
    assert endpoints.resource_scope("outgoing") == "https://outlook.office.com/SMTP.Send"


def test_unknown_server_kind_is_refused() -> None:
    """Only "outgoing" and "incoming" have a scope."""
    with pytest.raises(ValueError):
        scope_for("pop")  # type: ignore[arg-type]


def test_clouds_carry_the_hosts_of_the_research_table() -> None:
    """Global and GCC High hosts, ports and scope prefixes follow §4.1."""
    world = CLOUDS["global"]
    assert (world.smtp_host, world.smtp_port, world.smtp_encryption) == (
        "smtp.office365.com",
        587,
        "starttls",
    )
    assert (world.imap_host, world.imap_port) == ("outlook.office365.com", 993)
    assert CLOUDS["outlook_com"].smtp_host == "smtp-mail.outlook.com"
    assert scope_for("outgoing", cloud="gcc_high").endswith(
        "https://outlook.office365.us/SMTP.Send"
    )
    assert CLOUDS["gcc_high"].endpoint("contoso.us") == (
        "https://login.microsoftonline.us/contoso.us/oauth2/v2.0/"
    )
    assert not CLOUDS["china"].documented
