"""The IMAP transport's contract, against the sandbox's Exchange front (XOAUTH2 over TLS) and
against plain Dovecot with a password and with XOAUTH2: the same client code must behave
alike on all three."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from konvergo.config import reset_config
from konvergo.errors import AuthorizationError, ConfigurationError
from konvergo.sandbox.idp import IdentityPlatform
from konvergo.sandbox.imap import SandboxImap
from konvergo.sandbox.tls import SandboxTLS
from konvergo.sandbox.tokens import IMAP_SCOPE
from konvergo.transports import imap as imap_module
from konvergo.transports.auth import PasswordAuth, XOAuth2Auth
from konvergo.transports.imap import FetchedMessage, ImapConnection, ImapSettings
from konvergo.transports.imap_errors import (
    ImapAuthorizationError,
    ImapConfigurationError,
    ImapTemporaryError,
)
from tests.sandbox.fixtures_idp import *  # noqa: F403
from tests.sandbox.fixtures_mail import *  # noqa: F403

JOHN = "john@example.com"


def _requested_groups(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The UIDs of every UID FETCH the connection sends from now on, in order."""
    groups: list[list[int]] = []
    real = ImapConnection._fetch_group

    def spy(self: ImapConnection, group: list[int]) -> Iterator[FetchedMessage]:
        groups.append(list(group))
        return real(self, group)

    monkeypatch.setattr(ImapConnection, "_fetch_group", spy)
    return groups


@dataclass
class Target:
    """One server the contract runs against, with what is particular to it."""

    kind: str
    server: SandboxImap
    settings: ImapSettings
    bad_credentials: ImapSettings
    refusal: str  # the server's exact reply to bad credentials

    @property
    def exchange(self) -> bool:
        return self.kind == "exchange"

    def connect(self, settings: ImapSettings | None = None) -> ImapConnection:
        conn = ImapConnection(settings or self.settings)
        conn.open()
        return conn


