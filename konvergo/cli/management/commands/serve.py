"""``konvergo serve``: the web UI (gunicorn) and, unless told otherwise, a background worker."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from django.core.management.base import BaseCommand
from gunicorn.app.base import BaseApplication

from konvergo.config import get_config


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from konvergo.web.wsgi import application

        return application


class Command(BaseCommand):
    help = (
        "Serve the Konvergo web UI and HTTP API (default http://127.0.0.1:8069, or "
        "KONVERGO_LISTEN) with gunicorn, and start one background worker process that sends "
        "queued mail and fetches incoming mail. Stop with Ctrl+C."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--listen", default=None, help="host:port to listen on (default: KONVERGO_LISTEN)."
        )
        parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes.")
        parser.add_argument(
            "--no-worker", action="store_true", help="Do not start the background worker."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        listen = options["listen"] or get_config().listen
        worker = None
        if not options["no_worker"]:
            worker = subprocess.Popen([sys.executable, "-m", "konvergo", "worker"])
        self.stdout.write(f"Konvergo serving on http://{listen} (Ctrl+C to stop)")
        try:
            _Gunicorn(
                {
                    "bind": listen,
                    "workers": options["workers"],
                    "worker_class": "gthread",
                    "threads": 4,
                    "accesslog": "-",
                    # %(U)s is the path without its query string: the OAuth callback's
                    # ?code= must not reach a log.
                    "access_log_format": '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss',
                    "control_socket_disable": True,
                    "timeout": 60,
                }
            ).run()
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=10)
