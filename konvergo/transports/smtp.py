"""The SMTP transport: one verified, authenticated connection that sends pre-built messages.

What it does differently from Odoo's (odoo.md §2.6, weaknesses 2, 6 and 11):

- TLS is always verified (:func:`konvergo.security.tls.client_context`), and EHLO is sent
  again after STARTTLS, because the capabilities before TLS (no AUTH on Exchange) are void.
- The reply to AUTH XOAUTH2 is checked: a 535 becomes an :class:`AuthorizationError` with
  Microsoft's exact text, instead of surfacing later as a puzzling ``530 5.7.57`` at MAIL.
- The connection test goes as far as DATA, and can send a real message, because Exchange
  only refuses a From it may not send as (``554 5.2.0 ... SendAsDenied``) at the end of DATA.
- Neither the token nor the password is logged: smtplib's debug output (which prints the
  AUTH line) is kept off, and our own log lines never contain credentials.

Errors are classified in :mod:`konvergo.transports.smtp_errors` by lookup tables.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import os
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from types import TracebackType
from typing import Literal, NamedTuple, TypeVar

from konvergo.errors import ConfigurationError, KonvergoError
from konvergo.security.tls import shared_client_context
from konvergo.transports.auth import PasswordAuth, XOAuth2Auth
from konvergo.transports.smtp_errors import (
    STAGE_LABELS,
    SmtpAuthorizationError,
    SmtpConfigurationError,
    SmtpFailure,
    SmtpPermanentError,
    SmtpTemporaryError,
    Stage,
    exception_failure,
    reply_failure,
)
from konvergo.transports.sockets import readable

__all__ = [
    "ConnectionTestResult",
    "Encryption",
    "SendResult",
    "SmtpAuthorizationError",
    "SmtpConfigurationError",
    "SmtpConnection",
    "SmtpFailure",
    "SmtpPermanentError",
    "SmtpReply",
    "SmtpSettings",
    "SmtpTemporaryError",
    "Stage",
    "Submission",
    "build_test_message",
    "normalize_line_endings",
    "test_connection",
]

logger = logging.getLogger(__name__)

Encryption = Literal["none", "starttls", "ssl"]
ENCRYPTIONS: frozenset[str] = frozenset({"none", "starttls", "ssl"})

SUCCESS_MESSAGE = "Connection Test Successful!"

#: Password mechanisms smtplib's ``login`` knows; a server offering none of them (Exchange
#: Online with Basic auth retired offers only XOAUTH2 to most tenants) cannot take a password.
_PASSWORD_MECHANISMS = frozenset({"CRAM-MD5", "PLAIN", "LOGIN"})

_T = TypeVar("_T")


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to submit mail: one outgoing server as an admin configured it."""

    host: str
    port: int
    encryption: Encryption
    auth: PasswordAuth | XOAuth2Auth | None
    timeout: float = 60
    local_hostname: str | None = None

    def __post_init__(self) -> None:
        if not self.host or self.host != self.host.strip():
            raise ConfigurationError("The SMTP Server host is empty or has spaces around it.")
        if self.encryption not in ENCRYPTIONS:
            raise ConfigurationError(
                f"Connection Encryption must be one of {sorted(ENCRYPTIONS)}, "
                f"not {self.encryption!r}."
            )
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"The SMTP port must be 1-65535, not {self.port}.")
        if self.timeout <= 0:
            raise ConfigurationError("The SMTP timeout must be a positive number of seconds.")

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SmtpReply:
    """One reply: its code and its text exactly as the server sent it (lines joined by \\n)."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


@dataclass(frozen=True)
class SendResult:
    """The outcome of one accepted message."""

    accepted: list[str]
    #: Recipients the server refused although others were accepted, with its reply to each.
    refused: dict[str, SmtpReply]
    #: The reply to the end of DATA (``250 2.0.0 OK <queue id>`` ...).
    reply: SmtpReply


class Submission(NamedTuple):
    """One message to submit: envelope sender, recipients and the finished bytes."""

    envelope_from: str
    recipients: Sequence[str]
    message: bytes


@dataclass(frozen=True)
class _Envelope:
    """MAIL, each RCPT and DATA of one message, and the bytes that say them at once."""

    commands: tuple[str, ...]
    stages: tuple[Stage, ...]
    encoding: str

    def wire(self, start: int = 0, end: int | None = None) -> bytes:
        return "".join(f"{c}\r\n" for c in self.commands[start:end]).encode(self.encoding)


@dataclass(frozen=True)
class _Primed:
    """An envelope already written behind the previous message's final dot, replies unread."""

    key: tuple[str, tuple[str, ...], bytes]
    envelope: _Envelope

    @staticmethod
    def key_of(
        envelope_from: str, recipients: Sequence[str], data: bytes
    ) -> tuple[str, tuple[str, ...], bytes]:
        """What identifies a message: the next send() must match it to use the envelope."""
        return envelope_from, tuple(recipients), data


