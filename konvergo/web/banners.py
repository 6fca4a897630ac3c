"""Banners shown to administrators: problems that need someone to act.

Each source is a function returning banners; later features (token health, client secret
expiry) append theirs to :data:`SOURCES`.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import DatabaseError

Banner = dict[str, str]
SOURCES: list[Callable[[], list[Banner]]] = []


def _base_url_missing() -> list[Banner]:
    from konvergo.services import parameters

    if parameters.base_url():
        return []
    return [
        {
            "level": "warning",
            "text": "web.base.url is not set: the Outlook redirect URI cannot be built. "
            "Set it in General Settings.",
            "link": "/settings/general",
        }
    ]


def _client_secret_expiry() -> list[Banner]:
    from konvergo.services.mailsettings import secret_expiry_warning

    warning = secret_expiry_warning()
    return [{"level": "warning", "text": warning, "link": "/settings/general"}] if warning else []


SOURCES.extend([_base_url_missing, _client_secret_expiry])


def admin_banners() -> list[Banner]:
    banners: list[Banner] = []
    for source in SOURCES:
        try:
            banners.extend(source())
        except DatabaseError:  # an unmigrated database must still render the login page
            continue
    return banners
