"""``konvergo generate-key``: print a new encryption key for KONVERGO_ENCRYPTION_KEYS."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print a new Fernet key. Prepend it to KONVERGO_ENCRYPTION_KEYS, then run rotate-keys."
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(Fernet.generate_key().decode())
