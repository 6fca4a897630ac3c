"""System Parameters: known keys, their defaults and validation, read and write.

Known keys are a table (:data:`KNOWN`), so the page, the checks and the code that reads a
parameter agree on what a key means and what a valid value looks like.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from konvergo.errors import ValidationFailed

KEY_RE = re.compile(r"^[a-z0-9_]+(?:[.\-][a-z0-9_]+)*$")
DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$", re.I
)
LOCAL_PART_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")

DEFAULT_OUTLOOK_ENDPOINT = "https://login.microsoftonline.com/common/oauth2/v2.0/"


def _clean_base_url(value: str) -> str:
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValidationFailed(
            "web.base.url",
            "The base URL must look like https://erp.example.com (scheme and host, "
            "optionally a port).",
        )
    if parts.query or parts.fragment or (parts.path not in {"", "/"}):
        raise ValidationFailed(
            "web.base.url",
            "The base URL must not carry a path, query or fragment: Microsoft matches the "
            "redirect URI exactly.",
        )
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _clean_domain(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    if not value:
        return value
    try:
        ascii_value = value.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValidationFailed("mail.catchall.domain", f"'{value}' is not a domain.") from exc
    if "@" in value or not DOMAIN_RE.match(ascii_value):
        raise ValidationFailed(
            "mail.catchall.domain", f"'{value}' is not a domain (e.g. example.com)."
        )
    return value


def _clean_local_or_address(key: str) -> Callable[[str], str]:
    def clean(value: str) -> str:
        value = value.strip()
        if not value:
            return value
        local, at, domain = value.partition("@")
        if not LOCAL_PART_RE.match(local) or (at and not DOMAIN_RE.match(domain)):
            raise ValidationFailed(
                key,
                f"'{value}' must be a local part such as 'notifications' or a full address "
                "such as 'notifications@example.com'.",
            )
        return value

    return clean


def _clean_endpoint(value: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValidationFailed(
            "microsoft_outlook.endpoint",
            "The endpoint must be a URL such as "
            f"{DEFAULT_OUTLOOK_ENDPOINT} (a tenant id or national cloud replaces 'common').",
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValidationFailed(
            "microsoft_outlook.endpoint",
            "The endpoint must use https (plain http is only accepted on loopback, for the "
            "sandbox).",
        )
    return value if value.endswith("/") else value + "/"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback IP addresses."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Param:
    """A known System Parameter: its default, a cleaner that validates, and a description."""

    default: str
    clean: Callable[[str], str]
    help: str


KNOWN: dict[str, Param] = {
    "web.base.url": Param(
        "",
        _clean_base_url,
        "The canonical URL of this instance; the Outlook redirect URI is built from it and "
        "never from the host of whoever is logged in.",
    ),
    "mail.default.from": Param(
        "notifications",
        _clean_local_or_address("mail.default.from"),
        "The notifications sender: a local part joined to mail.catchall.domain, or a full address.",
    ),
    "mail.catchall.domain": Param(
        "", _clean_domain, "The domain of the notifications, catchall and bounce addresses."
    ),
    "mail.catchall.alias": Param(
        "catchall",
        _clean_local_or_address("mail.catchall.alias"),
        "Replies to rewritten mail go to this alias at mail.catchall.domain.",
    ),
    "mail.bounce.alias": Param(
        "bounce",
        _clean_local_or_address("mail.bounce.alias"),
        "The envelope sender (Return-Path) alias at mail.catchall.domain.",
    ),
    "mail.alias.inbox": Param(
        "",
        _clean_local_or_address("mail.alias.inbox"),
        "Mail sent to this alias (at mail.catchall.domain) opens an Inbox conversation.",
    ),
    "mail.alias.lead": Param(
        "",
        _clean_local_or_address("mail.alias.lead"),
        "Mail sent to this alias (e.g. sales) opens a Lead thread.",
    ),
    "mail.alias.ticket": Param(
        "",
        _clean_local_or_address("mail.alias.ticket"),
        "Mail sent to this alias (e.g. support) opens a Helpdesk ticket thread.",
    ),
    "microsoft_outlook.endpoint": Param(
        DEFAULT_OUTLOOK_ENDPOINT,
        _clean_endpoint,
        "The Microsoft identity platform authority: /authorize and /token are joined to it.",
    ),
}


def clean_key(key: str) -> str:
    """Validate a parameter key: lower-case words separated by dots, like mail.catchall.domain."""
    key = key.strip()
    if not KEY_RE.match(key):
        raise ValidationFailed(
            "key",
            f"'{key}' is not a valid key: use lower-case letters, digits and underscores, "
            "separated by dots (e.g. mail.catchall.domain).",
        )
    return key


def clean(key: str, value: str) -> tuple[str, str]:
    """Validate ``key`` and ``value``; known keys get their own validation."""
    key = clean_key(key)
    known = KNOWN.get(key)
    return key, (known.clean(value) if known else value)


def get(key: str, default: str | None = None) -> str:
    """The value of ``key``: the stored value, else ``default``, else the known default."""
    from konvergo.store.models import SystemParameter

    row = SystemParameter.objects.filter(key=key).values_list("value", flat=True).first()
    return _or_default(key, row, default)


def _or_default(key: str, stored: object, default: str | None = None) -> str:
    """A stored value unless it is missing or empty, else ``default``, else the known one."""
    if stored not in (None, ""):
        return str(stored)
    if default is not None:
        return default
    known = KNOWN.get(key)
    return known.default if known else ""


def get_many(*keys: str) -> dict[str, str]:
    """:func:`get` of each of ``keys`` (known defaults included), in one query."""
    from konvergo.store.dbvalues import select_in
    from konvergo.store.models import SystemParameter

    # Intake reads its addresses with every batch: a plain query, not one compiled each time.
    stored = dict(select_in(SystemParameter, ["key", "value"], "key", keys))
    return {key: _or_default(key, stored.get(key)) for key in keys}


def set_value(key: str, value: str) -> str:
    """Validate and store ``value`` under ``key``; returns the stored (cleaned) value."""
    from konvergo.store.models import SystemParameter

    key, value = clean(key, value)
    SystemParameter.objects.update_or_create(key=key, defaults={"value": value})
    return value


def base_url() -> str:
    """``web.base.url`` as set by an administrator ('' when not set yet)."""
    return get("web.base.url")


def redirect_uri() -> str:
    """The exact redirect URI to register in Azure: ``<web.base.url>/microsoft_outlook/confirm``."""
    base = base_url()
    return f"{base}/microsoft_outlook/confirm" if base else ""


def notifications_address() -> str:
    """The notifications address: mail.default.from, joined to mail.catchall.domain if needed."""
    default_from = get("mail.default.from")
    if "@" in default_from:
        return default_from.lower()
    domain = get("mail.catchall.domain")
    return f"{default_from}@{domain}".lower() if default_from and domain else ""


def alias_address(alias_key: str) -> str:
    """An alias parameter (catchall, bounce) joined to mail.catchall.domain ('' if unset)."""
    values = get_many(alias_key, "mail.catchall.domain")
    return join_alias(values[alias_key], values["mail.catchall.domain"])


def join_alias(alias: str, domain: str) -> str:
    """An alias (a local part, or a whole address) as an address ('' when incomplete)."""
    if "@" in alias:
        return alias.lower()
    return f"{alias}@{domain}".lower() if alias and domain else ""
