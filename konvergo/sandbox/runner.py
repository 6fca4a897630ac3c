"""SANDBOX ONLY: start the whole local Microsoft 365 (identity platform, SMTP, IMAP) at once."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from konvergo.sandbox import world as world_module
from konvergo.sandbox.idp import IdentityPlatform
from konvergo.sandbox.imap import SandboxImap
from konvergo.sandbox.smtp import ExchangeSmtpServer
from konvergo.sandbox.tls import SandboxTLS
from konvergo.sandbox.world import World


@dataclass
class Sandbox:
    """Everything the seed page talks to, on 127.0.0.1; ``start()`` brings it all up."""

    world: World = field(default_factory=world_module.load)
    workdir: Path | None = None
    idp_port: int = 0
    smtp_port: int = 0
    imap_port: int = 0
    access_token_lifetime: int | None = None
    with_imap: bool = True

    def start(self) -> Sandbox:
        self._own_dir = self.workdir is None
        # Dovecot's unprivileged mail user must traverse this directory, which pytest's and
        # most home directories forbid; mkdtemp under /tmp is reachable.
        self.dir = Path(self.workdir or tempfile.mkdtemp(prefix="konvergo-sandbox-"))
        self.dir.chmod(0o755)
        self.tls = SandboxTLS(self.dir / "tls")
        self.idp = IdentityPlatform(
            self.world, port=self.idp_port, access_token_lifetime=self.access_token_lifetime
        ).start()
        self.imap: SandboxImap | None = None
        maildrop = None
        if self.with_imap:
            self.imap = SandboxImap(
                self.world, self.idp, self.tls, self.dir / "imap", port=self.imap_port
            ).start()
            maildrop = self.imap.maildrop
        self.smtp = ExchangeSmtpServer(
            self.world, self.idp, self.tls, port=self.smtp_port, maildrop=maildrop
        ).start()
        return self

    def stop(self) -> None:
        for server in (
            getattr(self, "smtp", None),
            getattr(self, "imap", None),
            getattr(self, "idp", None),
        ):
            if server is not None:
                server.stop()
        if getattr(self, "_own_dir", False):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def instructions(self) -> str:
        """What to type into Konvergo to follow the seed page against this sandbox."""
        app = next(iter(self.world.apps.values()))
        secret = app.secrets[0][1]
        mailboxes = ", ".join(sorted(self.world.mailboxes))
        imap = f"127.0.0.1 port {self.imap.port}, SSL/TLS" if self.imap else "(not started)"
        return "\n".join(
            [
                "SANDBOX — a local stand-in for Microsoft 365. Nothing here is Microsoft.",
                "",
                f"Identity platform  {self.idp.endpoint('common')}",
                f"SMTP (Exchange)    127.0.0.1 port {self.smtp.port}, TLS (STARTTLS)",
                f"IMAP (Exchange)    {imap}",
                f"Test CA to trust   {self.tls.ca_file}",
                "",
                "1. Start Konvergo trusting the sandbox CA:",
                f"     KONVERGO_CA_BUNDLE={self.tls.ca_file} make run",
                "2. Settings → General Settings: tick Custom Email Servers, then",
                f"     Client ID      {app.client_id}",
                f"     Client Secret  {secret}",
                "3. Developer mode → System Parameters:",
                f"     microsoft_outlook.endpoint = {self.idp.endpoint('common')}",
                "     mail.catchall.domain = example.com, mail.default.from = notifications",
                "4. Outgoing Email Servers → New: Authenticate with Outlook, Username",
                "     notifications@example.com, SMTP Server 127.0.0.1,",
                f"     SMTP Port {self.smtp.port}.",
                "5. Incoming Mail Servers → New: Outlook OAuth Authentication, Username",
                "     john@example.com, Server Name 127.0.0.1,",
                f"     Port {self.imap.port if self.imap else '-'}, SSL/TLS.",
                "",
                f"Mailboxes (password 'sandbox' on the sign-in page): {mailboxes}",
                f"Registered redirect URIs: {', '.join(app.redirect_uris)}",
            ]
        )
