"""Secrets are encrypted at rest, rotate with the keys, and never show in clear."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from konvergo import config as config_module
from konvergo.config import get_config
from konvergo.errors import SecretError
from konvergo.security import crypto
from konvergo.security.redact import redact
from konvergo.store.models import MailSettings

SECRET = "Zq8~top.secret-value_4711"


def _raw_database_dump() -> str:
    """Every text value of every table, as the database stores it."""
    chunks: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            chunks.extend(str(value) for row in cursor.fetchall() for value in row)
    return "\n".join(chunks)


def test_encrypt_round_trips_and_hides_the_clear_text() -> None:
    """A secret encrypts to a fernet: token that does not contain it and decrypts back."""
    token = crypto.encrypt(SECRET)
    assert token.startswith("fernet:") and SECRET not in token
    assert crypto.decrypt(token) == SECRET


def test_clear_value_in_an_encrypted_column_is_refused() -> None:
    """A value without the fernet: prefix is never passed off as a decrypted secret."""
    with pytest.raises(SecretError):
        crypto.decrypt(SECRET)


@pytest.mark.django_db
def test_secret_saved_through_the_ui_leaves_no_trace_in_the_database(admin_client) -> None:  # type: ignore[no-untyped-def]
    """The client secret typed into General Settings is stored only encrypted."""
    admin_client.post(
        "/settings/general",
        {
            "custom_email_servers": "on",
            "outlook_client_id": "11111111-2222-4333-8444-555555555555",
            "outlook_client_secret": SECRET,
            "base_url": "http://127.0.0.1:8069",
        },
    )
    assert MailSettings.load().outlook_client_secret == SECRET
    assert SECRET not in _raw_database_dump()


@pytest.mark.django_db
def test_rotate_keys_reencrypts_with_the_first_key(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """After prepending a new key and rotating, the secret decrypts with the new key alone."""
    settings = MailSettings.load()
    settings.outlook_client_secret = SECRET
    settings.save()
    old = get_config().encryption_keys
    new_key = Fernet.generate_key().decode()
    both = dataclasses.replace(get_config(), encryption_keys=(new_key, *old))
    monkeypatch.setattr(config_module, "_CONFIG", both)
    call_command("rotate_keys")
    only_new = dataclasses.replace(get_config(), encryption_keys=(new_key,))
    monkeypatch.setattr(config_module, "_CONFIG", only_new)
    assert MailSettings.load().outlook_client_secret == SECRET


def test_redaction_masks_tokens_and_secrets_in_log_text() -> None:
    """Bearer tokens, XOAUTH2 strings and form-encoded secrets are masked in log text."""
    text = (
        "user=a@b.c\x01auth=Bearer eyJabc.def.ghi\x01\x01 "
        "client_secret=abc123&refresh_token=0.AXo-xyz Authorization: Bearer eyJtok"
    )
    cleaned = redact(text)
    for leaked in ("eyJabc.def.ghi", "abc123", "0.AXo-xyz", "eyJtok"):
        assert leaked not in cleaned


@pytest.mark.django_db
def test_secret_never_reaches_logs_or_error_pages(admin_client, caplog) -> None:  # type: ignore[no-untyped-def]
    """A refused save logs nothing and re-renders the form without echoing the secret."""
    caplog.set_level(logging.DEBUG)
    response = admin_client.post(
        "/settings/general",
        {
            "custom_email_servers": "on",
            "outlook_client_id": "not-a-guid",
            "outlook_client_secret": SECRET,
            "base_url": "http://127.0.0.1:8069",
        },
    )
    assert response.status_code == 200
    assert SECRET not in response.content.decode()
    assert SECRET not in caplog.text
