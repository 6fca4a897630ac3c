"""Bulk INSERTs write datetimes exactly as Django's own adaptation does."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from konvergo.store import dbvalues
from konvergo.store.dbvalues import datetime_adapter
from konvergo.store.models import SystemParameter

VALUES = [
    None,
    dt.datetime(2024, 1, 1, 5, 6, 7, 123, tzinfo=dt.UTC),
    dt.datetime(2024, 7, 1, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.datetime(1999, 12, 31, 22, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    dt.datetime(2024, 1, 1, 12, 0),
]


@pytest.mark.parametrize("value", VALUES)
def test_the_datetime_form_is_djangos(value: dt.datetime | None) -> None:
    """Aware, naive and missing datetimes come out as adapt_datetimefield_value has them."""
    assert datetime_adapter()(value) == connection.ops.adapt_datetimefield_value(value)


def test_select_in_reads_every_chunk_and_applies_the_conditions(
    db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows whose key is in the list and whose other fields match, across several queries."""
    monkeypatch.setattr(dbvalues, "IN_CHUNK", 2)
    for n in range(5):
        SystemParameter.objects.create(key=f"test.key{n}", value="odd" if n % 2 else "even")
    keys = [f"test.key{n}" for n in range(5)] + ["test.missing", "test.key0"]
    rows = set(dbvalues.select_in(SystemParameter, ["key", "value"], "key", keys))
    assert rows == {(f"test.key{n}", "odd" if n % 2 else "even") for n in range(5)}
    evens = dbvalues.select_in(SystemParameter, ["key"], "key", keys, [("value", "even")])
    assert sorted(r[0] for r in evens) == ["test.key0", "test.key2", "test.key4"]


def test_update_changes_only_the_rows_its_condition_names_and_counts_them(db: None) -> None:
    """Fields in braces become quoted columns; the result is the number of rows changed."""
    for n in range(4):
        SystemParameter.objects.create(key=f"test.up{n}", value=str(n))
    changed = dbvalues.update(
        SystemParameter,
        "{value} = {value} || %s",
        "{key} IN (%s, %s) AND {value} <> %s",
        ["!", "test.up1", "test.up2", "2"],
    )
    assert changed == 1
    values = dict(
        SystemParameter.objects.filter(key__startswith="test.up").values_list("key", "value")
    )
    assert values == {"test.up0": "0", "test.up1": "1!", "test.up2": "2", "test.up3": "3"}
