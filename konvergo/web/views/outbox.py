"""The outbox page: queued, sent, held and failed mail, with Retry and Cancel."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from konvergo.errors import KonvergoError
from konvergo.services import outbox
from konvergo.store.models import OutboxItem
from konvergo.web.access import is_admin

PAGE = 100


def _visible(request: HttpRequest):  # type: ignore[no-untyped-def]
    items = OutboxItem.objects.select_related("server")
    return items if is_admin(request.user) else items.filter(created_by_id=request.user.pk)


@login_required
def outbox_list(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "")
    items = _visible(request).order_by("-id")
    if state in OutboxItem.State.values:
        items = items.filter(state=state)
    return render(
        request,
        "konvergo/outbox/list.html",
        {"items": items[:PAGE], "state": state, "states": OutboxItem.State.choices},
    )


def _act(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    item = get_object_or_404(_visible(request), pk=pk)
    if not is_admin(request.user) and item.created_by_id != request.user.pk:
        raise PermissionDenied
    try:
        getattr(outbox, action)(item)
    except KonvergoError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{action.capitalize()}: message {pk}.")
    return redirect(_safe_next(request) or "outbox")


@require_POST
@login_required
def retry(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, "retry")


@require_POST
@login_required
def cancel(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, "cancel")


def _safe_next(request: HttpRequest) -> str:
    """The POSTed ``next`` when it stays on this site, else ''."""
    target = request.POST.get("next", "")
    allowed = url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure())
    return target if allowed else ""