@dataclass(frozen=True)
class ConnectionTestResult:
    """What the Test Connection button shows: ok, or where it failed and the server's words."""

    ok: bool
    message: str
    stage: Stage | None = None
    reply_code: int | None = None
    reply_text: str = ""
    #: The error catalogue's advice (cause, who must act, fix), when it knows the reply.
    explanation: str | None = None
    #: True when a real test message was accepted by the server.
    sent: bool = False
    #: "authorization", "configuration", "temporary" or "permanent" (who must act).
    failure_class: str | None = None
    error: KonvergoError | None = field(default=None, repr=False, compare=False)


def normalize_line_endings(message: bytes) -> bytes:
    """``message`` with every bare LF or bare CR turned into CRLF, as RFC 5321 demands.

    smtplib sends bytes as they are, and Exchange refuses bare LFs in some configurations;
    normalising here means callers may hand over bytes built with either convention.
    """
    crlf = message.count(b"\r\n")
    # The outbox stores finished CRLF bytes: counting is far cheaper than rewriting 10 KB.
    if crlf == message.count(b"\n") == message.count(b"\r"):
        return message
    return re.sub(rb"\r\n|\r|\n", b"\r\n", message)


def _dot_stuffed(message: bytes) -> bytes:
    """The DATA payload: leading dots doubled (RFC 5321 4.5.2), CRLF-terminated, then ``.``."""
    body = message
    # Most messages have no line that starts with a dot: searching is cheaper than rewriting.
    if body.startswith(b".") or b"\n." in body:
        body = re.sub(rb"(?m)^\.", b"..", body)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _path(address: str, stage: Stage) -> str:
    """``address`` as an SMTP reverse- or forward-path (``<>`` for the null sender).

    Addresses were validated when the mail was queued; refusing line breaks, NUL and angle
    brackets here as well means no caller can smuggle a second command into the pipeline. A
    quoted local part with a space (``"john doe"@example.com``) is a valid address and goes
    out as it is.
    """
    if any(c in address for c in "\r\n\x00<>"):
        raise SmtpPermanentError(
            f"{address!r} cannot be sent: an address must not contain a line break or angle "
            "brackets.",
            stage=stage,
        )
    return f"<{address}>"


