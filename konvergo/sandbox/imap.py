"""SANDBOX ONLY: outlook.office365.com:993 on loopback — a real Dovecot behind an Exchange face.

Mail storage, UIDs, FETCH, IDLE, flags: all real Dovecot 2.3 (a throwaway instance with its
own config, Maildir, and an ``oauth2`` passdb that introspects bearer tokens at the sandbox
identity platform). Dovecot cannot behave like Exchange around authentication, so a thin
asyncio proxy owns the public port and:

* speaks implicit TLS with the sandbox CA's certificate, greets and lists capabilities as
  Exchange does (no CONDSTORE/QRESYNC: the product must not come to rely on them);
* passes ``AUTHENTICATE XOAUTH2`` (SASL-IR or continuation) on to Dovecot and reports the
  outcome in Exchange's words (``OK AUTHENTICATE completed.`` / ``NO AUTHENTICATE failed.``);
* applies what Exchange checks and Dovecot cannot: audience and IMAP scope of the token,
  ``ImapEnabled``, FullAccess on the ``user=`` mailbox (a delegate is logged in to Dovecot with
  a per-instance secret), "authenticated but not connected", a per-mailbox connection cap,
  a throttle knob, and ``* BYE Session invalidated - AccessTokenExpired`` when the token
  the session was opened with expires (the sandbox clock decides, so tests fast-forward it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import enum
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from konvergo.config import get_config
from konvergo.errors import ConfigurationError
from konvergo.sandbox.loopthread import serve_in_thread
from konvergo.sandbox.maildrop import INBOX, Maildrop
from konvergo.sandbox.tls import SandboxTLS
from konvergo.sandbox.tokens import IMAP_SCOPE, OUTLOOK_RESOURCE, TokenInfo, TokenValidator
from konvergo.sandbox.world import World

log = logging.getLogger(__name__)

DOVECOT = get_config().dovecot
DOVEADM = get_config().doveadm
#: The host name Exchange puts (base64) in its greeting; any FQDN-looking value will do.
SERVER_FQDN = "SBXP281MB0001.EURP281.PROD.OUTLOOK.COM"
#: Exchange Online's folder set; created on first login so clients find them like in M365.
SPECIAL_FOLDERS = {
    "Drafts": r"\Drafts",
    "Sent Items": r"\Sent",
    "Deleted Items": r"\Trash",
    "Junk Email": r"\Junk",
    "Archive": r"\Archive",
}
#: Outlook's observed default; 16-20 per community reports (microsoft.md §1.16).
DEFAULT_MAX_CONNECTIONS_PER_MAILBOX = 20
#: How often an open session compares the sandbox clock with its token's expiry.
EXPIRY_POLL_SECONDS = 0.1
_STREAM_LIMIT = 16 * 1024 * 1024

#: Every line the proxy says itself, in Exchange's words (microsoft.md §1.14, §5 E-33..E-36).
#: ``{tag}``, ``{ms}`` and ``{fqdn_b64}`` are filled in.
REPLIES: dict[str, str] = {
    "greeting": "* OK The Microsoft Exchange IMAP4 service is ready. [{fqdn_b64}]",
    "capability_pre": (
        "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT "
        "CHILDREN IDLE NAMESPACE LITERAL+"
    ),
    "capability_post": (
        "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT "
        "CLIENTACCESSRULES CLIENTNETWORKPRESENCELOCATION BACKENDAUTHENTICATE CHILDREN IDLE "
        "NAMESPACE LITERAL+"
    ),
    "capability_ok": "{tag} OK CAPABILITY completed.",
    "noop_ok": "{tag} OK NOOP completed.",
    "id": '* ID ("name" "Microsoft.Exchange.Imap4.Imap4Server" "version" "15.20")',
    "id_ok": "{tag} OK ID completed.",
    "logout_bye": "* BYE Microsoft Exchange Server IMAP4 server signing off.",
    "logout_ok": "{tag} OK LOGOUT completed.",
    "continue": "+ ",
    "auth_ok": "{tag} OK AUTHENTICATE completed.",
    "auth_failed": "{tag} NO AUTHENTICATE failed.",
    "login_failed": "{tag} NO LOGIN failed.",
    "invalid_state": "{tag} BAD Command received in Invalid state.",
    "not_connected": "{tag} BAD User is authenticated but not connected.",
    "closed_bye": "* BYE Connection closed. 14",
    "expired_bye": "* BYE Session invalidated - AccessTokenExpired",
    "throttled": "{tag} BAD Request is throttled. Suggested Backoff Time: {ms} milliseconds",
}


class AuthOutcome(enum.Enum):
    """What the proxy makes of an AUTHENTICATE XOAUTH2 attempt."""

    OK = "ok"
    #: ``NO AUTHENTICATE failed.`` (bad token, wrong audience/scope, IMAP disabled).
    FAILED = "failed"
    #: ``OK`` now, then ``BAD User is authenticated but not connected.`` + ``BYE`` (E-34).
    NOT_CONNECTED = "not_connected"


def _reply(key: str, **values: object) -> bytes:
    return (REPLIES[key].format(**values) + "\r\n").encode()


_LITERAL = re.compile(rb"\{(\d+)\+?\}\r?\n$")


def _literal_length(line: bytes) -> int | None:
    m = _LITERAL.search(line)
    return int(m.group(1)) if m else None


#: Audiences Exchange Online takes for IMAP/SMTP: both Outlook resource URIs name it.
EXCHANGE_AUDIENCES = frozenset({OUTLOOK_RESOURCE, "https://outlook.office365.com"})


def is_exchange_audience(audience: str) -> bool:
    """Whether a token issued for ``audience`` is meant for Exchange Online's mail protocols."""
    return audience.rstrip("/").lower() in EXCHANGE_AUDIENCES


