"""What ``konvergo worker`` starts before its first job and stops after its last."""

from __future__ import annotations

from django.db import connection

from konvergo.security import tls
from konvergo.services import intake_parse, worker
from konvergo.store import checkpoint


def test_a_worker_starts_its_parser_checkpointer_and_tls_context_and_stops_them(
    db: None,
) -> None:
    """The parser process, SQLite's checkpoint thread and the CA store are ready before the
    first fetch or send needs them, and gone (the first two) when the worker stops."""
    tls._CONTEXTS.clear()
    started = worker.start_lifecycle()
    try:
        assert intake_parse.shared_parser() is not None
        assert (checkpoint._running is not None) == (connection.vendor == "sqlite")
        assert tls._CONTEXTS, "the TLS client context is built at start"
    finally:
        worker.stop_lifecycle(started)
    assert intake_parse.shared_parser() is None
    assert checkpoint._running is None
