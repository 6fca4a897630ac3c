"""The sandbox SMTP server answers like smtp.office365.com (microsoft.md §1.13-1.15, §5 D)."""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from konvergo.sandbox.idp import IdentityPlatform
from konvergo.sandbox.imap import parse_xoauth2
from konvergo.sandbox.smtp import ExchangeSmtpServer
from konvergo.sandbox.tls import SandboxTLS
from konvergo.sandbox.tokens import IMAP_SCOPE, SMTP_SCOPE
from konvergo.sandbox.world import World
from tests.sandbox.fixtures_mail import make_message, xoauth2

JOHN = "john@example.com"
DIAG = r"\[\S+\.outlook\.office365\.com \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [0-9A-F]{16}\]"


@contextmanager
def connect(
    server: ExchangeSmtpServer, tls: SandboxTLS, *, starttls: bool = True
) -> Iterator[smtplib.SMTP]:
    client = smtplib.SMTP("127.0.0.1", server.port, timeout=10)
    try:
        client.ehlo("client.test")
        if starttls:
            client.starttls(context=tls.client_context())
            client.ehlo("client.test")
        yield client
    finally:
        try:
            client.quit()
        except smtplib.SMTPException:
            client.close()


def auth(client: smtplib.SMTP, user: str, token: str) -> tuple[int, bytes]:
    return client.docmd("AUTH", "XOAUTH2 " + xoauth2(user, token))


def test_microsoft_golden_xoauth2_vector_parses_to_user_and_token() -> None:
    """The XOAUTH2 example from Microsoft's documentation decodes to its user and token."""
    vector = (
        "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0oz"
        "VmUwYmpMQldaV0NjbFJDM0VvQUEBAQ=="
    )
    assert parse_xoauth2(vector) == (
        "test@contoso.onmicrosoft.com",
        "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA",
    )
    assert (
        xoauth2("test@contoso.onmicrosoft.com", "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA")
        == vector
    )


def test_banner_and_ehlo_offer_auth_only_after_starttls(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS
) -> None:
    """The banner names the Microsoft ESMTP service and EHLO lists AUTH only inside TLS."""
    client = smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10)
    try:
        code, plain = client.ehlo("client.test")
        assert code == 250
        lines = plain.decode().splitlines()
        assert re.fullmatch(r"\S+\.outlook\.office365\.com Hello \[127\.0\.0\.1\]", lines[0])
        assert {
            "SIZE 157286400",
            "PIPELINING",
            "DSN",
            "ENHANCEDSTATUSCODES",
            "STARTTLS",
            "8BITMIME",
        } <= set(lines)
        assert not any(line.startswith("AUTH") for line in lines)
        assert client.docmd("AUTH", "XOAUTH2")[0] == 504
        assert client.starttls(context=sandbox_tls.client_context()) == (
            220,
            b"2.0.0 SMTP server ready",
        )
        secure = client.ehlo("client.test")[1].decode().splitlines()
        assert "AUTH LOGIN XOAUTH2" in secure
        assert "STARTTLS" not in secure
    finally:
        client.close()


def test_banner_text_is_exchange_service_ready(smtp_server: ExchangeSmtpServer) -> None:
    """The 220 greeting reads '<host> Microsoft ESMTP MAIL Service ready at <RFC 5322 date>'."""
    with socket.create_connection(("127.0.0.1", smtp_server.port), timeout=5) as sock:
        banner = sock.recv(512).decode()
    assert re.fullmatch(
        r"220 \S+\.outlook\.office365\.com Microsoft ESMTP MAIL Service ready at "
        r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n",
        banner,
    )


