"""Django system checks with stable IDs for dangerous settings.

======================  ===========================================================
ID                      meaning
======================  ===========================================================
konvergo.W001           no KONVERGO_ENCRYPTION_KEYS: secrets use a development key
konvergo.W002           web.base.url is http:// on a host that is not loopback
konvergo.W003           DEBUG is on
konvergo.W004           KONVERGO_SECRET_KEY not set: a development key is in use
konvergo.W005           web.base.url is not set: Outlook cannot be connected
======================  ===========================================================
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register
from django.db import DatabaseError

from konvergo.config import get_config


@register(Tags.security, deploy=True)
def check_secrets(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    config = get_config()
    found: list[CheckMessage] = []
    if config.encryption_key_generated:
        found.append(
            Warning(
                "Secrets are encrypted with a development key generated into var/.",
                hint="Set KONVERGO_ENCRYPTION_KEYS (konvergo generate-key makes one) and run "
                "konvergo rotate-keys.",
                id="konvergo.W001",
            )
        )
    if config.secret_key_generated:
        found.append(
            Warning(
                "KONVERGO_SECRET_KEY is not set; a development key generated into var/ is used.",
                hint="Set KONVERGO_SECRET_KEY to 50+ random characters in production.",
                id="konvergo.W004",
            )
        )
    if settings.DEBUG:
        found.append(
            Warning(
                "DEBUG is on: error pages show internal details.",
                hint="Set KONVERGO_DEBUG=false (the default when KONVERGO_ENV=production).",
                id="konvergo.W003",
            )
        )
    return found


@register(Tags.security, deploy=True)
def check_base_url(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from konvergo.services.parameters import base_url, is_loopback

    try:
        url = base_url()
    except DatabaseError:  # not migrated yet: nothing to check
        return []
    if not url:
        return [
            Warning(
                "web.base.url is not set: the Outlook redirect URI cannot be built.",
                hint="Set it in Settings → General Settings (Base URL).",
                id="konvergo.W005",
            )
        ]
    parts = urlsplit(url)
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        return [
            Warning(
                f"web.base.url is {url}: plain http outside loopback exposes sessions, and "
                "Microsoft refuses http redirect URIs except on localhost.",
                hint="Serve Konvergo over https and set web.base.url to its https address.",
                id="konvergo.W002",
            )
        ]
    return []
