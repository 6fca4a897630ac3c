"""SANDBOX ONLY: the identity platform's error catalogue, as data.

Each entry is what Microsoft answers for one AADSTS code: the OAuth ``error``, the HTTP
status of a token-endpoint reply, the message template (texts from
``/work/shared/research/microsoft.md`` §5 where it has them, else Microsoft's usual
wording) and the optional ``suberror``. Code paths raise :class:`IdpError` with a key
and the template's parameters; the HTTP layer renders it as token JSON, as an error page
or as an ``?error=`` redirect.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErrorEntry:
    """One row of the catalogue."""

    #: The AADSTS number; 0 for errors of the personal-account (MSA) side, which have none.
    code: int
    error: str
    template: str
    status: int = 400
    suberror: str | None = None
    #: ``error_codes`` when Microsoft reports more than the headline code.
    error_codes: tuple[int, ...] = ()

    @property
    def codes(self) -> list[int]:
        return list(self.error_codes or (self.code,))


def _e(code: int, error: str, template: str, **kw: Any) -> tuple[str, ErrorEntry]:
    return f"AADSTS{code}", ErrorEntry(code, error, template, **kw)


CATALOGUE: dict[str, ErrorEntry] = dict(
    [
        # --- app registration (E-01 .. E-08) -------------------------------------------
        _e(
            50011,
            "invalid_request",
            "The redirect URI '{redirect_uri}' specified in the request does not match the "
            "redirect URIs configured for the application '{client_id}'. Make sure the "
            "redirect URI sent in the request matches one added to your application in the "
            "Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more "
            "about how to fix this.",
        ),
        _e(
            500112,
            "invalid_grant",
            "The reply address '{redirect_uri}' does not match the reply address "
            "'{original}' provided when requesting Authorization code.",
        ),
        _e(
            700016,
            "unauthorized_client",
            "Application with identifier '{client_id}' was not found in the directory "
            "'{directory}'. This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant. You may "
            "have sent your authentication request to the wrong tenant.",
        ),
        _e(
            7000215,
            "invalid_client",
            "Invalid client secret provided. Ensure the secret being sent in the request is "
            "the client secret value, not the client secret ID, for a secret added to app "
            "'{client_id}'.",
            status=401,
        ),
        _e(
            7000222,
            "invalid_client",
            "The provided client secret keys for app '{client_id}' are expired. Visit the "
            "Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or "
            "consider using certificate credentials for added security: "
            "https://aka.ms/certCreds.",
            status=401,
        ),
        _e(
            7000218,
            "invalid_client",
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
            status=401,
        ),
        _e(
            700025,
            "invalid_client",
            "Client is public so neither 'client_assertion' nor 'client_secret' should be "
            "presented.",
            status=401,
        ),
        _e(
            50194,
            "invalid_request",
            "Application '{client_id}'({app_name}) is not configured as a multi-tenant "
            "application. Usage of the /common endpoint is not supported for such applications "
            "created after '10/15/2018'. Use a tenant-specific endpoint or configure the "
            "application to be multi-tenant.",
        ),
        _e(
            50020,
            "invalid_request",
            "User account '{upn}' from identity provider '{idp}' does not exist in tenant "
            "'{tenant_name}' and cannot access the application '{client_id}'({app_name}) in "
            "that tenant. The account needs to be added as an external user in the tenant "
            "first. Sign out and sign in again with a different Azure Active Directory user "
            "account.",
        ),
        (
            "MSA_NOT_ENABLED_FOR_CONSUMERS",
            ErrorEntry(
                0,
                "unauthorized_client",
                "The client does not exist or is not enabled for consumers. If you are the "
                "application developer, configure a new application through the App "
                "Registrations in the Azure Portal at "
                "https://go.microsoft.com/fwlink/?linkid=2083908.",
            ),
        ),
        _e(
            9002332,
            "invalid_request",
            "Application '{client_id}'({app_name}) is configured for use by Azure Active "
            "Directory users only. Please do not use the /consumers endpoint to serve this "
            "request.",
        ),
        _e(
            9002331,
            "invalid_request",
            "Application '{client_id}'({app_name}) is configured for use by Microsoft Account "
            "users only. Please use the /consumers endpoint to serve this request.",
        ),
        _e(
            90002,
            "invalid_request",
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and "
            "are signing into the correct cloud. Check with your subscription administrator, "
            "this may happen if there are no active subscriptions for the tenant.",
        ),
        # --- scopes (E-09, E-14) -------------------------------------------------------
        _e(
            70011,
            "invalid_scope",
            "The provided value for the input parameter 'scope' is not valid. One or more "
            "scopes in '{scope}' are not compatible with each other.",
        ),
        (
            "AADSTS70011_UNKNOWN",
            ErrorEntry(
                70011,
                "invalid_scope",
                "The provided value for the input parameter 'scope' is not valid. The scope "
                "'{scope}' does not exist.",
            ),
        ),
        _e(
            28000,
            "invalid_scope",
            "Provided value for the input parameter scope is not valid because it contains "
            "more than one resource. Scope {scope} is not valid.",
        ),
        _e(
            28003,
            "invalid_scope",
            "Provided value for the input parameter scope cannot be empty when requesting an "
            "access token using the provided authorization code.",
        ),
        _e(
            1002012,
            "invalid_scope",
            "The provided value for scope {scope} is not valid. Client credential flows must "
            "have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        ),
        _e(
            500011,
            "invalid_resource",
            "The resource principal named {resource} was not found in the tenant named "
            "{tenant_name}. This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant. You might "
            "have sent your authentication request to the wrong tenant.",
        ),
        # --- consent (E-11 .. E-13) ----------------------------------------------------
        _e(
            65001,
            "invalid_grant",
            "The user or administrator has not consented to use the application with ID "
            "'{client_id}' named '{app_name}'. Send an interactive authorization request for "
            "this user and resource.",
            suberror="consent_required",
        ),
        _e(65004, "access_denied", "User declined to consent to access the app."),
        # --- sign-in (E-19) ------------------------------------------------------------
        _e(
            50126,
            "invalid_grant",
            "Error validating credentials due to invalid username or password.",
        ),
        _e(
            50034,
            "invalid_grant",
            "The user account {upn} does not exist in the '{tenant_name}' directory. To sign "
            "into this application, the account must be added to the directory.",
        ),
        _e(50058, "login_required", "A silent sign-in request was sent but no user is signed in."),
        # --- token lifecycle (E-15 .. E-18) --------------------------------------------
        _e(
            70008,
            "invalid_grant",
            "The provided authorization code or refresh token has expired due to inactivity. "
            "Send a new interactive authorization request for this user and resource.",
        ),
        _e(
            54005,
            "invalid_grant",
            "OAuth2 Authorization code was already redeemed, please retry with a new valid "
            "code or use an existing refresh token.",
            error_codes=(70002, 54005),
        ),
        _e(
            501481,
            "invalid_grant",
            "The Code_Verifier doesn't match the code_challenge supplied in the authorization "
            "request.",
        ),
        _e(501491, "invalid_request", "Invalid size of Code_Challenge parameter."),
        _e(
            700082,
            "invalid_grant",
            "The refresh token has expired due to inactivity. The token was issued on "
            "{issued} and was inactive for 90.00:00:00.",
        ),
        _e(
            50173,
            "invalid_grant",
            "The provided grant has expired due to it being revoked, a fresh auth token is "
            "needed. The user might have changed or reset their password. The grant was issued "
            "on '{issued}' and the TokensValidFrom date (before which tokens are not valid) for "
            "this user is '{valid_from}'.",
        ),
        _e(
            50076,
            "invalid_grant",
            "Due to a configuration change made by your administrator, or because you moved to "
            "a new location, you must use multi-factor authentication to access "
            "'{resource_id}'.",
            suberror="basic_action",
        ),
        _e(70000, "invalid_grant", "Provided grant is invalid or malformed."),
        _e(
            700005,
            "invalid_grant",
            "Provided Authorization Code is intended to use against other tenant, thus rejected.",
        ),
        # --- malformed requests --------------------------------------------------------
        _e(9002313, "invalid_request", "Invalid request. Request is malformed or invalid."),
        _e(
            900144,
            "invalid_request",
            "The request body must contain the following parameter: '{name}'.",
        ),
        _e(
            70003,
            "unsupported_grant_type",
            "The app requested an unsupported grant type '{grant_type}'.",
        ),
        _e(
            700054,
            "unsupported_response_type",
            "response_type '{response_type}' is not enabled for the application.",
        ),
        _e(
            900561,
            "invalid_request",
            "The endpoint only accepts POST, OPTIONS requests. Received a {method} request.",
        ),
        _e(
            50059,
            "invalid_request",
            "No tenant-identifying information found in either the request or implied by any "
            "provided credentials.",
        ),
    ]
)


class IdpError(Exception):
    """An error Microsoft would answer with; ``key`` names the catalogue row."""

    def __init__(self, key: str, **params: Any) -> None:
        self.key = key
        self.entry = CATALOGUE[key]
        self.params = params
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The message with its AADSTS prefix (none for MSA-side errors)."""
        text = self.entry.template.format(**self.params)
        return f"AADSTS{self.entry.code}: {text}" if self.entry.code else text


