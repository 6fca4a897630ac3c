"""SANDBOX ONLY: a local Microsoft identity platform (login.microsoftonline.com look-alike).

Serves ``/{tenant}/oauth2/v2.0/authorize`` and ``/token`` the way Microsoft documents them
(research: ``/work/shared/research/microsoft.md`` §1 and §5), OpenID metadata
(``/{tenant}/v2.0/.well-known/openid-configuration``), keys (``/{tenant}/discovery/v2.0/keys``),
``/introspect`` for Dovecot, and test knobs under ``/_sandbox/`` (:mod:`.idp_knobs`). Usage::

    idp = IdentityPlatform(world.load()).start()
    idp.endpoint("common")   # "http://127.0.0.1:PORT/common/oauth2/v2.0/"
    ...
    idp.stop()

or, as a separate process: ``python -m konvergo.sandbox.idp --port 8800``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from konvergo.sandbox import idp_tokens
from konvergo.sandbox.idp_authorize import BrowserFlow
from konvergo.sandbox.idp_errors import IdpError, Report
from konvergo.sandbox.idp_grants import GRANTS
from konvergo.sandbox.idp_knobs import Knobs
from konvergo.sandbox.idp_scopes import (
    DELEGATED,
    EXCHANGE_APP_ID,
    GRAPH_RESOURCE,
    OIDC_SCOPES,
    RESOURCES,
    Scope,
    resources,
)
from konvergo.sandbox.idp_state import (
    AccessRecord,
    AuthCode,
    Consents,
    Flow,
    RefreshToken,
    Session,
    scopes_of,
)
from konvergo.sandbox.idp_web import Reply, Request, WebServer, json_reply
from konvergo.sandbox.tokens import IMAP_SCOPE, OUTLOOK_RESOURCE, SMTP_SCOPE, TokenInfo
from konvergo.sandbox.world import MSA_TENANT_ID, App, Mailbox, Tenant, World

GENERIC_AUTHORITIES = ("common", "organizations", "consumers")
CLAIMS_SUPPORTED = [
    *("sub", "iss", "aud", "exp", "iat", "nbf", "name", "nonce", "oid"),
    *("preferred_username", "tid", "ver", "email"),
]

#: (signInAudience, authority kind) -> the error Microsoft answers (research §4.2, E-07).
AUDIENCE_RULES: dict[tuple[str, str], str] = {
    ("AzureADMyOrg", "common"): "AADSTS50194",
    ("AzureADMyOrg", "organizations"): "AADSTS50194",
    ("AzureADMyOrg", "consumers"): "AADSTS9002332",
    ("AzureADMultipleOrgs", "consumers"): "AADSTS9002332",
    ("PersonalMicrosoftAccount", "organizations"): "AADSTS9002331",
    ("PersonalMicrosoftAccount", "tenant"): "AADSTS9002331",
}


@dataclass(frozen=True)
class Authority:
    """The ``{tenant}`` path segment, resolved: its kind and, for one tenant, the tenant."""

    path: str
    kind: str  # common | organizations | consumers | tenant
    tenant: Tenant | None


class IdentityPlatform:
    """The sandbox identity platform; also the :class:`TokenValidator` of the mail servers."""

    def __init__(
        self,
        world: World,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_token_lifetime: int | None = None,
        refresh_grace_seconds: float = 300.0,
        code_ttl: int = 600,
    ) -> None:
        self.world = world
        self.host, self._port = host, port
        #: None: random 3599..5399 s like Microsoft's 60-90 minutes (research §1.8).
        self.access_token_lifetime = access_token_lifetime
        #: How long a rotated refresh token keeps working; 0 = strict rotation.
        self.refresh_grace_seconds = refresh_grace_seconds
        self.code_ttl = code_ttl
        self.consents = Consents(world)
        self.flows: dict[str, Flow] = {}
        self.codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.access_tokens: dict[str, AccessRecord] = {}
        #: upn -> "TokensValidFrom" (revoke sessions); grants signed in before are dead.
        self.tokens_valid_from: dict[str, float] = {}
        # One lock for all state: the product hits /token from several processes at once
        # and rotation must be atomic.
        self._lock = threading.RLock()
        self._offset = 0.0
        self._counter: Counter[str] = Counter()
        self._browser = BrowserFlow(self)
        self._knobs = Knobs(self)
        self._server: WebServer | None = None
        self._routes: list[tuple[re.Pattern[str], Callable[[str, Request], Reply]]] = [
            (re.compile(r"^/([^/]+)/oauth2/v2\.0/authorize$"), self._browser.authorize),
            (re.compile(r"^/([^/]+)/oauth2/v2\.0/token$"), self.token),
            (re.compile(r"^/([^/]+)/login$"), self._browser.login),
            (re.compile(r"^/([^/]+)/consent$"), self._browser.consent),
            (re.compile(r"^/([^/]+)/consent/return$"), self._browser.consent_return),
            (re.compile(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$"), self._oidc),
            (re.compile(r"^/([^/]+)/discovery/v2\.0/keys$"), self._keys),
            (re.compile(r"^/introspect()$"), self._introspect_route),
            (re.compile(r"^/_sandbox/([a-z-]+)$"), self._knobs.handle),
        ]

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> IdentityPlatform:
        idp_tokens.signing_key()  # generate before serving, not in the first request
        self._server = WebServer(self._dispatch, self.host, self._port)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> IdentityPlatform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the identity platform is not started")
        return self._server.port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def endpoint(self, tenant: str = "common") -> str:
        """The OAuth endpoint base, like ``https://login.microsoftonline.com/common/oauth2/v2.0/``."""
        return f"{self.base_url}/{tenant}/oauth2/v2.0/"

    # --- clock and knobs ---------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self._offset

    def advance_clock(self, seconds: float) -> float:
        with self._lock:
            self._offset += seconds
            return self.now()

    def revoke_sessions(self, upn: str) -> None:
        """Entra "Revoke sessions": refresh tokens of earlier sign-ins fail (AADSTS50173)."""
        with self._lock:
            self.tokens_valid_from[upn.lower()] = self.now()

    @property
    def token_requests(self) -> Counter[str]:
        """Token requests so far by grant_type (a copy; failed requests count too)."""
        with self._lock:
            return Counter(self._counter)

    def reset_counters(self) -> None:
        with self._lock:
            self._counter.clear()

    # --- TokenValidator ----------------------------------------------------------------------
    def introspect(self, token: str) -> TokenInfo:
        with self._lock:
            record = self.access_tokens.get(token)
            if record is None:
                return TokenInfo(active=False, reason="unknown")
            info = TokenInfo(
                active=self.now() < record.expires_at,
                upn=record.upn,
                audience=record.audience,
                scopes=record.scopes,
                expires_at=record.expires_at,
                tenant_id=record.tenant_id,
            )
            return info if info.active else dataclasses.replace(info, reason="expired")

    def claims(self, token: str) -> dict[str, Any] | None:
        """Everything known of an access token (client id, roles of app-only tokens …)."""
        with self._lock:
            record = self.access_tokens.get(token)
            if record is None:
                return None
            return {
                **record.claims,
                "client_id": record.client_id,
                "app_only": record.app_only,
                "audience": record.audience,
                "expires_at": record.expires_at,
            }

    def mint_access_token(
        self,
        upn: str,
        scopes: str | Iterable[str] = (SMTP_SCOPE, IMAP_SCOPE),
        client_id: str | None = None,
        lifetime: float | None = None,
        *,
        audience: str = OUTLOOK_RESOURCE,
    ) -> str:
        """Test helper: an access token as the browser flow would yield, without consent.

        Scopes with a resource (``https://graph.microsoft.com/User.Read``) choose the
        audience; bare names (``SMTP.Send``) are taken as permissions of ``audience``, unlike
        at ``/token`` where a bare name means Graph.
        """
        with self._lock:
            mailbox = self.world.mailbox(upn)
            if mailbox is None:
                raise KeyError(f"no mailbox {upn!r} in the sandbox world")
            client = client_id or next(iter(self.world.apps))
            words = scopes.split() if isinstance(scopes, str) else list(scopes)
            full = [w if "://" in w or w in OIDC_SCOPES else f"{audience}/{w}" for w in words]
            parsed = scopes_of(full)
            resource = (resources(parsed) or [audience])[0]
            names = [s.canonical_name for s in parsed if s.resource == resource]
            seconds = None if lifetime is None else int(lifetime)
            token, _ = self._mint_user(mailbox, client, resource, names, seconds)
            return token

    # --- authority and client ----------------------------------------------------------------
    def authority(self, path: str) -> Authority:
        key = path.lower()
        if key in GENERIC_AUTHORITIES:
            tenant = self.world.tenants.get(MSA_TENANT_ID) if key == "consumers" else None
            return Authority(path, key, tenant)
        tenant = self.world.tenant(key)
        if tenant is None:
            raise IdpError("AADSTS90002", tenant=path)
        return Authority(path, "consumers" if tenant.personal else "tenant", tenant)

    def app_for(self, authority: Authority, client_id: str) -> App:
        if not client_id:
            raise IdpError("AADSTS900144", name="client_id")
        app = self.world.apps.get(client_id.lower())
        directory = authority.tenant.name if authority.tenant else authority.path
        if app is None:
            raise IdpError("AADSTS700016", client_id=client_id, directory=directory)
        rule = AUDIENCE_RULES.get((app.sign_in_audience, authority.kind))
        if rule:
            raise IdpError(rule, client_id=app.client_id, app_name=app.name)
        if (
            app.sign_in_audience == "AzureADMyOrg"
            and authority.tenant is not None
            and authority.tenant.id != app.home_tenant_id
        ):
            raise IdpError("AADSTS700016", client_id=client_id, directory=directory)
        return app

    def _authenticate(self, app: App, request: Request, form: dict[str, str]) -> None:
        """Client secret from the body or HTTP Basic; checked by value and expiry (E-04/05/06)."""
        secret = form.get("client_secret") or _basic_secret(request)
        if app.public_client:
            if secret:
                raise IdpError("AADSTS700025")
            return
        if not secret:
            raise IdpError("AADSTS7000218")
        today = time.strftime("%Y-%m-%d", time.gmtime(self.now()))
        for _secret_id, value, expires in app.secrets:
            if hmac.compare_digest(secret.encode(), value.encode()):
                if today > expires.isoformat():
                    raise IdpError("AADSTS7000222", client_id=app.client_id)
                return
        raise IdpError("AADSTS7000215", client_id=app.client_id)

    # --- issuing -----------------------------------------------------------------------------
    def _lifetime(self, lifetime: int | None = None) -> int:
        if lifetime is not None:
            return lifetime
        if self.access_token_lifetime is not None:
            return self.access_token_lifetime
        return random.randint(3599, 5399)

    def _record(self, token: str, record: AccessRecord) -> str:
        self.access_tokens[token] = record
        return token

    def _mint_user(
        self,
        mailbox: Mailbox,
        client_id: str,
        resource: str,
        names: list[str],
        lifetime: int | None,
    ) -> tuple[str, int]:
        seconds, now = self._lifetime(lifetime), int(self.now())
        resource_app = RESOURCES.get(resource, "")
        audience = OUTLOOK_RESOURCE if resource_app == EXCHANGE_APP_ID else resource
        personal = self.world.tenant_of(mailbox).personal
        # Exchange and Graph tokens are v1-format JWTs issued by sts.windows.net.
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{mailbox.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + seconds,
            "amr": ["pwd", "mfa"] if mailbox.mfa_required else ["pwd"],
            "appid": client_id,
            "appidacr": "1",
            "name": mailbox.display_name,
            "oid": mailbox.oid,
            "scp": " ".join(names),
            "sub": _pairwise(mailbox.oid, client_id),
            "tid": mailbox.tenant_id,
            "unique_name": mailbox.upn,
            "upn": mailbox.upn,
            "uti": uuid.uuid4().hex[:22],
            "ver": "1.0",
            # Microsoft's opaque internal claim; it also gives tokens their real size
            # (1.5-3 KB), which catches clients with short SMTP/IMAP line or column limits.
            "aio": idp_tokens.opaque("E2", 480),
        }
        token = idp_tokens.opaque("EwB", 1600) if personal else idp_tokens.sign(claims)
        record = AccessRecord(
            upn=mailbox.upn,
            tenant_id=mailbox.tenant_id,
            client_id=client_id,
            audience=audience,
            aud_claim=resource,
            scopes=frozenset(names),
            expires_at=float(now + seconds),
            claims=claims,
        )
        return self._record(token, record), seconds

    def _id_token(self, session: Session, mailbox: Mailbox, nonce: str | None) -> str:
        now = int(self.now())
        claims: dict[str, Any] = {
            "aud": session.client_id,
            "iss": f"{self.base_url}/{mailbox.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "sub": _pairwise(mailbox.oid, session.client_id),
            "tid": mailbox.tenant_id,
            "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        if session.has("profile"):
            claims.update(
                preferred_username=mailbox.upn, name=mailbox.display_name, oid=mailbox.oid
            )
        if session.has("email"):
            claims["email"] = mailbox.upn
        return idp_tokens.sign(claims)

    def issue(
        self, session: Session, app: App, requested: list[Scope], nonce: str | None = None
    ) -> dict[str, Any]:
        """The success body of research §1.4 for one resource (the first one requested)."""
        mailbox = self.world.mailbox(session.upn)
        if mailbox is None:
            raise IdpError("AADSTS70000")
        resource = (resources(requested) or [GRAPH_RESOURCE])[0]
        resource_app = RESOURCES[resource]
        granted = self.consents.granted(session.upn, session.tenant_id, app.client_id)
        names = sorted(
            DELEGATED[resource_app].get(key.split("/", 1)[1], (key.split("/", 1)[1], ""))[0]
            for key in granted
            if key.startswith(resource_app + "/")
        )
        token, seconds = self._mint_user(mailbox, app.client_id, resource, names, None)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(f"{resource}/{name}" for name in names),
            "expires_in": seconds,
            "ext_expires_in": seconds,
            "access_token": token,
        }
        if session.has("offline_access"):
            prefix = "M.C5" if self.world.tenant_of(mailbox).personal else "1.A"
            value = idp_tokens.opaque(prefix, 1100)
            self.refresh_tokens[value] = RefreshToken(value, session, self.now())
            body["refresh_token"] = value
        if session.has("openid"):
            body["id_token"] = self._id_token(session, mailbox, nonce)
        return body

    def issue_app_only(
        self, app: App, tenant: Tenant, resource: str, roles: list[str]
    ) -> dict[str, Any]:
        """Client credentials: roles instead of scp, no user, no refresh token (§2)."""
        seconds, now = self._lifetime(), int(self.now())
        principal = app.service_principal_id or str(uuid.uuid5(uuid.NAMESPACE_URL, app.client_id))
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{tenant.id}/",
            "iat": now,
            "nbf": now,
            "exp": now + seconds,
            "appid": app.client_id,
            "appidacr": "1",
            "idtyp": "app",
            "oid": principal,
            "roles": roles,
            "sub": principal,
            "tid": tenant.id,
            "ver": "1.0",
        }
        if not roles:
            del claims["roles"]  # Microsoft omits the claim; Exchange then refuses the token
        resource_app = RESOURCES.get(resource, "")
        record = AccessRecord(
            upn="",
            tenant_id=tenant.id,
            client_id=app.client_id,
            audience=OUTLOOK_RESOURCE if resource_app == EXCHANGE_APP_ID else resource,
            aud_claim=resource,
            scopes=frozenset(roles),
            expires_at=float(now + seconds),
            app_only=True,
            claims=claims,
        )
        token = self._record(idp_tokens.sign(claims), record)
        return {
            "token_type": "Bearer",
            "expires_in": seconds,
            "ext_expires_in": seconds,
            "access_token": token,
        }

    # --- HTTP --------------------------------------------------------------------------------
    def _dispatch(self, request: Request) -> Reply:
        with self._lock:
            for pattern, handler in self._routes:
                match = pattern.match(request.path)
                if match:
                    return handler(match.group(1), request)
            return json_reply({"error": "not_found", "path": request.path}, 404)

    def token(self, tenant_path: str, request: Request) -> Reply:
        """POST /{tenant}/oauth2/v2.0/token: form-encoded only, JSON answers (§1.3-1.5)."""
        try:
            if request.method != "POST":
                raise IdpError("AADSTS900561", method=request.method)
            form = request.form()  # a JSON body reads as empty: "must contain grant_type"
            grant_type = form.get("grant_type", "")
            if not grant_type:
                raise IdpError("AADSTS900144", name="grant_type")
            self._counter[grant_type] += 1
            grant = GRANTS.get(grant_type)
            if grant is None:
                raise IdpError("AADSTS70003", grant_type=grant_type)
            authority = self.authority(tenant_path)
            client_id = form.get("client_id") or _basic_client_id(request)
            app = self.app_for(authority, client_id)
            self._authenticate(app, request, form)
            return json_reply(grant(self, authority, app, form), no_store=True)
        except IdpError as exc:
            report = Report(exc, self.now())
            return json_reply(report.token_json(), exc.entry.status, no_store=True)

    def _oidc(self, tenant_path: str, request: Request) -> Reply:
        try:
            authority = self.authority(tenant_path)
        except IdpError as exc:
            return json_reply(Report(exc, self.now()).token_json(), 400)
        tid = authority.tenant.id if authority.tenant else "{tenantid}"
        base = f"{self.base_url}/{tenant_path}"
        return json_reply(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{self.base_url}/{tid}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "code_challenge_methods_supported": ["plain", "S256"],
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "claims_supported": CLAIMS_SUPPORTED,
                "tenant_region_scope": None,
                "cloud_instance_name": "microsoftonline.com",
                "msgraph_host": "graph.microsoft.com",
            }
        )

    def _keys(self, tenant_path: str, request: Request) -> Reply:
        return json_reply(idp_tokens.jwks())

    def _introspect_route(self, _: str, request: Request) -> Reply:
        """Dovecot's oauth2 passdb (``introspection_mode = post``; also GET and Bearer)."""
        auth = request.headers.get("Authorization") or ""
        token = (
            request.form().get("token")
            or (auth[7:].strip() if auth.lower().startswith("bearer ") else "")
            or request.query.get("token", "")
        )
        info = self.introspect(token)
        if not info.active:
            return json_reply({"active": False})
        record = self.access_tokens[token]
        body: dict[str, Any] = {
            "active": True,
            # Normalised like introspect() (every Exchange URI is "https://outlook.office.com")
            # so in-process and HTTP validators agree.
            "aud": info.audience,
            "scope": " ".join(sorted(info.scopes)),
            "exp": int(info.expires_at),
            "tid": info.tenant_id,
            "client_id": record.client_id,
        }
        if info.upn:
            body.update(email=info.upn, upn=info.upn, username=info.upn)
        return json_reply(body)


