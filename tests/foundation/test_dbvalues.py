"""Bulk INSERTs write datetimes exactly as Django's own adaptation does."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from konvergo.store.dbvalues import datetime_adapter

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
