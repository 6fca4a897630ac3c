"""``konvergo sandbox``: start the local Microsoft 365 stand-in and print what to type."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "SANDBOX ONLY: start a local stand-in for Microsoft 365 on 127.0.0.1 (identity "
        "platform, Exchange-like SMTP, IMAP through Dovecot) and print the values to type "
        "into General Settings and the server forms. Never used unless you configure it."
    )
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--idp-port", type=int, default=8800)
        parser.add_argument("--smtp-port", type=int, default=8587)
        parser.add_argument("--imap-port", type=int, default=8993)
        parser.add_argument("--world", type=Path, default=None, help="A TOML world file.")
        parser.add_argument("--workdir", type=Path, default=None)
        parser.add_argument("--no-imap", action="store_true", help="Do not start Dovecot.")
        parser.add_argument(
            "--ready-and-exit", action="store_true", help="Start, print, stop (for checks)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from konvergo.sandbox import world as world_module
        from konvergo.sandbox.runner import Sandbox

        started = time.monotonic()
        sandbox = Sandbox(
            world=world_module.load(options["world"]),
            workdir=options["workdir"],
            idp_port=options["idp_port"],
            smtp_port=options["smtp_port"],
            imap_port=options["imap_port"],
            with_imap=not options["no_imap"],
        ).start()
        stop = threading.Event()
        # SIGTERM (systemd, kill, a supervising script) must stop Dovecot like Ctrl+C does.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            self.stdout.write(sandbox.instructions())
            self.stdout.write(f"\nStarted in {time.monotonic() - started:.2f} s. Ctrl+C stops.")
            self.stdout.flush()
            if not options["ready_and_exit"]:
                stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            sandbox.stop()
