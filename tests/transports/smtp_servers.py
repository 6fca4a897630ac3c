"""Real SMTP servers on 127.0.0.1 for the transport tests: aiosmtpd with XOAUTH2 and passwords.

``SmtpTestServer`` is a mailbox provider in miniature: STARTTLS or implicit TLS with a
certificate from a trustme CA, AUTH XOAUTH2 and PLAIN/LOGIN, and switches (``behaviour``)
that make it answer the way Exchange Online does when things go wrong: 535 5.7.3 to a bad
token, 554 5.2.0 SendAsDenied at the end of DATA, 421/451, a connection dropped mid-DATA.
``CannedServer`` is a raw socket for what aiosmtpd cannot be made to do (a 421 greeting, a
server that never greets).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import socket
import ssl
import threading
import warnings
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from konvergo.sandbox.bdat import Bdat
from konvergo.transports.smtp import SmtpConnection, SmtpSettings

HOST = "127.0.0.1"
SERVER_NAME = "mx.konvergo.test"

#: Exchange's failure line, with its host/timestamp/id tail (microsoft.md 1.13).
EXCHANGE_535 = (
    "535 5.7.3 Authentication unsuccessful "
    "[AM0PR06CA0126.eurprd06.prod.outlook.com 2024-02-14T14:50:26.590Z 08DC2D372B4C3DED]"
)
EXCHANGE_SMTP_AUTH_DISABLED = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
    "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. "
    "[MN2PR05CA0004.namprd05.prod.outlook.com 2023-09-12T20:59:57.214Z 08DBB276B7E699C4]"
)
EXCHANGE_SEND_AS_DENIED = (
    "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; "
    "Failed to process message due to a permanent exception with message Cannot submit "
    "message. 0.35250:0A00C184, 1.36674:0A000000, 1.61250:00000000"
)
EXCHANGE_CONCURRENT = "432 4.3.2 Concurrent connections limit exceeded."
GMAIL_ERROR_CHALLENGE = '{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}'

Encryption = Literal["none", "starttls", "ssl"]


@dataclass(frozen=True)
class Delivered:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    user: str | None
    smtp_utf8: bool


@dataclass
class Behaviour:
    """Switches a test flips to make the server misbehave; read on every command."""

    #: Reply to every AUTH attempt instead of checking the credentials (e.g. 535 5.7.139).
    auth_reply: str | None = None
    #: Send this 334 error challenge (Gmail style) before the final failure of XOAUTH2.
    auth_error_challenge: str | None = None
    #: Reply to MAIL FROM instead of 250.
    mail_reply: str | None = None
    #: Replies to RCPT TO, by address (others get 250).
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    #: Reply to the DATA command itself instead of 354.
    data_command_reply: str | None = None
    #: Reply at the end of DATA instead of 250 (the message is then not delivered).
    data_reply: str | None = None
    #: Close the connection after the whole message arrived, without any reply.
    drop_in_data: bool = False


class PipeliningEhlo:
    """aiosmtpd handler part: offers PIPELINING (RFC 2920) in EHLO when ``pipelining`` is set,
    as Exchange Online does (aiosmtpd reads pipelined commands but never offers it), and
    CHUNKING (RFC 3030) when ``chunking`` is set (the server must then have :class:`Bdat`)."""

    pipelining: bool = False
    chunking: bool = False

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        if self.chunking:
            responses.insert(-1, "250-CHUNKING")
        return responses


class MailboxHandler(PipeliningEhlo):
    """aiosmtpd handler: authenticates, applies ``behaviour`` and records deliveries."""

    def __init__(self, tokens: dict[str, str], passwords: dict[str, str]) -> None:
        self.tokens = tokens  # access token -> the mailbox it was issued for
        self.passwords = passwords  # user -> password
        self.behaviour = Behaviour()
        self.messages: list[Delivered] = []
        self.auth_lines: list[str] = []  # "inline" or "prompted": how XOAUTH2 arrived
        self.connections = 0
        self.successful_logins = 0
        self.data_started = 0
        self.transports: list[asyncio.BaseTransport] = []
        self.lock = threading.Lock()
        self.pipelining = False

    # --- authentication ---------------------------------------------------------------

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) > 1:
            self.auth_lines.append("inline")
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Cannot Decode response")
                return AuthResult(success=False, handled=True)
        else:
            self.auth_lines.append("prompted")
            answer = await server.challenge_auth("", encode_to_b64=False)
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            assert isinstance(answer, bytes)
            blob = answer
        user = self._xoauth2_user(blob)
        if self.behaviour.auth_reply is None and user is not None:
            self.successful_logins += 1
            return AuthResult(success=True, auth_data=user)
        if self.behaviour.auth_error_challenge is not None:
            await server.challenge_auth(self.behaviour.auth_error_challenge)
        await server.push(self.behaviour.auth_reply or EXCHANGE_535)
        return AuthResult(success=False, handled=True)

    def _xoauth2_user(self, blob: bytes) -> str | None:
        """The mailbox a well-formed XOAUTH2 string authenticates, or None."""
        text = blob.decode("utf-8", "replace")
        if not text.endswith("\x01\x01"):
            return None
        fields = dict(part.split("=", 1) for part in text[:-2].split("\x01") if "=" in part)
        user, auth = fields.get("user", ""), fields.get("auth", "")
        if not auth.startswith("Bearer "):
            return None
        token = auth.removeprefix("Bearer ")
        # Like Exchange: the token must have been issued for the mailbox named in user=.
        return user if self.tokens.get(token) == user else None

    def authenticate_password(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        """aiosmtpd ``authenticator`` for PLAIN and LOGIN."""
        assert isinstance(auth_data, LoginPassword)
        if self.behaviour.auth_reply is not None:
            return AuthResult(success=False, handled=False, message=self.behaviour.auth_reply)
        user = auth_data.login.decode()
        if self.passwords.get(user) == auth_data.password.decode():
            self.successful_logins += 1
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    # --- the transaction --------------------------------------------------------------

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.behaviour.mail_reply is not None:
            return self.behaviour.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.behaviour.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.behaviour.drop_in_data:
            assert server.transport is not None
            server.transport.close()
            # Closing cancels this coroutine; wait for that rather than reply on a dead socket.
            await asyncio.sleep(30)
        if self.behaviour.data_reply is not None:
            return self.behaviour.data_reply
        content = envelope.original_content or b""
        with self.lock:
            self.messages.append(
                Delivered(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=list(envelope.rcpt_tos),
                    content=content,
                    mail_options=list(envelope.mail_options),
                    user=session.auth_data if isinstance(session.auth_data, str) else None,
                    smtp_utf8=envelope.smtp_utf8,
                )
            )
        return "250 2.0.0 OK <queued@mx.konvergo.test>"


class MailboxSMTP(Bdat):
    """aiosmtpd's SMTP with room for real tokens and hooks the tests need."""

    def __init__(self, handler: MailboxHandler, *, command_limit: int, **kwargs: Any) -> None:
        # A 1.5-3 KB token on one AUTH line exceeds aiosmtpd's RFC 5321 defaults (512-byte
        # commands, 1001-byte lines); RFC 4954 allows 12,288 for AUTH. Lines themselves
        # (the response after a 334) may always be that long, as on Dovecot's submission
        # service; ``command_limit`` only limits command lines. Instance attributes, because
        # aiosmtpd's class-level limits dict is shared by every instance.
        self.line_length_limit = 12288
        self.command_size_limit = command_limit
        super().__init__(handler, **kwargs)
        self.command_size_limits = collections.defaultdict(lambda: command_limit)
        self.mailbox = handler
        self._first_connection = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again with the TLS transport after STARTTLS; count the TCP connection once.
        if self._first_connection:
            self._first_connection = False
            with self.mailbox.lock:
                self.mailbox.connections += 1
                self.mailbox.transports.append(transport)
        super().connection_made(transport)

    async def smtp_DATA(self, arg: str) -> None:
        reply = self.mailbox.behaviour.data_command_reply
        if reply is not None and self.envelope is not None and self.envelope.rcpt_tos:
            await self.push(reply)
            return
        if self.envelope is not None and self.envelope.rcpt_tos:
            self.mailbox.data_started += 1
        await super().smtp_DATA(arg)


