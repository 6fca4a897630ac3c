"""Fixtures for the outbox: a trustme CA, counting STARTTLS sinks, servers and a fast policy."""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from konvergo.services import outbox, parameters
from konvergo.services.outbox_enqueue import forget_routing_table
from konvergo.services.outbox_limits import POLICY
from konvergo.services.outbox_sender import Dispatcher
from konvergo.store.models import OutboxItem, OutgoingServer
from tests.outbox.sink import HOST, Sink

PASSWORD = "outbox-test-password"  # a loopback test server's password
MAILBOXES = ("notifications@example.com", "john@example.com", "jane@example.com")


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def cafile(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("outbox-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, "localhost").configure_cert(context)
    return context


@pytest.fixture
def start_sink(server_tls: ssl.SSLContext) -> Iterator[Callable[..., Sink]]:
    """Start STARTTLS sinks that accept the test mailboxes' passwords (stopped after)."""
    started: list[Sink] = []

    def start(**options: Any) -> Sink:
        options.setdefault("passwords", dict.fromkeys(MAILBOXES, PASSWORD))
        sink = Sink(server_tls, **options).start()
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


@pytest.fixture(autouse=True)
def fast_policy() -> Iterator[None]:
    """Backoffs and pauses in tenths of seconds, so retries happen within a test."""
    saved = dataclasses.replace(POLICY)
    POLICY.backoff_base = 0.2
    POLICY.backoff_cap = 0.4
    POLICY.throttle_pause = 0.5
    POLICY.smtp_timeout = 5.0
    forget_routing_table()
    yield
    for f in dataclasses.fields(POLICY):
        setattr(POLICY, f.name, getattr(saved, f.name))
    forget_routing_table()


@pytest.fixture
def dispatcher(cafile: Path) -> Dispatcher:
    """An inline dispatcher: sessions run in the test's thread and database transaction."""
    return Dispatcher(threads=False, cafile=cafile, name="test-worker")


@pytest.fixture
def example_params(db: None) -> None:
    """The seed's System Parameters: catchall domain example.com, default from notifications."""
    parameters.set_value("mail.catchall.domain", "example.com")
    parameters.set_value("mail.default.from", "notifications")


@pytest.fixture
def make_server(db: None) -> Callable[..., OutgoingServer]:
    """Create an outgoing server pointing at a sink, authenticated with its mailbox's password."""

    def make(name: str, from_filter: str, sink: Sink | None, **fields: Any) -> OutgoingServer:
        username = fields.pop("username", from_filter if "@" in from_filter else "")
        values: dict[str, Any] = {
            "name": name,
            "from_filter": from_filter,
            "auth_type": "login",
            "smtp_host": HOST,
            "smtp_port": sink.port if sink is not None else 1,
            "encryption": "starttls",
            "username": username,
            "password": PASSWORD,
            "messages_per_minute": 0,
        }
        values.update(fields)
        return OutgoingServer.objects.create(**values)

    return make


def drain_until(dispatcher: Dispatcher, done: Callable[[], bool], timeout: float = 15.0) -> None:
    """Run the dispatcher until ``done()`` holds (retries wait out their short backoff)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dispatcher.drain(timeout=5)
        if done():
            return
        time.sleep(0.05)
    raise AssertionError("the outbox did not reach the expected state in time")


def states() -> dict[str, int]:
    """How many rows are in each state."""
    out: dict[str, int] = {}
    for state in OutboxItem.objects.values_list("state", flat=True):
        out[state] = out.get(state, 0) + 1
    return out


__all__ = ["MAILBOXES", "PASSWORD", "drain_until", "outbox", "states"]
