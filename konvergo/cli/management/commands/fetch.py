"""``konvergo fetch <server>``: fetch one Incoming Mail Server now, with a progress bar."""

from __future__ import annotations

import threading
from typing import IO, Any, cast

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from konvergo.services import intake, worker
from konvergo.store.models import IncomingServer


def find_server(ref: str) -> IncomingServer:
    """A server by id, or by name (case-insensitive, must be unambiguous)."""
    if ref.isdigit():
        found = IncomingServer.objects.filter(pk=int(ref)).first()
        if found is not None:
            return found
    matches = list(IncomingServer.objects.filter(name__iexact=ref))
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(f"{s.pk}: {s.name}" for s in IncomingServer.objects.all()[:20]) or "none"
    if matches:
        raise CommandError(f"Several servers are named {ref!r}; use the id ({names}).")
    raise CommandError(f"No Incoming Mail Server {ref!r}. Servers: {names}.")


class Command(BaseCommand):
    help = "Fetch an Incoming Mail Server now (by name or id); --watch keeps waiting for mail."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("server", help="Name or id of the Incoming Mail Server.")
        parser.add_argument(
            "--watch", action="store_true", help="Keep fetching (IDLE, or polling) until Ctrl-C."
        )
        parser.add_argument("--quiet", action="store_true", help="No progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        server = find_server(options["server"])
        console = Console(file=cast(IO[str], self.stdout))  # OutputWrapper writes like a file
        # A first fetch can be a whole mailbox: start what the worker starts (the parser
        # process, the WAL checkpointer, the TLS context) and stop it when the fetch ends.
        started = worker.start_lifecycle()
        try:
            self._fetch(server, console, options)
        finally:
            worker.stop_lifecycle(started)

    def _fetch(self, server: IncomingServer, console: Console, options: dict[str, Any]) -> None:
        if options["watch"]:
            stop = threading.Event()
            console.print(f"Watching {server.name}; Ctrl-C stops.")
            try:
                intake.watch(server, stop)
            except KeyboardInterrupt:
                stop.set()
            return
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=options["quiet"],
        ) as bar:
            task = bar.add_task(f"Fetching {server.name}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = intake.fetch_now(server, progress=progress)
        if result.skipped:
            raise CommandError(f"{server.name}: {result.error}")
        if result.error:
            raise CommandError(f"{server.name}: {result.error}\nFix: {result.fix}")
        console.print(
            f"{server.name}: {result.stored} stored, {result.duplicates} already there, "
            f"{result.quarantined} quarantined (of {result.found} found)."
        )
