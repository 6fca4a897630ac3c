"""The environment is read in one place, and bad configuration is refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from konvergo.config import load
from konvergo.errors import ConfigurationError


def test_development_generates_secret_and_encryption_key_once(tmp_path: Path) -> None:
    """Without keys, development mode generates both into var/ and reuses them on the next start."""
    env = {"KONVERGO_VAR_DIR": str(tmp_path)}
    first, second = load(env), load(env)
    assert first.secret_key == second.secret_key and first.secret_key_generated
    assert first.encryption_keys == second.encryption_keys and first.encryption_key_generated
    assert (tmp_path / "encryption_key").stat().st_mode & 0o777 == 0o600


def test_default_database_is_sqlite_under_var(tmp_path: Path) -> None:
    """The embedded default database is an SQLite file inside the var directory."""
    config = load({"KONVERGO_VAR_DIR": str(tmp_path)})
    assert config.database_url == f"sqlite:///{tmp_path / 'konvergo.sqlite3'}"


def test_production_requires_a_secret_key(tmp_path: Path) -> None:
    """Production mode refuses to start without KONVERGO_SECRET_KEY and names the variable."""
    env = {"KONVERGO_VAR_DIR": str(tmp_path), "KONVERGO_ENV": "production"}
    with pytest.raises(ConfigurationError, match="KONVERGO_SECRET_KEY"):
        load(env)


def test_production_requires_encryption_keys(tmp_path: Path) -> None:
    """Production mode refuses to start without KONVERGO_ENCRYPTION_KEYS."""
    env = {
        "KONVERGO_VAR_DIR": str(tmp_path),
        "KONVERGO_ENV": "production",
        "KONVERGO_SECRET_KEY": "x" * 60,
        "KONVERGO_ALLOWED_HOSTS": "erp.example.com",
    }
    with pytest.raises(ConfigurationError, match="KONVERGO_ENCRYPTION_KEYS"):
        load(env)


def test_malformed_encryption_key_is_refused(tmp_path: Path) -> None:
    """A value that is not a Fernet key is refused at start, before any secret is written."""
    env = {"KONVERGO_VAR_DIR": str(tmp_path), "KONVERGO_ENCRYPTION_KEYS": "not-a-key"}
    with pytest.raises(ConfigurationError, match="not a Fernet key"):
        load(env)


def test_encryption_keys_are_comma_separated_first_encrypts(tmp_path: Path) -> None:
    """KONVERGO_ENCRYPTION_KEYS keeps its order: the first key is the one that encrypts."""
    a, b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    config = load({"KONVERGO_VAR_DIR": str(tmp_path), "KONVERGO_ENCRYPTION_KEYS": f"{a}, {b}"})
    assert config.encryption_keys == (a, b)


def test_missing_ca_bundle_file_is_refused(tmp_path: Path) -> None:
    """KONVERGO_CA_BUNDLE must name an existing file, so a typo is not a silent trust failure."""
    env = {"KONVERGO_VAR_DIR": str(tmp_path), "KONVERGO_CA_BUNDLE": str(tmp_path / "nope.pem")}
    with pytest.raises(ConfigurationError, match="KONVERGO_CA_BUNDLE"):
        load(env)


def test_prepared_statements_are_on_unless_turned_off_for_a_pooler(tmp_path: Path) -> None:
    """PostgreSQL statements are prepared by default; KONVERGO_DATABASE_PREPARED=0 turns it off."""
    env = {"KONVERGO_VAR_DIR": str(tmp_path)}
    assert load(env).database_prepared
    assert not load({**env, "KONVERGO_DATABASE_PREPARED": "0"}).database_prepared
    assert not load({**env, "KONVERGO_DATABASE_PREPARED": "false"}).database_prepared
