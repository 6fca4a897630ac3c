"""The SMTP transport against real aiosmtpd servers on 127.0.0.1 (trustme CA, TLS verified).

``SmtpTransportContract`` holds the behaviour every encryption mode must show; each
``TestOver*`` subclass runs it against a different server (STARTTLS on a submission port,
implicit TLS from the first byte).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trustme

from konvergo.config import reset_config
from konvergo.errors import (
    AuthorizationError,
    ConfigurationError,
    PermanentTransportError,
    TemporaryTransportError,
)
from konvergo.transports import smtp
from konvergo.transports.auth import PasswordAuth, XOAuth2Auth
from konvergo.transports.smtp import SmtpConnection, SmtpSettings
from tests.transports.conftest import PASSWORD, USER
from tests.transports.smtp_servers import (
    EXCHANGE_535,
    EXCHANGE_CONCURRENT,
    EXCHANGE_SEND_AS_DENIED,
    EXCHANGE_SMTP_AUTH_DISABLED,
    GMAIL_ERROR_CHALLENGE,
    CannedServer,
    Encryption,
    SmtpTestServer,
    dead_port,
)

SENDER = USER
TO = "bob@example.test"
MESSAGE = (
    b"From: alice@konvergo.test\n"
    b"To: bob@example.test\n"
    b"Subject: Invoice INV/2024/0001\n"
    b"\n"
    b"Dear Bob,\n"
    b".a line that starts with a dot\n"
    b"Regards\n"
)
EXPECTED_CONTENT = MESSAGE.replace(b"\n", b"\r\n")


def settings_for(
    server: SmtpTestServer | CannedServer,
    auth: PasswordAuth | XOAuth2Auth | None,
    encryption: Encryption,
    **overrides: Any,
) -> SmtpSettings:
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "encryption": encryption,
        "auth": auth,
        "timeout": 5,
        "local_hostname": "erp.konvergo.test",
    }
    values.update(overrides)
    return SmtpSettings(**values)


class SmtpTransportContract:
    """Behaviour shared by every encryption mode; subclasses choose the server."""

    encryption: ClassVar[Encryption]
    #: Whether the server offers PIPELINING (Exchange Online does).
    pipelining: ClassVar[bool] = False
    #: Whether it also offers CHUNKING, so messages go as BDAT (Exchange Online does).
    chunking: ClassVar[bool] = False
    #: Where a certificate problem shows: in the TLS handshake of connect, or of STARTTLS.
    tls_stage: ClassVar[str]

    @pytest.fixture
    def server(self, start_server: Callable[..., SmtpTestServer]) -> SmtpTestServer:
        return start_server(self.encryption, pipelining=self.pipelining, chunking=self.chunking)

    @pytest.fixture
    def connect(self, server: SmtpTestServer, ca_file: Path) -> Callable[..., SmtpConnection]:
        def make(auth: PasswordAuth | XOAuth2Auth | None, **overrides: Any) -> SmtpConnection:
            return SmtpConnection(
                settings_for(server, auth, self.encryption, **overrides), cafile=ca_file
            )

        return make

    # --- sending ---------------------------------------------------------------------------

    def test_sends_a_message_authenticated_with_xoauth2(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """A message sent after XOAUTH2 arrives once, from the authenticated mailbox."""
        with connect(xoauth2) as connection:
            result = connection.send(SENDER, [TO], MESSAGE)
        assert result.accepted == [TO]
        assert result.refused == {}
        assert result.reply.code == 250
        assert result.reply.text == "2.0.0 OK <queued@mx.konvergo.test>"
        [delivered] = server.messages
        assert (delivered.mail_from, delivered.rcpt_tos, delivered.user) == (SENDER, [TO], USER)

    def test_sends_a_message_authenticated_with_a_password(
        self,
        server: SmtpTestServer,
        connect: Callable[..., SmtpConnection],
        password: PasswordAuth,
    ) -> None:
        """A message sent after a password login arrives once."""
        with connect(password) as connection:
            connection.send(SENDER, [TO], MESSAGE)
        [delivered] = server.messages
        assert delivered.user == USER

    def test_sends_bare_line_feeds_as_crlf_and_keeps_lines_that_start_with_a_dot(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """Bare LFs reach the server as CRLF, and a leading dot survives dot-stuffing."""
        with connect(xoauth2) as connection:
            connection.send(SENDER, [TO], MESSAGE)
        assert server.messages[0].content == EXPECTED_CONTENT

    def test_reuses_one_connection_and_one_login_for_many_messages(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """Ten messages travel over a single connection that authenticated once."""
        with connect(xoauth2) as connection:
            for _ in range(10):
                connection.send(SENDER, [TO], MESSAGE)
        assert len(server.messages) == 10
        assert server.handler.connections == 1
        assert server.handler.successful_logins == 1

    def test_sends_the_token_inline_when_the_server_allows_long_lines(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """The XOAUTH2 response goes on the AUTH line itself, saving a round trip."""
        with connect(xoauth2):
            pass
        assert server.handler.auth_lines == ["inline"]

    def test_falls_back_to_the_334_prompt_when_the_auth_line_is_too_long(
        self,
        start_server: Callable[..., SmtpTestServer],
        ca_file: Path,
        xoauth2: XOAuth2Auth,
    ) -> None:
        """A server with RFC 5321 line limits still gets the token, after its 334 prompt."""
        server = start_server(self.encryption, command_limit=512)
        connection = SmtpConnection(settings_for(server, xoauth2, self.encryption), cafile=ca_file)
        with connection:
            connection.send(SENDER, [TO], MESSAGE)
        assert server.handler.auth_lines == ["prompted"]  # the inline line was refused (500)
        assert len(server.messages) == 1

    def test_declares_smtputf8_for_a_non_ascii_address_and_8bitmime_for_8bit_content(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """Internationalised addresses use SMTPUTF8 and 8-bit bodies use BODY=8BITMIME."""
        body = "Subject: Grüße\r\n\r\nMit freundlichen Grüßen\r\n".encode()
        with connect(xoauth2) as connection:
            connection.send(SENDER, ["jürgen@example.test"], body)
            connection.send(SENDER, [TO], body)
        utf8, eight_bit = server.messages
        assert utf8.smtp_utf8 and utf8.rcpt_tos == ["jürgen@example.test"]
        assert "BODY=8BITMIME" in eight_bit.mail_options and not eight_bit.smtp_utf8
        assert eight_bit.content == body

    # --- authentication failures -----------------------------------------------------------

    def test_rejected_token_raises_authorization_error_with_exchanges_exact_text(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection]
    ) -> None:
        """A 535 to XOAUTH2 raises AuthorizationError quoting the reply, and nothing is sent."""
        connection = connect(XOAuth2Auth(USER, lambda: "expired-or-foreign-token"))
        with pytest.raises(AuthorizationError) as caught:
            connection.send(SENDER, [TO], MESSAGE)
        error = caught.value
        assert isinstance(error, smtp.SmtpFailure)
        assert (error.stage, error.reply_code) == ("auth", 535)
        assert error.reply_text == EXCHANGE_535.removeprefix("535 ")
        assert EXCHANGE_535 in str(error)
        assert server.messages == [] and server.handler.data_started == 0
        assert not connection.is_open

    def test_smtp_auth_disabled_for_the_tenant_is_an_authorization_error_with_its_text(
        self,
        server: SmtpTestServer,
        connect: Callable[..., SmtpConnection],
        xoauth2: XOAuth2Auth,
    ) -> None:
        """Exchange's 535 5.7.139 reaches the caller verbatim as an AuthorizationError."""
        server.behaviour.auth_reply = EXCHANGE_SMTP_AUTH_DISABLED
        with pytest.raises(AuthorizationError) as caught, connect(xoauth2):
            pass
        assert caught.value.reply_text == EXCHANGE_SMTP_AUTH_DISABLED.removeprefix("535 ")

    def test_wrong_password_is_an_authorization_error(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection]
    ) -> None:
        """A refused password raises AuthorizationError with the server's reply."""
        with pytest.raises(AuthorizationError) as caught, connect(PasswordAuth(USER, "wrong")):
            pass
        assert caught.value.reply_code == 535
        assert caught.value.stage == "auth"

    def test_answers_an_error_challenge_with_an_empty_line_and_reports_the_final_reply(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection]
    ) -> None:
        """A 334 error challenge gets an empty answer, and the final 535 is what is raised."""
        server.behaviour.auth_error_challenge = GMAIL_ERROR_CHALLENGE
        with pytest.raises(AuthorizationError) as caught:
            connect(XOAuth2Auth(USER, lambda: "bad")).open()
        assert caught.value.reply_code == 535

    def test_a_token_store_failure_propagates_unchanged(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection]
    ) -> None:
        """An error raised by the token provider reaches the caller as it was raised."""
        revoked = AuthorizationError("The grant was revoked; reconnect the mailbox.")

        def provider() -> str:
            raise revoked

        with pytest.raises(AuthorizationError) as caught:
            connect(XOAuth2Auth(USER, provider)).open()
        assert caught.value is revoked

    # --- temporary and permanent failures --------------------------------------------------

    def test_421_at_mail_from_is_temporary_after_one_reconnect(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """A server that closes the channel (421) gets one fresh connection, then a retry later."""
        server.behaviour.mail_reply = "421 4.3.2 Service not available, closing channel"
        with pytest.raises(TemporaryTransportError) as caught, connect(xoauth2) as connection:
            connection.send(SENDER, [TO], MESSAGE)
        assert (caught.value.stage, caught.value.reply_code) == ("mail", 421)
        assert server.handler.connections == 2

    def test_concurrent_connection_limit_is_temporary_without_reconnecting(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """Exchange's 432 4.3.2 is retryable later; another connection would not help now."""
        server.behaviour.mail_reply = EXCHANGE_CONCURRENT
        with pytest.raises(TemporaryTransportError) as caught, connect(xoauth2) as connection:
            connection.send(SENDER, [TO], MESSAGE)
        assert caught.value.reply_text == EXCHANGE_CONCURRENT.removeprefix("432 ")
        assert server.handler.connections == 1

    def test_451_at_end_of_data_is_temporary_and_the_connection_stays_usable(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """A 451 after DATA is temporary, and the next message goes over the same connection."""
        with connect(xoauth2) as connection:
            server.behaviour.data_reply = "451 4.3.0 Mail server temporarily rejected message"
            with pytest.raises(TemporaryTransportError) as caught:
                connection.send(SENDER, [TO], MESSAGE)
            server.behaviour.data_reply = None
            connection.send(SENDER, [TO], MESSAGE)
        assert (caught.value.stage, caught.value.reply_code) == ("data", 451)
        assert len(server.messages) == 1
        assert server.handler.connections == 1

    def test_connection_dropped_during_data_is_temporary(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """A hang-up before the reply to DATA raises a temporary error at stage data."""
        server.behaviour.drop_in_data = True
        connection = connect(xoauth2)
        with pytest.raises(TemporaryTransportError) as caught:
            connection.send(SENDER, [TO], MESSAGE)
        assert caught.value.stage == "data"
        assert caught.value.reply_code is None
        assert not connection.is_open
        connection.close()

    def test_550_for_one_recipient_sends_to_the_others_and_lists_the_refused_one(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """A refused recipient is reported while the accepted ones still receive the message."""
        server.behaviour.rcpt_replies["nobody@example.test"] = "550 5.1.1 User unknown"
        with connect(xoauth2) as connection:
            result = connection.send(SENDER, [TO, "nobody@example.test"], MESSAGE)
        assert result.accepted == [TO]
        assert {k: str(v) for k, v in result.refused.items()} == {
            "nobody@example.test": "550 5.1.1 User unknown"
        }
        assert server.messages[0].rcpt_tos == [TO]

    def test_550_for_every_recipient_is_permanent_and_names_the_refused_recipients(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """When no recipient is accepted, a permanent error carries each refusal."""
        server.behaviour.rcpt_replies[TO] = "550 5.1.1 User unknown"
        with pytest.raises(PermanentTransportError) as caught, connect(xoauth2) as connection:
            connection.send(SENDER, [TO], MESSAGE)
        error = caught.value
        assert isinstance(error, smtp.SmtpFailure)
        assert error.stage == "rcpt"
        assert error.refused == {TO: (550, "5.1.1 User unknown")}
        assert TO in str(error)
        assert server.messages == []

    def test_send_as_denied_at_end_of_data_is_permanent_with_the_exact_text(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """Exchange's 554 5.2.0 SendAsDenied at the end of DATA is permanent and quoted."""
        server.behaviour.data_reply = EXCHANGE_SEND_AS_DENIED
        with pytest.raises(PermanentTransportError) as caught, connect(xoauth2) as connection:
            connection.send("shared@konvergo.test", [TO], MESSAGE)
        assert caught.value.reply_text == EXCHANGE_SEND_AS_DENIED.removeprefix("554 ")

    def test_reconnects_once_when_the_server_dropped_the_idle_connection(
        self, server: SmtpTestServer, connect: Callable[..., SmtpConnection], xoauth2: XOAuth2Auth
    ) -> None:
        """After the server hangs up between messages, the next send reconnects and succeeds."""
        with connect(xoauth2) as connection:
            connection.send(SENDER, [TO], MESSAGE)
            server.drop_connections()
            connection.send(SENDER, [TO], MESSAGE)
        assert len(server.messages) == 2
        assert server.handler.connections == 2

    # --- connecting ------------------------------------------------------------------------

    def test_a_dead_port_is_temporary_and_says_to_check_host_and_port(
        self, xoauth2: XOAuth2Auth, ca_file: Path
    ) -> None:
        """Connection refused raises a temporary error whose message names host and port."""
        settings = SmtpSettings("127.0.0.1", dead_port(), self.encryption, xoauth2, timeout=5)
        with pytest.raises(TemporaryTransportError) as caught:
            SmtpConnection(settings, cafile=ca_file).open()
        assert caught.value.stage == "connect"
        assert "Check the SMTP Server host and port" in str(caught.value)

    def test_a_server_that_never_answers_times_out_as_temporary(
        self, start_canned: Callable[..., CannedServer], xoauth2: XOAuth2Auth, ca_file: Path
    ) -> None:
        """A silent server raises a temporary error after the configured timeout."""
        silent = start_canned(None, close_after_greeting=False)
        settings = settings_for(silent, xoauth2, self.encryption, timeout=0.5)
        with pytest.raises(TemporaryTransportError) as caught:
            SmtpConnection(settings, cafile=ca_file).open()
        assert caught.value.stage == "connect"
        assert "did not answer in time" in str(caught.value)

    def test_a_certificate_from_an_untrusted_ca_is_refused_and_nothing_is_sent(
        self,
        start_server: Callable[..., SmtpTestServer],
        untrusted_cert: trustme.LeafCert,
        ca_file: Path,
        xoauth2: XOAuth2Auth,
    ) -> None:
        """An unknown CA fails verification; the token is never sent to that server."""
        server = start_server(self.encryption, cert=untrusted_cert)
        connection = SmtpConnection(settings_for(server, xoauth2, self.encryption), cafile=ca_file)
        with pytest.raises(ConfigurationError) as caught:
            connection.send(SENDER, [TO], MESSAGE)
        assert caught.value.stage == self.tls_stage  # type: ignore[attr-defined]
        assert "KONVERGO_CA_BUNDLE" in str(caught.value)
        assert server.handler.auth_lines == [] and server.messages == []

    def test_a_certificate_for_another_host_name_is_refused(
        self,
        start_server: Callable[..., SmtpTestServer],
        mismatched_cert: trustme.LeafCert,
        ca_file: Path,
        xoauth2: XOAuth2Auth,
    ) -> None:
        """A trusted certificate issued for another name fails the host name check."""
        server = start_server(self.encryption, cert=mismatched_cert)
        connection = SmtpConnection(settings_for(server, xoauth2, self.encryption), cafile=ca_file)
        with pytest.raises(ConfigurationError) as caught:
            connection.open()
        assert "127.0.0.1" in str(caught.value)
        assert server.handler.auth_lines == []

    def test_trusts_the_ca_named_by_konvergo_ca_bundle(
        self, server: SmtpTestServer, ca_file: Path, xoauth2: XOAuth2Auth, monkeypatch: Any
    ) -> None:
        """A private CA configured in KONVERGO_CA_BUNDLE is trusted without any other setting."""
        monkeypatch.setenv("KONVERGO_CA_BUNDLE", str(ca_file))
        reset_config()
        try:
            with SmtpConnection(settings_for(server, xoauth2, self.encryption)) as connection:
                connection.send(SENDER, [TO], MESSAGE)
        finally:
            monkeypatch.undo()
            reset_config()
        assert len(server.messages) == 1

    # --- test_connection -------------------------------------------------------------------

    def test_connection_test_succeeds_without_sending_anything(
        self, server: SmtpTestServer, ca_file: Path, xoauth2: XOAuth2Auth
    ) -> None:
        """The test goes through MAIL, RCPT and up to DATA's 354, then sends nothing."""
        result = smtp.test_connection(
            settings_for(server, xoauth2, self.encryption), SENDER, cafile=ca_file
        )
        assert result.ok and result.message == "Connection Test Successful!"
        assert not result.sent
        assert server.handler.data_started == 1
        assert server.messages == []

    def test_connection_test_with_a_test_email_sends_one_message_to_postmaster(
        self, server: SmtpTestServer, ca_file: Path, xoauth2: XOAuth2Auth
    ) -> None:
        """With send_test_email the server accepts one real message to postmaster@domain."""
        result = smtp.test_connection(
            settings_for(server, xoauth2, self.encryption),
            SENDER,
            send_test_email=True,
            cafile=ca_file,
        )
        assert result.ok and result.sent
        [delivered] = server.messages
        assert delivered.rcpt_tos == ["postmaster@konvergo.test"]
        assert b"Subject: Konvergo mail: connection test" in delivered.content

    def test_connection_test_catches_send_as_denied_only_when_sending_a_test_email(
        self, server: SmtpTestServer, ca_file: Path, xoauth2: XOAuth2Auth
    ) -> None:
        """A refusal at the end of DATA passes the dry test and fails the one that sends."""
        server.behaviour.data_reply = EXCHANGE_SEND_AS_DENIED
        settings = settings_for(server, xoauth2, self.encryption)
        dry = smtp.test_connection(settings, "shared@konvergo.test", cafile=ca_file)
        real = smtp.test_connection(
            settings, "shared@konvergo.test", send_test_email=True, cafile=ca_file
        )
        assert dry.ok
        assert not real.ok
        assert (real.stage, real.reply_code) == ("data", 554)
        assert EXCHANGE_SEND_AS_DENIED in real.message

    @pytest.mark.parametrize(
        ("switch", "value", "stage", "reply"),
        [
            ("auth_reply", EXCHANGE_535, "auth", EXCHANGE_535),
            (
                "mail_reply",
                "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
                "mail",
                "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
            ),
            (
                "rcpt_replies",
                {"postmaster@konvergo.test": "550 5.1.10 RESOLVER.ADR.RecipientNotFound"},
                "rcpt",
                "550 5.1.10 RESOLVER.ADR.RecipientNotFound",
            ),
            (
                "data_command_reply",
                "554 5.7.1 Message refused",
                "data",
                "554 5.7.1 Message refused",
            ),
        ],
        ids=["auth", "mail", "rcpt", "data"],
    )
    def test_connection_test_reports_the_failing_stage_and_the_exact_reply(
        self,
        server: SmtpTestServer,
        ca_file: Path,
        xoauth2: XOAuth2Auth,
        switch: str,
        value: object,
        stage: str,
        reply: str,
    ) -> None:
        """Each failing stage is named in the result with the server's reply verbatim."""
        setattr(server.behaviour, switch, value)
        result = smtp.test_connection(
            settings_for(server, xoauth2, self.encryption),
            SENDER,
            cafile=ca_file,
            explain=lambda text: None,
        )
        assert not result.ok
        assert result.stage == stage
        assert f"{result.reply_code} {result.reply_text}" == reply
        assert reply in result.message
        assert server.messages == []

    def test_connection_test_reports_an_unreachable_server_at_the_connect_stage(
        self, xoauth2: XOAuth2Auth, ca_file: Path
    ) -> None:
        """A dead port makes the test fail at connect with advice to check host and port."""
        settings = SmtpSettings("127.0.0.1", dead_port(), self.encryption, xoauth2, timeout=5)
        result = smtp.test_connection(settings, SENDER, cafile=ca_file)
        assert not result.ok and result.stage == "connect"
        assert "Check the SMTP Server host and port" in result.message

    def test_connection_test_reports_an_untrusted_certificate_at_the_tls_stage(
        self,
        start_server: Callable[..., SmtpTestServer],
        untrusted_cert: trustme.LeafCert,
        ca_file: Path,
        xoauth2: XOAuth2Auth,
    ) -> None:
        """A certificate from an unknown CA fails the test where TLS starts."""
        server = start_server(self.encryption, cert=untrusted_cert)
        result = smtp.test_connection(
            settings_for(server, xoauth2, self.encryption), SENDER, cafile=ca_file
        )
        assert not result.ok and result.stage == self.tls_stage
        assert "certificate" in result.message

    def test_connection_test_adds_the_catalogue_explanation_of_the_reply(
        self, server: SmtpTestServer, ca_file: Path, xoauth2: XOAuth2Auth
    ) -> None:
        """The explain hook receives the exact reply and its advice is in the result."""
        server.behaviour.auth_reply = EXCHANGE_SMTP_AUTH_DISABLED
        seen: list[str] = []

        def explain(text: str) -> str | None:
            seen.append(text)
            return "Enable Authenticated SMTP for the mailbox."

        result = smtp.test_connection(
            settings_for(server, xoauth2, self.encryption), SENDER, cafile=ca_file, explain=explain
        )
        assert seen == [EXCHANGE_SMTP_AUTH_DISABLED]
        assert result.explanation == "Enable Authenticated SMTP for the mailbox."

    # --- secrets ---------------------------------------------------------------------------

    def test_never_logs_or_prints_the_token_or_the_password(
        self,
        server: SmtpTestServer,
        connect: Callable[..., SmtpConnection],
        xoauth2: XOAuth2Auth,
        password: PasswordAuth,
        token: str,
        caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        """Neither the token, its XOAUTH2 string nor the password reaches logs or stderr."""
        caplog.set_level(logging.DEBUG)
        errors: list[str] = []
        for auth in (xoauth2, password):
            with connect(auth) as connection:
                connection.send(SENDER, [TO], MESSAGE)
        server.behaviour.auth_reply = EXCHANGE_535
        for auth in (xoauth2, password):
            try:
                connect(auth).open()
            except AuthorizationError as exc:
                errors.append(f"{exc} {exc!r} {getattr(exc, 'context', '')}")
        out, err = capfd.readouterr()
        everything = "\n".join([caplog.text, out, err, *errors, repr(xoauth2), repr(password)])
        assert "SMTP connected to" in caplog.text  # the logs were captured at all
        for secret in (token, xoauth2.initial_response(), PASSWORD):
            assert secret not in everything
            assert secret[:40] not in everything


class TestOverStartTls(SmtpTransportContract):
    """Submission port with STARTTLS, like smtp.office365.com:587."""

    encryption = "starttls"
    tls_stage = "starttls"


class TestOverStartTlsPipelined(SmtpTransportContract):
    """STARTTLS to a server that offers PIPELINING, as smtp.office365.com does."""

    encryption = "starttls"
    tls_stage = "starttls"
    pipelining = True


class TestOverStartTlsChunked(SmtpTransportContract):
    """STARTTLS to a server that offers PIPELINING and CHUNKING, as smtp.office365.com does."""

    encryption = "starttls"
    tls_stage = "starttls"
    pipelining = True
    chunking = True


class TestOverImplicitTls(SmtpTransportContract):
    """TLS from the first byte, like port 465."""

    encryption = "ssl"
    tls_stage = "connect"