def _text(reply: bytes | str) -> str:
    # Servers may put UTF-8 (or garbage) in reply text; never fail on decoding it.
    return reply if isinstance(reply, str) else reply.decode("utf-8", "replace")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Once:
    """A callback that runs at most once (``None``: nothing to run)."""

    __slots__ = ("_call",)

    def __init__(self, call: Callable[[], object] | None) -> None:
        self._call = call

    @property
    def pending(self) -> bool:
        return self._call is not None

    def __call__(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call()


def _quick_ack(smtp: smtplib.SMTP) -> None:
    """Acknowledge the server's next segments at once (Linux ``TCP_QUICKACK``).

    A server that writes each reply of a pipelined group separately with Nagle's algorithm on
    (aiosmtpd on a socket it did not create itself, for one) holds the second reply until our
    ACK, which the kernel delays by up to 40 ms while we send nothing: without this, one
    pipelined message would take longer than four round trips.
    """
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is not None and smtp.sock is not None:
        with suppress(OSError):
            smtp.sock.setsockopt(socket.IPPROTO_TCP, option, 1)


def _envelope_failed(replies: list[SmtpReply], recipients: int) -> bool:
    """Whether a transaction sent command by command must stop before its next command."""
    if replies[0].code != 250:
        return True
    # After the last RCPT: DATA is pointless when no recipient was accepted.
    return len(replies) == 1 + recipients and not any(r.code in (250, 251) for r in replies[1:])


def _size_limit(smtp: smtplib.SMTP) -> int:
    """The message size the server announced in EHLO (``SIZE n``); 0 when none."""
    value = smtp.esmtp_features.get("size", "").strip()
    return int(value) if value.isascii() and value.isdigit() else 0


def _peer_spoke_first(smtp: smtplib.SMTP) -> bool:
    """Whether the server sent something unasked, or hung up, since its last reply.

    Between transactions a server says nothing until spoken to; a readable socket means a
    421 before closing (an idle timeout) or the end of the stream.
    """
    sock = smtp.sock
    if sock is None:
        return True
    try:
        return readable(sock, 0)
    except (OSError, ValueError):
        return False  # cannot tell: the write and its replies will


def _chunked(smtp: smtplib.SMTP) -> bool:
    """Whether messages go as one ``BDAT ... LAST`` behind their envelope (RFC 3030)."""
    return bool(smtp.has_extn("chunking") and smtp.has_extn("pipelining"))


class SmtpConnection:
    """One SMTP session, opened on first use and reused for many messages.

    Use as a context manager, or call :meth:`open` and :meth:`close`. Not thread-safe: one
    connection per worker (Exchange allows three per mailbox, ``432 4.3.2`` beyond).
    """

    def __init__(
        self, settings: SmtpSettings, *, cafile: str | os.PathLike[str] | None = None
    ) -> None:
        self.settings = settings
        # Only a CA *file* can be passed, not an SSL context, so that no caller can hand in
        # a context with verification turned off.
        self._cafile = cafile
        self._smtp: smtplib.SMTP | None = None
        #: The next message's envelope, sent behind the last final dot (see ``send(then=)``).
        self._primed: _Primed | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> SmtpConnection:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._smtp is not None and self._smtp.sock is not None

    def open(self) -> None:
        """Connect, secure, EHLO and authenticate; does nothing when already open."""
        if self.is_open:
            return
        self._discard()
        settings = self.settings
        self._refuse_cleartext_credentials()
        context = self._tls_context()
        smtp = self._connect(context)
        try:
            self._ehlo(smtp, "connect")
            if settings.encryption == "starttls":
                self._starttls(smtp, context)
            if settings.auth is not None:
                self._authenticate(smtp, settings.auth)
        except BaseException:
            _abandon(smtp)
            raise
        self._smtp = smtp
        if smtp.sock is not None:
            # Every write is a whole group (an envelope, a message, a final dot) followed by a
            # read; Nagle's algorithm would hold a small write back until the previous one
            # is acknowledged, which a server may delay by 40 ms.
            with suppress(OSError):
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        logger.info(
            "SMTP connected to %s (%s)%s",
            settings.server,
            settings.encryption,
            f" as {settings.auth.username}" if settings.auth else "",
        )

    def close(self) -> None:
        """Say QUIT when the server is still listening, then close the socket."""
        if self._primed is not None:
            # The server is waiting for the primed message's content: QUIT would become part
            # of it. Hanging up discards the unfinished transaction (RFC 5321 4.1.1.5).
            self._discard()
            return
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            if smtp.sock is not None:
                smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass  # the server hung up first; there is nothing left to be polite to
        finally:
            smtp.close()

    def _discard(self) -> None:
        self._primed = None
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            _abandon(smtp)

    # --- sending ---------------------------------------------------------------------------

    def send(
        self,
        envelope_from: str,
        recipients: list[str],
        message: bytes,
        *,
        before_commit: Callable[[], object] | None = None,
        then: Submission | None = None,
    ) -> SendResult:
        """Submit ``message`` (finished bytes) to ``recipients``; open the connection if needed.

        Recipients the server refuses are listed in the result while the others receive the
        message; if it refuses all of them, the error carries them in ``.refused``. When the
        server dropped the connection since the previous message (idle timeout, restart), it
        reconnects once and retries; nothing of this message had been accepted at that point.

        ``before_commit`` runs exactly once, before this method returns or raises, and always
        before the final ``.`` of this message is sent, which is the moment the server takes
        responsibility for it. The outbox records the previous message's outcome there: the
        database works while the server reads the envelope (or, when the envelope went out
        early, the message itself), and a crash still leaves at most one message per session
        sent but not recorded. An exception it raises ends the transaction unsent (the
        connection is dropped) and propagates.

        ``then`` is the message this session sends next, if it knows. On a server that offers
        PIPELINING its MAIL, RCPT and DATA go out right behind this message's final dot (RFC
        2920 3.1 allows message content as the first command of a group), so the next
        envelope's round trip overlaps the server's work on this message. The next call must
        then send exactly that message, and reads those replies; any other call, or
        :meth:`close`, hangs up instead, since the server waits for that message's content.
        A server that also offers CHUNKING (RFC 3030; Exchange Online does) gets each message
        as one ``BDAT`` chunk written with its envelope instead: one round trip per message
        without ``then``, which is then not used.
        """
        if not recipients:
            raise ValueError("send() needs at least one recipient.")
        data = normalize_line_endings(message)
        commit = _Once(before_commit)
        if self._primed is not None and self._primed.key != _Primed.key_of(
            envelope_from, recipients, data
        ):
            logger.debug("SMTP %s: not the primed message; starting afresh", self._server)
            self._discard()
        reconnected = False
        try:
            while True:
                self.open()
                try:
                    result = self._transaction(envelope_from, recipients, data, commit, then)
                except SmtpTemporaryError as exc:
                    dropped = exc.stage == "mail" and not self.is_open
                    if reconnected or not dropped:
                        raise
                    reconnected = True
                    logger.info(
                        "SMTP connection to %s was dropped; reconnecting once", self._server
                    )
                    continue
                if logger.isEnabledFor(logging.INFO):
                    logger.info(
                        "SMTP %s accepted a message for %d recipient(s), refused %d: %s",
                        self._server,
                        len(result.accepted),
                        len(result.refused),
                        result.reply,
                    )
                return result
        finally:
            commit()

    def probe(self, envelope_from: str, recipient: str) -> SmtpReply:
        """MAIL, RCPT and DATA up to the server's 354, then hang up so nothing is sent.

        After 354 every line is message content, so RSET or QUIT would become part of the
        message; closing the socket without the final ``.`` is the only way to abandon it
        (RFC 5321 4.1.1.5: the server discards an unfinished transaction).
        """
        if self._primed is not None:
            self._discard()
        self.open()
        _, _, reply = self._start_data(self._require_open(), envelope_from, [recipient], None)
        self._discard()
        return reply

    def _transaction(
        self,
        envelope_from: str,
        recipients: list[str],
        data: bytes,
        commit: _Once,
        then: Submission | None = None,
    ) -> SendResult:
        smtp = self._require_open()
        if self._primed is None and _chunked(smtp):
            return self._transaction_chunked(smtp, envelope_from, recipients, data, commit)
        accepted, refused, _ = self._start_data(smtp, envelope_from, recipients, data, commit)
        payload = _dot_stuffed(data)
        try:
            primed = self._prime(smtp, then)
            if commit.pending:
                # The server reads the message while the previous outcome is committed; only
                # the final dot, the moment it takes the message, waits for the commit.
                self._write(smtp, "data", payload[:-3])
                commit()
                payload = payload[-3:]
            if primed is not None:
                payload += primed.envelope.wire()
            self._write(smtp, "data", payload)
            if primed is not None:
                _quick_ack(smtp)
            code, text = self._command("data", smtp.getreply)
        except BaseException:
            self._discard()  # whether the server took the message is unknown: start afresh
            raise
        if primed is not None and code != 421:
            # A refused message ends its transaction only: the server goes on to read the
            # next envelope, whose replies the next send() reads.
            self._primed = primed
        if code != 250:
            # The transaction is over either way; no RSET is needed for the next message.
            raise self._failed(reply_failure(code, text, "data", server=self._server), reset=False)
        return SendResult(accepted=accepted, refused=refused, reply=SmtpReply(code, text))

    def _transaction_chunked(
        self,
        smtp: smtplib.SMTP,
        envelope_from: str,
        recipients: list[str],
        data: bytes,
        commit: _Once,
    ) -> SendResult:
        """MAIL, RCPT and ``BDAT <size> LAST`` with the message, in one write.

        On a server that offers CHUNKING (RFC 3030) and PIPELINING, as Exchange Online does:
        no 354 to wait for, no dot-stuffing, and the server reads the message as one block of
        known size instead of line by line. Only the message's last byte, which completes it
        for the server, waits for ``commit``.

        A server may hold its replies to MAIL and RCPT until it has read the whole group (RFC
        2920 4), so once the message is written a lost connection means the server may have
        it: that is reported at the DATA stage and never re-sent within this call. A
        connection the server closed while idle is therefore noticed before writing (its 421
        or end of stream is already waiting), and send() reconnects for it.
        """
        if not data.endswith(b"\r\n"):
            data += b"\r\n"  # as the DATA path ends it, so both deliver the same bytes
        limit = _size_limit(smtp)
        if limit and len(data) > limit:
            # SIZE= would have the server refuse at MAIL, but only after the upload.
            raise SmtpPermanentError(
                f"{STAGE_LABELS['mail']} failed on {self._server}: the message is {len(data)} "
                f"bytes, more than the {limit} bytes the server accepts (SIZE in its EHLO). "
                "Send fewer or smaller attachments.",
                stage="mail",
                server=self._server,
            )
        if _peer_spoke_first(smtp):
            self._discard()
            raise SmtpTemporaryError(
                f"{STAGE_LABELS['mail']} failed: {self._server} closed the connection while "
                "it was idle.",
                stage="mail",
                server=self._server,
            )
        envelope = self._envelope(smtp, envelope_from, recipients, data, chunked=True)
        wire = envelope.wire() + data
        replies: list[SmtpReply] = []
        try:
            # A failed write never delivered the last byte, so the message is not taken:
            # the MAIL stage, which send() may retry on a new connection.
            if commit.pending:
                self._write(smtp, "mail", wire[:-1])
                commit()
                wire = wire[-1:]
            self._write(smtp, "mail", wire)
            _quick_ack(smtp)
            for _ in envelope.stages:
                code, text = self._command("data", smtp.getreply)
                if code == 421:  # the server is closing the channel; nothing more comes
                    # Refused at MAIL, nothing was taken; later, the message may have been.
                    raise reply_failure(
                        code, text, "mail" if not replies else "data", server=self._server
                    )
                replies.append(SmtpReply(code, text))
        except BaseException:
            self._discard()  # whether the server took the message is unknown: start afresh
            raise
        accepted, refused, failure = self._judged(recipients, replies, 250)
        if failure is not None:
            # RSET: after a refused chunk the transaction's state is undefined (RFC 3030 2).
            raise self._failed(failure)
        return SendResult(accepted=accepted, refused=refused, reply=replies[-1])

    def _envelope(
        self,
        smtp: smtplib.SMTP,
        envelope_from: str,
        recipients: Sequence[str],
        data: bytes | None,
        *,
        chunked: bool = False,
    ) -> _Envelope:
        options = self._mail_options(smtp, envelope_from, recipients, data)
        mail = " ".join([f"MAIL FROM:{_path(envelope_from, 'mail')}", *options])
        rcpt: list[Stage] = ["rcpt"] * len(recipients)
        last = f"BDAT {len(data)} LAST" if chunked and data is not None else "DATA"
        return _Envelope(
            (mail, *(f"RCPT TO:{_path(r, 'rcpt')}" for r in recipients), last),
            ("mail", *rcpt, "data"),
            "utf-8" if "SMTPUTF8" in options else "ascii",
        )

    def _prime(self, smtp: smtplib.SMTP, then: Submission | None) -> _Primed | None:
        """The next message's envelope to write behind this final dot, if it can be."""
        if then is None or not then.recipients or not smtp.has_extn("pipelining"):
            return None
        data = normalize_line_endings(then.message)
        try:
            envelope = self._envelope(smtp, then.envelope_from, then.recipients, data)
        except SmtpFailure:
            return None  # a bad address: the next send() reports it for its own message
        return _Primed(_Primed.key_of(then.envelope_from, then.recipients, data), envelope)

    def _start_data(
        self,
        smtp: smtplib.SMTP,
        envelope_from: str,
        recipients: list[str],
        data: bytes | None,
        commit: _Once | None = None,
    ) -> tuple[list[str], dict[str, SmtpReply], SmtpReply]:
        """MAIL, RCPT for each recipient, DATA; returns accepted, refused and the 354 reply.

        When the server offers PIPELINING (RFC 2920; Exchange Online does) the commands go out
        in one write and their replies are read afterwards: one round trip instead of two
        plus one per recipient; when they went out behind the previous message (``_primed``,
        which send() checked is this message's) only the replies are left to read. ``commit``
        runs once commands written here are on their way; after a primed envelope it is left
        for :meth:`_transaction` to run once the message is on its way.
        """
        primed, self._primed = self._primed, None
        envelope = (
            primed.envelope
            if primed is not None
            else self._envelope(smtp, envelope_from, recipients, data)
        )
        commands, stages = envelope.commands, envelope.stages
        pipelined = primed is not None or smtp.has_extn("pipelining")
        replies: list[SmtpReply] = []
        while len(replies) < len(commands):
            start = len(replies)
            end = len(commands) if pipelined else start + 1
            try:
                if primed is None:
                    self._write(smtp, stages[start], envelope.wire(start, end))
                    if end - start > 1:
                        _quick_ack(smtp)
                    if commit is not None:
                        commit()  # while the envelope travels
                for stage in stages[start:end]:
                    code, text = self._command(stage, smtp.getreply)
                    if code == 421:  # the server is closing the channel; nothing more comes
                        raise reply_failure(code, text, stage, server=self._server)
                    replies.append(SmtpReply(code, text))
            except BaseException:
                # Replies may still be on their way: a later message would read them as its
                # own. Only a fresh connection is in step again.
                self._discard()
                raise
            if not pipelined and _envelope_failed(replies, len(recipients)):
                break

        accepted, refused, failure = self._judged(recipients, replies, 354)
        if failure is not None:
            if len(replies) == len(commands) and replies[-1].code == 354:
                # A pipelined DATA the server accepted although the envelope failed (RFC 2920
                # 3.1): end the empty message so the connection can go on.
                try:
                    self._write(smtp, "data", b".\r\n")
                    self._command("data", smtp.getreply)
                except BaseException:
                    self._discard()  # the envelope's failure is the one to report
            raise self._failed(failure)
        return accepted, refused, replies[-1]

    def _judged(
        self, recipients: Sequence[str], replies: Sequence[SmtpReply], expected: int
    ) -> tuple[list[str], dict[str, SmtpReply], SmtpFailure | None]:
        """A group's replies (MAIL, each RCPT, then DATA or BDAT, which ``expected`` answers):
        the accepted and refused recipients, and the failure they add up to, if any. The
        group may have stopped early (sent command by command): the last reply read counts."""
        accepted: list[str] = []
        refused: dict[str, SmtpReply] = {}
        for recipient, reply in zip(recipients, replies[1 : 1 + len(recipients)], strict=False):
            if reply.code in (250, 251):
                accepted.append(recipient)
            else:
                refused[recipient] = reply
        failure: SmtpFailure | None = None
        if replies[0].code != 250:
            failure = reply_failure(replies[0].code, replies[0].text, "mail", server=self._server)
        elif not accepted:
            failure = self._all_refused(refused)
        elif replies[-1].code != expected:
            failure = reply_failure(replies[-1].code, replies[-1].text, "data", server=self._server)
        return accepted, refused, failure

    def _all_refused(self, refused: dict[str, SmtpReply]) -> SmtpFailure:
        # If any recipient was refused only temporarily, a retry may still deliver to it, so
        # that reply decides the class; otherwise the first refusal does.
        first = next(
            (r for r in refused.values() if r.code // 100 == 4), next(iter(refused.values()))
        )
        return reply_failure(
            first.code,
            first.text,
            "rcpt",
            server=self._server,
            refused={address: (r.code, r.text) for address, r in refused.items()},
            message=(
                f"{STAGE_LABELS['rcpt']} failed on {self._server}: every recipient was refused: "
                + "; ".join(f"{address}: {reply}" for address, reply in refused.items())
            ),
        )

    def _mail_options(
        self,
        smtp: smtplib.SMTP,
        envelope_from: str,
        recipients: Sequence[str],
        data: bytes | None,
    ) -> list[str]:
        options: list[str] = []
        if data is not None and smtp.has_extn("size"):
            # Lets the server refuse an oversized message before we upload it.
            options.append(f"SIZE={len(data)}")
        needs_utf8 = not all(a.isascii() for a in (envelope_from, *recipients))
        eight_bit = needs_utf8 or (data is not None and not data.isascii())
        for needed, extension, parameter in (
            (eight_bit, "8bitmime", "BODY=8BITMIME"),
            (needs_utf8, "smtputf8", "SMTPUTF8"),
        ):
            if not needed:
                continue
            if not smtp.has_extn(extension):
                raise SmtpPermanentError(
                    f"{STAGE_LABELS['mail']} failed on {self._server}: the message needs the "
                    f"{extension.upper()} extension (non-ASCII addresses or 8-bit content), "
                    "which this server does not offer; encode the message as 7-bit.",
                    stage="mail",
                    server=self._server,
                )
            options.append(parameter)
        return options

    # --- opening ---------------------------------------------------------------------------

    def _refuse_cleartext_credentials(self) -> None:
        settings = self.settings
        # A bearer token or password sent in clear over the Internet is as good as published.
        # Loopback is allowed for local relays and tests.
        if (
            settings.auth is not None
            and settings.encryption == "none"
            and not _is_loopback(settings.host)
        ):
            raise SmtpConfigurationError(
                f"{STAGE_LABELS['connect']} refused: credentials for {settings.server} would "
                "travel unencrypted. Set Connection Encryption to STARTTLS (port 587) or "
                "SSL/TLS (port 465).",
                stage="connect",
                server=settings.server,
            )

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.settings.encryption == "none":
            return None
        try:
            return shared_client_context(self._cafile)
        except ConfigurationError as exc:
            raise SmtpConfigurationError(
                str(exc), stage="connect", server=self.settings.server
            ) from exc

    def _connect(self, context: ssl.SSLContext | None) -> smtplib.SMTP:
        s = self.settings
        with self._translated("connect"):
            # The constructors connect and read the greeting; a non-220 greeting (421 busy,
            # 554 refused) raises SMTPConnectError, which carries the reply.
            if s.encryption == "ssl":
                return smtplib.SMTP_SSL(
                    s.host, s.port, s.local_hostname, timeout=s.timeout, context=context
                )
            return smtplib.SMTP(s.host, s.port, s.local_hostname, timeout=s.timeout)
        raise AssertionError("unreachable")  # pragma: no cover - _translated always raises

    def _ehlo(self, smtp: smtplib.SMTP, stage: Stage) -> None:
        with self._translated(stage):
            code, text = smtp.ehlo()
        if code != 250:
            raise reply_failure(code, _text(text), stage, server=self._server)

    def _starttls(self, smtp: smtplib.SMTP, context: ssl.SSLContext | None) -> None:
        if not smtp.has_extn("starttls"):
            raise SmtpConfigurationError(
                f"{STAGE_LABELS['starttls']} failed: {self._server} does not offer STARTTLS. "
                "Check Connection Encryption: choose SSL/TLS if this port expects TLS from the "
                "first byte (465), or use the server's STARTTLS port (587).",
                stage="starttls",
                server=self._server,
            )
        with self._translated("starttls"):
            smtp.starttls(context=context)
        # RFC 3207: everything learnt before TLS is void; AUTH is often only offered now.
        self._ehlo(smtp, "starttls")

    def _authenticate(self, smtp: smtplib.SMTP, auth: PasswordAuth | XOAuth2Auth) -> None:
        # smtplib prints every line it sends, AUTH included, when debuglevel > 0 (even when
        # someone set it class-wide to debug); make sure this connection never does.
        smtp.set_debuglevel(0)
        if not smtp.has_extn("auth"):
            raise SmtpConfigurationError(
                f"{STAGE_LABELS['auth']} failed: {self._server} offers no AUTH on this "
                "connection. Check Connection Encryption (Microsoft 365 offers AUTH only after "
                "STARTTLS) and that this port accepts authenticated submission (587).",
                stage="auth",
                server=self._server,
            )
        offered = set(smtp.esmtp_features["auth"].upper().split())
        if isinstance(auth, XOAuth2Auth):
            self._xoauth2(smtp, auth, offered)
        else:
            self._password(smtp, auth, offered)
        logger.debug(
            "SMTP %s authenticated %s with %s", self._server, auth.username, auth.mechanism
        )

    def _xoauth2(self, smtp: smtplib.SMTP, auth: XOAuth2Auth, offered: set[str]) -> None:
        if "XOAUTH2" not in offered:
            raise SmtpConfigurationError(
                f"{STAGE_LABELS['auth']} failed: {self._server} does not offer XOAUTH2 (it "
                f"offers {' '.join(sorted(offered)) or 'nothing'}). Check the host: Microsoft "
                "365 is smtp.office365.com, port 587, STARTTLS.",
                stage="auth",
                server=self._server,
            )
        # Token-store errors (an expired grant ...) propagate untouched: they are already
        # AuthorizationErrors with their own advice, and no SMTP command has been sent yet.
        response = auth.initial_response()

        def line(text: str) -> tuple[int, bytes]:
            smtp.send(f"{text}\r\n")
            return smtp.getreply()

        def dialogue() -> tuple[int, bytes]:
            code, reply = line(f"AUTH XOAUTH2 {response}")
            if code == 500:
                # The line (a token is 1.5-3 KB) was too long for this server (Dovecot's
                # submission, aiosmtpd's defaults): send the response after the 334 prompt.
                code, reply = line("AUTH XOAUTH2")
                if code == 334:
                    code, reply = line(response)
            if code == 334:
                # An error challenge (Google sends JSON; Microsoft does not): RFC 7628 says
                # answer with an empty line, then the server sends the final reply.
                code, reply = line("")
            return code, reply

        code, text = self._command("auth", dialogue)
        if code != 235:
            raise reply_failure(code, text, "auth", server=self._server)

    def _password(self, smtp: smtplib.SMTP, auth: PasswordAuth, offered: set[str]) -> None:
        if not offered & _PASSWORD_MECHANISMS:
            raise SmtpConfigurationError(
                f"{STAGE_LABELS['auth']} failed: {self._server} accepts no password mechanism "
                f"(it offers {' '.join(sorted(offered))}); it needs OAuth (XOAUTH2).",
                stage="auth",
                server=self._server,
            )
        with self._translated("auth"):
            smtp.login(auth.username, auth.password)

    # --- plumbing --------------------------------------------------------------------------

    @property
    def _server(self) -> str:
        return self.settings.server

    def _require_open(self) -> smtplib.SMTP:
        if self._smtp is None or self._smtp.sock is None:
            raise SmtpTemporaryError(f"The connection to {self._server} is not open.", stage="mail")
        return self._smtp

    def _command(self, stage: Stage, call: Callable[[], tuple[int, bytes]]) -> tuple[int, str]:
        """Run one exchange, translating low-level errors; a dead connection is forgotten."""
        # The same translation as _translated(), without a context manager: this runs for
        # every command of every message.
        try:
            code, reply = call()
        except SmtpFailure:
            if not self.is_open:
                self._discard()
            raise
        except KonvergoError:
            raise
        except (smtplib.SMTPResponseException, OSError) as exc:
            failure = self._translate(exc, stage)
            if not self.is_open:
                self._discard()
            raise failure from exc
        return code, reply if isinstance(reply, str) else reply.decode("utf-8", "replace")

    def _write(self, smtp: smtplib.SMTP, stage: Stage, payload: bytes) -> None:
        """Send ``payload`` as it is (commands or message data), translating errors."""

        def write() -> tuple[int, bytes]:
            smtp.send(payload)
            return 0, b""

        self._command(stage, write)

    def _failed(self, failure: SmtpFailure, *, reset: bool = True) -> SmtpFailure:
        """Prepare the connection for the next message after ``failure``; return it."""
        if failure.reply_code == 421:
            # 421 means the server is closing the channel; do not wait for it to do so.
            self._discard()
        elif reset and self.is_open:
            try:
                assert self._smtp is not None
                self._smtp.rset()
            except (OSError, smtplib.SMTPException):
                self._discard()
        return failure

    @contextmanager
    def _translated(self, stage: Stage) -> Iterator[None]:
        """Turn smtplib, socket and TLS exceptions into SMTP failures with advice."""
        try:
            yield
        except (SmtpFailure, KonvergoError):
            raise
        except (smtplib.SMTPResponseException, OSError) as exc:
            raise self._translate(exc, stage) from exc

    def _translate(self, exc: smtplib.SMTPResponseException | OSError, stage: Stage) -> SmtpFailure:
        s = self.settings
        if isinstance(exc, smtplib.SMTPResponseException):
            return reply_failure(exc.smtp_code, _text(exc.smtp_error), stage, server=s.server)
        # socket, TLS, smtplib disconnects (all OSError subclasses)
        return exception_failure(exc, stage, host=s.host, port=s.port, encryption=s.encryption)


def _abandon(smtp: smtplib.SMTP) -> None:
    """Close without QUIT: used when the session is in an unknown or unwanted state."""
    with suppress(OSError):
        smtp.close()


# --- Test Connection ---------------------------------------------------------------------

Explainer = Callable[[str], str | None]


def build_test_message(mail_from: str, rcpt_to: str) -> bytes:
    """A small, plain message for the Test Connection button's optional real send."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = mail_from
    message["To"] = rcpt_to
    message["Subject"] = "Konvergo mail: connection test"
    message["Date"] = email.utils.formatdate(localtime=False)
    domain = mail_from.rpartition("@")[2] or "konvergo.invalid"
    message["Message-ID"] = email.utils.make_msgid("konvergo-test", domain=domain)
    message.set_content(
        "This message was sent by the Test Connection button of Konvergo mail.\n"
        "It proves that this server accepts mail from this sender; no reply is needed.\n"
    )
    return message.as_bytes()


def test_connection(
    settings: SmtpSettings,
    mail_from: str,
    rcpt_to: str | None = None,
    *,
    send_test_email: bool = False,
    message: bytes | None = None,
    explain: Explainer | None = None,
    cafile: str | os.PathLike[str] | None = None,
) -> ConnectionTestResult:
    """Connect, authenticate, MAIL FROM, RCPT TO and DATA, and report the first failure.

    Without ``send_test_email`` it stops at the server's 354 and hangs up, so nothing is
    sent. With it, a small real message (``message``, or a default one) is sent to
    ``rcpt_to`` (default ``postmaster@<domain of mail_from>``): only that catches refusals
    given at the end of DATA, such as Exchange's SendAsDenied for a From the mailbox may not
    use. ``explain`` maps a server reply to advice; by default the error catalogue's
    (:mod:`konvergo.providers.microsoft.catalogue`), which every error already carries.
    """
    recipient = rcpt_to or f"postmaster@{mail_from.rpartition('@')[2]}"
    connection = SmtpConnection(settings, cafile=cafile)
    try:
        if send_test_email:
            payload = message if message is not None else build_test_message(mail_from, recipient)
            connection.send(mail_from, [recipient], payload)
        else:
            connection.probe(mail_from, recipient)
    except SmtpFailure as exc:
        return _failed_test(exc, exc.stage, exc.reply_code, exc.reply_text, explain)
    except KonvergoError as exc:
        # The token store could not produce a token (revoked grant, no consent ...).
        return _failed_test(exc, "auth", None, str(exc), explain)
    finally:
        connection.close()
    return ConnectionTestResult(ok=True, message=SUCCESS_MESSAGE, sent=send_test_email)


# pytest collects module-level callables named test_* when a test module imports them.
test_connection.__test__ = False  # type: ignore[attr-defined]


def _failed_test(
    exc: KonvergoError,
    stage: Stage,
    code: int | None,
    text: str,
    explain: Explainer | None,
) -> ConnectionTestResult:
    reply = f"{code} {text}".rstrip() if code is not None else text
    explanation: str | None = None
    if explain is None:
        # Our errors and the token store's carry the catalogue's Explanation already.
        found = getattr(exc, "explanation", None)
        explanation = found.summary() if found is not None else None
    elif reply:
        try:
            explanation = explain(reply)
        except Exception:  # advice is optional; a hook's bug must not hide the failure
            logger.exception("The explain hook failed on an SMTP reply")
    failure_class = getattr(exc, "failure_class", None)
    return ConnectionTestResult(
        ok=False,
        message=str(exc),
        stage=stage,
        reply_code=code,
        reply_text=text,
        explanation=explanation,
        failure_class=failure_class if isinstance(failure_class, str) else None,
        error=exc,
    )
