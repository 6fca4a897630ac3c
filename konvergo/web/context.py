"""Template context shared by every page: the menu and the banners."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from konvergo.web.access import is_admin


def konvergo(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    admin = is_admin(user)
    banners: list[dict[str, str]] = []
    if admin:
        from konvergo.web.banners import admin_banners

        banners = admin_banners()
    if getattr(user, "is_authenticated", False):
        from konvergo.services.oauth.alerts import banners_for

        banners += banners_for(user)
    return {
        "is_admin": admin,
        "developer_mode": bool(admin and getattr(user, "developer_mode", False)),
        "banners": banners,
    }