@pytest.fixture
def trusted_sandbox_ca(sandbox_tls: SandboxTLS, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The client trusts the sandbox CA, as an administrator adds a company CA."""
    monkeypatch.setenv("KONVERGO_CA_BUNDLE", str(sandbox_tls.ca_file))
    reset_config()
    yield sandbox_tls.ca_file
    reset_config()


@pytest.fixture(params=["exchange", "dovecot", "dovecot-xoauth2"])
def target(
    request: pytest.FixtureRequest,
    imap_server: SandboxImap,
    idp: IdentityPlatform,
    trusted_sandbox_ca: Path,
) -> Target:
    token = idp.mint_access_token(JOHN, [IMAP_SCOPE])

    def xoauth2(port: int, ssl: bool, refusal: str) -> Target:
        good = XOAuth2Auth(JOHN, lambda: token)
        bad = XOAuth2Auth(JOHN, lambda: "not-a-token")
        return Target(
            request.param,
            imap_server,
            ImapSettings("127.0.0.1", port, ssl, good),
            ImapSettings("127.0.0.1", port, ssl, bad),
            refusal,
        )

    dovecot = imap_server.dovecot
    if request.param == "exchange":
        return xoauth2(imap_server.port, True, "NO AUTHENTICATE failed.")
    if request.param == "dovecot-xoauth2":
        # Dovecot checks the token itself (its oauth2 passdb) and, unlike Exchange, answers
        # a refused one with a JSON challenge before its NO.
        return xoauth2(dovecot.port, False, "NO [AUTHENTICATIONFAILED] Authentication failed.")
    return Target(
        "dovecot",
        imap_server,
        ImapSettings("127.0.0.1", dovecot.port, False, PasswordAuth(JOHN, dovecot.delegate_secret)),
        ImapSettings("127.0.0.1", dovecot.port, False, PasswordAuth(JOHN, "wrong password")),
        "NO [AUTHENTICATIONFAILED] Authentication failed.",
    )


def _messages(count: int, body_bytes: int = 1000) -> list[bytes]:
    return [
        (
            f"From: a@external.test\r\nTo: {JOHN}\r\nSubject: Contract {i}\r\n"
            f"Message-ID: <c{i}-{secrets.token_hex(4)}@external.test>\r\n\r\n"
            + "x" * body_bytes
            + "\r\n"
        ).encode()
        for i in range(count)
    ]


def _record_sent(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What the client writes to the server from now on, one entry per write."""
    sent: list[bytes] = []
    real = imap_module._Client.send

    def send(client: imap_module._Client, data: bytes) -> None:
        sent.append(bytes(data))
        real(client, data)

    monkeypatch.setattr(imap_module._Client, "send", send)
    return sent


def _flags(conn: ImapConnection) -> dict[int, tuple[str, ...]]:
    uids = conn.uid_search_since(0)
    return {m.uid: m.flags for m in conn.fetch_batch(uids)}


class TestImapTransportContract:
    """Connect, authenticate, select, fetch and flag alike on Exchange and on Dovecot."""

    def test_connects_authenticates_and_reads_the_capabilities(self, target: Target) -> None:
        """Good credentials open a session whose capabilities include IMAP4rev1 and IDLE."""
        with ImapConnection(target.settings) as conn:
            assert "IMAP4REV1" in conn.capabilities
            assert conn.supports_idle

    def test_refused_credentials_raise_authorization_error_with_the_servers_words(
        self, target: Target
    ) -> None:
        """Bad credentials raise ImapAuthorizationError carrying the server's exact reply."""
        with pytest.raises(ImapAuthorizationError) as caught:
            target.connect(target.bad_credentials)
        assert isinstance(caught.value, AuthorizationError)
        assert caught.value.reply_text == target.refusal
        assert caught.value.stage == "auth"

    def test_xoauth2_goes_on_the_authenticate_line_when_the_server_offers_sasl_ir(
        self, target: Target, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Where SASL-IR is offered (Exchange and Dovecot both do), the token is sent on the
        AUTHENTICATE line itself: one round trip, no continuation to wait for."""
        auth = target.settings.auth
        if not isinstance(auth, XOAuth2Auth):
            pytest.skip("a password server: LOGIN")
        sent = _record_sent(monkeypatch)
        with ImapConnection(target.settings):
            pass
        initial = base64.b64encode(auth.xoauth2_string().encode())
        commands = [line.split(b" ", 1)[1] for line in sent]
        at = commands.index(b"AUTHENTICATE XOAUTH2 " + initial + b"\r\n")
        assert commands[at + 1].startswith(b"CAPABILITY"), "nothing is sent between the two"

    def test_without_sasl_ir_the_token_follows_the_servers_continuation(
        self, target: Target, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A server that does not offer SASL-IR gets AUTHENTICATE alone and the token after
        its "+"; a good token opens the session, a refused one quotes the server."""
        auth = target.settings.auth
        if not isinstance(auth, XOAuth2Auth):
            pytest.skip("a password server: LOGIN")
        real = imap_module._Client._get_capabilities

        def without_sasl_ir(client: imap_module._Client) -> None:
            real(client)
            client.capabilities = tuple(c for c in client.capabilities if c != "SASL-IR")

        monkeypatch.setattr(imap_module._Client, "_get_capabilities", without_sasl_ir)
        sent = _record_sent(monkeypatch)
        with ImapConnection(target.settings) as conn:
            assert "IMAP4REV1" in conn.capabilities
        assert any(line.endswith(b" AUTHENTICATE XOAUTH2\r\n") for line in sent)
        with pytest.raises(ImapAuthorizationError) as caught:
            target.connect(target.bad_credentials)
        assert caught.value.reply_text == target.refusal

    def test_authenticated_but_not_connected_is_an_authorization_error(
        self, target: Target, idp: IdentityPlatform
    ) -> None:
        """Exchange's "User is authenticated but not connected" (a mailbox the token's owner
        cannot open) is an authorization failure quoting Exchange."""
        if not target.exchange:
            pytest.skip("an Exchange-only reply")
        token = idp.mint_access_token(JOHN, [IMAP_SCOPE])
        other = ImapSettings(
            "127.0.0.1", target.server.port, True, XOAuth2Auth("nobody@example.com", lambda: token)
        )
        with pytest.raises(AuthorizationError) as caught:
            target.connect(other)
        assert "User is authenticated but not connected." in str(caught.value)

    def test_throttling_is_temporary_and_carries_the_suggested_backoff(
        self, target: Target
    ) -> None:
        """Exchange's throttle reply is an ImapTemporaryError with retry_after in seconds."""
        if not target.exchange:
            pytest.skip("an Exchange-only reply")
        conn = target.connect()
        try:
            conn.select("INBOX")
            target.server.throttle(JOHN, 1234)
            with pytest.raises(ImapTemporaryError) as caught:
                conn.uid_search_since(0)
        finally:
            target.server.unthrottle(JOHN)
            conn.close()
        assert caught.value.retry_after == pytest.approx(1.234)
        assert "Request is throttled. Suggested Backoff Time: 1234 milliseconds" in (
            caught.value.reply_text
        )
        assert not conn.is_open

    def test_select_reports_uidvalidity_uidnext_and_count(self, target: Target) -> None:
        """SELECT gives the folder's UIDVALIDITY, UIDNEXT and message count; a rebuilt folder
        has a new UIDVALIDITY."""
        target.server.populate(JOHN, _messages(3))
        with target.connect() as conn:
            status = conn.select("INBOX")
        assert status.exists == 3 and status.uidnext == 4 and status.uidvalidity > 0
        new = target.server.reset_uidvalidity(JOHN)
        with target.connect() as conn:
            assert conn.select("INBOX").uidvalidity == new != status.uidvalidity

    def test_selecting_a_missing_folder_is_a_configuration_error(self, target: Target) -> None:
        """A folder name the server does not know is a configuration error."""
        with target.connect() as conn, pytest.raises(ConfigurationError):
            conn.select("No such folder")

    def test_fetch_batch_is_bounded_by_count_and_bytes(
        self, target: Target, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each UID FETCH asks for at most ``size`` messages and about ``max_bytes``; every
        message comes back once, in UID order, whole."""
        raws = _messages(9, 1500) + _messages(1, 9000)
        target.server.populate(JOHN, raws)
        groups = _requested_groups(monkeypatch)
        with target.connect() as conn:
            conn.select("INBOX")
            uids = conn.uid_search_since(0)
            sizes = conn.sizes(uids)
            fetched = list(conn.fetch_batch(uids, size=4, max_bytes=5000))
        assert [m.uid for m in fetched] == sorted(uids) and len(fetched) == 10
        assert [len(m.raw) for m in fetched] == [sizes[u] for u in sorted(uids)]
        for group in groups:
            assert len(group) <= 4
            assert len(group) == 1 or sum(sizes[u] for u in group) <= 5000
        assert [sizes[u] for u in groups[-1]] == [max(sizes.values())]  # too big: alone

    def test_a_fetch_starts_with_small_requests_so_storing_can_start_early(
        self, target: Target, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The first UID FETCH asks for RAMP_START messages, each next one for twice as many
        up to ``size``; every message still comes back once, in UID order."""
        target.server.populate(JOHN, _messages(12))
        monkeypatch.setattr(imap_module, "RAMP_START", 2)
        requested = _requested_groups(monkeypatch)
        with target.connect() as conn:
            conn.select("INBOX")
            uids = conn.uid_search_since(0)
            fetched = list(conn.fetch_batch(uids, size=4))
        assert [m.uid for m in fetched] == sorted(uids)
        assert [len(group) for group in requested] == [2, 4, 4, 2]

    def test_sizes_are_asked_in_growing_windows_between_the_requests(
        self, target: Target, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """RFC822.SIZE is asked for RAMP_START UIDs first, then for windows that double up to
        SIZE_WINDOW, each just before the requests it sizes: the second request never waits
        for the sizes of the whole mailbox."""
        target.server.populate(JOHN, _messages(20))
        monkeypatch.setattr(imap_module, "RAMP_START", 2)
        monkeypatch.setattr(imap_module, "SIZE_WINDOW", 8)
        calls: list[tuple[str, int]] = []
        real_sizes, real_group = ImapConnection.sizes, ImapConnection._fetch_group

        def sizes(self: ImapConnection, uids: Sequence[int]) -> dict[int, int]:
            calls.append(("sizes", len(uids)))
            return real_sizes(self, uids)

        def group(self: ImapConnection, uids: list[int]) -> Iterator[FetchedMessage]:
            calls.append(("fetch", len(uids)))
            return real_group(self, uids)

        monkeypatch.setattr(ImapConnection, "sizes", sizes)
        monkeypatch.setattr(ImapConnection, "_fetch_group", group)
        with target.connect() as conn:
            conn.select("INBOX")
            uids = conn.uid_search_since(0)
            fetched = list(conn.fetch_batch(uids, size=4))
        assert [m.uid for m in fetched] == sorted(uids)
        assert calls == [
            ("sizes", 2), ("fetch", 2),
            ("sizes", 4), ("fetch", 4),
            ("sizes", 8), ("fetch", 4), ("fetch", 4),
            ("sizes", 6), ("fetch", 4), ("fetch", 2),
        ]  # fmt: skip

    def test_fetching_leaves_flags_alone_and_mark_seen_sets_only_what_it_is_asked(
        self, target: Target
    ) -> None:
        """BODY.PEEK[] never sets \\Seen; mark_seen sets it on exactly the UIDs given."""
        target.server.populate(JOHN, _messages(3))
        with target.connect() as conn:
            conn.select("INBOX", readonly=True)
            before = _flags(conn)
            assert not any("\\Seen" in flags for flags in before.values())
            assert _flags(conn) == before  # a second fetch changed nothing either
            first = min(before)
            conn.mark_seen([first])
            after = _flags(conn)
        assert "\\Seen" in after[first]
        assert not any("\\Seen" in after[uid] for uid in after if uid != first)

    def test_certificate_from_an_untrusted_ca_is_refused(
        self, target: Target, ca_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """TLS verification stays on: a server certificate from a CA we do not trust is
        refused before any credential is sent."""
        if not target.settings.ssl:
            pytest.skip("plain IMAP on loopback: there is no certificate to verify")
        monkeypatch.setenv("KONVERGO_CA_BUNDLE", str(ca_file))  # some other company's CA
        reset_config()
        with pytest.raises(ImapConfigurationError) as caught:
            target.connect()
        assert caught.value.stage == "connect"
        assert "certificate was refused" in str(caught.value)
