"""IMAP servers that misbehave in ways neither Exchange nor Dovecot do, played by a scripted
server on loopback: the client still signs in, or fails without repeating the credentials."""

from __future__ import annotations

import base64
import socketserver
import threading
from collections.abc import Callable, Iterator

import pytest

from konvergo.transports.auth import XOAuth2Auth
from konvergo.transports.imap import ImapConnection, ImapSettings
from konvergo.transports.imap_errors import ImapAuthorizationError

USER = "john@example.com"
TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6InNlY3JldCJ9.quirk-token"
SASL = base64.b64encode(f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode()).decode()
CAPABILITY = "* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR IDLE"

#: What the server answers to a one-line ``AUTHENTICATE XOAUTH2 <b64>`` (the tag is added).
Answer = Callable[[str], str]


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self.reply(f"* OK [{CAPABILITY[2:]}] scripted server ready")
        while line := self.rfile.readline().decode().rstrip("\r\n"):
            self.server.seen.append(line)
            tag, _, rest = line.partition(" ")
            command, _, argument = rest.partition(" ")
            command = command.upper()
            if command == "CAPABILITY":
                self.reply(CAPABILITY)
                self.reply(f"{tag} OK CAPABILITY completed.")
            elif command == "AUTHENTICATE" and " " in argument:
                self.reply(f"{tag} {self.server.answer(argument.split(' ', 1)[1])}")
            elif command == "AUTHENTICATE":
                self.reply("+ ")
                response = self.rfile.readline().decode().strip()
                self.server.seen.append(response)
                ok = response == SASL
                self.reply(f"{tag} {'OK AUTHENTICATE completed.' if ok else 'NO failed.'}")
            elif command == "LOGOUT":
                self.reply("* BYE bye")
                self.reply(f"{tag} OK LOGOUT completed.")
                return
            else:
                self.reply(f"{tag} BAD unknown command")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: Answer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.seen: list[str] = []


@pytest.fixture
def scripted() -> Iterator[Callable[[Answer], _Server]]:
    servers: list[_Server] = []

    def start(answer: Answer) -> _Server:
        server = _Server(answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _settings(server: _Server) -> ImapSettings:
    return ImapSettings(
        "127.0.0.1", server.server_address[1], False, XOAuth2Auth(USER, lambda: TOKEN)
    )


def test_a_bad_to_the_one_line_form_is_retried_as_a_continuation(
    scripted: Callable[[Answer], _Server],
) -> None:
    """A server that announces SASL-IR but answers the one-line AUTHENTICATE with BAD (a
    line-length limit) is asked again the long way, and the session opens."""
    server = scripted(lambda _: "BAD Command line too long")
    with ImapConnection(_settings(server)) as conn:
        assert "IDLE" in conn.capabilities
    commands = [line.split(" ", 1)[-1] for line in server.seen]
    at = commands.index(f"AUTHENTICATE XOAUTH2 {SASL}")
    assert commands[at + 1 : at + 3] == ["AUTHENTICATE XOAUTH2", SASL]


def test_a_refusal_that_quotes_the_credentials_does_not_repeat_them(
    scripted: Callable[[Answer], _Server],
) -> None:
    """A server quoting the command (and the token in it) in its NO: the error keeps its
    words, with the credentials replaced, so they reach no form, row or log."""
    server = scripted(lambda sasl: f"NO Refused AUTHENTICATE XOAUTH2 {sasl} (token {TOKEN})")
    with pytest.raises(ImapAuthorizationError) as caught:
        ImapConnection(_settings(server)).open()
    text = f"{caught.value} {caught.value.reply_text} {caught.value!r}"
    assert SASL not in text and TOKEN not in text
    assert "NO Refused AUTHENTICATE XOAUTH2 [credentials] (token [credentials])" in text
