"""SANDBOX ONLY: the browser leg, ``/authorize`` → sign-in → consent → redirect with a code.

Errors about the app or its redirect URI are shown on an error page and never redirected
(research §1.2); errors about the request are redirected to the app with ``?error=``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from konvergo.sandbox import idp_pages as pages
from konvergo.sandbox import idp_tokens
from konvergo.sandbox.idp_errors import IdpError, Report
from konvergo.sandbox.idp_scopes import RESOURCES, expand_default, parse
from konvergo.sandbox.idp_state import AuthCode, Flow, Session
from konvergo.sandbox.idp_web import Reply, Request, html_reply, redirect_reply
from konvergo.sandbox.world import App, Mailbox

if TYPE_CHECKING:
    from konvergo.sandbox.idp import Authority, IdentityPlatform

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1"})
RESPONSE_MODES = frozenset({"query", "fragment", "form_post"})
DEFAULT_PORTS = {"http": 80, "https": 443}

#: Inline sign-in page messages for an account of the wrong kind on a generic authority.
#: [inf] Microsoft shows these on its own sign-in page, without an AADSTS code.
WRONG_ACCOUNT_KIND = {
    ("personal", "organizations"): (
        "You can't sign in here with a personal account. Use your work or school account instead."
    ),
    ("work", "consumers"): (
        "You can't sign in here with a work or school account. Use a personal account instead."
    ),
}
#: Apps whose registration excludes personal accounts (research §4.2, E-08).
ORG_ONLY_AUDIENCES = frozenset({"AzureADMyOrg", "AzureADMultipleOrgs"})


def redirect_uri_matches(requested: str, registered: str) -> bool:
    """Research §1.12: exact match; http only on loopback, where the port is ignored."""
    try:
        a, b = urlsplit(requested), urlsplit(registered)
        a_port = a.port or DEFAULT_PORTS.get(a.scheme.lower())
        b_port = b.port or DEFAULT_PORTS.get(b.scheme.lower())
    except ValueError:
        return False
    host = (a.hostname or "").lower()
    if a.scheme.lower() != b.scheme.lower() or host != (b.hostname or "").lower():
        return False
    if a.scheme.lower() != "https" and host not in LOOPBACK_HOSTS:
        return False
    if host not in LOOPBACK_HOSTS and a_port != b_port:
        return False
    # Paths are case-sensitive; an empty path is the same as "/".
    return (a.path or "/") == (b.path or "/") and a.query == b.query and not a.fragment


def pkce_matches(verifier: str, challenge: str, method: str) -> bool:
    if method.upper() == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", errors="replace")).digest()
        computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    else:
        computed = verifier
    return hmac.compare_digest(computed, challenge)


def respond(uri: str, mode: str, params: list[tuple[str, str | None]]) -> Reply:
    """Send the result to the app: query string, fragment or auto-posting form."""
    pairs = [(k, v) for k, v in params if v is not None]
    if mode == "form_post":
        return html_reply(pages.form_post(uri, pairs))
    sep = "#" if mode == "fragment" else ("&" if "?" in uri else "?")
    return redirect_reply(uri + sep + urlencode(pairs))


class BrowserFlow:
    """The interactive pages of one identity platform."""

    def __init__(self, platform: IdentityPlatform) -> None:
        self.p = platform

    # --- helpers -------------------------------------------------------------------------
    def error_page(self, error: IdpError) -> Reply:
        return html_reply(pages.error(Report(error, self.p.now())), 400)

    def error_redirect(self, flow_uri: str, mode: str, error: IdpError, state: str | None) -> Reply:
        report = Report(error, self.p.now())
        return respond(flow_uri, mode, list(report.redirect_params(state)))

    def _flow(self, request: Request) -> Flow:
        ctx = request.form().get("ctx") or request.query.get("ctx", "")
        flow = self.p.flows.get(ctx)
        if flow is None:
            raise IdpError("AADSTS9002313")
        return flow

    def _accounts(self, authority: Authority) -> list[tuple[str, str]]:
        boxes = sorted(self.p.world.mailboxes.values(), key=lambda m: m.upn)
        return [(m.upn, m.display_name) for m in boxes]

    def _signin_page(self, flow: Flow, error: str = "", selected: str = "") -> Reply:
        authority = self.p.authority(flow.tenant_path)
        html = pages.signin(
            action=f"/{flow.tenant_path}/login",
            ctx=flow.ctx,
            app_name=flow.app.name,
            accounts=self._accounts(authority),
            selected=selected or flow.login_hint,
            error=error,
        )
        return html_reply(html)

    # --- GET /{tenant}/oauth2/v2.0/authorize ----------------------------------------------
    def authorize(self, tenant_path: str, request: Request) -> Reply:
        q = request.query
        try:
            authority = self.p.authority(tenant_path)
            app = self.p.app_for(authority, q.get("client_id", ""))
            redirect_uri = q.get("redirect_uri", "")
            if not redirect_uri:
                raise IdpError("AADSTS900144", name="redirect_uri")
            if not any(redirect_uri_matches(redirect_uri, r) for r in app.redirect_uris):
                raise IdpError("AADSTS50011", redirect_uri=redirect_uri, client_id=app.client_id)
        except IdpError as exc:
            return self.error_page(exc)
        state = q.get("state")
        mode = q.get("response_mode") or "query"
        mode = mode if mode in RESPONSE_MODES else "query"
        try:
            flow = self._new_flow(tenant_path, authority, app, redirect_uri, mode, q)
        except IdpError as exc:
            return self.error_redirect(redirect_uri, mode, exc, state)
        self.p.flows[flow.ctx] = flow
        return self._signin_page(flow)

    def _new_flow(
        self,
        tenant_path: str,
        authority: Authority,
        app: App,
        redirect_uri: str,
        mode: str,
        q: dict[str, str],
    ) -> Flow:
        response_type = q.get("response_type", "")
        if not response_type:
            raise IdpError("AADSTS900144", name="response_type")
        if response_type != "code":
            raise IdpError("AADSTS700054", response_type=response_type)
        scopes = parse(q.get("scope"))
        if not scopes:
            raise IdpError("AADSTS900144", name="scope")
        tenant_name = authority.tenant.name if authority.tenant else authority.path
        for scope in scopes:
            if scope.resource and scope.resource not in RESOURCES:
                raise IdpError("AADSTS500011", resource=scope.resource, tenant_name=tenant_name)
            if not scope.known and scope.name != ".default":
                raise IdpError("AADSTS70011_UNKNOWN", scope=scope.uri)
        challenge = q.get("code_challenge") or None
        method = q.get("code_challenge_method") or "plain"
        if challenge is not None:
            if method.upper() not in {"S256", "PLAIN"}:
                raise IdpError("AADSTS9002313")
            if method.upper() == "S256" and len(challenge) != 43:
                raise IdpError("AADSTS501491")
        prompt = q.get("prompt", "")
        if prompt == "none":
            # No browser sessions in the sandbox, so a silent request never has a user.
            raise IdpError("AADSTS50058")
        return Flow(
            ctx=secrets.token_urlsafe(24),
            tenant_path=tenant_path,
            app=app,
            redirect_uri=redirect_uri,
            scopes=expand_default(scopes, app.permissions),
            state=q.get("state"),
            response_mode=mode,
            nonce=q.get("nonce") or None,
            challenge=challenge,
            challenge_method=method,
            login_hint=q.get("login_hint", ""),
            prompt=prompt,
            created=self.p.now(),
        )

    # --- GET|POST /{tenant}/login ---------------------------------------------------------
    def login(self, tenant_path: str, request: Request) -> Reply:
        try:
            flow = self._flow(request)
        except IdpError as exc:
            return self.error_page(exc)
        if request.method != "POST":
            return self._signin_page(flow)
        form = request.form()
        upn = form.get("login", "").strip().lower()
        authority = self.p.authority(flow.tenant_path)
        mailbox = self.p.world.mailbox(upn)
        if mailbox is None:
            name = authority.tenant.name if authority.tenant else authority.path
            err = IdpError("AADSTS50034", upn=upn or "''", tenant_name=name)
            return self._signin_page(flow, err.message, upn)
        if not hmac.compare_digest(form.get("passwd", ""), mailbox.password):
            return self._signin_page(flow, IdpError("AADSTS50126").message, upn)
        try:
            refusal = self._account_refusal(flow, authority, mailbox)
        except IdpError as exc:
            return self.error_page(exc)
        if refusal:
            return self._signin_page(flow, refusal, upn)
        flow.upn, flow.signed_in_at, flow.mfa = mailbox.upn, self.p.now(), mailbox.mfa_required
        return self._after_signin(flow, mailbox)

    def _account_refusal(self, flow: Flow, authority: Authority, mailbox: Mailbox) -> str:
        """Whether this account may sign in to this app here (E-08); raises for error pages."""
        tenant = self.p.world.tenant_of(mailbox)
        kind = "personal" if tenant.personal else "work"
        inline = WRONG_ACCOUNT_KIND.get((kind, authority.kind))
        if inline:
            return inline
        if authority.kind == "tenant" and authority.tenant and authority.tenant.id != tenant.id:
            idp = "live.com" if tenant.personal else f"https://sts.windows.net/{tenant.id}/"
            raise IdpError(
                "AADSTS50020",
                upn=mailbox.upn,
                idp=idp,
                tenant_name=authority.tenant.name,
                client_id=flow.app.client_id,
                app_name=flow.app.name,
            )
        if tenant.personal and flow.app.sign_in_audience in ORG_ONLY_AUDIENCES:
            raise IdpError("MSA_NOT_ENABLED_FOR_CONSUMERS")
        if flow.app.sign_in_audience == "AzureADMyOrg" and tenant.id != flow.app.home_tenant_id:
            raise IdpError(
                "AADSTS50020",
                upn=mailbox.upn,
                idp=f"https://sts.windows.net/{tenant.id}/",
                tenant_name=self.p.world.tenants[flow.app.home_tenant_id].name,
                client_id=flow.app.client_id,
                app_name=flow.app.name,
            )
        return ""

    def _after_signin(self, flow: Flow, mailbox: Mailbox) -> Reply:
        tenant = self.p.world.tenant_of(mailbox)
        missing = self.p.consents.missing(mailbox.upn, tenant.id, flow.app.client_id, flow.scopes)
        if not missing and flow.prompt != "consent":
            return self._issue_code(flow)
        if tenant.personal or tenant.users_may_consent or mailbox.is_admin:
            html = pages.consent(
                action=f"/{flow.tenant_path}/consent",
                ctx=flow.ctx,
                app_name=flow.app.name,
                upn=mailbox.upn,
                permissions=[(s.uri, s.description) for s in flow.scopes],
                offer_org_consent=mailbox.is_admin and not tenant.personal,
            )
            return html_reply(html)
        return html_reply(
            pages.admin_approval(
                app_name=flow.app.name,
                signin_url=f"/{flow.tenant_path}/login?ctx={flow.ctx}",
                return_url=f"/{flow.tenant_path}/consent/return?ctx={flow.ctx}",
            )
        )

    # --- POST /{tenant}/consent, GET /{tenant}/consent/return ------------------------------
    def consent(self, tenant_path: str, request: Request) -> Reply:
        try:
            flow = self._flow(request)
        except IdpError as exc:
            return self.error_page(exc)
        mailbox = self.p.world.mailbox(flow.upn)
        if request.method != "POST" or mailbox is None:
            return self._signin_page(flow)
        form = request.form()
        if form.get("action") != "Yes":
            return self.decline(flow)
        tenant = self.p.world.tenant_of(mailbox)
        if not (tenant.personal or tenant.users_may_consent or mailbox.is_admin):
            return self._after_signin(flow, mailbox)  # posting "Yes" cannot bypass the policy
        if form.get("consent_org") == "true" and mailbox.is_admin and not tenant.personal:
            self.p.consents.grant_admin(tenant.id, flow.app.client_id, flow.scopes)
        else:
            self.p.consents.grant(mailbox.upn, flow.app.client_id, flow.scopes)
        return self._issue_code(flow)

    def consent_return(self, tenant_path: str, request: Request) -> Reply:
        try:
            return self.decline(self._flow(request))
        except IdpError as exc:
            return self.error_page(exc)

    def decline(self, flow: Flow) -> Reply:
        """Cancel: back to the app with access_denied and AADSTS65004 (E-13)."""
        self.p.flows.pop(flow.ctx, None)
        return self.error_redirect(
            flow.redirect_uri, flow.response_mode, IdpError("AADSTS65004"), flow.state
        )

    def _issue_code(self, flow: Flow) -> Reply:
        mailbox = self.p.world.mailbox(flow.upn)
        assert mailbox is not None
        personal = self.p.world.tenant_of(mailbox).personal
        session = Session(
            upn=mailbox.upn,
            tenant_id=mailbox.tenant_id,
            client_id=flow.app.client_id,
            scopes=flow.scopes,
            auth_time=flow.signed_in_at,
            mfa=flow.mfa,
            nonce=flow.nonce,
        )
        # Work-account codes start "0.A", personal ones "M.C", as Microsoft's do.
        value = idp_tokens.opaque("M.C5" if personal else "0.A", 900)
        self.p.codes[value] = AuthCode(
            value=value,
            session=session,
            redirect_uri=flow.redirect_uri,
            challenge=flow.challenge,
            challenge_method=flow.challenge_method,
            issued_at=self.p.now(),
        )
        self.p.flows.pop(flow.ctx, None)
        params: list[tuple[str, str | None]] = [
            ("code", value),
            ("state", flow.state),
            ("session_state", str(uuid.uuid4())),
        ]
        return respond(flow.redirect_uri, flow.response_mode, params)
