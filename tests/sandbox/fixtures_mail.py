"""Fixtures that start the sandbox SMTP and IMAP servers (owned by the mail-server work).

``mail_validator`` is the token validator the mail servers ask: the sandbox identity
platform (``idp`` fixture, whose HTTP ``/introspect`` Dovecot uses); ``mail_world`` is the
identity platform's world, so a switch flipped in a test is seen by every server.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from konvergo.sandbox.idp import IdentityPlatform
from konvergo.sandbox.imap import DOVECOT, SandboxImap
from konvergo.sandbox.smtp import ExchangeSmtpServer
from konvergo.sandbox.tls import SandboxTLS
from konvergo.sandbox.world import World


def xoauth2(user: str, token: str) -> str:
    """The base64 SASL XOAUTH2 initial response (microsoft.md §1.13)."""
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def bulk_messages(to: str, count: int, sender: str = "bulk@external.test") -> list[bytes]:
    """``count`` small distinct messages, built by formatting (EmailMessage is ~1 ms each)."""
    return [
        (
            f"From: {sender}\r\nTo: {to}\r\nSubject: Bulk {i}\r\n"
            f"Message-ID: <bulk-{i}-{secrets.token_hex(4)}@external.test>\r\n"
            f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n\r\nMessage number {i}.\r\n"
        ).encode()
        for i in range(count)
    ]


def make_message(
    sender: str, to: str, subject: str = "Hello", body: str = "Hi there.\n", **headers: str
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{secrets.token_hex(8)}@sandbox.test>"
    for k, v in headers.items():
        msg[k.replace("_", "-")] = v
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


@pytest.fixture
def mail_world(world: World) -> World:
    """The identity platform's fresh world (tests flip switches on it; all servers see them)."""
    return world


@pytest.fixture(scope="session")
def sandbox_tls() -> Iterator[SandboxTLS]:
    directory = Path(tempfile.mkdtemp(prefix="konvergo-tls-"))
    yield SandboxTLS(directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def mail_validator(idp: IdentityPlatform) -> IdentityPlatform:
    """The token validator the mail servers ask: the sandbox identity platform."""
    return idp


@pytest.fixture
def smtp_server(
    mail_world: World, mail_validator: IdentityPlatform, sandbox_tls: SandboxTLS
) -> Iterator[ExchangeSmtpServer]:
    """The Exchange-like SMTP server alone (accepted mail is only recorded)."""
    server = ExchangeSmtpServer(mail_world, mail_validator, sandbox_tls, rate_delay=0.2).start()
    yield server
    server.stop()


@pytest.fixture
def imap_server(
    mail_world: World, mail_validator: IdentityPlatform, sandbox_tls: SandboxTLS
) -> Iterator[SandboxImap]:
    """Dovecot behind the Exchange IMAP front; ``imap_server.populate(upn, msgs)`` fills it."""
    if not Path(DOVECOT).exists():
        pytest.skip("Debian's Dovecot is not installed")
    # Not pytest's tmp_path: its parents are 0700 and Dovecot's mail user must traverse.
    workdir = Path(tempfile.mkdtemp(prefix="kv-imap-"))
    server = SandboxImap(mail_world, mail_validator, sandbox_tls, workdir).start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def mail_sandbox(
    mail_world: World,
    mail_validator: IdentityPlatform,
    sandbox_tls: SandboxTLS,
    imap_server: SandboxImap,
) -> Iterator[tuple[ExchangeSmtpServer, SandboxImap]]:
    """SMTP and IMAP wired together: mail sent to a sandbox mailbox appears in its INBOX."""
    server = ExchangeSmtpServer(
        mail_world, mail_validator, sandbox_tls, maildrop=imap_server.maildrop
    ).start()
    yield server, imap_server
    server.stop()
