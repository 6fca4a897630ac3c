"""Hand-written SQL for the bulk paths (intake, enqueue): values in the form the database
driver takes, and IN-list lookups without the ORM's per-value compilation."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from django.db import connection, models
from django.db.backends.base.base import BaseDatabaseWrapper

#: Values per IN list (SQLite allows 32,766 parameters a statement; PostgreSQL 65,535).
IN_CHUNK = 500


def datetime_adapter() -> Callable[[dt.datetime | None], object]:
    """The database form of datetimes, resolved once for a batch of rows.

    ``adapt_datetimefield_value`` looks up the time zone and settings through Django's
    connection proxy on every call (about 12 us, two calls a row). On SQLite in UTC (the
    default) its result is the naive UTC time as a string, which is returned directly here.
    """
    adapt = connection.ops.adapt_datetimefield_value
    if connection.vendor != "sqlite" or connection.timezone_name != "UTC":
        return adapt

    def sqlite_utc(value: dt.datetime | None) -> object:
        if value is None or value.utcoffset() is None:
            return adapt(value)
        return str(value.astimezone(dt.UTC).replace(tzinfo=None))

    return sqlite_utc


def column(model: type[models.Model], name: str) -> str:
    """The database column of ``model``'s field ``name``."""
    found = model._meta.get_field(name)
    assert isinstance(found, models.Field) and found.column, name
    return found.column


def select_in(
    model: type[models.Model],
    columns: Sequence[str],
    key: str,
    values: Iterable[Any],
    where: Sequence[tuple[str, Any]] = (),
) -> Iterator[tuple[Any, ...]]:
    """Rows of ``columns`` whose ``key`` is one of ``values`` and whose ``where`` fields
    equal the values given; one query per IN_CHUNK values.

    A ``filter(key__in=...)`` compiles every value through the field machinery (about 4 ms
    for the 200 Message-IDs of an intake batch); these values are plain strings or ids.
    """
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    selected = ", ".join(quote(column(model, name)) for name in columns)
    conditions = [f"{quote(column(model, name))} = %s" for name, _ in where]
    fixed = [value for _, value in where]
    unique = sorted(set(values))
    with connection.cursor() as cursor:
        for start in range(0, len(unique), IN_CHUNK):
            part = unique[start : start + IN_CHUNK]
            inside = f"{quote(column(model, key))} IN ({', '.join(['%s'] * len(part))})"
            # Identifiers come from the model's metadata, quoted; every value is a parameter.
            sql = f"SELECT {selected} FROM {table} WHERE {' AND '.join([*conditions, inside])}"  # noqa: S608
            cursor.execute(sql, [*fixed, *part])
            yield from cursor.fetchall()


def update(model: type[models.Model], assignments: str, where: str, params: Sequence[Any]) -> int:
    """``UPDATE`` rows of ``model`` in one statement; returns how many rows it changed.

    ``assignments`` and ``where`` name fields in braces, which become quoted columns:
    ``update(FolderState, "{last_uid} = %s", "{server} = %s AND {last_uid} < %s", [...])``.
    For the statements intake runs with every batch: ``QuerySet.update()`` compiles its
    query each time (about 0.5 ms, more than the database takes to run it). The templates
    are SQL written in code, never built from input (``format_map`` reads ``{a.b}`` too).
    """
    quote = connection.ops.quote_name
    names = {
        f.name: quote(f.column)
        for f in model._meta.concrete_fields
        if isinstance(f, models.Field) and f.column
    }
    # Identifiers come from the model's metadata, quoted; every value is a parameter.
    sql = (
        f"UPDATE {quote(model._meta.db_table)} "  # noqa: S608
        f"SET {assignments.format_map(names)} WHERE {where.format_map(names)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        return int(cursor.rowcount)


def pg_cursor(db: BaseDatabaseWrapper) -> Any:
    """A server-side binding cursor on ``db``'s open PostgreSQL connection.

    Django's own cursors bind on the client and never prepare; statements run through this
    one are parsed and planned once per connection (the settings' ``prepare_threshold=0``),
    unless the call passes ``prepare=False`` or ``KONVERGO_DATABASE_PREPARED=0`` turned
    preparing off, for poolers that cannot keep them.
    """
    import psycopg

    db.ensure_connection()
    return psycopg.Cursor(db.connection)


@contextlib.contextmanager
def bulk_cursor() -> Iterator[Any]:
    """A cursor for the hand-written bulk statements, in the current transaction.

    On PostgreSQL one that binds on the server: Django's binds on the client, which sends
    bytes as hex literals twice their size for the server to parse back (intake's raw
    messages) and parses every statement anew. Errors come out as Django's (IntegrityError,
    DataError) either way. These statements bypass Django's execute wrappers and query log.
    """
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            yield cursor
        return
    with connection.wrap_database_errors, pg_cursor(connection) as cursor:
        yield cursor
