"""The sandbox IMAP front answers like outlook.office365.com:993, with real Dovecot behind it."""

from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from konvergo.sandbox.idp import IdentityPlatform
from konvergo.sandbox.imap import REPLIES, SandboxImap
from konvergo.sandbox.smtp import ExchangeSmtpServer
from konvergo.sandbox.tls import SandboxTLS
from konvergo.sandbox.tokens import SMTP_SCOPE
from konvergo.sandbox.world import World
from tests.sandbox.fixtures_mail import bulk_messages, make_message, xoauth2

pytestmark = pytest.mark.dovecot

JOHN = "john@example.com"
JANE = "jane@example.com"


class RawImap:
    """A line-level IMAP client over verified TLS, to check Exchange's exact texts."""

    def __init__(self, port: int, tls: SandboxTLS) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")
        self.greeting = self.readline()

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def readline(self) -> str:
        return self.file.readline().decode().rstrip("\r\n")

    def command(self, tag: str, line: str) -> list[str]:
        """Send ``tag line`` and return every response line up to the tagged one."""
        self.send(f"{tag} {line}")
        lines = []
        while True:
            got = self.readline()
            lines.append(got)
            if got.startswith(tag + " ") or got == "":
                return lines

    def closed(self) -> bool:
        return self.file.read() == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextmanager
def raw_imap(server: SandboxImap, tls: SandboxTLS) -> Iterator[RawImap]:
    client = RawImap(server.port, tls)
    try:
        yield client
    finally:
        client.close()


def imap_login(server: SandboxImap, tls: SandboxTLS, user: str, token: str) -> imaplib.IMAP4_SSL:
    """imaplib's AUTHENTICATE (continuation form), as the product does it."""
    client = imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=tls.client_context())
    sasl = f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    client.authenticate("XOAUTH2", lambda challenge: sasl)
    return client


def test_greeting_and_capabilities_are_exchange_s(
    imap_server: SandboxImap, sandbox_tls: SandboxTLS
) -> None:
    """Implicit TLS greets with Exchange's banner and lists Exchange's pre-auth capabilities."""
    with raw_imap(imap_server, sandbox_tls) as imap:
        m = re.fullmatch(
            r"\* OK The Microsoft Exchange IMAP4 service is ready\. \[([A-Za-z0-9+/=]+)\]",
            imap.greeting,
        )
        assert m and base64.b64decode(m.group(1)).decode().endswith(".OUTLOOK.COM")
        assert imap.command("C01", "CAPABILITY") == [
            "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT "
            "CHILDREN IDLE NAMESPACE LITERAL+",
            "C01 OK CAPABILITY completed.",
        ]


