"""``konvergo explain "<error text>"``: what a Microsoft error means and who must fix what."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from konvergo.providers.microsoft.catalogue import explain


class Command(BaseCommand):
    help = (
        "Explain a Microsoft error (an AADSTS code, an SMTP reply such as '535 5.7.139 …', an "
        "IMAP reply): cause, who must act, and the fix with the admin-portal path."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("text", nargs="+", help="The error text, as Microsoft sent it.")

    def handle(self, *args: Any, **options: Any) -> None:
        text = " ".join(options["text"])
        explanation = explain(text)
        if explanation is None:
            raise CommandError(
                "Not in the catalogue. Keep the full text (with Trace ID and Correlation ID) "
                "for Microsoft support."
            )
        entry = explanation.entry
        self.stdout.write(f"{entry.id}: {entry.title}")
        self.stdout.write(f"Cause:        {entry.cause}")
        self.stdout.write(f"Who must act: {entry.who_must_act}")
        self.stdout.write(f"Fix:          {entry.fix}")
        self.stdout.write(f"Mail:         {entry.failure_class}")
