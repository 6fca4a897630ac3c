"""My mail servers: a user's own (user-specific) servers, without Settings rights."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from konvergo.store.models import IncomingServer, OutgoingServer
from konvergo.web.views.servers_common import outlook_block


@login_required
def my_servers(request: HttpRequest) -> HttpResponse:
    rows = []
    for kind, model in (("outgoing", OutgoingServer), ("incoming", IncomingServer)):
        for server in model.objects.filter(owner_id=request.user.pk).select_related("grant"):  # type: ignore[attr-defined]
            rows.append(
                {
                    "server": server,
                    "kind": kind,
                    "outlook": outlook_block(server, kind, request.user),
                }
            )
    return render(request, "konvergo/servers/my_servers.html", {"rows": rows})
