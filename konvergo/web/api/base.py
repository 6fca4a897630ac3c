"""The API object, its authentication and its error shape."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError
from ninja.security import APIKeyHeader, SessionAuth

from konvergo.errors import KonvergoError, RoutingError, ValidationFailed
from konvergo.web.access import is_admin


class BearerKey(APIKeyHeader):
    """``Authorization: Bearer <api key>``: per-user keys created in the UI."""

    param_name = "Authorization"

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if not key or not key.lower().startswith("bearer "):
            return None
        from konvergo.services.apikeys import user_for_key

        user = user_for_key(key[7:].strip())
        if user is not None:
            request.user = user
        return user


api = NinjaAPI(
    title="Konvergo mail API",
    version="1",
    urls_namespace="api",
    # The key first: a session auth would demand a CSRF token from a program that sends a
    # key. Browsers cannot add the Authorization header cross-site, so CSRF stays enforced
    # for session calls.
    auth=[BearerKey(), SessionAuth()],
    docs_url="/docs",
)


class Forbidden(KonvergoError, PermissionError):
    """The caller is authenticated but lacks the right for this call."""


def require_admin(request: HttpRequest) -> None:
    if not is_admin(request.user):
        raise Forbidden("Only administrators may call this endpoint.")


@api.exception_handler(Forbidden)
def _forbidden(request: HttpRequest, exc: Forbidden) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc)}, status=403)


@api.exception_handler(ValidationFailed)
def _invalid(request: HttpRequest, exc: ValidationFailed) -> HttpResponse:
    return api.create_response(request, {"detail": exc.message, "field": exc.field}, status=400)


@api.exception_handler(RoutingError)
def _unroutable(request: HttpRequest, exc: RoutingError) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc), "field": "from"}, status=400)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return api.create_response(request, {"detail": "Authentication required."}, status=401)
