"""My API keys: create (shown once) and revoke."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from konvergo.services import apikeys
from konvergo.store.models import ApiKey
from konvergo.web import once


@login_required
def key_list(request: HttpRequest) -> HttpResponse:
    # "new_api_key": where a key waited in clear before this release; removed in any case.
    legacy = request.session.pop("new_api_key", None)
    new_key = once.take(request, "api_key") or legacy
    keys = ApiKey.objects.filter(user_id=int(request.user.pk or 0)).order_by("-created_at")
    return render(request, "konvergo/account/api_keys.html", {"keys": keys, "new_key": new_key})


@require_POST
@login_required
def key_create(request: HttpRequest) -> HttpResponse:
    _, key = apikeys.create(request.user, request.POST.get("name", ""))
    # Shown on the next page only, then gone: the database keeps only its digest (and, until
    # then, the session an encrypted copy).
    once.keep(request, "api_key", key)
    return redirect("api-keys")


@require_POST
@login_required
def key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    row = get_object_or_404(ApiKey, pk=pk, user_id=request.user.pk)
    apikeys.revoke(row, request.user)
    messages.success(request, f"Revoked {row.name}.")
    return redirect("api-keys")
