"""`konvergo sandbox`: the whole stand-in starts fast and says what to type."""

from __future__ import annotations

import imaplib
import os
import smtplib
import subprocess
import sys
import time

import requests

from konvergo.sandbox.runner import Sandbox
from tests.sandbox.fixtures_mail import xoauth2


def test_whole_sandbox_starts_in_under_three_seconds_and_serves_all_three() -> None:
    """Identity platform, SMTP and IMAP are up within 3 s and answer on loopback."""
    started = time.monotonic()
    with Sandbox() as sandbox:
        elapsed = time.monotonic() - started
        assert elapsed < 3.0, elapsed
        discovery = requests.get(
            sandbox.idp.base_url + "/common/v2.0/.well-known/openid-configuration", timeout=5
        ).json()
        assert discovery["token_endpoint"].endswith("/oauth2/v2.0/token")
        token = sandbox.idp.mint_access_token("john@example.com")
        with smtplib.SMTP("127.0.0.1", sandbox.smtp.port, timeout=10) as smtp:
            smtp.starttls(context=sandbox.tls.client_context())
            smtp.ehlo()
            code, _ = smtp.docmd("AUTH", "XOAUTH2 " + xoauth2("john@example.com", token))
            assert code == 235
        assert sandbox.imap is not None
        imap = imaplib.IMAP4_SSL(
            "127.0.0.1", sandbox.imap.port, ssl_context=sandbox.tls.client_context()
        )
        try:
            # imaplib base64-encodes what the callback returns: hand it the clear string.
            raw = f"user=john@example.com\x01auth=Bearer {token}\x01\x01".encode()
            replies = iter([raw])
            typ, _ = imap.authenticate("XOAUTH2", lambda _: next(replies, b""))
            assert typ == "OK"
        finally:
            imap.logout()


def test_sandbox_command_prints_the_values_for_the_seed_page(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The command prints Client ID, secret, endpoint, hosts, ports and the CA to trust."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONVERGO_")}
    env["KONVERGO_VAR_DIR"] = str(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "konvergo",
            "sandbox",
            "--ready-and-exit",
            "--idp-port",
            "0",
            "--smtp-port",
            "0",
            "--imap-port",
            "0",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    for needle in (
        "SANDBOX",
        "Client ID",
        "Client Secret",
        "microsoft_outlook.endpoint",
        "TLS (STARTTLS)",
        "SSL/TLS",
        "KONVERGO_CA_BUNDLE=",
    ):
        assert needle in result.stdout


def test_outlook_com_account_has_imap_off_by_default() -> None:
    """The personal account profile answers NO AUTHENTICATE failed. until IMAP is switched on."""
    with Sandbox() as sandbox:
        assert sandbox.imap is not None
        token = sandbox.idp.mint_access_token("sam@outlook.com")
        imap = imaplib.IMAP4_SSL(
            "127.0.0.1", sandbox.imap.port, ssl_context=sandbox.tls.client_context()
        )
        try:
            raw = f"user=sam@outlook.com\x01auth=Bearer {token}\x01\x01".encode()
            replies = iter([raw])
            try:
                imap.authenticate("XOAUTH2", lambda _: next(replies, b""))
            except imaplib.IMAP4.error as exc:
                assert "AUTHENTICATE failed" in str(exc)
            else:
                raise AssertionError("IMAP must be off for the Outlook.com profile")
        finally:
            imap.shutdown()
