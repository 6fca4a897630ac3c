"""SANDBOX ONLY: smtp.office365.com:587 on loopback — Exchange Online's SMTP AUTH submission.

Built on aiosmtpd, with Exchange's banner, EHLO list, STARTTLS-before-AUTH rule, XOAUTH2
(inline initial response and ``334`` continuation) and its reply texts (microsoft.md §1.13-1.15,
§5 D). Checks on AUTH, in Exchange's order (§6 item 12): basic mechanisms are refused, then
the tenant/mailbox SMTP AUTH switch, then the token (active, audience, ``SMTP.Send``, ``user=``
rights), then the per-mailbox concurrency limit. SendAs is checked at the end of DATA.

Accepted mail is recorded in :attr:`ExchangeSmtpServer.accepted`; copies addressed to sandbox
mailboxes are dropped into their Maildir (so the sandbox IMAP sees them), and the sender gets
the Sent Items copy Exchange keeps of every SMTP submission.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import datetime as dt
import email.utils
import logging
import secrets
import threading
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from konvergo.sandbox.bdat import Bdat
from konvergo.sandbox.imap import is_exchange_audience, parse_xoauth2
from konvergo.sandbox.loopthread import serve_in_thread
from konvergo.sandbox.maildrop import INBOX, SENT_ITEMS, Maildrop
from konvergo.sandbox.tls import SandboxTLS
from konvergo.sandbox.tokens import SMTP_SCOPE, TokenValidator
from konvergo.sandbox.world import Mailbox, World

log = logging.getLogger(__name__)

#: The host name in the banner, EHLO and diagnostic suffixes (Exchange's look).
SERVER_FQDN = "SBXP281CA0001.outlook.office365.com"
#: 150 MB, as Exchange Online advertises.
MAX_MESSAGE_SIZE = 157286400
#: RFC 4954's limit for an AUTH line; aiosmtpd's 512 would refuse every real token.
AUTH_LINE_LIMIT = 12288

#: Every reply that differs from aiosmtpd's, in Exchange's words. ``{diag}`` is Exchange's
#: ``host timestamp id`` suffix; other fields are named in place.
REPLIES: dict[str, str] = {
    "banner": "Microsoft ESMTP MAIL Service ready at {date}",
    "ehlo_hello": "{host} Hello [{ip}]",
    "starttls": "220 2.0.0 SMTP server ready",
    "auth_continue": "334 ",
    "auth_ok": "235 2.7.0 Authentication successful",
    "auth_unknown_mechanism": "504 5.7.4 Unrecognized authentication type [{diag}]",
    "auth_twice": "503 5.5.2 Already authenticated",
    "auth_basic_disabled": (
        "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. [{diag}]"
    ),
    "auth_smtp_disabled": (
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the"
        " Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [{diag}]"
    ),
    "auth_failed": "535 5.7.3 Authentication unsuccessful [{diag}]",
    "concurrency": "432 4.3.2 Concurrent connections limit exceeded.",
    "not_authenticated": "530 5.7.57 Client not authenticated to send mail.",
    "mail_ok": "250 2.1.0 Sender OK",
    "rcpt_ok": "250 2.1.5 Recipient OK",
    "send_as_denied": (
        "554 5.2.252 SendAsDenied; {upn} not allowed to send as {sender}; "
        "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; "
        "Failed to process message due to a permanent exception with message [BeginDiagnosticData]"
        "Cannot submit message. 0.35250:0A00C184, 1.36674:0A000000, 1.61250:00000000 "
        "[EndDiagnosticData] [Hostname={host}]"
    ),
    "queued": "250 2.0.0 OK <{queue_id}@{host}> [Hostname={host}]",
    "recipient_quota": (
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to "
        "process message due to a permanent exception with message The message can't be "
        "submitted because the sender's submission quota was exceeded."
    ),
    # Not quoted in the research: the standard RFC 5321 reply Exchange servers use. [inf]
    "too_many_recipients": "452 4.5.3 Too many recipients",
    "too_big": "552 5.3.4 Message size exceeds fixed maximum message size",
    "quit": "221 2.0.0 Service closing transmission channel",
    "rset": "250 2.0.0 Resetting",
    "noop": "250 2.0.0 OK",
}

#: aiosmtpd's own texts for conditions Exchange words differently.
REWRITES: dict[str, str] = {
    "220 Ready to start TLS": REPLIES["starttls"],
    "552 Error: Too much mail data": REPLIES["too_big"],
    "552 Error: message size exceeds fixed maximum message size": REPLIES["too_big"],
}

#: AUTH mechanisms that are basic authentication at Microsoft (refused with 5.7.139).
BASIC_MECHANISMS = frozenset({"LOGIN", "PLAIN"})
#: MAIL/RCPT parameters Exchange takes and aiosmtpd does not know (it would answer 555).
_IGNORED_PARAMS = ("AUTH=", "RET=", "ENVID=", "NOTIFY=", "ORCPT=")


@dataclasses.dataclass(frozen=True)
class AcceptedMessage:
    """One message the sandbox accepted (the end of DATA answered 250)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    #: The mailbox that submitted it (the XOAUTH2 ``user=``).
    upn: str


