"""Every ``KONVERGO_*`` environment variable is read here, and only here.

Other modules ask :func:`get_config` and never look at ``os.environ`` themselves, so that a
reader finds the whole configuration surface in one file.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet

from konvergo.errors import ConfigurationError

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class Config:
    """The process configuration, derived from the environment once."""

    environment: str
    var_dir: Path
    database_url: str
    secret_key: str
    secret_key_generated: bool
    encryption_keys: tuple[str, ...]
    encryption_key_generated: bool
    debug: bool
    allowed_hosts: tuple[str, ...]
    ca_bundle: Path | None
    listen: str
    worker_interval: float
    #: PostgreSQL: prepare the queue's per-message statements once per connection. Off for
    #: a pooler in transaction mode that cannot keep prepared statements (PgBouncer
    #: before 1.22, or without ``max_prepared_statements``).
    database_prepared: bool = True
    #: Whether workers keep IDLE sessions open for servers that offer IDLE (else they poll).
    intake_idle: bool = True
    #: Dovecot binaries of the sandbox (Debian's paths by default).
    dovecot: str = "/usr/sbin/dovecot"
    doveadm: str = "/usr/bin/doveadm"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def production(self) -> bool:
        return self.environment == "production"


def _read_or_create(path: Path, make: str) -> str:
    """Return the development secret stored at ``path``, creating it once (mode 0600)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(make + "\n")
    return make


def load(environ: os._Environ[str] | dict[str, str] | None = None) -> Config:
    """Build a :class:`Config` from ``environ`` (the process environment by default)."""
    env = os.environ if environ is None else environ
    environment = env.get("KONVERGO_ENV", "development").strip().lower() or "development"
    if environment not in {"development", "production"}:
        raise ConfigurationError("KONVERGO_ENV must be 'development' or 'production'.")
    production = environment == "production"
    var_dir = Path(env.get("KONVERGO_VAR_DIR", "var")).resolve()

    secret_key = env.get("KONVERGO_SECRET_KEY", "").strip()
    secret_generated = False
    if not secret_key:
        if production:
            raise ConfigurationError(
                "KONVERGO_SECRET_KEY is required when KONVERGO_ENV=production "
                "(50+ random characters; keep it stable across restarts)."
            )
        secret_key = _read_or_create(var_dir / "secret_key", secrets.token_urlsafe(50))
        secret_generated = True

    keys_text = env.get("KONVERGO_ENCRYPTION_KEYS", "").strip()
    key_generated = False
    if keys_text:
        keys = tuple(k.strip() for k in keys_text.split(",") if k.strip())
    elif production:
        raise ConfigurationError(
            "KONVERGO_ENCRYPTION_KEYS is required when KONVERGO_ENV=production "
            "(comma-separated Fernet keys; the first encrypts, all decrypt)."
        )
    else:
        keys = (_read_or_create(var_dir / "encryption_key", Fernet.generate_key().decode()),)
        key_generated = True
    for key in keys:
        try:
            Fernet(key)
        except ValueError as exc:
            raise ConfigurationError(
                "KONVERGO_ENCRYPTION_KEYS holds a value that is not a Fernet key "
                "(32 url-safe base64-encoded bytes; make one with "
                "`konvergo generate-key`)."
            ) from exc

    database_url = env.get("KONVERGO_DATABASE_URL", "").strip() or (
        f"sqlite:///{var_dir / 'konvergo.sqlite3'}"
    )
    debug_default = "false" if production else "true"
    debug = env.get("KONVERGO_DEBUG", debug_default).strip().lower() in TRUE_WORDS
    hosts_default = "" if production else "127.0.0.1,localhost,[::1]"
    allowed_hosts = tuple(
        h.strip() for h in env.get("KONVERGO_ALLOWED_HOSTS", hosts_default).split(",") if h.strip()
    )
    if production and not allowed_hosts:
        raise ConfigurationError(
            "KONVERGO_ALLOWED_HOSTS is required when KONVERGO_ENV=production "
            "(the host names this instance is reached at, comma-separated)."
        )
    ca_text = env.get("KONVERGO_CA_BUNDLE", "").strip()
    ca_bundle = Path(ca_text).resolve() if ca_text else None
    if ca_bundle is not None and not ca_bundle.is_file():
        raise ConfigurationError(f"KONVERGO_CA_BUNDLE points to {ca_bundle}, which is not a file.")
    return Config(
        environment=environment,
        var_dir=var_dir,
        database_url=database_url,
        secret_key=secret_key,
        secret_key_generated=secret_generated,
        encryption_keys=keys,
        encryption_key_generated=key_generated,
        debug=debug,
        allowed_hosts=allowed_hosts,
        ca_bundle=ca_bundle,
        listen=env.get("KONVERGO_LISTEN", "127.0.0.1:8069"),
        worker_interval=float(env.get("KONVERGO_WORKER_INTERVAL", "1.0")),
        database_prepared=env.get("KONVERGO_DATABASE_PREPARED", "1").strip().lower() in TRUE_WORDS,
        intake_idle=env.get("KONVERGO_INTAKE_IDLE", "1").strip() != "0",
        dovecot=env.get("KONVERGO_DOVECOT", "/usr/sbin/dovecot"),
        doveadm=env.get("KONVERGO_DOVEADM", "/usr/bin/doveadm"),
    )


_CONFIG: Config | None = None


def get_config() -> Config:
    """The configuration of this process, loaded on first use."""
    global _CONFIG
    if _CONFIG is None:
        _CONFIG = load()
    return _CONFIG


def reset_config() -> None:
    """Forget the loaded configuration (tests that change the environment call this)."""
    global _CONFIG
    _CONFIG = None