def test_sasl_ir_authenticate_succeeds_through_dovecot_oauth2_passdb(
    imap_server: SandboxImap, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """SASL-IR AUTHENTICATE gets 'OK AUTHENTICATE completed.'; Dovecot logs an XOAUTH2 login."""
    token = mail_validator.mint_access_token(JOHN)
    with raw_imap(imap_server, sandbox_tls) as imap:
        assert imap.command("A01", "AUTHENTICATE XOAUTH2 " + xoauth2(JOHN, token)) == [
            "A01 OK AUTHENTICATE completed."
        ]
        assert imap.command("A02", "SELECT INBOX")[-1].startswith("A02 OK")
    log = imap_server.dovecot.log_path.read_text()
    assert f"Login: user=<{JOHN}>, method=XOAUTH2" in log


def test_continuation_authenticate_and_post_auth_capabilities_hide_condstore(
    imap_server: SandboxImap, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """imaplib's '+' continuation form works and CAPABILITY then shows Exchange's list only."""
    client = imap_login(imap_server, sandbox_tls, JOHN, mail_validator.mint_access_token(JOHN))
    try:
        typ, data = client.capability()
        assert typ == "OK"
        caps = data[0].decode().split()
        assert "MOVE" in caps and "IDLE" in caps and "CLIENTACCESSRULES" in caps
        assert "CONDSTORE" not in caps and "QRESYNC" not in caps
        folders = b"\n".join(client.list()[1])
        assert b'"Sent Items"' in folders and b"\\Sent" in folders
    finally:
        client.logout()


def _bad_token(issuer: IdentityPlatform, case: str) -> str:
    if case == "expired":
        token = issuer.mint_access_token(JOHN, lifetime=30)
        issuer.advance_clock(31)
        return token
    if case == "unknown":
        return "EwB" + "q" * 1500
    if case == "graph_audience":
        return issuer.mint_access_token(JOHN, audience="https://graph.microsoft.com")
    if case == "smtp_only_scope":
        return issuer.mint_access_token(JOHN, scopes={SMTP_SCOPE})
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["expired", "unknown", "graph_audience", "smtp_only_scope"])
def test_unacceptable_token_gets_no_authenticate_failed(
    imap_server: SandboxImap, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform, case: str
) -> None:
    """Expired, unknown, non-Outlook or IMAP-scope-less tokens get 'NO AUTHENTICATE failed.'."""
    token = _bad_token(mail_validator, case)
    with raw_imap(imap_server, sandbox_tls) as imap:
        assert imap.command("A01", "AUTHENTICATE XOAUTH2 " + xoauth2(JOHN, token)) == [
            "A01 NO AUTHENTICATE failed."
        ]


def test_imap_disabled_mailbox_gets_no_authenticate_failed(
    imap_server: SandboxImap,
    sandbox_tls: SandboxTLS,
    mail_validator: IdentityPlatform,
    mail_world: World,
) -> None:
    """A valid token for a mailbox with ImapEnabled off is refused (imaplib raises)."""
    mail_world.mailboxes[JOHN].imap_enabled = False
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATE failed"):
        imap_login(imap_server, sandbox_tls, JOHN, mail_validator.mint_access_token(JOHN))


def test_password_login_is_refused(imap_server: SandboxImap, sandbox_tls: SandboxTLS) -> None:
    """LOGIN with a password never succeeds (basic authentication is off)."""
    with raw_imap(imap_server, sandbox_tls) as imap:
        assert imap.command("A01", "LOGIN john@example.com sandbox") == ["A01 NO LOGIN failed."]


def test_token_of_another_user_is_authenticated_but_not_connected(
    imap_server: SandboxImap, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """user= a mailbox the token's owner cannot open: OK, then BAD not connected, BYE, close."""
    token = mail_validator.mint_access_token(JOHN)
    with raw_imap(imap_server, sandbox_tls) as imap:
        assert imap.command("A01", "AUTHENTICATE XOAUTH2 " + xoauth2(JANE, token)) == [
            "A01 OK AUTHENTICATE completed."
        ]
        imap.send("A02 SELECT INBOX")
        assert imap.readline() == "A02 BAD User is authenticated but not connected."
        assert imap.readline() == "* BYE Connection closed. 14"
        assert imap.closed()


def test_full_access_delegate_opens_the_shared_mailbox(
    imap_server: SandboxImap,
    sandbox_tls: SandboxTLS,
    mail_validator: IdentityPlatform,
    mail_world: World,
) -> None:
    """With FullAccess, user=<shared mailbox> and the delegate's token open the shared INBOX."""
    shared = "notifications@example.com"
    mail_world.mailboxes[JOHN].full_access.append(shared)
    imap_server.populate(shared, bulk_messages(shared, 3))
    client = imap_login(imap_server, sandbox_tls, shared, mail_validator.mint_access_token(JOHN))
    try:
        assert client.select("INBOX") == ("OK", [b"3"])
    finally:
        client.logout()


def test_session_gets_bye_when_its_token_expires_during_idle(
    imap_server: SandboxImap, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """An IDLE session is ended with '* BYE Session invalidated - AccessTokenExpired' at expiry."""
    token = mail_validator.mint_access_token(JOHN, lifetime=600)
    with raw_imap(imap_server, sandbox_tls) as imap:
        imap.command("A01", "AUTHENTICATE XOAUTH2 " + xoauth2(JOHN, token))
        imap.command("A02", "SELECT INBOX")
        imap.send("A03 IDLE")
        assert imap.readline().startswith("+")
        mail_validator.advance_clock(601)
        assert imap.readline() == "* BYE Session invalidated - AccessTokenExpired"
        assert imap.closed()


def test_first_command_after_expiry_gets_the_bye(
    imap_server: SandboxImap, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """A command sent after the token expired is not run; the session ends with the BYE."""
    token = mail_validator.mint_access_token(JOHN, lifetime=600)
    client = imap_login(imap_server, sandbox_tls, JOHN, token)
    client.select("INBOX")
    mail_validator.advance_clock(601)
    with pytest.raises(imaplib.IMAP4.abort, match="AccessTokenExpired"):
        client.noop()
    client.shutdown()


def test_throttled_mailbox_gets_exchange_backoff_reply(
    imap_server: SandboxImap, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """The throttle knob answers 'BAD Request is throttled. Suggested Backoff Time: <ms> ...'."""
    token = mail_validator.mint_access_token(JOHN)
    with raw_imap(imap_server, sandbox_tls) as imap:
        imap.command("A01", "AUTHENTICATE XOAUTH2 " + xoauth2(JOHN, token))
        imap_server.throttle(JOHN, 299961)
        assert imap.command("A02", "SELECT INBOX") == [
            "A02 BAD Request is throttled. Suggested Backoff Time: 299961 milliseconds"
        ]
        assert imap.closed()
    imap_server.unthrottle(JOHN)


def test_connections_beyond_the_per_mailbox_cap_are_not_connected(
    imap_server: SandboxImap, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """Past max_connections_per_mailbox a new session is authenticated but not connected."""
    imap_server.max_connections_per_mailbox = 2
    token = mail_validator.mint_access_token(JOHN)
    first = imap_login(imap_server, sandbox_tls, JOHN, token)
    second = imap_login(imap_server, sandbox_tls, JOHN, token)
    try:
        with raw_imap(imap_server, sandbox_tls) as third:
            third.command("A01", "AUTHENTICATE XOAUTH2 " + xoauth2(JOHN, token))
            assert third.command("A02", "NOOP")[0] == REPLIES["not_connected"].format(tag="A02")
    finally:
        first.logout()
        second.logout()


def test_populated_mailbox_is_fetched_by_uid_in_delivery_order(
    imap_server: SandboxImap, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """populate() puts 1,000 messages in a mailbox at once; UID FETCH returns them in order."""
    started = time.monotonic()
    imap_server.populate(JANE, bulk_messages(JANE, 1000))
    assert time.monotonic() - started < 2
    client = imap_login(imap_server, sandbox_tls, JANE, mail_validator.mint_access_token(JANE))
    try:
        assert client.select("INBOX", readonly=True) == ("OK", [b"1000"])
        _, data = client.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = [item[1].strip() for item in data if isinstance(item, tuple)]
        assert subjects[:2] == [b"Subject: Bulk 0", b"Subject: Bulk 1"]
        assert len(subjects) == 1000 and subjects[-1] == b"Subject: Bulk 999"
    finally:
        client.logout()


def test_reset_uidvalidity_gives_the_folder_a_new_uidvalidity(
    imap_server: SandboxImap, sandbox_tls: SandboxTLS, mail_validator: IdentityPlatform
) -> None:
    """reset_uidvalidity() ends open sessions and the next SELECT reports a new UIDVALIDITY."""
    imap_server.populate(JOHN, bulk_messages(JOHN, 3))
    token = mail_validator.mint_access_token(JOHN)
    client = imap_login(imap_server, sandbox_tls, JOHN, token)
    client.select("INBOX")
    old = int(client.response("UIDVALIDITY")[1][0])
    new = imap_server.reset_uidvalidity(JOHN)
    assert new != old
    with pytest.raises(imaplib.IMAP4.abort):
        client.noop()
    client.shutdown()
    client = imap_login(imap_server, sandbox_tls, JOHN, token)
    try:
        assert client.select("INBOX") == ("OK", [b"3"])
        assert int(client.response("UIDVALIDITY")[1][0]) == new
    finally:
        client.logout()


def test_mail_sent_over_smtp_is_read_back_over_imap(
    mail_sandbox: tuple[ExchangeSmtpServer, SandboxImap],
    sandbox_tls: SandboxTLS,
    mail_validator: IdentityPlatform,
) -> None:
    """Mail John submits to Jane arrives byte-for-byte in her INBOX and in his Sent Items."""
    smtp_server, imap_server = mail_sandbox
    raw = make_message(JOHN, f"Jane <{JANE}>, outsider@external.test", subject="Delivered")
    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        smtp.starttls(context=sandbox_tls.client_context())
        smtp.ehlo("client.test")
        smtp.docmd("AUTH", "XOAUTH2 " + xoauth2(JOHN, mail_validator.mint_access_token(JOHN)))
        assert smtp.sendmail(JOHN, [JANE, "outsider@external.test"], raw) == {}
    assert smtp_server.accepted[0].rcpt_tos == (JANE, "outsider@external.test")
    client = imap_login(imap_server, sandbox_tls, JANE, mail_validator.mint_access_token(JANE))
    try:
        assert client.select("INBOX") == ("OK", [b"1"])
        typ, data = client.uid("FETCH", "1", "(BODY.PEEK[])")
        assert typ == "OK" and isinstance(data[0], tuple)
        assert data[0][1] == raw
    finally:
        client.logout()
    sender = imap_login(imap_server, sandbox_tls, JOHN, mail_validator.mint_access_token(JOHN))
    try:
        assert sender.select('"Sent Items"', readonly=True) == ("OK", [b"1"])
    finally:
        sender.logout()


def test_whole_mail_sandbox_starts_quickly(
    mail_world: World, mail_validator: IdentityPlatform, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """CA, Dovecot with its proxy, and the SMTP server are all up in well under 3 seconds."""
    import shutil
    import tempfile
    from pathlib import Path

    started = time.monotonic()
    tls = SandboxTLS(tmp_path_factory.mktemp("tls"))
    workdir = Path(tempfile.mkdtemp(prefix="kv-imap-"))
    imap = SandboxImap(mail_world, mail_validator, tls, workdir).start()
    smtp = ExchangeSmtpServer(mail_world, mail_validator, tls, maildrop=imap.maildrop).start()
    try:
        elapsed = time.monotonic() - started
        assert elapsed < 3, elapsed
        ctx = ssl.create_default_context(cafile=str(tls.ca_file))
        with (
            socket.create_connection(("127.0.0.1", imap.port)) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            assert s.recv(100).startswith(b"* OK The Microsoft Exchange")
    finally:
        smtp.stop()
        imap.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_introspection_url_alone_is_enough_to_run_the_front(
    mail_world: World, mail_validator: IdentityPlatform, sandbox_tls: SandboxTLS
) -> None:
    """Given only the /introspect URL (IdP in another process), the front still authenticates."""
    import shutil
    import tempfile
    from pathlib import Path

    workdir = Path(tempfile.mkdtemp(prefix="kv-imap-"))
    url = mail_validator.base_url + "/introspect"
    with SandboxImap(mail_world, url, sandbox_tls, workdir) as imap:
        imap.populate(JOHN, bulk_messages(JOHN, 2))
        client = imap_login(imap, sandbox_tls, JOHN, mail_validator.mint_access_token(JOHN))
        try:
            assert client.select("INBOX") == ("OK", [b"2"])
        finally:
            client.logout()
        with raw_imap(imap, sandbox_tls) as raw:
            token = mail_validator.mint_access_token(JOHN, scopes={SMTP_SCOPE})
            assert raw.command("A01", "AUTHENTICATE XOAUTH2 " + xoauth2(JOHN, token)) == [
                "A01 NO AUTHENTICATE failed."
            ]
    shutil.rmtree(workdir, ignore_errors=True)
