"""IMAP client: verified TLS, XOAUTH2 or LOGIN, UID commands only, bounded-memory fetch.

What Odoo does and we must not (odoo.md weaknesses 14-16): sequence numbers instead of
UIDs, ``FETCH RFC822`` (which sets ``\\Seen``) plus two STOREs per message, no batching. Here
every command is a UID command, bodies are read with ``BODY.PEEK[]`` (flags untouched) in
batches, and a batch is bounded by count *and* bytes so a large mailbox streams through a
small, constant amount of memory.

Errors are classified by the server's words (tables in :mod:`konvergo.transports.imap_errors`)
and always carry those words unaltered.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime as dt
import imaplib
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, cast

from konvergo.errors import ConfigurationError
from konvergo.security.tls import shared_client_context
from konvergo.services.parameters import is_loopback
from konvergo.transports.auth import Credentials, PasswordAuth, XOAuth2Auth
from konvergo.transports.imap_errors import (
    ImapConfigurationError,
    ImapFailure,
    ImapTemporaryError,
    Stage,
    oserror_failure,
    reply_failure,
)
from konvergo.transports.sockets import readable

__all__ = [
    "FetchedMessage",
    "FolderStatus",
    "ImapConnection",
    "ImapSettings",
    "encode_mailbox",
    "uid_set",
]

#: Messages per ``UID FETCH``; 200 is where imaplib's throughput levels off (testing.md).
BATCH_SIZE = 200
#: Bytes of message data per ``UID FETCH``: imaplib holds a whole response in memory, so a
#: batch of large messages is split (a single message larger than this is fetched alone).
BATCH_BYTES = 8 * 1024 * 1024
#: At most this many UIDs' sizes are asked in one ``UID FETCH (RFC822.SIZE)`` (the windows
#: grow from RAMP_START as the fetch requests do); bounds that list too.
SIZE_WINDOW = 2000
#: The first ``UID FETCH`` of a fetch asks for this many messages, each next one twice as
#: many up to BATCH_SIZE: parsing and storing start once 25 messages have arrived instead of
#: 200, and the larger batches after them overlap with that work.
RAMP_START = 25
#: RFC 2177: clients re-issue IDLE at least every 29 minutes.
MAX_IDLE_SECONDS = 25 * 60

logger = logging.getLogger(__name__)

_STATUS_LINE = re.compile(rb"^(?:\*|[A-Za-z0-9]+) (?:NO|BAD|BYE)\b")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_EXISTS = re.compile(rb"^\* (\d+) EXISTS")


@dataclass(frozen=True)
class ImapSettings:
    """Where and how to connect. ``ssl`` means implicit TLS (port 993); without it the
    connection is upgraded with STARTTLS when offered, and credentials are only ever sent in
    clear to a loopback address."""

    host: str
    port: int
    ssl: bool
    auth: Credentials
    timeout: float = 60

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"


class FolderStatus(NamedTuple):
    """What ``SELECT`` reports: the UID epoch, the next UID to be assigned, the message count."""

    uidvalidity: int
    uidnext: int
    exists: int


class FetchedMessage(NamedTuple):
    uid: int
    raw: bytes
    flags: tuple[str, ...]


def uid_set(uids: Iterable[int]) -> str:
    """A compact IMAP sequence set: ``1:5,7,9:10`` for [1,2,3,4,5,7,9,10]."""
    parts: list[str] = []
    ordered = sorted(set(uids))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def encode_mailbox(name: str) -> str:
    """A folder name as an IMAP quoted string in modified UTF-7 (RFC 3501 §5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    text = "".join(out)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Client(imaplib.IMAP4):
    """imaplib with a record of the last status lines, so errors quote the server exactly."""

    def _get_line(self) -> bytes:
        line: bytes = super()._get_line()  # type: ignore[misc]
        if _STATUS_LINE.match(line):
            text = line.decode("utf-8", "replace")
            # A server that quotes the command it refuses would put the credentials into the
            # error shown on the server's form and stored with it.
            for secret in self.secrets:
                text = text.replace(secret, "[credentials]")
            self.status_lines.append(text)
        return line

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock: socket.socket = super()._create_socket(timeout)  # type: ignore[misc]
        # imaplib writes a literal and its CRLF separately: with Nagle's algorithm the CRLF
        # waits for the server's (delayed, up to 40 ms) acknowledgement of the literal.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls_context is not None:
            sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)
        return sock

    def __init__(
        self, host: str, port: int, timeout: float, tls_context: ssl.SSLContext | None
    ) -> None:
        self.status_lines: collections.deque[str] = collections.deque(maxlen=8)
        #: Texts never to record from the server's replies (the credentials sent).
        self.secrets: tuple[str, ...] = ()
        self.tls_context = tls_context
        super().__init__(host, port, timeout=timeout)

    def authenticate_initial(self, mechanism: str, initial: bytes) -> tuple[str, list[bytes]]:
        """``AUTHENTICATE`` with the initial response on the command line (RFC 4959 SASL-IR).

        One round trip instead of two, the form Microsoft documents for XOAUTH2. A server may
        still answer with a challenge (XOAUTH2 servers send their error as one, in JSON): it
        gets the empty response that ends the exchange, and its tagged reply decides.
        Raises ``IMAP4.error`` on NO/BAD, as ``authenticate()`` does.
        """
        tag = self._new_tag()  # type: ignore[attr-defined]
        encoded = base64.b64encode(initial)
        command = b"%s AUTHENTICATE %s %s\r\n" % (tag, mechanism.upper().encode("ascii"), encoded)
        self.send(command)
        while (result := self.tagged_commands[tag]) is None:
            self._check_bye()  # type: ignore[attr-defined]
            if self._get_response() is None:  # type: ignore[attr-defined]
                self.send(b"\r\n")  # a challenge: answer it empty
        del self.tagged_commands[tag]
        # imaplib stores (type, [data]) here; typeshed declares the field more narrowly.
        typ, data = cast(tuple[str, list[bytes]], result)
        if typ == "BAD":
            raise InitialResponseRefused(data[-1].decode("utf-8", "replace"))
        if typ != "OK":
            raise self.error(data[-1].decode("utf-8", "replace"))
        self.state = "AUTH"
        return typ, data


