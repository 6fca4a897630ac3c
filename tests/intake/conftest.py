"""Intake fixtures: the sandbox's Dovecot behind the Exchange front, servers pointing at it.

The sandbox fixtures (identity platform, Dovecot, TLS) are reused as they are; this module
only adds Incoming Mail Server rows and the CA trust for the sandbox certificate.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from konvergo.config import reset_config
from konvergo.sandbox.idp import IdentityPlatform
from konvergo.sandbox.imap import SandboxImap
from konvergo.sandbox.tls import SandboxTLS
from konvergo.sandbox.tokens import IMAP_SCOPE
from konvergo.store.models import IncomingServer, OAuthGrant
from tests.sandbox.fixtures_idp import *  # noqa: F403
from tests.sandbox.fixtures_mail import *  # noqa: F403

MAILBOX = "john@example.com"


@pytest.fixture(autouse=True)
def trust_sandbox_ca(sandbox_tls: SandboxTLS, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The product trusts the sandbox CA the way an admin adds a private CA."""
    monkeypatch.setenv("KONVERGO_CA_BUNDLE", str(sandbox_tls.ca_file))
    reset_config()
    yield
    reset_config()


@pytest.fixture(autouse=True)
def no_idle_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker job fetches synchronously in tests (IDLE has its own tests)."""
    from konvergo.services import intake

    monkeypatch.setattr(intake, "IDLE_IN_WORKER", False)


def grant_for(idp: IdentityPlatform, upn: str = MAILBOX, token: str | None = None) -> OAuthGrant:
    """A connected grant whose stored access token was minted by the sandbox IdP."""
    return OAuthGrant.objects.create(
        mailbox=upn,
        scope=f"https://outlook.office.com/{IMAP_SCOPE}",
        refresh_token="sandbox-refresh-" + secrets.token_hex(8),
        access_token=token or idp.mint_access_token(upn, [IMAP_SCOPE]),
        access_expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )


@pytest.fixture
def outlook_server(db: None, imap_server: SandboxImap, idp: IdentityPlatform) -> IncomingServer:
    """A confirmed Outlook server (XOAUTH2 over implicit TLS) for john@example.com."""
    return IncomingServer.objects.create(
        name="John (Outlook)",
        server_type=IncomingServer.Type.OUTLOOK,
        host="127.0.0.1",
        port=imap_server.port,
        ssl=True,
        username=MAILBOX,
        grant=grant_for(idp),
        state=IncomingServer.State.DONE,
    )


@pytest.fixture
def password_server(db: None, imap_server: SandboxImap) -> IncomingServer:
    """A confirmed password server: Dovecot itself on loopback (plain IMAP, LOGIN)."""
    return IncomingServer.objects.create(
        name="John (password)",
        server_type=IncomingServer.Type.IMAP,
        host="127.0.0.1",
        port=imap_server.dovecot.port,
        ssl=False,
        username=MAILBOX,
        password=imap_server.dovecot.delegate_secret,
        state=IncomingServer.State.DONE,
    )


def message(
    subject: str = "Hello",
    sender: str = "alice@external.test",
    to: str = MAILBOX,
    body: str = "Hi there.\n",
    message_id: str | None = None,
    **headers: str,
) -> bytes:
    """One well-formed message; ``message_id=""`` leaves the header out."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Mon, 01 Jan 2024 10:00:00 +0000"
    if message_id != "":
        msg["Message-ID"] = message_id or f"<{secrets.token_hex(8)}@external.test>"
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def sized_messages(count: int, size: int = 10_000, to: str = MAILBOX) -> list[bytes]:
    """``count`` distinct messages of about ``size`` bytes, built by formatting (fast)."""
    line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * max(1, size // len(line))
    return [
        (
            f"From: Sender {i} <sender{i % 50}@external.test>\r\nTo: {to}\r\n"
            f"Subject: Message {i}\r\nMessage-ID: <m{i}-{secrets.token_hex(4)}@external.test>\r\n"
            f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n\r\n{body}"
        ).encode()
        for i in range(count)
    ]