class _Controller(Controller):
    """Serves on an already-bound socket, so tests never race each other for a port."""

    def __init__(
        self, handler: MailboxHandler, sock: socket.socket, command_limit: int, **kwargs: Any
    ) -> None:
        self._sock = sock
        self._command_limit = command_limit
        super().__init__(handler, hostname=HOST, port=sock.getsockname()[1], **kwargs)

    def factory(self) -> MailboxSMTP:
        with warnings.catch_warnings():
            # "Requiring AUTH while not requiring TLS": wrong for an implicit-TLS listener.
            warnings.simplefilter("ignore", UserWarning)
            return MailboxSMTP(self.handler, command_limit=self._command_limit, **self.SMTP_kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    return sock


def server_tls_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


class SmtpTestServer:
    """One aiosmtpd server on 127.0.0.1 speaking ``encryption``; start() then stop()."""

    def __init__(
        self,
        encryption: Encryption,
        *,
        cert: trustme.LeafCert | None,
        tokens: dict[str, str],
        passwords: dict[str, str],
        command_limit: int = 12288,
        pipelining: bool = False,
        chunking: bool = False,
    ) -> None:
        self.encryption = encryption
        self.host = HOST
        self.handler = MailboxHandler(tokens, passwords)
        self.handler.pipelining = pipelining
        self.handler.chunking = chunking
        sock = bound_socket()
        self.port: int = sock.getsockname()[1]
        smtp_kwargs: dict[str, Any] = {
            "server_hostname": SERVER_NAME,
            "authenticator": self.handler.authenticate_password,
            "auth_require_tls": True,
        }
        controller_tls = None
        if encryption == "starttls":
            assert cert is not None
            smtp_kwargs.update(
                tls_context=server_tls_context(cert), require_starttls=True, auth_required=True
            )
        elif encryption == "ssl":
            assert cert is not None
            controller_tls = server_tls_context(cert)
            # aiosmtpd only counts STARTTLS as TLS; here the listener itself is TLS, so AUTH
            # must be allowed without STARTTLS or it would never be offered.
            smtp_kwargs.update(auth_required=True, auth_require_tls=False)
        self.controller = _Controller(
            self.handler, sock, command_limit, ssl_context=controller_tls, **smtp_kwargs
        )

    @property
    def behaviour(self) -> Behaviour:
        return self.handler.behaviour

    @property
    def messages(self) -> list[Delivered]:
        return self.handler.messages

    def start(self) -> SmtpTestServer:
        self.controller.start()
        # aiosmtpd opens one connection itself to check the server is up; do not count it.
        with self.handler.lock:
            self.handler.connections = 0
            self.handler.transports.clear()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def drop_connections(self) -> None:
        """Hang up on every client, as a server does after an idle timeout or a restart."""
        loop = self.controller.loop
        with self.handler.lock:
            transports = list(self.handler.transports)
        done = threading.Event()

        def close_all() -> None:
            for transport in transports:
                transport.close()
            # close() closes the socket in a callback of its own: be done after it.
            loop.call_soon(done.set)

        loop.call_soon_threadsafe(close_all)
        done.wait(5)


class CannedServer:
    """A raw TCP server that sends ``greeting`` (or nothing) and then holds or closes."""

    def __init__(self, greeting: bytes | None, *, close_after_greeting: bool = True) -> None:
        self.greeting = greeting
        self.close_after_greeting = close_after_greeting
        self._sock = bound_socket()
        self._sock.listen()
        self._sock.settimeout(0.2)
        self.host = HOST
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> CannedServer:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            if self.greeting is not None:
                conn.sendall(self.greeting)
            if self.close_after_greeting:
                conn.close()
            else:
                self._held.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._sock.close()


def dead_port() -> int:
    """A loopback port nothing listens on (bound, never listened, then released)."""
    sock = bound_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


class _Lines:
    """Lines from a socket, with a way to ask whether the client has already sent more."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._buffer = b""

    def _fill(self, timeout: float | None) -> bool:
        self._conn.settimeout(timeout)
        try:
            chunk = self._conn.recv(65536)
        except TimeoutError:
            return False
        finally:
            self._conn.settimeout(5)
        if not chunk:
            raise ConnectionError("the client hung up")
        self._buffer += chunk
        return True

    def readline(self) -> bytes:
        while b"\n" not in self._buffer:
            self._fill(5)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill(5)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def more_within(self, seconds: float) -> bool:
        """Whether more input is here already or arrives within ``seconds``."""
        return bool(self._buffer) or self._fill(seconds)


class PipeliningServer:
    """A plain-TCP server that offers PIPELINING and proves the client used it.

    After EHLO it answers nothing until the DATA command has arrived, so a client that waits
    for the reply to MAIL FROM before sending RCPT TO would stall (and the test time out):
    only a pipelining client gets a message through. ``replies`` overrides the reply to
    ``MAIL``, ``RCPT`` or ``DATA``; ``data_reply`` is the reply at the end of each message (a
    list: one per message, the last one repeated). With ``hold_dot`` it answers a final dot
    only when the client's next command has arrived or ``hold_dot`` seconds have passed, and
    ``dot_followed`` tells, per message, whether the client had sent more before the reply.
    It serves one connection after another. With ``chunking`` it also offers CHUNKING and
    takes ``BDAT <size> LAST`` in place of DATA (``data_reply`` answers it; a message arrives
    only if the chunk came in the same group as its envelope; ``drop_after_chunk`` hangs up
    after taking it, before any reply).
    """

    def __init__(
        self,
        replies: dict[str, str] | None = None,
        data_reply: str | list[str] = "250 2.0.0 OK",
        *,
        hold_dot: float = 0.0,
        chunking: bool = False,
        drop_after_chunk: bool = False,
    ):
        self.replies = {"MAIL": "250 2.1.0 Sender OK", "RCPT": "250 2.1.5 Recipient OK"}
        self.replies["DATA"] = "354 Start mail input; end with <CRLF>.<CRLF>"
        self.replies.update(replies or {})
        self.data_replies = [data_reply] if isinstance(data_reply, str) else list(data_reply)
        self.hold_dot = hold_dot
        self.chunking = chunking
        #: Take a chunk's message, then hang up before any reply of its group (a server that
        #: holds its replies until the group is read, RFC 2920 4, and then loses the line).
        self.drop_after_chunk = drop_after_chunk
        self.host = HOST
        self._sock = bound_socket()
        self._sock.listen()
        self.port: int = self._sock.getsockname()[1]
        #: Command lines in arrival order, and each message body received.
        self.commands: list[str] = []
        self.bodies: list[bytes] = []
        #: Per message body: whether the client's next command came before the dot's reply.
        self.dot_followed: list[bool] = []
        #: Connections accepted.
        self.connections = 0
        #: Set once a DATA command arrived (before any reply to the group was sent).
        self.envelope_arrived = threading.Event()
        #: Set while a message's content is arriving and its final dot has not.
        self.content_arriving = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> PipeliningServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        # shutdown() wakes the accept() the serving thread blocks in; close() alone does not.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):  # the client hung up or stalled
                    conn.sendall(b"220 pipelining.konvergo.test ESMTP\r\n")
                    self._session(conn, _Lines(conn))

    def _dot_reply(self) -> str:
        index = min(len(self.bodies) - 1, len(self.data_replies) - 1)
        return self.data_replies[index]

    def _session(self, conn: socket.socket, reader: _Lines) -> None:
        group: list[str] = []
        while True:
            command = reader.readline().decode().rstrip("\r\n")
            self.commands.append(command)
            verb = command.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "EHLO":
                extensions = [
                    "SIZE 1000000",
                    "PIPELINING",
                    *(["CHUNKING"] if self.chunking else []),
                ]
                lines = ["pipelining.konvergo.test", *extensions]
                conn.sendall(
                    "".join(
                        f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n"
                        for i, line in enumerate(lines)
                    ).encode()
                )
            elif verb == "BDAT" and self.chunking:
                self.envelope_arrived.set()
                size = int(command.split()[1])
                self.content_arriving.set()
                self.bodies.append(reader.read(size))
                self.content_arriving.clear()
                if self.drop_after_chunk:
                    return
                answers = [self.replies[v] for v in group]
                group = []
                conn.sendall("".join(f"{a}\r\n" for a in [*answers, self._dot_reply()]).encode())
            elif verb in ("MAIL", "RCPT"):
                group.append(verb)  # answered with the DATA that ends the group
            elif verb == "DATA":
                self.envelope_arrived.set()
                group.append(verb)
                answers = [self.replies[v] for v in group]
                group = []
                conn.sendall("".join(f"{a}\r\n" for a in answers).encode())
                if answers[-1].startswith("354"):
                    body = bytearray()
                    while not body.endswith(b"\r\n.\r\n") and body != b".\r\n":
                        body += reader.readline()
                        self.content_arriving.set()
                    self.content_arriving.clear()
                    self.bodies.append(bytes(body))
                    self.dot_followed.append(
                        reader.more_within(self.hold_dot) if self.hold_dot else False
                    )
                    conn.sendall(f"{self._dot_reply()}\r\n".encode())
            elif verb == "QUIT":
                conn.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:  # RSET, NOOP
                conn.sendall(b"250 2.0.0 OK\r\n")


def connection_to(port: int) -> SmtpConnection:
    """A client for a plain-TCP test server on 127.0.0.1, without authentication."""
    return SmtpConnection(
        SmtpSettings(host=HOST, port=port, encryption="none", auth=None, timeout=5)
    )
