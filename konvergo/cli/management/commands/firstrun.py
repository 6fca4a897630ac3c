"""``konvergo firstrun``: what a fresh installation needs before it serves (idempotent)."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand

from konvergo.config import get_config
from konvergo.services import parameters
from konvergo.store.models import AuditEvent, User


class Command(BaseCommand):
    help = (
        "Create the first administrator if there is none (a random password is printed once) "
        "and propose web.base.url. Safe to run on every start."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--base-url",
            default=None,
            help="Default: http://<KONVERGO_LISTEN>, where `konvergo serve` listens.",
        )
        parser.add_argument("--username", default="admin")
        parser.add_argument("--email", default="", help="The administrator's email address.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not parameters.base_url():
            listen = get_config().listen
            parameters.set_value("web.base.url", options["base_url"] or f"http://{listen}")
            self.stdout.write(
                f"web.base.url set to {parameters.base_url()} (change it in Settings → General "
                "Settings before connecting Outlook if users reach Konvergo at another address)."
            )
        if User.objects.filter(is_active=True, role=User.Role.ADMINISTRATOR).exists():
            return
        password = secrets.token_urlsafe(12)
        user = User.objects.create_user(
            username=options["username"],
            password=password,
            email=options["email"],
            role=User.Role.ADMINISTRATOR,
        )
        AuditEvent.record("user.created", user.username, "first administrator")
        self.stdout.write(
            self.style.SUCCESS(
                "\nFirst administrator created. Log in at "
                f"{parameters.base_url()}/login with\n  username: {user.username}\n"
                f"  password: {password}\nThis password is shown only once: change it, and set "
                "your email address (needed to send mail), in Settings → Users.\n"
            )
        )
