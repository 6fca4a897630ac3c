"""Credentials: the XOAUTH2 string on the wire, and secrets kept out of reprs."""

from __future__ import annotations

import base64

import pytest

from konvergo.errors import ConfigurationError
from konvergo.transports.auth import PasswordAuth, XOAuth2Auth


def test_xoauth2_matches_microsofts_documented_example() -> None:
    """The base64 response equals the golden vector in Microsoft's XOAUTH2 documentation."""
    auth = XOAuth2Auth(
        "test@contoso.onmicrosoft.com", lambda: "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA"
    )
    assert auth.initial_response() == (
        "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0oz"
        "VmUwYmpMQldaV0NjbFJDM0VvQUEBAQ=="
    )


def test_xoauth2_string_is_user_ctrl_a_auth_bearer_token_ctrl_a_ctrl_a() -> None:
    """The clear text is user=<username>^Aauth=Bearer <token>^A^A."""
    auth = XOAuth2Auth("alice@konvergo.test", lambda: "tok.en-1")
    assert auth.xoauth2_string() == "user=alice@konvergo.test\x01auth=Bearer tok.en-1\x01\x01"
    assert base64.b64decode(auth.initial_response()).decode() == auth.xoauth2_string()


def test_xoauth2_asks_the_token_provider_every_time() -> None:
    """Each authentication uses the provider's current token, never a cached one."""
    tokens = iter(["first", "second"])
    auth = XOAuth2Auth("alice@konvergo.test", lambda: next(tokens))
    assert "Bearer first" in auth.xoauth2_string()
    assert "Bearer second" in auth.xoauth2_string()


@pytest.mark.parametrize("token", ["", "two words", "line\r\nbreak", "ctrl\x01a"])
def test_xoauth2_refuses_a_token_that_would_break_the_sasl_fields(token: str) -> None:
    """An empty token or one with spaces or control characters is a configuration error."""
    with pytest.raises(ConfigurationError):
        XOAuth2Auth("alice@konvergo.test", lambda: token).xoauth2_string()


def test_reprs_never_show_the_password_or_the_token_provider() -> None:
    """repr() (printed by tracebacks and debuggers) shows the user name only."""
    password = PasswordAuth("alice@konvergo.test", "hunter2-secret")
    xoauth2 = XOAuth2Auth("alice@konvergo.test", lambda: "secret-token")
    assert "hunter2-secret" not in repr(password)
    assert "lambda" not in repr(xoauth2) and "secret-token" not in repr(xoauth2)
    assert "alice@konvergo.test" in repr(password)