def _pairwise(oid: str, client_id: str) -> str:
    """``sub`` is pairwise per app in Microsoft's tokens."""
    digest = hashlib.sha256(f"{oid}:{client_id}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")[:43]


def _basic(request: Request) -> tuple[str, str]:
    """HTTP Basic client authentication; RFC 6749 §2.3.1 form-encodes both parts."""
    header = request.headers.get("Authorization") or ""
    if not header.lower().startswith("basic "):
        return "", ""
    try:
        raw = base64.b64decode(header[6:].strip()).decode("utf-8")
    except ValueError:
        return "", ""
    user, _, password = raw.partition(":")
    return unquote(user.replace("+", " ")), unquote(password.replace("+", " "))


def _basic_client_id(request: Request) -> str:
    return _basic(request)[0]


def _basic_secret(request: Request) -> str:
    return _basic(request)[1]


def main(argv: list[str] | None = None) -> None:
    """``python -m konvergo.sandbox.idp [--port N] [--world FILE]``: serve until Ctrl-C."""
    import argparse
    from pathlib import Path

    from konvergo.sandbox import world as world_module

    parser = argparse.ArgumentParser(description="SANDBOX ONLY: local Microsoft sign-in")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--world", type=Path, default=None, help="TOML world file")
    parser.add_argument("--access-token-lifetime", type=int, default=None)
    parser.add_argument("--refresh-grace-seconds", type=float, default=300.0)
    args = parser.parse_args(argv)
    platform = IdentityPlatform(
        world_module.load(args.world),
        port=args.port,
        access_token_lifetime=args.access_token_lifetime,
        refresh_grace_seconds=args.refresh_grace_seconds,
    ).start()
    print(f"Sandbox identity platform: {platform.endpoint('common')}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        platform.stop()


if __name__ == "__main__":
    main()
