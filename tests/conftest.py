"""Shared fixtures. Tests talk to real servers on loopback; nothing here mocks a protocol."""

from __future__ import annotations

import os

# The ORM is used from Playwright-driven tests, whose event loop would otherwise trip Django's
# async-safety guard; tests never run ORM code concurrently with the loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "1")

import pytest
from django.test import Client


@pytest.fixture
def admin_user(db):  # type: ignore[no-untyped-def]
    from konvergo.store.models import User

    return User.objects.create_user(
        username="root", password="admin-pass-123", email="root@example.com", role="admin"
    )


@pytest.fixture
def plain_user(db):  # type: ignore[no-untyped-def]
    from konvergo.store.models import User

    return User.objects.create_user(
        username="john", password="user-pass-123", email="john@example.com", role="user"
    )


@pytest.fixture
def admin_client(admin_user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def dev_admin_client(admin_user) -> Client:  # type: ignore[no-untyped-def]
    admin_user.developer_mode = True
    admin_user.save()
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def user_client(plain_user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(plain_user)
    return client


@pytest.fixture
def ms365(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The whole sandbox Microsoft 365 (identity platform, SMTP, IMAP), trusted by Konvergo."""
    from tests.support import trusted_sandbox

    with trusted_sandbox(monkeypatch) as running:
        yield running