def format_timestamp(when: float) -> str:
    """Microsoft's ``timestamp`` format: ``YYYY-MM-DD HH:MM:SSZ`` (a space, not ``T``)."""
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_iso(when: float) -> str:
    """The 7-digit ISO form Microsoft uses inside messages (``…T21:52:54.2810613Z``)."""
    moment = dt.datetime.fromtimestamp(when, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


@dataclass(frozen=True)
class Report:
    """One rendered occurrence of an error, with its trace and correlation ids."""

    error: IdpError
    when: float
    trace_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def timestamp(self) -> str:
        return format_timestamp(self.when)

    @property
    def description(self) -> str:
        """``error_description``: the message, then the \\r\\n-separated diagnostic lines."""
        return (
            f"{self.error.message}\r\nTrace ID: {self.trace_id}\r\n"
            f"Correlation ID: {self.correlation_id}\r\nTimestamp: {self.timestamp}"
        )

    @property
    def error_uri(self) -> str | None:
        code = self.error.entry.code
        return f"https://login.microsoftonline.com/error?code={code}" if code else None

    def token_json(self) -> dict[str, Any]:
        """The token endpoint's error body (research §1.5)."""
        entry = self.error.entry
        body: dict[str, Any] = {
            "error": entry.error,
            "error_description": self.description,
            "error_codes": entry.codes,
            "timestamp": self.timestamp,
            "trace_id": self.trace_id,
            "correlation_id": self.correlation_id,
        }
        if self.error_uri:
            body["error_uri"] = self.error_uri
        if entry.suberror:
            body["suberror"] = entry.suberror
        return body

    def redirect_params(self, state: str | None) -> list[tuple[str, str]]:
        """The ``?error=`` parameters of an authorize error redirect, ``state`` last."""
        params = [("error", self.error.entry.error), ("error_description", self.description)]
        if self.error_uri:
            params.append(("error_uri", self.error_uri))
        if state is not None:
            params.append(("state", state))
        return params
