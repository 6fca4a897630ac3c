"""``konvergo worker``: send queued mail, fetch incoming mail, keep OAuth grants alive."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from konvergo.config import get_config
from konvergo.services import worker


class Command(BaseCommand):
    help = (
        "Run the background worker: it sends the outbox, fetches incoming servers and refreshes "
        "OAuth grants. Run as many as you like against one PostgreSQL database."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--once", action="store_true", help="Run every due job once, then exit."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["once"]:
            done = worker.run_once()
            self.stdout.write(f"{done} unit(s) of work done.")
            return
        worker.run_forever(idle_sleep=get_config().worker_interval)