class InitialResponseRefused(imaplib.IMAP4.error):
    """``BAD`` to a one-line AUTHENTICATE: the server did not take the form (a line-length
    limit, a SASL-IR it announces but does not parse), not necessarily the credentials."""


class ImapConnection:
    """One authenticated IMAP session; use as a context manager.

    Example::

        with ImapConnection(settings) as imap:
            status = imap.select("INBOX")
            for msg in imap.fetch_batch(imap.uid_search_since(0)):
                ...
    """

    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        self.capabilities: frozenset[str] = frozenset()
        self._imap: _Client | None = None
        self.selected: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> ImapConnection:
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
        return self._imap is not None

    def open(self) -> None:
        """Connect, secure the channel, authenticate and read the capabilities."""
        s = self.settings
        context = shared_client_context()
        try:
            self._imap = _Client(s.host, s.port, s.timeout, context if s.ssl else None)
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            raise self._failure("connect", exc) from exc
        try:
            if not s.ssl:
                self._starttls(context)
            self._authenticate()
            self.capabilities = self._read_capabilities()
        except BaseException:
            self._discard()
            raise

    def close(self) -> None:
        """Log out politely; a connection that is already broken is simply dropped."""
        imap = self._imap
        if imap is None:
            return
        try:
            imap.logout()
        except (OSError, EOFError, imaplib.IMAP4.error):
            pass
        finally:
            self._discard()

    def _discard(self) -> None:
        imap, self._imap = self._imap, None
        self.selected = None
        if imap is not None:
            with contextlib.suppress(OSError, EOFError, imaplib.IMAP4.error):
                imap.shutdown()

    @property
    def imap(self) -> _Client:
        if self._imap is None:
            raise ImapTemporaryError(
                f"The IMAP connection to {self.settings.server} is closed.", stage="connect"
            )
        return self._imap

    # -- connecting --------------------------------------------------------------------

    def _starttls(self, context: ssl.SSLContext) -> None:
        imap = self.imap
        if "STARTTLS" in imap.capabilities:
            self._call("starttls", lambda: imap.starttls(ssl_context=context))
            return
        if not is_loopback(self.settings.host):
            # Sending a password or bearer token in clear would hand it to anyone on the path.
            raise ImapConfigurationError(
                f"{self.settings.server} offers neither SSL/TLS nor STARTTLS; Konvergo does not "
                "send credentials in clear. Turn on SSL/TLS (port 993) for this server.",
                stage="starttls",
            )

    def _authenticate(self) -> None:
        imap = self.imap
        auth = self.settings.auth
        if isinstance(auth, XOAuth2Auth):
            sasl = auth.xoauth2_string().encode()
            answered: list[bool] = []

            # imaplib calls back once per server challenge: the first gets the XOAUTH2 string,
            # a later one (the JSON error challenge) an empty line so the server can say NO.
            def respond(_challenge: bytes) -> bytes:
                if answered:
                    return b""
                answered.append(True)
                return sasl

            token = sasl.split(b"auth=Bearer ", 1)[-1].rstrip(b"\x01").decode("ascii", "replace")
            imap.secrets = tuple(t for t in (base64.b64encode(sasl).decode("ascii"), token) if t)
            if "SASL-IR" in imap.capabilities:
                try:
                    self._call("auth", lambda: imap.authenticate_initial("XOAUTH2", sasl))
                    return
                except ImapFailure as exc:
                    if not isinstance(exc.__cause__, InitialResponseRefused):
                        raise
                    logger.info(
                        "%s answered BAD to AUTHENTICATE with SASL-IR; retrying without",
                        self.settings.server,
                    )
            self._call("auth", lambda: imap.authenticate("XOAUTH2", respond))
        elif isinstance(auth, PasswordAuth):
            self._call("auth", lambda: imap.login(auth.username, auth.password))
        else:  # pragma: no cover - Credentials is a closed union
            raise ConfigurationError(f"Unsupported IMAP credentials: {type(auth).__name__}")

    def _read_capabilities(self) -> frozenset[str]:
        # imaplib keeps the pre-login list; servers announce more (UIDPLUS, MOVE) after it.
        imap = self.imap
        _, data = self._call("auth", lambda: imap.capability())
        words = b" ".join(d for d in data if isinstance(d, bytes)).decode("ascii", "replace")
        return frozenset(w.upper() for w in words.split())

    @property
    def supports_idle(self) -> bool:
        return "IDLE" in self.capabilities

    # -- commands ----------------------------------------------------------------------

    def select(self, folder: str, readonly: bool = True) -> FolderStatus:
        """Open ``folder`` (read-only by default: EXAMINE never changes a flag)."""
        imap = self.imap
        typ, data = self._call("select", lambda: imap.select(encode_mailbox(folder), readonly))
        if typ != "OK":
            raise self._reply_failure("select")
        self.selected = folder
        untagged = imap.untagged_responses

        def number(key: str) -> int:
            values = untagged.get(key) or [b"0"]
            value = values[-1]
            return int(value) if isinstance(value, bytes) and value.isdigit() else 0

        last = data[-1] if data else None
        exists = int(last) if isinstance(last, bytes) and last.isdigit() else number("EXISTS")
        return FolderStatus(number("UIDVALIDITY"), number("UIDNEXT"), exists)

    def uid_search_since(self, uid: int, since: dt.date | None = None) -> list[int]:
        """UIDs greater than ``uid`` (and, with ``since``, delivered on or after that day)."""
        criteria = [f"UID {uid + 1}:*"]
        if since is not None:
            criteria.append("SINCE " + since.strftime("%d-%b-%Y"))
        imap = self.imap
        typ, data = self._call("search", lambda: imap.uid("SEARCH", *criteria))
        if typ != "OK":
            raise self._reply_failure("search")
        found = [int(x) for part in data if part for x in part.split()]
        # "n:*" always matches the highest UID, even below n (RFC 3501 §6.4.8).
        return sorted(u for u in found if u > uid)

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID (messages expunged meanwhile are absent)."""
        if not uids:
            return {}
        imap = self.imap
        typ, data = self._call("fetch", lambda: imap.uid("FETCH", uid_set(uids), "(RFC822.SIZE)"))
        if typ != "OK":
            raise self._reply_failure("fetch")
        out: dict[int, int] = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if not isinstance(line, bytes):
                continue
            u, size = _UID.search(line), _SIZE.search(line)
            if u and size:
                out[int(u.group(1))] = int(size.group(1))
        return out

    def fetch_batch(
        self, uids: Sequence[int], size: int = BATCH_SIZE, max_bytes: int = BATCH_BYTES
    ) -> Iterator[FetchedMessage]:
        """Yield ``(uid, raw, flags)`` in UID order, ``size`` messages per ``UID FETCH``.

        ``BODY.PEEK[]`` leaves ``\\Seen`` alone. Memory holds one batch at a time: at most
        ``size`` messages and about ``max_bytes`` of message data.
        """
        ordered = sorted(set(uids))
        # Sizes are asked in windows that double like the requests: a server may take ~40 us
        # a message to answer (Dovecot reads each file), and asking 2,000 at once after the
        # first request kept the second request, and everything behind it, waiting ~75 ms.
        # Each window is one round trip, taken while the batches before it are stored.
        limits = ramp(size)
        windows = ramp(SIZE_WINDOW)
        start = 0
        while start < len(ordered):
            window = ordered[start : start + next(windows)]
            start += len(window)
            for group in _groups(window, self.sizes(window), limits, max_bytes):
                yield from self._fetch_group(group)

    def _fetch_group(self, group: list[int]) -> Iterator[FetchedMessage]:
        imap = self.imap
        typ, data = self._call(
            "fetch", lambda: imap.uid("FETCH", uid_set(group), "(UID FLAGS BODY.PEEK[])")
        )
        if typ != "OK":
            raise self._reply_failure("fetch")
        # imaplib returns (header, literal) tuples, each followed by the bytes after the literal
        # (")" or " FLAGS (...))" when the server puts FLAGS last).
        found: list[FetchedMessage] = []
        i = 0
        while i < len(data):
            item = data[i]
            i += 1
            if not isinstance(item, tuple):
                continue
            head = item[0]
            tail = data[i] if i < len(data) and isinstance(data[i], bytes) else b""
            u = _UID.search(head) or _UID.search(tail)
            if u is None:
                continue
            flags = _FLAGS.search(head) or _FLAGS.search(tail)
            names = tuple(flags.group(1).decode("ascii", "replace").split()) if flags else ()
            found.append(FetchedMessage(int(u.group(1)), item[1], names))
        data.clear()
        found.sort(key=lambda m: m.uid)
        yield from found

    def mark_seen(self, uids: Sequence[int]) -> None:
        """Set ``\\Seen`` on ``uids`` (only when the server's Mark as read option asks for it)."""
        if not uids:
            return
        imap = self.imap
        folder = self.selected
        if folder is not None and imap.is_readonly:
            # EXAMINE'd folders refuse STORE: reopen read-write just for this.
            self.select(folder, readonly=False)
        typ, _ = self._call(
            "store", lambda: imap.uid("STORE", uid_set(uids), "+FLAGS.SILENT", r"(\Seen)")
        )
        if typ != "OK":
            raise self._reply_failure("store")

    def noop(self) -> None:
        imap = self.imap
        self._call("idle", lambda: imap.noop())

    def idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for new mail in the selected folder (RFC 2177).

        Returns True when the server announced ``EXISTS``, False on timeout. Servers
        without IDLE get a NOOP and False (the caller then polls).
        """
        if not self.supports_idle:
            self.noop()
            return False
        imap = self.imap
        timeout = max(0.0, min(timeout, MAX_IDLE_SECONDS))
        tag = imap._new_tag()  # type: ignore[attr-defined]
        imap.status_lines.clear()
        try:
            imap.send(tag + b" IDLE\r\n")
            line = imap._get_line()  # type: ignore[attr-defined]
            while not line.startswith(b"+"):
                if line.startswith(tag) or _STATUS_LINE.match(line):
                    raise self._reply_failure("idle")
                line = imap._get_line()  # type: ignore[attr-defined]
            arrived = self._wait_for_exists(imap, timeout)
            imap.send(b"DONE\r\n")
            while True:
                line = imap._get_line()  # type: ignore[attr-defined]
                if _EXISTS.match(line):
                    arrived = True
                if line.startswith(b"* BYE"):
                    raise self._reply_failure("idle")
                if line.startswith(tag + b" "):
                    if not line.startswith(tag + b" OK"):
                        raise self._reply_failure("idle")
                    return arrived
        except ImapFailure:
            self._discard()
            raise
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            self._discard()
            raise self._failure("idle", exc) from exc

    def _wait_for_exists(self, imap: _Client, timeout: float) -> bool:
        sock = imap.sock
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if not readable(sock, remaining):
                return False
            line = imap._get_line()  # type: ignore[attr-defined]
            if line.startswith(b"* BYE"):
                raise self._reply_failure("idle")
            if _EXISTS.match(line):
                return True

    # -- error handling ----------------------------------------------------------------

    def _call(self, stage: Stage, command: Callable[[], tuple[str, Any]]) -> tuple[str, Any]:
        """Run an imaplib command; every failure becomes a classified ImapFailure."""
        imap = self.imap
        imap.status_lines.clear()
        try:
            typ, data = command()
        except imaplib.IMAP4.abort as exc:
            # abort: BYE or a broken socket; the session is unusable either way.
            failure = self._reply_failure(stage, fallback=str(exc))
            self._discard()
            raise failure from exc
        except imaplib.IMAP4.error as exc:
            raise self._reply_failure(stage, fallback=str(exc)) from exc
        except (OSError, EOFError) as exc:
            self._discard()
            raise self._failure(stage, exc) from exc
        if typ not in ("OK",) and stage != "select":
            raise self._reply_failure(stage)
        return typ, data

    def _reply_failure(self, stage: Stage, fallback: str = "") -> ImapFailure:
        imap = self._imap
        lines = list(imap.status_lines) if imap is not None else []
        # Tags mean nothing to a reader; the status words and text are what matter.
        text = "\n".join(_untag(line) for line in lines) or fallback or "no reply"
        return reply_failure(stage, text, self.settings.server)

    def _failure(self, stage: Stage, exc: BaseException) -> ImapFailure:
        if isinstance(exc, imaplib.IMAP4.error):
            return self._reply_failure(stage, fallback=str(exc))
        return oserror_failure(stage, exc, self.settings.server)


def _untag(line: str) -> str:
    tag, _, rest = line.partition(" ")
    return line if tag == "*" else rest


def ramp(size: int) -> Iterator[int]:
    """RAMP_START, twice that, and so on below ``size``; then ``size`` for ever."""
    n = max(1, min(RAMP_START, size))
    while n < size:
        yield n
        n *= 2
    while True:
        yield size


def _groups(
    uids: list[int], sizes: dict[int, int], limits: Iterator[int], max_bytes: int
) -> Iterator[list[int]]:
    """UIDs in groups of at most ``next(limits)`` messages and ``max_bytes`` bytes."""
    group: list[int] = []
    total = 0
    limit = next(limits)
    for uid in uids:
        n = sizes.get(uid)
        if n is None:
            continue  # expunged since the search
        if group and (len(group) >= limit or total + n > max_bytes):
            yield group
            group, total = [], 0
            limit = next(limits)
        group.append(uid)
        total += n
    if group:
        yield group