def test_xoauth2_inline_initial_response_with_real_sized_token_authenticates(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """AUTH XOAUTH2 with the initial response inline (over 512 octets) gets 235 2.7.0."""
    token = mail_validator.mint_access_token(JOHN)
    assert len(xoauth2(JOHN, token)) > 2000
    with connect(smtp_server, sandbox_tls) as client:
        assert auth(client, JOHN, token) == (235, b"2.7.0 Authentication successful")


def test_xoauth2_after_334_continuation_authenticates(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """AUTH XOAUTH2 without initial response is answered '334 ' and then accepts the token."""
    token = mail_validator.mint_access_token(JOHN)
    with connect(smtp_server, sandbox_tls) as client:
        sasl = f"user={JOHN}\x01auth=Bearer {token}\x01\x01"
        code, text = client.auth("XOAUTH2", lambda challenge=None: sasl, initial_response_ok=False)
        assert (code, text) == (235, b"2.7.0 Authentication successful")


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_basic_auth_mechanisms_are_refused_with_5_7_139(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mechanism: str
) -> None:
    """A password login (LOGIN or PLAIN) is refused: basic authentication is disabled."""
    with connect(smtp_server, sandbox_tls) as client:
        client.user, client.password = JOHN, "sandbox"
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            client.auth(mechanism, getattr(client, "auth_" + mechanism.lower()))
    assert err.value.smtp_code == 535
    assert re.fullmatch(
        r"5\.7\.139 Authentication unsuccessful, basic authentication is disabled\. " + DIAG,
        err.value.smtp_error.decode(),
    )


def test_password_login_with_smtplib_login_is_refused(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS
) -> None:
    """smtplib.login() (AUTH LOGIN with user name and password) ends in 535 5.7.139."""
    with (
        connect(smtp_server, sandbox_tls) as client,
        pytest.raises(smtplib.SMTPAuthenticationError) as err,
    ):
        client.login(JOHN, "sandbox")
    assert err.value.smtp_error.startswith(
        b"5.7.139 Authentication unsuccessful, basic authentication"
    )


SMTP_AUTH_DISABLED = (
    r"5\.7\.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant\. "
    r"Visit https://aka\.ms/smtp_auth_disabled for more information\. " + DIAG
)


def test_tenant_with_smtp_auth_disabled_refuses_a_valid_token(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """A mailbox of a tenant with SMTP AUTH off gets 535 5.7.139 SmtpClientAuthentication..."""
    upn = "alice@locked.example.net"
    with connect(smtp_server, sandbox_tls) as client:
        code, text = auth(client, upn, mail_validator.mint_access_token(upn))
    assert code == 535
    assert re.fullmatch(SMTP_AUTH_DISABLED, text.decode())


def test_switch_is_checked_before_the_token(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS
) -> None:
    """Even a garbage token for a locked-tenant mailbox gets 5.7.139, not 5.7.3 (decision order)."""
    with connect(smtp_server, sandbox_tls) as client:
        code, text = auth(client, "alice@locked.example.net", "not-a-token")
    assert code == 535 and re.fullmatch(SMTP_AUTH_DISABLED, text.decode())


def test_mailbox_switch_overrides_the_tenant_switch(
    smtp_server: ExchangeSmtpServer,
    sandbox_tls: SandboxTLS,
    mail_validator: IdentityPlatform,
    mail_world: World,
) -> None:
    """The Authenticated SMTP setting of a mailbox overrides the tenant switch, both ways."""
    alice = mail_world.mailboxes["alice@locked.example.net"]
    alice.smtp_auth_enabled = True
    mail_world.mailboxes[JOHN].smtp_auth_enabled = False
    with connect(smtp_server, sandbox_tls) as client:
        assert auth(client, alice.upn, mail_validator.mint_access_token(alice.upn))[0] == 235
    with connect(smtp_server, sandbox_tls) as client:
        code, text = auth(client, JOHN, mail_validator.mint_access_token(JOHN))
    assert code == 535 and re.fullmatch(SMTP_AUTH_DISABLED, text.decode())


def _token_case(issuer: IdentityPlatform, case: str) -> tuple[str, str]:
    """(user=, token) for each way a token can be unacceptable to Exchange (E-23)."""
    if case == "expired":
        token = issuer.mint_access_token(JOHN, lifetime=60)
        issuer.advance_clock(61)
        return JOHN, token
    if case == "unknown":
        return JOHN, "EwB" + "x" * 1200
    if case == "graph_audience":
        return JOHN, issuer.mint_access_token(JOHN, audience="https://graph.microsoft.com")
    if case == "imap_only_scope":
        return JOHN, issuer.mint_access_token(JOHN, scopes={IMAP_SCOPE})
    if case == "other_mailbox_without_rights":
        return "jane@example.com", issuer.mint_access_token(JOHN, scopes={SMTP_SCOPE})
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["expired", "unknown", "graph_audience", "imap_only_scope", "other_mailbox_without_rights"],
)
def test_unacceptable_token_gets_535_5_7_3(
    smtp_server: ExchangeSmtpServer,
    sandbox_tls: SandboxTLS,
    mail_validator: IdentityPlatform,
    case: str,
) -> None:
    """Expired, unknown, wrong-audience, SMTP.Send-less or foreign-mailbox tokens get 535 5.7.3."""
    user, token = _token_case(mail_validator, case)
    with connect(smtp_server, sandbox_tls) as client:
        code, text = auth(client, user, token)
    assert code == 535
    assert re.fullmatch(r"5\.7\.3 Authentication unsuccessful " + DIAG, text.decode())


def test_malformed_xoauth2_string_gets_535_5_7_3(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS
) -> None:
    """A raw token instead of the SASL string is refused like a bad token."""
    with connect(smtp_server, sandbox_tls) as client:
        code, _ = client.docmd("AUTH", "XOAUTH2 " + base64.b64encode(b"just-a-token").decode())
    assert code == 535


def test_delegate_with_full_access_may_authenticate_as_shared_mailbox(
    smtp_server: ExchangeSmtpServer,
    sandbox_tls: SandboxTLS,
    mail_validator: IdentityPlatform,
    mail_world: World,
) -> None:
    """A user with FullAccess on a shared mailbox authenticates with user=<shared address>."""
    mail_world.mailboxes[JOHN].full_access.append("notifications@example.com")
    with connect(smtp_server, sandbox_tls) as client:
        code, _ = auth(client, "notifications@example.com", mail_validator.mint_access_token(JOHN))
    assert code == 235


def test_mail_from_without_auth_gets_530_5_7_57(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS
) -> None:
    """MAIL FROM before a successful AUTH (with or without TLS) gets 530 5.7.57."""
    expected = (530, b"5.7.57 Client not authenticated to send mail.")
    with connect(smtp_server, sandbox_tls, starttls=False) as client:
        assert client.mail(JOHN) == expected
    with connect(smtp_server, sandbox_tls) as client:
        assert auth(client, JOHN, "bad")[0] == 535
        assert client.mail(JOHN) == expected


def test_fourth_concurrent_session_of_a_mailbox_gets_432(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """Three sessions per mailbox are allowed; the fourth gets 432 4.3.2 until one ends."""
    token = mail_validator.mint_access_token(JOHN)
    clients = []
    try:
        for _ in range(3):
            cm = connect(smtp_server, sandbox_tls)
            client = cm.__enter__()
            clients.append(cm)
            assert auth(client, JOHN, token)[0] == 235
        with connect(smtp_server, sandbox_tls) as fourth:
            assert auth(fourth, JOHN, token) == (
                432,
                b"4.3.2 Concurrent connections limit exceeded.",
            )
        with connect(smtp_server, sandbox_tls) as other:
            assert (
                auth(
                    other, "jane@example.com", mail_validator.mint_access_token("jane@example.com")
                )[0]
                == 235
            )
        clients.pop().__exit__(None, None, None)
        deadline = time.monotonic() + 5
        while smtp_server.active_sessions(JOHN) > 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        with connect(smtp_server, sandbox_tls) as again:
            assert auth(again, JOHN, token)[0] == 235
    finally:
        for cm in clients:
            cm.__exit__(None, None, None)


SEND_AS_DENIED = (
    r"5\.2\.252 SendAsDenied; john@example\.com not allowed to send as {sender}; "
    r"STOREDRV\.Submission\.Exception:SendAsDeniedException\.MapiExceptionSendAsDenied; .+"
)


def test_header_from_without_send_as_is_refused_at_end_of_data(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """A From: header naming another mailbox gets 554 5.2.252 SendAsDenied after DATA."""
    with connect(smtp_server, sandbox_tls) as client:
        auth(client, JOHN, mail_validator.mint_access_token(JOHN))
        with pytest.raises(smtplib.SMTPDataError) as err:
            client.sendmail(
                JOHN, ["x@external.test"], make_message("boss@example.com", "x@external.test")
            )
    assert err.value.smtp_code == 554
    assert re.fullmatch(
        SEND_AS_DENIED.format(sender=r"boss@example\.com"), err.value.smtp_error.decode()
    )
    assert smtp_server.accepted == []


def test_envelope_sender_without_send_as_is_refused(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """An envelope MAIL FROM naming another address is refused even when the header is right."""
    with connect(smtp_server, sandbox_tls) as client:
        auth(client, JOHN, mail_validator.mint_access_token(JOHN))
        with pytest.raises(smtplib.SMTPDataError) as err:
            client.sendmail(
                "noreply@example.com", ["x@external.test"], make_message(JOHN, "x@external.test")
            )
    assert re.fullmatch(
        SEND_AS_DENIED.format(sender=r"noreply@example\.com"), err.value.smtp_error.decode()
    )


def test_send_as_grant_allows_other_from_and_mail_is_recorded(
    smtp_server: ExchangeSmtpServer,
    sandbox_tls: SandboxTLS,
    mail_validator: IdentityPlatform,
    mail_world: World,
) -> None:
    """With SendAs on the From address the message is queued and recorded with its submitter."""
    mail_world.mailboxes[JOHN].send_as.append("sales@example.com")
    raw = make_message("Sales <sales@example.com>", "x@external.test")
    with connect(smtp_server, sandbox_tls) as client:
        auth(client, JOHN, mail_validator.mint_access_token(JOHN))
        assert client.sendmail("sales@example.com", ["x@external.test"], raw) == {}
    [accepted] = smtp_server.accepted
    assert (accepted.mail_from, accepted.rcpt_tos, accepted.upn) == (
        "sales@example.com",
        ("x@external.test",),
        JOHN,
    )
    assert accepted.raw == raw


def test_more_than_30_messages_a_minute_are_delayed_and_counted(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """The 31st message in a minute is accepted late and counted; a minute later it is not."""
    raw = make_message(JOHN, "x@external.test")
    with connect(smtp_server, sandbox_tls) as client:
        auth(client, JOHN, mail_validator.mint_access_token(JOHN))
        for _ in range(30):
            client.sendmail(JOHN, ["x@external.test"], raw)
        assert smtp_server.rate_violations == 0
        started = time.monotonic()
        client.sendmail(JOHN, ["x@external.test"], raw)
        assert time.monotonic() - started >= smtp_server.rate_delay
        assert smtp_server.rate_violations == 1
        mail_validator.advance_clock(61)
        client.sendmail(JOHN, ["x@external.test"], raw)
        assert smtp_server.rate_violations == 1
    assert len(smtp_server.accepted) == 32


def test_daily_recipient_quota_refuses_with_submission_quota_exceeded(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """Past the rolling 24 h recipient quota a message gets 554 5.2.0 SubmissionQuotaExceeded."""
    smtp_server.recipients_per_day = 5
    rcpts = ["a@external.test", "b@external.test", "c@external.test"]
    with connect(smtp_server, sandbox_tls) as client:
        auth(client, JOHN, mail_validator.mint_access_token(JOHN))
        assert client.sendmail(JOHN, rcpts, make_message(JOHN, ", ".join(rcpts))) == {}
        with pytest.raises(smtplib.SMTPDataError) as err:
            client.sendmail(JOHN, rcpts, make_message(JOHN, ", ".join(rcpts)))
        assert err.value.smtp_code == 554
        assert err.value.smtp_error.startswith(
            b"5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException;"
        )
        mail_validator.advance_clock(86401)
        assert client.sendmail(JOHN, rcpts, make_message(JOHN, ", ".join(rcpts))) == {}


def test_message_over_the_size_limit_gets_552_5_3_4(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """Mail over the advertised SIZE gets 552 5.3.4, at MAIL (SIZE=) or at the end of DATA."""
    smtp_server.max_message_size = 10_000
    expected = (552, b"5.3.4 Message size exceeds fixed maximum message size")
    big = make_message(JOHN, "x@external.test", body=("y" * 70 + "\n") * 200)
    with connect(smtp_server, sandbox_tls) as client:
        assert "SIZE 10000" in client.ehlo_resp.decode().splitlines()
        auth(client, JOHN, mail_validator.mint_access_token(JOHN))
        with pytest.raises(smtplib.SMTPSenderRefused) as err:
            client.sendmail(JOHN, ["x@external.test"], big)
        assert (err.value.smtp_code, err.value.smtp_error) == expected
        assert client.mail(JOHN)[0] == 250
        assert client.rcpt("x@external.test")[0] == 250
        assert client.data(big) == expected


def test_recipient_past_the_per_message_limit_is_refused(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """RCPT beyond the per-message recipient limit gets 452 4.5.3 and the rest still go out."""
    smtp_server.recipients_per_message = 2
    rcpts = ["a@external.test", "b@external.test", "c@external.test"]
    with connect(smtp_server, sandbox_tls) as client:
        auth(client, JOHN, mail_validator.mint_access_token(JOHN))
        refused = client.sendmail(JOHN, rcpts, make_message(JOHN, "a@external.test"))
    assert refused == {"c@external.test": (452, b"4.5.3 Too many recipients")}
    assert smtp_server.accepted[0].rcpt_tos == ("a@external.test", "b@external.test")


def _bdat(client: smtplib.SMTP, sender: str, rcpt: str, message: bytes) -> tuple[int, bytes]:
    """MAIL, RCPT and one ``BDAT <size> LAST`` chunk in one write; the chunk's reply."""
    client.send(
        f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nBDAT {len(message)} LAST\r\n".encode()
        + message
    )
    assert client.getreply()[0] == 250 and client.getreply()[0] == 250
    return client.getreply()


def test_ehlo_offers_chunking_and_a_message_in_one_bdat_chunk_is_taken_as_is(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """As Exchange Online, CHUNKING is offered and a BDAT message arrives byte for byte."""
    message = make_message(JOHN, "x@external.test", body=".a line with a leading dot\n.\n")
    with connect(smtp_server, sandbox_tls) as client:
        assert "CHUNKING" in client.ehlo_resp.decode().splitlines()
        auth(client, JOHN, mail_validator.mint_access_token(JOHN))
        code, text = _bdat(client, JOHN, "x@external.test", message)
    assert code == 250 and text.startswith(b"2.0.0 OK")
    assert [m.raw for m in smtp_server.accepted] == [message]


def test_send_as_is_refused_at_the_last_chunk_and_rset_clears_it(
    smtp_server: ExchangeSmtpServer, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """A From: of another mailbox gets SendAsDenied at BDAT LAST, as at the end of DATA."""
    with connect(smtp_server, sandbox_tls) as client:
        auth(client, JOHN, mail_validator.mint_access_token(JOHN))
        code, text = _bdat(
            client, JOHN, "x@external.test", make_message("boss@example.com", "x@external.test")
        )
        assert code == 554
        assert re.fullmatch(SEND_AS_DENIED.format(sender=r"boss@example\.com"), text.decode())
        assert client.rset()[0] == 250
        code, _ = _bdat(client, JOHN, "x@external.test", make_message(JOHN, "x@external.test"))
    assert code == 250 and len(smtp_server.accepted) == 1
