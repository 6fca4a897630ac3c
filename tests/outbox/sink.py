"""A counting SMTP sink on 127.0.0.1 (aiosmtpd, STARTTLS, AUTH PLAIN/LOGIN) for outbox tests.

It records what a mailbox provider would see: each accepted message with its envelope and the
authenticated user, every Message-ID (to count duplicates), and how many sessions were open at
once (Exchange's limit is per mailbox). ``script`` scripts the replies at the end of DATA, one
entry per DATA (``None`` accepts, ``DROP`` hangs up without a reply); ``data_delay`` makes each
DATA answer late, like a distant server. It offers PIPELINING and CHUNKING (``BDAT``) as
Exchange Online does (``pipelining=False`` or ``chunking=False`` for a server that does not);
the script and the delay apply to the end of a message either way.
"""

from __future__ import annotations

import asyncio
import collections
import re
import socket
import ssl
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.transports.smtp_servers import Bdat, PipeliningEhlo

HOST = "127.0.0.1"
DROP = "DROP"
_MID = re.compile(rb"^Message-ID:\s*(<[^>]+>)", re.I | re.M)


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    user: str | None
    at: float

    @property
    def message_id(self) -> str:
        found = _MID.search(self.content)
        return found.group(1).decode() if found else ""


@dataclass
class SinkState:
    passwords: dict[str, str]
    script: collections.deque[str | None] = field(default_factory=collections.deque)
    auth_reply: str | None = None
    data_delay: float = 0.0
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    current: int = 0
    max_current: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(PipeliningEhlo):
    def __init__(self, state: SinkState, pipelining: bool, chunking: bool) -> None:
        self.state = state
        self.pipelining = pipelining
        self.chunking = chunking

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        if self.state.auth_reply is not None:
            return AuthResult(success=False, handled=False, message=self.state.auth_reply)
        user = data.login.decode()
        if self.state.passwords.get(user) == data.password.decode():
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        state = self.state
        if state.data_delay:
            await asyncio.sleep(state.data_delay)
        with state.lock:
            reply = state.script.popleft() if state.script else None
        if reply == DROP:
            assert server.transport is not None
            server.transport.close()
            await asyncio.sleep(30)  # cancelled by the close; never reply on a dead socket
        if reply is not None:
            return reply
        user = session.auth_data if isinstance(session.auth_data, str) else None
        with state.lock:
            state.messages.append(
                Received(
                    envelope.mail_from or "",
                    list(envelope.rcpt_tos),
                    envelope.original_content or b"",
                    user,
                    time.monotonic(),
                )
            )
        return "250 2.0.0 OK queued"


class _SinkSMTP(Bdat):
    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink = handler.state
        self._counted = False
        self._seen = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd's own, less the typing.Protocol class it defines on every call: that class
        # was a quarter of the sink's CPU at benchmark rates, taken from the client it measures
        # on the same two cores.
        if not arg:
            return "", ""
        try:
            parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
            address, rest = parse(arg)
        except HeaderParseError:
            return None, None
        addr: str = address.addr_spec
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    def _leave(self) -> None:
        with self._sink.lock:
            if self._counted:
                self._counted = False
                self._sink.current -= 1

    async def smtp_EHLO(self, hostname: str) -> None:
        # A session counts from its first EHLO (sent again after STARTTLS): aiosmtpd's own
        # start-up probe connects without one and must not be counted.
        if not self._seen:
            self._seen = True
            self._counted = True
            with self._sink.lock:
                self._sink.connections += 1
                self._sink.current += 1
                self._sink.max_current = max(self._sink.max_current, self._sink.current)
        await super().smtp_EHLO(hostname)

    def connection_lost(self, error: Exception | None) -> None:
        self._leave()  # idempotent: QUIT may have counted the session out already
        super().connection_lost(error)

    async def smtp_QUIT(self, arg: str) -> None:
        self._leave()  # the client is done; its socket may close a moment later
        await super().smtp_QUIT(arg)


class _Controller(Controller):
    """Serves on a socket bound before starting, so the port is known and never raced for."""

    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        # IPPROTO_TCP as asyncio's own listeners have it: asyncio turns Nagle's algorithm off
        # only on such sockets, as mail servers do.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        super().__init__(handler, hostname=HOST, port=self._sock.getsockname()[1], **kwargs)

    def factory(self) -> _SinkSMTP:
        return _SinkSMTP(self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


class Sink:
    """Start with :meth:`start`; ``port`` is then known. Always STARTTLS when ``tls`` given."""

    def __init__(
        self,
        tls: ssl.SSLContext | None,
        passwords: dict[str, str] | None = None,
        *,
        data_delay: float = 0.0,
        pipelining: bool = True,
        chunking: bool = True,
    ) -> None:
        self.state = SinkState(passwords=dict(passwords or {}), data_delay=data_delay)
        kwargs: dict[str, Any] = {"server_hostname": "sink.konvergo.test"}
        if passwords:
            kwargs.update(
                authenticator=_Handler(self.state, pipelining, chunking).authenticate,
                auth_required=True,
            )
        if tls is not None:
            kwargs.update(tls_context=tls, require_starttls=True, auth_require_tls=True)
        else:
            kwargs.update(auth_require_tls=False)
        self.controller = _Controller(_Handler(self.state, pipelining, chunking), **kwargs)
        self.port: int = self.controller.port

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.messages)

    def message_ids(self) -> collections.Counter[str]:
        return collections.Counter(m.message_id for m in self.messages)

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.state.messages) >= count:
                return True
            time.sleep(0.02)
        return False
