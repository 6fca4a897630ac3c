"""Rights, enforced on the server for every page and API call (not only hidden in menus)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

View = TypeVar("View", bound=Callable[..., HttpResponse])


def is_admin(user: Any) -> bool:
    return bool(
        getattr(user, "is_authenticated", False) and getattr(user, "is_administrator", False)
    )


def admin_required(view: View) -> View:
    """Anonymous → login page; logged in without the Administrator role → 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_admin(request.user):
            raise PermissionDenied("Only administrators may open Settings.")
        return view(request, *args, **kwargs)

    return cast(View, login_required(wrapper))


def developer_mode_required(view: View) -> View:
    """Technical pages: administrators with developer mode switched on."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not getattr(request.user, "developer_mode", False):
            raise PermissionDenied(
                "Switch on developer mode (Settings → General Settings) to open technical menus."
            )
        return view(request, *args, **kwargs)

    return admin_required(cast(View, wrapper))
