"""``konvergo status``: servers, grants and the outbox at a glance, with the fixes to apply."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Count
from rich.console import Console
from rich.table import Table

from konvergo.store.models import IncomingServer, OAuthGrant, OutboxItem, OutgoingServer


def _token(grant: OAuthGrant | None) -> str:
    if grant is None or grant.status == OAuthGrant.Status.DISCONNECTED:
        return "not connected"
    return (
        "Outlook Token Valid"
        if grant.status == OAuthGrant.Status.VALID
        else "Outlook Token Invalid"
    )


class Command(BaseCommand):
    help = "Show servers, their OAuth grants, the outbox, and what to fix."

    def handle(self, *args: Any, **options: Any) -> None:
        console = Console(file=self.stdout, width=140)  # type: ignore[arg-type]
        servers = Table(title="Mail servers")
        for column in ("kind", "name", "username", "token", "last check", "problem / fix"):
            servers.add_column(column)
        for s in OutgoingServer.objects.select_related("grant"):
            problem = s.grant.last_error if s.grant and s.grant.last_error else ""
            fix = s.grant.last_error_fix if s.grant else ""
            if s.last_test_ok is False:
                problem = problem or s.last_test_message
            last = (
                f"test {'ok' if s.last_test_ok else 'failed'}" if s.last_test_at else "never tested"
            )
            token = _token(s.grant) if s.auth_type == "outlook" else "-"
            servers.add_row(
                "outgoing", s.name, s.username, token, last, f"{problem}\n{fix}".strip()
            )
        for i in IncomingServer.objects.select_related("grant"):
            token = _token(i.grant) if i.server_type == "outlook" else "-"
            last = (
                f"fetched {i.last_success_at:%Y-%m-%d %H:%M}"
                if i.last_success_at
                else "never fetched"
            )
            servers.add_row(
                "incoming",
                i.name,
                i.username,
                token,
                last,
                f"{i.last_error}\n{i.last_error_fix}".strip(),
            )
        console.print(servers)
        counts = dict(OutboxItem.objects.values_list("state").annotate(n=Count("id")))
        console.print(
            "Outbox: "
            + ", ".join(f"{state} {counts.get(state, 0)}" for state in OutboxItem.State.values)
        )
        stuck = OutboxItem.objects.filter(state__in=["held", "failed"]).order_by("-id")[:10]
        if stuck:
            table = Table(title="Held and failed mail (latest 10)")
            for column in ("#", "state", "to", "reply", "fix"):
                table.add_column(column)
            for item in stuck:
                table.add_row(
                    str(item.pk),
                    item.state,
                    ", ".join(item.recipients)[:40],
                    item.last_reply[:200],
                    item.last_fix[:300],
                )
            console.print(table)
