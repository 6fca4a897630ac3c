"""Fixtures that start the sandbox SMTP and IMAP servers (owned by the mail-server work).

``mail_validator`` is the token validator the mail servers ask: the real identity platform
(``idp`` fixture) once it exists, otherwise :class:`MiniTokenIssuer`, a small in-memory
issuer with the same minting/clock interface and a real HTTP ``/introspect`` for Dovecot.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from konvergo.sandbox import world as world_mod
from konvergo.sandbox.imap import DOVECOT, SandboxImap
from konvergo.sandbox.smtp import ExchangeSmtpServer
from konvergo.sandbox.tls import SandboxTLS
from konvergo.sandbox.tokens import IMAP_SCOPE, OUTLOOK_RESOURCE, SMTP_SCOPE, TokenInfo

OUTLOOK_SCOPES = frozenset({SMTP_SCOPE, IMAP_SCOPE})


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


class MiniTokenIssuer:
    """An in-memory TokenValidator with the identity platform's minting and clock interface."""

    def __init__(self) -> None:
        self._tokens: dict[str, TokenInfo] = {}
        self._offset = 0.0
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None
        self.base_url = ""

    def now(self) -> float:
        return time.time() + self._offset

    def advance_clock(self, seconds: float) -> None:
        self._offset += seconds

    def mint_access_token(
        self,
        upn: str,
        scopes: frozenset[str] | set[str] = OUTLOOK_SCOPES,
        client_id: str | None = None,
        lifetime: float | None = None,
        *,
        audience: str = OUTLOOK_RESOURCE,
    ) -> str:
        # Opaque, and as long as Microsoft's (1.5-3 KB) to exercise servers' line limits.
        token = "EwB" + secrets.token_urlsafe(1600)
        info = TokenInfo(
            active=True,
            upn=upn.lower(),
            audience=audience,
            scopes=frozenset(scopes),
            expires_at=self.now() + (3600 if lifetime is None else lifetime),
        )
        with self._lock:
            self._tokens[token] = info
        return token

    def introspect(self, token: str) -> TokenInfo:
        with self._lock:
            info = self._tokens.get(token)
        if info is None:
            return TokenInfo(active=False, reason="unknown")
        if self.now() >= info.expires_at:
            return TokenInfo(active=False, upn=info.upn, reason="expired")
        return info

    def start(self) -> MiniTokenIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                info = issuer.introspect(form.get("token", [""])[0])
                data: dict[str, Any] = {"active": info.active}
                if info.active:
                    data.update(
                        email=info.upn,
                        aud=info.audience,
                        scope=" ".join(sorted(info.scopes)),
                        exp=int(info.expires_at),
                    )
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._http.server_address[1]}"
        # A short poll interval: shutdown() waits for it at every test's teardown.
        threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()


@pytest.fixture
def mail_world() -> world_mod.World:
    """A fresh copy of the default sandbox world (tests flip switches on it)."""
    return world_mod.load()


@pytest.fixture(scope="session")
def sandbox_tls() -> Iterator[SandboxTLS]:
    directory = Path(tempfile.mkdtemp(prefix="konvergo-tls-"))
    yield SandboxTLS(directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def mail_validator() -> Iterator[MiniTokenIssuer]:
    issuer = MiniTokenIssuer().start()
    yield issuer
    issuer.stop()


@pytest.fixture
def smtp_server(
    mail_world: world_mod.World, mail_validator: MiniTokenIssuer, sandbox_tls: SandboxTLS
) -> Iterator[ExchangeSmtpServer]:
    """The Exchange-like SMTP server alone (accepted mail is only recorded)."""
    server = ExchangeSmtpServer(mail_world, mail_validator, sandbox_tls, rate_delay=0.2).start()
    yield server
    server.stop()


@pytest.fixture
def imap_server(
    mail_world: world_mod.World, mail_validator: MiniTokenIssuer, sandbox_tls: SandboxTLS
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
    mail_world: world_mod.World,
    mail_validator: MiniTokenIssuer,
    sandbox_tls: SandboxTLS,
    imap_server: SandboxImap,
) -> Iterator[tuple[ExchangeSmtpServer, SandboxImap]]:
    """SMTP and IMAP wired together: mail sent to a sandbox mailbox appears in its INBOX."""
    server = ExchangeSmtpServer(
        mail_world, mail_validator, sandbox_tls, maildrop=imap_server.maildrop
    ).start()
    yield server, imap_server
    server.stop()
