"""``konvergo rotate-keys``: re-encrypt every stored secret with the first encryption key."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from konvergo.security.crypto import EncryptedTextField, rotate


def encrypted_fields() -> list[tuple[Any, list[str]]]:
    """Every (model, [encrypted field names]) pair of the installed apps."""
    found = []
    for model in apps.get_models():
        names = [
            f.attname for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)
        ]
        if names:
            found.append((model, names))
    return found


class Command(BaseCommand):
    help = (
        "Re-encrypt every secret (client secret, server passwords, OAuth tokens) with the first "
        "key of KONVERGO_ENCRYPTION_KEYS, so older keys can then be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        total = 0
        for model, names in encrypted_fields():
            # Raw SQL on purpose: the ORM would decrypt on read and encrypt on write; rotating
            # the ciphertext directly never materialises the clear secret.
            with transaction.atomic():
                for pk in model.objects.select_for_update().values_list("pk", flat=True):
                    changes = {}
                    for name in names:
                        raw = _raw(model, pk, name)
                        if raw:
                            changes[name] = rotate(raw)
                    if changes:
                        _write_raw(model, pk, changes)
                        total += 1
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted secrets in {total} row(s)."))


def _raw(model: Any, pk: Any, name: str) -> str:
    from django.db import connection

    table = model._meta.db_table
    column = model._meta.get_field(name).column
    pk_column = model._meta.pk.column
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {connection.ops.quote_name(column)} FROM {connection.ops.quote_name(table)} "  # noqa: S608
            f"WHERE {connection.ops.quote_name(pk_column)} = %s",
            [pk],
        )
        row = cursor.fetchone()
    return row[0] if row and row[0] else ""


def _write_raw(model: Any, pk: Any, changes: dict[str, str]) -> None:
    from django.db import connection

    table = connection.ops.quote_name(model._meta.db_table)
    pk_column = connection.ops.quote_name(model._meta.pk.column)
    sets = ", ".join(
        f"{connection.ops.quote_name(model._meta.get_field(n).column)} = %s" for n in changes
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {sets} WHERE {pk_column} = %s",  # noqa: S608
            [*changes.values(), pk],
        )
