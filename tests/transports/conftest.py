"""Fixtures for the transport tests: a trustme CA, certificates, tokens and loopback servers."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from konvergo.transports.auth import PasswordAuth, XOAuth2Auth
from tests.transports.smtp_servers import CannedServer, Encryption, PipeliningServer, SmtpTestServer

USER = "alice@konvergo.test"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """The CA the client trusts (through a CA file; verification stays on)."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "konvergo-test-ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def server_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    return tls_ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture(scope="session")
def untrusted_cert() -> trustme.LeafCert:
    """A certificate for the right name from a CA the client has never heard of."""
    return trustme.CA().issue_cert("127.0.0.1", "localhost")


@pytest.fixture(scope="session")
def mismatched_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    """A certificate from the trusted CA, but for another host name."""
    return tls_ca.issue_cert("smtp.elsewhere.test")


@pytest.fixture(scope="session")
def token() -> str:
    """An access token as long as Microsoft's (1.5-3 KB), so line limits are exercised."""
    return "eyJ0eXAiOiJKV1QiLCJub25jZSI6" + secrets.token_urlsafe(1800)


@pytest.fixture
def xoauth2(token: str) -> XOAuth2Auth:
    return XOAuth2Auth(USER, lambda: token)


@pytest.fixture
def password() -> PasswordAuth:
    return PasswordAuth(USER, PASSWORD)


@pytest.fixture
def start_server(
    server_cert: trustme.LeafCert, token: str
) -> Iterator[Callable[..., SmtpTestServer]]:
    """Start aiosmtpd servers on 127.0.0.1 (stopped after the test)."""
    started: list[SmtpTestServer] = []

    def start(encryption: Encryption, **options: Any) -> SmtpTestServer:
        options.setdefault("cert", server_cert)
        options.setdefault("tokens", {token: USER})
        options.setdefault("passwords", {USER: PASSWORD})
        server = SmtpTestServer(encryption, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_canned() -> Iterator[Callable[..., CannedServer]]:
    """Start raw socket servers with a fixed greeting (stopped after the test)."""
    started: list[CannedServer] = []

    def start(greeting: bytes | None, **options: Any) -> CannedServer:
        server = CannedServer(greeting, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_scripted() -> Iterator[Callable[..., PipeliningServer]]:
    """Start scripted pipelining servers (stopped after the test); options as PipeliningServer's."""
    started: list[PipeliningServer] = []

    def start(*args: Any, **options: Any) -> PipeliningServer:
        server = PipeliningServer(*args, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
