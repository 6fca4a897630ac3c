"""SANDBOX ONLY: the token endpoint's grants (authorization_code, refresh_token,
client_credentials), each a function from the form to the success body.

Client authentication and tenant/app resolution happen before, in
:meth:`IdentityPlatform.token`; every failure raises :class:`IdpError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from konvergo.sandbox.idp_authorize import pkce_matches
from konvergo.sandbox.idp_errors import IdpError, format_iso
from konvergo.sandbox.idp_scopes import (
    EXCHANGE_APP_ID,
    RESOURCES,
    Scope,
    expand_default,
    parse,
    resource_apps,
)
from konvergo.sandbox.idp_state import Session
from konvergo.sandbox.world import App

if TYPE_CHECKING:
    from konvergo.sandbox.idp import Authority, IdentityPlatform

#: Refresh tokens die after 90 days without use (research §1.7, E-17).
REFRESH_INACTIVITY = 90 * 24 * 3600

Grant = Callable[["IdentityPlatform", "Authority", App, dict[str, str]], dict[str, Any]]


def _check_scopes(scopes: list[Scope], text: str, authority: Authority, *, multi: str) -> None:
    """Known resources and permissions, and only one resource per token (E-09)."""
    tenant_name = authority.tenant.name if authority.tenant else authority.path
    for scope in scopes:
        if scope.resource and scope.resource not in RESOURCES:
            raise IdpError("AADSTS500011", resource=scope.resource, tenant_name=tenant_name)
        if not scope.known and scope.name != ".default":
            raise IdpError("AADSTS70011_UNKNOWN", scope=scope.uri)
    if len(resource_apps(scopes)) > 1:
        raise IdpError(multi, scope=text)


def _check_consent(p: IdentityPlatform, session: Session, app: App, scopes: list[Scope]) -> None:
    if p.consents.missing(session.upn, session.tenant_id, app.client_id, scopes):
        raise IdpError("AADSTS65001", client_id=app.client_id, app_name=app.name)


def authorization_code(
    p: IdentityPlatform, authority: Authority, app: App, form: dict[str, str]
) -> dict[str, Any]:
    value = form.get("code", "")
    if not value:
        raise IdpError("AADSTS900144", name="code")
    redirect_uri = form.get("redirect_uri", "")
    if not redirect_uri:
        raise IdpError("AADSTS900144", name="redirect_uri")
    text = form.get("scope", "").strip()
    if not text:
        raise IdpError("AADSTS28003")
    code = p.codes.get(value)
    if code is None or code.session.client_id != app.client_id:
        raise IdpError("AADSTS9002313" if code is None else "AADSTS70000")
    if code.redeemed:
        raise IdpError("AADSTS54005")
    if p.now() - code.issued_at > p.code_ttl:
        raise IdpError("AADSTS70008")
    if redirect_uri != code.redirect_uri:
        raise IdpError("AADSTS500112", redirect_uri=redirect_uri, original=code.redirect_uri)
    if authority.tenant and authority.tenant.id != code.session.tenant_id:
        raise IdpError("AADSTS700005")
    if code.challenge is not None and not pkce_matches(
        form.get("code_verifier", ""), code.challenge, code.challenge_method
    ):
        raise IdpError("AADSTS501481")
    scopes = expand_default(parse(text), app.permissions)
    _check_scopes(scopes, text, authority, multi="AADSTS70011")
    _check_consent(p, code.session, app, scopes)
    code.redeemed = True
    return p.issue(code.session, app, scopes, nonce=code.session.nonce)


def refresh_token(
    p: IdentityPlatform, authority: Authority, app: App, form: dict[str, str]
) -> dict[str, Any]:
    value = form.get("refresh_token", "")
    if not value:
        raise IdpError("AADSTS900144", name="refresh_token")
    text = form.get("scope", "").strip()
    if not text:
        raise IdpError("AADSTS900144", name="scope")
    token = p.refresh_tokens.get(value)
    if token is None:
        raise IdpError("AADSTS9002313")
    session, now = token.session, p.now()
    if session.client_id != app.client_id:
        raise IdpError("AADSTS70000")
    if token.superseded_at is not None and now - token.superseded_at >= p.refresh_grace_seconds:
        raise IdpError("AADSTS70000")
    if now - token.issued_at > REFRESH_INACTIVITY:
        raise IdpError("AADSTS700082", issued=format_iso(token.issued_at))
    valid_from = p.tokens_valid_from.get(session.upn)
    if valid_from is not None and session.auth_time < valid_from:
        raise IdpError(
            "AADSTS50173", issued=format_iso(session.auth_time), valid_from=format_iso(valid_from)
        )
    mailbox = p.world.mailbox(session.upn)
    if mailbox is None:
        raise IdpError("AADSTS70000")
    scopes = expand_default(parse(text), app.permissions)
    _check_scopes(scopes, text, authority, multi="AADSTS28000")
    if mailbox.mfa_required and not session.mfa:
        resource_app = (resource_apps(scopes) or [EXCHANGE_APP_ID])[0]
        raise IdpError("AADSTS50076", resource_id=resource_app)
    _check_consent(p, session, app, scopes)
    if token.superseded_at is None:
        token.superseded_at = now
    return p.issue(session, app, scopes)


def client_credentials(
    p: IdentityPlatform, authority: Authority, app: App, form: dict[str, str]
) -> dict[str, Any]:
    if authority.tenant is None or authority.tenant.personal:
        raise IdpError("AADSTS50059")
    text = form.get("scope", "").strip()
    if not text:
        raise IdpError("AADSTS900144", name="scope")
    scopes = parse(text)
    if any(s.oidc or s.name != ".default" for s in scopes):
        raise IdpError("AADSTS1002012", scope=text)
    _check_scopes(scopes, text, authority, multi="AADSTS70011")
    resource = scopes[0].resource
    granted = p.consents.roles(authority.tenant.id, app.client_id)
    app_id = RESOURCES[resource]
    roles = sorted(r for r in app.app_permissions if f"{app_id}/{r.lower()}" in granted)
    return p.issue_app_only(app, authority.tenant, resource, roles)


GRANTS: dict[str, Grant] = {
    "authorization_code": authorization_code,
    "refresh_token": refresh_token,
    "client_credentials": client_credentials,
}