class ExchangeSmtpServer:
    """Exchange-like SMTP submission on ``host:port`` (STARTTLS with the sandbox CA)."""

    def __init__(
        self,
        world: World,
        validator: TokenValidator,
        tls: SandboxTLS,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_sessions_per_mailbox: int = 3,
        messages_per_minute: int = 30,
        rate_delay: float = 0.5,
        recipients_per_day: int = 10_000,
        recipients_per_message: int = 500,
        max_message_size: int = MAX_MESSAGE_SIZE,
        maildrop: Maildrop | None = None,
        server_fqdn: str = SERVER_FQDN,
    ) -> None:
        self.world = world
        self.validator = validator
        self.tls = tls
        self.host = host
        self._requested_port = port
        self.port = 0
        self.max_sessions_per_mailbox = max_sessions_per_mailbox
        self.messages_per_minute = messages_per_minute
        #: Seconds the 250 after DATA is held back when a mailbox is over its rate.
        self.rate_delay = rate_delay
        #: Rolling 24 h recipient quota per mailbox (each recipient of each message counts).
        self.recipients_per_day = recipients_per_day
        self.recipients_per_message = recipients_per_message
        #: Advertised in EHLO SIZE and enforced (552 5.3.4); lower it to test big mail.
        self.max_message_size = max_message_size
        self.maildrop = maildrop
        self.server_fqdn = server_fqdn
        self.accepted: list[AcceptedMessage] = []
        #: Messages submitted beyond ``messages_per_minute`` (Microsoft delays them).
        self.rate_violations = 0
        self._active: collections.Counter[str] = collections.Counter()
        self._sent_at: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        #: mailbox -> (sandbox time, recipient count) of accepted messages of the last 24 h.
        self._recipients: dict[str, collections.deque[tuple[float, int]]] = collections.defaultdict(
            collections.deque
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> ExchangeSmtpServer:
        loop = asyncio.new_event_loop()
        self._loop = loop
        tls_context = self.tls.server_context()
        handler = _Handler(self)

        async def serve() -> None:
            self._server = await loop.create_server(
                lambda: _ExchangeSMTP(self, handler, tls_context, loop),
                self.host,
                self._requested_port,
            )
            self.port = self._server.sockets[0].getsockname()[1]

        self._thread = serve_in_thread(loop, serve, "sandbox-smtp")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
                # Python 3.11's wait_closed does not wait for connections; cancel them.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)
        loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> ExchangeSmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state helpers -----------------------------------------------------------------

    def active_sessions(self, upn: str) -> int:
        """Authenticated sessions currently open for a mailbox."""
        return self._active[upn.lower()]

    def diag(self) -> str:
        """Exchange's ``[host timestamp id]`` failure suffix (without the brackets)."""
        now = dt.datetime.fromtimestamp(self.validator.now(), dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        return f"{self.server_fqdn} {stamp} {secrets.token_hex(8).upper()}"

    def reply(self, key: str, **values: object) -> str:
        return REPLIES[key].format(host=self.server_fqdn, diag=self.diag(), **values)


@dataclasses.dataclass
class _AuthDecision:
    reply: str
    mailbox: Mailbox | None = None


class _ExchangeSMTP(Bdat):
    """One connection. Overrides what Exchange says differently from aiosmtpd."""

    # Real tokens make AUTH lines of 2-4 KB (testing.md pitfall); applies to the read buffer.
    line_length_limit = AUTH_LINE_LIMIT + 2

    def __init__(
        self,
        server: ExchangeSmtpServer,
        handler: _Handler,
        tls_context: Any,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.server = server
        date = email.utils.format_datetime(
            dt.datetime.fromtimestamp(server.validator.now(), dt.UTC)
        )
        super().__init__(
            handler,
            data_size_limit=server.max_message_size,
            enable_SMTPUTF8=True,
            hostname=server.server_fqdn,
            ident=REPLIES["banner"].format(date=date),
            tls_context=tls_context,
            loop=loop,
        )
        self.command_size_limit = AUTH_LINE_LIMIT
        self.command_size_limits = collections.defaultdict(lambda: AUTH_LINE_LIMIT)
        self.mailbox_upn = ""

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = REWRITES.get(status, status)
        await super().push(status)

    def connection_lost(self, error: Exception | None) -> None:
        if self.mailbox_upn:
            self.server._active[self.mailbox_upn] -= 1
            self.mailbox_upn = ""
        super().connection_lost(error)

    async def smtp_EHLO(self, hostname: str) -> None:
        if not hostname:
            await self.push("501 5.5.4 Invalid domain name")
            return
        assert self.session is not None
        self._set_rset_state()
        self.session.extended_smtp = True
        self.session.host_name = hostname
        ip = (self.session.peer or ("127.0.0.1",))[0]
        tls = self._tls_protocol is not None
        lines = [
            REPLIES["ehlo_hello"].format(host=self.server.server_fqdn, ip=ip),
            f"SIZE {self.server.max_message_size}",
            "PIPELINING",
            "DSN",
            "ENHANCEDSTATUSCODES",
            *([] if tls else ["STARTTLS"]),
            # Exchange offers AUTH only inside TLS.
            *(["AUTH LOGIN XOAUTH2"] if tls else []),
            "8BITMIME",
            # Exchange also lists BINARYMIME, which would let a client declare binary
            # content; this server does not check BODY=, so it does not claim it.
            "CHUNKING",
            "SMTPUTF8",
        ]
        for line in lines[:-1]:
            await self.push("250-" + line)
        await self.push("250 " + lines[-1])

    async def smtp_QUIT(self, arg: str) -> None:
        await self.push(REPLIES["quit"])
        assert self._handler_coroutine is not None and self.transport is not None
        self._handler_coroutine.cancel()
        self.transport.close()

    async def smtp_AUTH(self, arg: str) -> None:
        if await self.check_helo_needed("EHLO"):
            return
        assert self.session is not None
        args = (arg or "").split()
        mechanism = args[0].upper() if args else ""
        if self._tls_protocol is None or not mechanism:
            # Not advertised before STARTTLS: Exchange does not know the mechanism then.
            await self.push(self.server.reply("auth_unknown_mechanism"))
            return
        if self.session.authenticated:
            await self.push(REPLIES["auth_twice"])
            return
        if mechanism in BASIC_MECHANISMS:
            await self._swallow_basic_credentials(mechanism, args[1:])
            await self.push(self.server.reply("auth_basic_disabled"))
            return
        if mechanism != "XOAUTH2":
            await self.push(self.server.reply("auth_unknown_mechanism"))
            return
        if len(args) > 1:
            response = args[1]
        else:
            blob = await self.challenge_auth("")
            if not isinstance(blob, bytes):
                return  # aiosmtpd has answered the abort or the bad base64
            response = _b64(blob)
        decision = await self._decide(response)
        if decision.mailbox is not None:
            upn = decision.mailbox.upn
            self.server._active[upn] += 1
            self.mailbox_upn = upn
            self.session.authenticated = True
        await self.push(decision.reply)

    async def _swallow_basic_credentials(self, mechanism: str, initial: list[str]) -> None:
        # Exchange reads the user name and password before refusing basic authentication.
        prompts = {"LOGIN": ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"], "PLAIN": [""]}[mechanism]
        for prompt in prompts[len(initial) :]:
            await self.push("334 " + prompt)
            assert self._reader is not None
            await self._reader.readline()

    async def _decide(self, response: str) -> _AuthDecision:
        """Exchange's AUTH XOAUTH2 decision order (microsoft.md §6 item 12)."""
        server, world = self.server, self.server.world
        parsed = parse_xoauth2(response)
        if parsed is None:
            return _AuthDecision(server.reply("auth_failed"))
        user, token = parsed
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(None, server.validator.introspect, token)
        owner = world.mailbox(info.upn) if info.active else None
        target = world.mailbox(user)
        switch_box = target or owner
        if switch_box is not None and not world.smtp_auth_allowed(switch_box):
            return _AuthDecision(server.reply("auth_smtp_disabled"))
        if (
            owner is None
            or target is None
            or not is_exchange_audience(info.audience)
            or SMTP_SCOPE not in info.scopes
            or not world.may_open(owner, target.upn)
        ):
            return _AuthDecision(server.reply("auth_failed"))
        if server._active[target.upn] >= server.max_sessions_per_mailbox:
            return _AuthDecision(REPLIES["concurrency"])
        return _AuthDecision(REPLIES["auth_ok"], target)

    async def smtp_MAIL(self, arg: str | None) -> None:
        assert self.session is not None
        if self.session.host_name and not self.session.authenticated:
            await self.push(REPLIES["not_authenticated"])
            return
        await super().smtp_MAIL(_strip_params(arg))

    async def smtp_RCPT(self, arg: str | None) -> None:
        await super().smtp_RCPT(_strip_params(arg))


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _strip_params(arg: str | None) -> str | None:
    if arg is None:
        return None
    return " ".join(p for p in arg.split(" ") if not p.upper().startswith(_IGNORED_PARAMS))


class _Handler:
    """aiosmtpd hooks: Exchange's MAIL/RCPT texts, SendAs, rate, delivery."""

    def __init__(self, server: ExchangeSmtpServer) -> None:
        self.server = server

    async def handle_RSET(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        return REPLIES["rset"]

    async def handle_NOOP(self, smtp: SMTP, session: Session, envelope: Envelope, arg: str) -> str:
        return REPLIES["noop"]

    async def handle_MAIL(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return REPLIES["mail_ok"]

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.server.recipients_per_message:
            return REPLIES["too_many_recipients"]
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return REPLIES["rcpt_ok"]

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        server, world = self.server, self.server.world
        assert isinstance(smtp, _ExchangeSMTP)
        upn = smtp.mailbox_upn
        mailbox = world.mailbox(upn)
        assert mailbox is not None
        raw = envelope.original_content or b""
        headers = BytesHeaderParser(policy=default_policy).parsebytes(raw)
        senders = [a for _, a in email.utils.getaddresses(headers.get_all("From", []))]
        if envelope.mail_from:
            senders.append(envelope.mail_from)
        for sender in senders:
            if not world.may_send_as(mailbox, sender):
                return server.reply("send_as_denied", upn=upn, sender=sender)
        if not self._within_recipient_quota(upn, len(envelope.rcpt_tos)):
            return REPLIES["recipient_quota"]
        await self._pace(upn)
        server.accepted.append(
            AcceptedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                upn=upn,
            )
        )
        if server.maildrop is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, self._deliver, upn, list(envelope.rcpt_tos), raw
            )
        return server.reply("queued", queue_id=secrets.token_hex(16).upper())

    async def _pace(self, upn: str) -> None:
        # Microsoft does not refuse mail beyond 30/min: it delays it (§1.15). Count and delay.
        server = self.server
        now = server.validator.now()
        window = server._sent_at[upn]
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= server.messages_per_minute:
            server.rate_violations += 1
            await asyncio.sleep(server.rate_delay)
        window.append(now)

    def _within_recipient_quota(self, upn: str, count: int) -> bool:
        server = self.server
        now = server.validator.now()
        sent = server._recipients[upn]
        while sent and sent[0][0] <= now - 86400:
            sent.popleft()
        if sum(n for _, n in sent) + count > server.recipients_per_day:
            return False
        sent.append((now, count))
        return True

    def _deliver(self, upn: str, rcpt_tos: list[str], raw: bytes) -> None:
        maildrop = self.server.maildrop
        assert maildrop is not None
        for rcpt in rcpt_tos:
            target = self.server.world.mailbox(rcpt)
            if target is not None:
                maildrop.deliver(target.upn, raw, INBOX)
        maildrop.deliver(upn, raw, SENT_ITEMS, seen=True)