def parse_xoauth2(blob: str) -> tuple[str, str] | None:
    """``(user, token)`` from a base64 XOAUTH2 response, or None when it is malformed."""
    try:
        text = base64.b64decode(blob, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
    user, auth = fields.get("user", ""), fields.get("auth", "")
    if not user or not auth.startswith("Bearer ") or not text.endswith("\x01\x01"):
        return None
    return user, auth[len("Bearer ") :]


class HttpTokenValidator:
    """A TokenValidator that asks an RFC 7662-style ``/introspect`` endpoint over HTTP.

    Used when the identity platform runs in another process; the sandbox clock is then the
    wall clock.
    """

    def __init__(self, introspection_url: str) -> None:
        self.introspection_url = introspection_url

    def now(self) -> float:
        return time.time()

    def introspect(self, token: str) -> TokenInfo:
        body = urllib.parse.urlencode({"token": token}).encode()
        req = urllib.request.Request(self.introspection_url, data=body, method="POST")  # noqa: S310
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            data = json.loads(resp.read())
        if not data.get("active"):
            return TokenInfo(active=False, reason=str(data.get("reason", "inactive")))
        scopes = {s.rsplit("/", 1)[-1] for s in str(data.get("scope", "")).split()}
        aud = data.get("aud", "")
        return TokenInfo(
            active=True,
            upn=str(data.get("email") or data.get("upn") or data.get("username", "")).lower(),
            audience=aud[0] if isinstance(aud, list) and aud else str(aud),
            scopes=frozenset(scopes),
            expires_at=float(data.get("exp", 0)),
            tenant_id=str(data.get("tid", "")),
        )


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _mail_ids() -> tuple[int, int, str, str]:
    """(mail uid, gid, login user, internal user) for the Dovecot config."""
    if os.geteuid() == 0:
        # Debian's Dovecot users; mail belongs to nobody:nogroup like testing.md's setup.
        return 65534, 65534, "dovenull", "dovecot"
    import pwd

    me = pwd.getpwuid(os.geteuid()).pw_name
    return os.geteuid(), os.getegid(), me, me


class DovecotServer:
    """A throwaway Dovecot (IMAP only, plain on loopback) configured under ``workdir``."""

    def __init__(
        self, workdir: Path, introspection_url: str, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.workdir = Path(workdir)
        self.introspection_url = introspection_url
        self.host = host
        self._requested_port = port
        self.port = 0
        self.uid, self.gid, self._login_user, self._internal_user = _mail_ids()
        self.mail_root = self.workdir / "mail"
        self.conf_path = self.workdir / "dovecot.conf"
        self.log_path = self.workdir / "dovecot.log"
        #: Password of the static passdb the proxy uses for FullAccess delegates only.
        self.delegate_secret = secrets.token_urlsafe(24)
        self._proc: subprocess.Popen[bytes] | None = None
        self._base_dir: Path | None = None

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Dovecot's unprivileged processes must traverse the work tree and read the configs.
        self.workdir.chmod(0o755)
        self.mail_root.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.mail_root, self.uid, self.gid)
        state_dir = self.workdir / "state"
        state_dir.mkdir(exist_ok=True)
        oauth2 = self.workdir / "dovecot-oauth2.conf.ext"
        oauth2.write_text(
            "introspection_mode = post\n"
            f"introspection_url = {self.introspection_url}\n"
            "force_introspection = yes\n"
            "username_attribute = email\n"
            "username_format = %Lu\n"
            "active_attribute = active\n"
            "active_value = true\n"
        )
        oauth2.chmod(0o644)
        folders = "\n".join(
            f'  mailbox "{name}" {{\n    auto = subscribe\n    special_use = {use}\n  }}'
            for name, use in SPECIAL_FOLDERS.items()
        )
        assert self._base_dir is not None
        self.conf_path.write_text(
            f"""\
instance_name = konvergo-sandbox-{os.getpid()}-{id(self)}
base_dir = {self._base_dir}
state_dir = {state_dir}
log_path = {self.log_path}
auth_verbose = yes
protocols = imap
listen = {self.host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = xoauth2 oauthbearer plain
# Fast failures: the default 2 s delay plus anvil's growing penalty would stall tests.
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
default_login_user = {self._login_user}
default_internal_user = {self._internal_user}
first_valid_uid = {min(self.uid, 65534)}
first_valid_gid = {min(self.gid, 65534)}
# All sessions come from the proxy's address; the proxy enforces Exchange's own cap.
mail_max_userip_connections = 10000
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
{folders}
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {oauth2}
}}
passdb {{
  # Only the proxy knows this secret: it logs FullAccess delegates into the shared mailbox.
  driver = static
  mechanisms = plain
  args = password={self.delegate_secret}
}}
userdb {{
  driver = static
  args = uid={self.uid} gid={self.gid} home={self.mail_root}/%Lu allow_all_users=yes
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
        )
        self.conf_path.chmod(0o644)

    def start(self, timeout: float = 10.0) -> None:
        if not Path(DOVECOT).exists():
            raise ConfigurationError(
                f"Dovecot is not installed ({DOVECOT}); apt install dovecot-imapd"
            )
        # A stale anvil socket from an earlier run stalls authentication: fresh base_dir, and
        # a short one (unix socket paths are limited to 108 bytes).
        self._base_dir = Path(tempfile.mkdtemp(prefix="kvdc-"))
        self._base_dir.chmod(0o755)
        self.port = self._requested_port or _free_port(self.host)
        self._write_config()
        self._proc = subprocess.Popen(  # noqa: S603
            [DOVECOT, "-c", str(self.conf_path), "-F"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise ConfigurationError(f"Dovecot exited at start: {err.strip()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(200).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise ConfigurationError(f"Dovecot did not answer on {self.host}:{self.port}")

    def stop(self) -> None:
        if self._proc is not None:
            # The master alone takes ~1 s to wind its children down; its own process group
            # (made at start) lets us stop them all at once.
            pgid = self._proc.pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None
        if self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._base_dir = None

    def doveadm(self, *args: str, input: bytes | None = None) -> str:
        """Run ``doveadm -c <our config> <args>`` and return its output."""
        res = subprocess.run(  # noqa: S603
            [DOVEADM, "-c", str(self.conf_path), *args],
            input=input,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if res.returncode != 0:
            raise ConfigurationError(
                f"doveadm {' '.join(args)} failed: {res.stderr.decode().strip()}"
            )
        return res.stdout.decode()


@dataclasses.dataclass(eq=False)
class _Session:
    writer: asyncio.StreamWriter
    backend: asyncio.StreamWriter | None = None
    mailbox: str = ""
    expires_at: float = 0.0
    closed: bool = False


class SandboxImap:
    """Exchange-faced IMAP on ``127.0.0.1:<port>`` (implicit TLS) in front of a real Dovecot.

    ``validator`` is the identity platform (in-process: it must also have ``base_url`` so
    Dovecot can reach ``/introspect``) or the URL of its ``/introspect`` endpoint.
    """

    def __init__(
        self,
        world: World,
        validator: TokenValidator | str,
        tls: SandboxTLS,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections_per_mailbox: int = DEFAULT_MAX_CONNECTIONS_PER_MAILBOX,
        server_fqdn: str = SERVER_FQDN,
    ) -> None:
        self.world = world
        if isinstance(validator, str):
            self.validator: TokenValidator = HttpTokenValidator(validator)
            url = validator
        else:
            self.validator = validator
            base = getattr(validator, "base_url", None)
            if not base:
                raise ConfigurationError("the validator needs a base_url for Dovecot")
            url = str(base).rstrip("/") + "/introspect"
        self.tls = tls
        self.host = host
        self._requested_port = port
        self.port = 0
        self.max_connections_per_mailbox = max_connections_per_mailbox
        self.server_fqdn = server_fqdn
        self.dovecot = DovecotServer(Path(workdir), url, host=host)
        self.maildrop = Maildrop(self.dovecot.mail_root, uid=self.dovecot.uid, gid=self.dovecot.gid)
        #: mailbox upn -> backoff in ms; every command of its sessions gets the throttle reply.
        self.throttled: dict[str, int] = {}
        self._sessions: dict[str, set[_Session]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> SandboxImap:
        self.dovecot.start()
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> None:
            self._server = await asyncio.start_server(
                self._handle,
                self.host,
                self._requested_port,
                ssl=self.tls.server_context(),
                limit=_STREAM_LIMIT,
            )
            self.port = self._server.sockets[0].getsockname()[1]

        self._thread = serve_in_thread(loop, serve, "sandbox-imap")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None:

            async def shutdown() -> None:
                if self._server is not None:
                    self._server.close()
                for sessions in list(self._sessions.values()):
                    for s in list(sessions):
                        s.writer.close()
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
        self.dovecot.stop()

    def __enter__(self) -> SandboxImap:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test helpers ------------------------------------------------------------------

    def deliver(self, upn: str, raw: bytes, folder: str = INBOX, *, seen: bool = False) -> None:
        """Put one message into a mailbox (as if Exchange had delivered it)."""
        self.maildrop.deliver(upn, raw, folder, seen=seen)

    def populate(
        self, upn: str, messages: Iterable[bytes], folder: str = INBOX, *, seen: bool = False
    ) -> int:
        """Put many messages into a mailbox fast (Maildir files, no IMAP); returns the count."""
        return len(self.maildrop.deliver_many(upn, messages, folder, seen=seen))

    def mailbox_status(self, upn: str, folder: str = INBOX) -> dict[str, int]:
        """``messages``, ``uidvalidity``, ``uidnext`` of a folder, as Dovecot sees it now."""
        out = self.dovecot.doveadm(
            "-f", "tab", "mailbox", "status", "-u", upn.lower(),
            "messages uidvalidity uidnext", folder,
        )  # fmt: skip
        names, values = (line.split("\t") for line in out.strip().splitlines()[:2])
        return {k: int(v) for k, v in zip(names, values, strict=True) if k != "mailbox"}

    def reset_uidvalidity(self, upn: str, folder: str = INBOX) -> int:
        """Give ``folder`` a new UIDVALIDITY and renumber its messages; returns the new value.

        What a client sees after Exchange rebuilds a folder: every cached UID is void.
        """
        before = self.mailbox_status(upn, folder)["uidvalidity"]
        # Dovecot cannot have its indexes pulled from under an open session: end them first.
        self.kick_sessions(upn)
        path = self.maildrop.folder_path(upn, folder)
        # Forgetting the UID list and indexes makes Dovecot number the files afresh.
        for name in os.listdir(path):
            if name == "dovecot-uidlist" or name.startswith("dovecot.index"):
                os.unlink(path / name)
        new = max(before + 1, int(time.time()))
        self.dovecot.doveadm(
            "mailbox", "update", "-u", upn.lower(), "--uid-validity", str(new), folder
        )
        return new

    def kick_sessions(self, upn: str, timeout: float = 5.0) -> None:
        """End every open session of ``upn`` (``* BYE Connection closed. 14``) and wait until
        Dovecot's processes for it are gone."""
        upn = upn.lower()
        loop = self._loop
        if loop is not None:

            async def kick() -> None:
                for session in list(self._sessions.get(upn, ())):
                    session.closed = True
                    session.writer.write(_reply("closed_bye"))
                    session.writer.close()
                    if session.backend is not None:
                        session.backend.close()

            asyncio.run_coroutine_threadsafe(kick(), loop).result(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            who = self.dovecot.doveadm("who", upn)
            if not any(line.split()[:1] == [upn] for line in who.splitlines()[1:]):
                return
            time.sleep(0.02)
        raise ConfigurationError(f"Dovecot sessions of {upn} did not end")

    def throttle(self, upn: str, backoff_ms: int = 299961) -> None:
        """Answer every command of ``upn``'s sessions with Exchange's throttle reply (E-36)."""
        self.throttled[upn.lower()] = backoff_ms

    def unthrottle(self, upn: str) -> None:
        self.throttled.pop(upn.lower(), None)

    def session_count(self, upn: str) -> int:
        return len(self._sessions.get(upn.lower(), ()))

    # -- the proxy ---------------------------------------------------------------------

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        # Shutdown cancels handlers: end quietly (asyncio's stream callback logs cancellations).
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve_client(creader, cwriter)

    async def _serve_client(
        self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
    ) -> None:
        session = _Session(writer=cwriter)
        bwriter: asyncio.StreamWriter | None = None
        try:
            breader, bwriter = await asyncio.open_connection(
                self.dovecot.host, self.dovecot.port, limit=_STREAM_LIMIT
            )
            session.backend = bwriter
            await breader.readline()  # Dovecot's own greeting: the client sees Exchange's.
            fqdn_b64 = base64.b64encode(self.server_fqdn.encode()).decode()
            cwriter.write(_reply("greeting", fqdn_b64=fqdn_b64))
            await cwriter.drain()
            outcome = await self._preauth(session, creader, cwriter, breader, bwriter)
            if outcome is AuthOutcome.OK:
                await self._relay(session, creader, cwriter, breader, bwriter)
            elif outcome is AuthOutcome.NOT_CONNECTED:
                line = await creader.readline()
                if line:
                    tag = line.split(b" ", 1)[0].decode(errors="replace")
                    cwriter.write(_reply("not_connected", tag=tag) + _reply("closed_bye"))
                    await cwriter.drain()
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            log.debug("imap session ended: %r", exc)
        finally:
            self._forget(session)
            if bwriter is not None:
                bwriter.close()
            await self._close(cwriter)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)

    def _forget(self, session: _Session) -> None:
        session.closed = True
        if session.mailbox:
            self._sessions.get(session.mailbox, set()).discard(session)

    async def _preauth(
        self,
        session: _Session,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        breader: asyncio.StreamReader,
        bwriter: asyncio.StreamWriter,
    ) -> AuthOutcome | None:
        """Answer the not-authenticated state like Exchange until AUTHENTICATE succeeds."""
        while True:
            line = await creader.readline()
            if not line:
                return None
            parts = line.decode(errors="replace").strip().split(" ")
            tag, command = parts[0], (parts[1].upper() if len(parts) > 1 else "")
            args = parts[2:]
            out: bytes
            if command == "CAPABILITY":
                out = _reply("capability_pre") + _reply("capability_ok", tag=tag)
            elif command == "NOOP":
                out = _reply("noop_ok", tag=tag)
            elif command == "ID":
                out = _reply("id") + _reply("id_ok", tag=tag)
            elif command == "LOGOUT":
                cwriter.write(_reply("logout_bye") + _reply("logout_ok", tag=tag))
                await cwriter.drain()
                return None
            elif command == "LOGIN":
                # Basic authentication is off at Microsoft: LOGIN never succeeds.
                out = _reply("login_failed", tag=tag)
            elif command == "AUTHENTICATE" and args:
                mechanism = args[0].upper()
                response = args[1] if len(args) > 1 else None
                if response is None:
                    cwriter.write(_reply("continue"))
                    await cwriter.drain()
                    response = (await creader.readline()).decode(errors="replace").strip()
                if mechanism != "XOAUTH2" or response == "*":
                    out = _reply("auth_failed", tag=tag)
                else:
                    outcome = await self._authenticate(session, tag, response, breader, bwriter)
                    key = "auth_failed" if outcome is AuthOutcome.FAILED else "auth_ok"
                    cwriter.write(_reply(key, tag=tag))
                    await cwriter.drain()
                    if outcome is not AuthOutcome.FAILED:
                        return outcome
                    continue
            else:
                out = _reply("invalid_state", tag=tag)
            cwriter.write(out)
            await cwriter.drain()

    async def _authenticate(
        self,
        session: _Session,
        tag: str,
        response: str,
        breader: asyncio.StreamReader,
        bwriter: asyncio.StreamWriter,
    ) -> AuthOutcome:
        """Exchange's checks in order; the normal case is then decided by Dovecot's passdb."""
        parsed = parse_xoauth2(response)
        if parsed is None:
            return AuthOutcome.FAILED
        user, token = parsed
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(None, self.validator.introspect, token)
        owner = self.world.mailbox(info.upn) if info.active else None
        if (
            owner is None
            or not is_exchange_audience(info.audience)
            or IMAP_SCOPE not in info.scopes
            or not owner.imap_enabled
        ):
            return AuthOutcome.FAILED
        target = self.world.mailbox(user)
        if target is not None and not target.imap_enabled:
            return AuthOutcome.FAILED
        # Exchange accepts the token but cannot connect the session to the mailbox (E-34).
        if target is None or not self.world.may_open(owner, target.upn):
            return AuthOutcome.NOT_CONNECTED
        if self.session_count(target.upn) >= self.max_connections_per_mailbox:
            return AuthOutcome.NOT_CONNECTED
        if target.upn == owner.upn:
            # Dovecot introspects the same token itself (passdb oauth2).
            command = f"{tag} AUTHENTICATE XOAUTH2 {response}\r\n"
        else:
            # A FullAccess delegate: the token names the delegate, Dovecot needs the owner.
            plain = f"\0{target.upn}\0{self.dovecot.delegate_secret}".encode()
            command = f"{tag} AUTHENTICATE PLAIN {base64.b64encode(plain).decode()}\r\n"
        bwriter.write(command.encode())
        await bwriter.drain()
        while True:
            line = await breader.readline()
            if not line:
                raise ConnectionError("Dovecot closed the connection during AUTHENTICATE")
            if line.startswith(b"+"):
                # Dovecot's JSON error challenge (Exchange sends none): end the exchange.
                bwriter.write(b"\r\n")
                await bwriter.drain()
                continue
            if line.startswith(tag.encode() + b" "):
                break
        if not line.startswith(tag.encode() + b" OK"):
            return AuthOutcome.FAILED
        session.mailbox = target.upn
        session.expires_at = info.expires_at
        self._sessions.setdefault(target.upn, set()).add(session)
        return AuthOutcome.OK

    def _expired(self, session: _Session) -> bool:
        return self.validator.now() >= session.expires_at

    async def _relay(
        self,
        session: _Session,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        breader: asyncio.StreamReader,
        bwriter: asyncio.StreamWriter,
    ) -> None:
        """Pass the authenticated session through, watching token expiry and throttling."""

        async def client_to_dovecot() -> None:
            while True:
                line = await creader.readline()
                if not line:
                    return
                if self._expired(session):
                    return await bye()
                backoff = self.throttled.get(session.mailbox)
                if backoff is not None:
                    tag = line.split(b" ", 1)[0].decode(errors="replace")
                    cwriter.write(_reply("throttled", tag=tag, ms=backoff))
                    await cwriter.drain()
                    return
                bwriter.write(line)
                n = _literal_length(line)
                while n is not None:
                    bwriter.write(await creader.readexactly(n))
                    line = await creader.readline()
                    bwriter.write(line)
                    n = _literal_length(line)
                await bwriter.drain()

        async def dovecot_to_client() -> None:
            post_caps = _reply("capability_post")
            while True:
                line = await breader.readline()
                if not line:
                    return
                if line.startswith(b"* CAPABILITY "):
                    line = post_caps
                cwriter.write(line)
                n = _literal_length(line)
                while n is not None:
                    cwriter.write(await breader.readexactly(n))
                    line = await breader.readline()
                    cwriter.write(line)
                    n = _literal_length(line)
                await cwriter.drain()

        async def watch_expiry() -> None:
            # Catches sessions that sit idle (IDLE, or between polls) when the token runs out.
            while not self._expired(session):
                await asyncio.sleep(EXPIRY_POLL_SECONDS)
            await bye()

        async def bye() -> None:
            if not session.closed:
                session.closed = True
                cwriter.write(_reply("expired_bye"))
                with contextlib.suppress(ConnectionError):
                    await cwriter.drain()

        tasks = [
            asyncio.create_task(client_to_dovecot()),
            asyncio.create_task(dovecot_to_client()),
            asyncio.create_task(watch_expiry()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
