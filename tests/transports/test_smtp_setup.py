"""Settings an admin can get wrong, and servers that are not what the settings say."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from konvergo.errors import ConfigurationError, TemporaryTransportError
from konvergo.transports import smtp
from konvergo.transports.auth import PasswordAuth, XOAuth2Auth
from konvergo.transports.smtp import SmtpConnection, SmtpSettings
from tests.transports.smtp_servers import EXCHANGE_SEND_AS_DENIED, CannedServer, SmtpTestServer
from tests.transports.test_smtp import EXPECTED_CONTENT, MESSAGE, SENDER, TO, settings_for


def test_a_plain_loopback_relay_without_credentials_sends(
    start_server: Callable[..., SmtpTestServer],
) -> None:
    """Connection Encryption "none" works for a local relay that needs no login."""
    server = start_server("none", cert=None)
    with SmtpConnection(settings_for(server, None, "none")) as connection:
        connection.send(SENDER, [TO], MESSAGE)
    assert server.messages[0].content == EXPECTED_CONTENT


def test_credentials_are_never_sent_unencrypted_to_a_remote_host(xoauth2: XOAuth2Auth) -> None:
    """Encryption "none" with credentials to a non-loopback host is refused before connecting."""
    settings = SmtpSettings("smtp.example.test", 25, "none", xoauth2)
    with pytest.raises(ConfigurationError, match="unencrypted") as caught:
        SmtpConnection(settings).open()
    assert caught.value.stage == "connect"  # type: ignore[attr-defined]


def test_skipping_starttls_on_a_submission_port_says_to_check_connection_encryption(
    start_server: Callable[..., SmtpTestServer], password: PasswordAuth
) -> None:
    """Without STARTTLS the server offers no AUTH, and the error says which setting to fix."""
    server = start_server("starttls")
    with pytest.raises(ConfigurationError, match="Connection Encryption") as caught:
        SmtpConnection(settings_for(server, password, "none")).open()
    assert caught.value.stage == "auth"  # type: ignore[attr-defined]


def test_starttls_against_a_server_without_it_says_to_check_connection_encryption(
    start_server: Callable[..., SmtpTestServer], xoauth2: XOAuth2Auth, ca_file: Path
) -> None:
    """A server that does not offer STARTTLS is a configuration error, never a cleartext login."""
    server = start_server("none", cert=None)
    with pytest.raises(ConfigurationError, match="does not offer STARTTLS"):
        SmtpConnection(settings_for(server, xoauth2, "starttls"), cafile=ca_file).open()


def test_ssl_against_a_starttls_port_says_to_check_connection_encryption(
    start_server: Callable[..., SmtpTestServer], xoauth2: XOAuth2Auth, ca_file: Path
) -> None:
    """Implicit TLS against a plain greeting fails the handshake with advice on the setting."""
    server = start_server("starttls")
    with pytest.raises(ConfigurationError, match="Connection Encryption"):
        SmtpConnection(settings_for(server, xoauth2, "ssl"), cafile=ca_file).open()


def test_starttls_against_an_implicit_tls_port_times_out_with_advice(
    start_server: Callable[..., SmtpTestServer], xoauth2: XOAuth2Auth, ca_file: Path
) -> None:
    """Waiting for a greeting that an implicit-TLS port never sends suggests SSL/TLS."""
    server = start_server("ssl")
    settings = settings_for(server, xoauth2, "starttls", timeout=0.5)
    with pytest.raises(TemporaryTransportError, match="SSL/TLS"):
        SmtpConnection(settings, cafile=ca_file).open()


def test_a_421_greeting_is_temporary_with_the_exact_text(
    start_canned: Callable[..., CannedServer], xoauth2: XOAuth2Auth, ca_file: Path
) -> None:
    """A server too busy to talk (421 at the greeting) is a temporary error, quoted verbatim."""
    busy = start_canned(b"421 4.3.2 Service not available, closing transmission channel\r\n")
    with pytest.raises(TemporaryTransportError) as caught:
        SmtpConnection(settings_for(busy, xoauth2, "starttls"), cafile=ca_file).open()
    assert caught.value.stage == "connect"  # type: ignore[attr-defined]
    assert caught.value.reply_code == 421  # type: ignore[attr-defined]
    assert caught.value.reply_text == (  # type: ignore[attr-defined]
        "4.3.2 Service not available, closing transmission channel"
    )


def test_the_connection_test_carries_the_catalogue_advice_by_default(
    start_server: Callable[..., SmtpTestServer], xoauth2: XOAuth2Auth, ca_file: Path
) -> None:
    """Without an explain hook, a SendAs refusal comes with the catalogue's fix and class."""
    server = start_server("starttls")
    server.behaviour.data_reply = EXCHANGE_SEND_AS_DENIED
    result = smtp.test_connection(
        settings_for(server, xoauth2, "starttls"),
        "shared@konvergo.test",
        send_test_email=True,
        cafile=ca_file,
    )
    assert not result.ok
    assert result.explanation is not None and "Send As" in result.explanation
    assert result.failure_class == "configuration"


@pytest.mark.parametrize(
    ("field", "value"),
    [("encryption", "tls"), ("port", 0), ("port", 70000), ("timeout", 0), ("host", " smtp ")],
)
def test_settings_refuse_impossible_values(field: str, value: object) -> None:
    """An unknown encryption, a port out of range, a zero timeout or a padded host is refused."""
    values: dict[str, object] = {
        "host": "smtp.office365.com",
        "port": 587,
        "encryption": "starttls",
        "auth": None,
    }
    values[field] = value
    with pytest.raises(ConfigurationError):
        SmtpSettings(**values)  # type: ignore[arg-type]


def test_sending_to_nobody_is_a_programming_error(xoauth2: XOAuth2Auth) -> None:
    """send() with an empty recipient list raises ValueError before connecting."""
    connection = SmtpConnection(SmtpSettings("127.0.0.1", 25, "starttls", xoauth2))
    with pytest.raises(ValueError, match="recipient"):
        connection.send(SENDER, [], MESSAGE)
