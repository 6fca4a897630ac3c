"""The konvergo command: first run, help, and the deployment checks."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from konvergo.store.models import User


def _konvergo(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KONVERGO_") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"
    }
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "konvergo", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


@pytest.mark.django_db
def test_firstrun_creates_one_administrator_with_a_printed_random_password() -> None:
    """First run creates an administrator whose printed password works; a second run adds none."""
    out = StringIO()
    call_command("firstrun", stdout=out)
    text = out.getvalue()
    password = text.split("password: ")[1].split()[0]
    admin = User.objects.get()
    assert admin.is_administrator and admin.check_password(password)
    call_command("firstrun", stdout=StringIO())
    assert User.objects.count() == 1


@pytest.mark.django_db
def test_firstrun_proposes_the_base_url_only_when_unset() -> None:
    """First run sets web.base.url to the local address unless an administrator set one."""
    from konvergo.services import parameters

    parameters.set_value("web.base.url", "https://erp.example.com")
    call_command("firstrun", stdout=StringIO())
    assert parameters.base_url() == "https://erp.example.com"


def test_serve_help_explains_itself(tmp_path: Path) -> None:
    """`konvergo serve --help` says what it serves, where, and that a worker runs with it."""
    result = _konvergo(["serve", "--help"], {"KONVERGO_VAR_DIR": str(tmp_path)})
    assert result.returncode == 0
    assert "127.0.0.1:8069" in result.stdout and "worker" in result.stdout


def test_production_mode_passes_check_deploy(tmp_path: Path) -> None:
    """A production configuration gets no warning from `konvergo check --deploy`."""
    env = {
        "KONVERGO_VAR_DIR": str(tmp_path),
        "KONVERGO_ENV": "production",
        "KONVERGO_SECRET_KEY": Fernet.generate_key().decode() * 2,
        "KONVERGO_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "KONVERGO_ALLOWED_HOSTS": "erp.example.com",
    }
    assert _konvergo(["migrate", "--no-input"], env).returncode == 0
    assert (
        _konvergo(
            [
                "shell",
                "-c",
                "from konvergo.services import parameters;"
                "parameters.set_value('web.base.url','https://erp.example.com')",
            ],
            env,
        ).returncode
        == 0
    )
    result = _konvergo(["check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_development_defaults_are_flagged_with_stable_ids(tmp_path: Path) -> None:
    """The development defaults raise konvergo.W001 (dev key), W003 (DEBUG) and W004 (secret)."""
    env = {"KONVERGO_VAR_DIR": str(tmp_path)}
    _konvergo(["migrate", "--no-input"], env)
    result = _konvergo(["check", "--deploy"], env)
    for check_id in ("konvergo.W001", "konvergo.W003", "konvergo.W004", "konvergo.W005"):
        assert check_id in result.stderr + result.stdout


def test_http_base_url_outside_loopback_is_flagged(tmp_path: Path) -> None:
    """An http:// base URL on a public host raises konvergo.W002."""
    env = {"KONVERGO_VAR_DIR": str(tmp_path)}
    _konvergo(["migrate", "--no-input"], env)
    _konvergo(
        [
            "shell",
            "-c",
            "from konvergo.services import parameters;"
            "parameters.set_value('web.base.url','http://erp.example.com')",
        ],
        env,
    )
    result = _konvergo(["check", "--deploy"], env)
    assert "konvergo.W002" in result.stderr + result.stdout


def test_generate_key_prints_a_fernet_key(tmp_path: Path) -> None:
    """`konvergo generate-key` prints a key usable in KONVERGO_ENCRYPTION_KEYS."""
    result = _konvergo(["generate-key"], {"KONVERGO_VAR_DIR": str(tmp_path)})
    Fernet(result.stdout.strip())


@pytest.mark.django_db
def test_firstrun_proposes_the_address_serve_listens_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """With KONVERGO_LISTEN on another port, the proposed base URL and login URL follow it."""
    import dataclasses

    from konvergo import config as config_module
    from konvergo.config import get_config
    from konvergo.services import parameters

    monkeypatch.setattr(
        config_module, "_CONFIG", dataclasses.replace(get_config(), listen="127.0.0.1:8269")
    )
    out = StringIO()
    call_command("firstrun", "--email", "admin@example.com", stdout=out)
    assert parameters.base_url() == "http://127.0.0.1:8269"
    assert "http://127.0.0.1:8269/login" in out.getvalue()
    assert User.objects.get().email == "admin@example.com"


def test_createsuperuser_noinput_makes_an_administrator(tmp_path: Path) -> None:
    """`konvergo createsuperuser --noinput` with DJANGO_SUPERUSER_* creates an Administrator."""
    env = {
        "KONVERGO_VAR_DIR": str(tmp_path),
        "DJANGO_SUPERUSER_USERNAME": "ops",
        "DJANGO_SUPERUSER_PASSWORD": "a-long-Passw0rd!",
        "DJANGO_SUPERUSER_EMAIL": "ops@example.com",
    }
    assert _konvergo(["migrate", "--no-input"], env).returncode == 0
    created = _konvergo(["createsuperuser", "--noinput"], env)
    assert created.returncode == 0, created.stderr
    check = _konvergo(
        [
            "shell",
            "-c",
            "from konvergo.store.models import User; u = User.objects.get(username='ops'); "
            "print(u.is_administrator, u.role)",
        ],
        env,
    )
    assert check.stdout.split()[-2:] == ["True", "admin"]
