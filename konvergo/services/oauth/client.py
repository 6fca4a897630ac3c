"""The OAuth client: Authlib's OAuth2Session configured for Microsoft, and nothing hand-rolled.

Every token call goes through :func:`session`, which adds two things Authlib leaves to us:
Microsoft's error JSON is parsed into :class:`TokenEndpointError` (Authlib would keep only
``error`` and ``error_description``), and TLS trusts the system CAs plus
``KONVERGO_CA_BUNDLE`` with verification always on.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import requests
from authlib.integrations.requests_client import OAuth2Session
from django.views.decorators.debug import sensitive_variables
from requests.adapters import HTTPAdapter

from konvergo.errors import ConfigurationError, TemporaryTransportError
from konvergo.providers.microsoft import endpoints
from konvergo.providers.microsoft.errors import TokenEndpointError, parse_token_error
from konvergo.security.tls import client_context
from konvergo.services import parameters
from konvergo.store.models import MailSettings

#: Seconds for one token-endpoint call; a hung Microsoft must not hold a worker for long.
TOKEN_TIMEOUT = 10.0


class _VerifiedAdapter(HTTPAdapter):
    """Uses our TLS context (system CAs + KONVERGO_CA_BUNDLE, verification on)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = client_context()
        super().init_poolmanager(*args, **kwargs)


def _raise_for_error(response: requests.Response) -> requests.Response:
    if response.status_code >= 400:
        raise parse_token_error(
            response.status_code, response.content, headers=dict(response.headers)
        )
    return response


def credentials() -> tuple[str, str]:
    """Client ID and secret from General Settings, or a ConfigurationError saying where."""
    settings = MailSettings.load()
    if not settings.outlook_configured:
        raise ConfigurationError(
            "Setup your Outlook credentials in General Settings (Client ID and Client Secret)."
        )
    return settings.outlook_client_id, settings.outlook_client_secret


def endpoint() -> str:
    """The authority base from the ``microsoft_outlook.endpoint`` system parameter."""
    return parameters.get("microsoft_outlook.endpoint")


def session(scope: str, redirect_uri: str | None = None) -> OAuth2Session:
    client_id, client_secret = credentials()
    oauth = OAuth2Session(
        client_id,
        client_secret,
        scope=scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_post",  # noqa: S106 (a method name)
    )
    # requests would let REQUESTS_CA_BUNDLE silently replace our trust settings.
    oauth.trust_env = False
    oauth.mount("https://", _VerifiedAdapter())
    oauth.register_compliance_hook("access_token_response", _raise_for_error)
    oauth.register_compliance_hook("refresh_token_response", _raise_for_error)
    return oauth


@sensitive_variables()
def _call(func: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        token = func(*args, timeout=TOKEN_TIMEOUT, **kwargs)
    except TokenEndpointError:
        raise
    except (requests.Timeout, requests.ConnectionError) as exc:
        raise TemporaryTransportError(
            f"The Microsoft token endpoint did not answer ({type(exc).__name__}); "
            "Konvergo retries with backoff."
        ) from None
    return dict(token)


@sensitive_variables()
def redeem_code(scope: str, redirect_uri: str, code: str, code_verifier: str) -> dict[str, Any]:
    """Exchange an authorization code (with its PKCE verifier) for tokens."""
    oauth = session(scope, redirect_uri)
    return _call(
        oauth.fetch_token,
        endpoints.token_url(endpoint()),
        grant_type="authorization_code",
        code=code,
        code_verifier=code_verifier,
        redirect_uri=redirect_uri,
        scope=scope,
    )


@sensitive_variables()
def refresh(scope: str, refresh_token: str) -> dict[str, Any]:
    """Redeem a refresh token; Microsoft answers with a new (rotated) refresh token."""
    oauth = session(scope)
    return _call(oauth.refresh_token, endpoints.token_url(endpoint()), refresh_token=refresh_token)


def authorization_url(
    scope: str, redirect_uri: str, state: str, code_verifier: str, login_hint: str
) -> str:
    oauth = session(scope, redirect_uri)
    url, _ = oauth.create_authorization_url(
        endpoints.authorize_url(endpoint()),
        state=state,
        code_verifier=code_verifier,
        response_mode="query",
        login_hint=login_hint,
        # Lets the user pick the mailbox's account instead of whoever is signed in already
        # (E-08 / E-12: the admin's own session silently consenting for the mailbox).
        prompt="select_account",
    )
    return str(url)


def id_token_claims(token: dict[str, Any], client_id: str) -> dict[str, Any]:
    """The claims of the id_token received straight from the token endpoint over TLS.

    OpenID Connect Core §3.1.3.7 lets a client that got the id_token directly from the token
    endpoint rely on TLS instead of the signature; we still check the audience.
    """
    raw = token.get("id_token")
    if not raw:
        raise ConfigurationError(
            "Microsoft returned no id_token: the scope must include 'openid profile'."
        )
    try:
        payload = str(raw).split(".")[1]
        claims: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
    except (IndexError, ValueError) as exc:
        raise ConfigurationError("Microsoft returned an id_token that is not a JWT.") from exc
    aud = claims.get("aud")
    if aud != client_id and not (isinstance(aud, list) and client_id in aud):
        raise ConfigurationError("The id_token was issued to another application.")
    return claims
