"""Contract of the sandbox identity platform, item by item from research §6 (1-10).

Every test drives the real server over HTTP on 127.0.0.1 with ``requests``; the pages are
driven by parsing and posting their HTML forms. Texts are Microsoft's (research §5).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
import warnings
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from konvergo.sandbox.idp import IdentityPlatform
from konvergo.sandbox.tokens import OUTLOOK_RESOURCE
from konvergo.sandbox.world import MSA_TENANT_ID, World
from tests.sandbox.fixtures_idp import (
    APP,
    LOCKED_TENANT,
    MULTI_APP,
    MULTI_SECRET,
    REDIRECT,
    SCOPES,
    SECRET,
    SECRET_ID,
    SINGLE_APP,
    SINGLE_SECRET,
    TENANT,
    Browser,
    pkce_pair,
    token_request,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.jose import JsonWebKey, jwt

GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SUFFIX = re.compile(
    rf"\r\nTrace ID: {GUID}\r\nCorrelation ID: {GUID}\r\nTimestamp: "
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$"
)
ERROR_PAGE = "Sorry, but we're having trouble signing you in."


# --- helpers ------------------------------------------------------------------------------------
def redeem(
    idp: IdentityPlatform,
    code: str,
    *,
    tenant: str = "common",
    client_id: str = APP,
    secret: str = SECRET,
    scope: str = SCOPES,
    redirect_uri: str = REDIRECT,
    **extra: str,
) -> requests.Response:
    return token_request(
        idp,
        tenant,
        grant_type="authorization_code",
        client_id=client_id,
        client_secret=secret,
        code=code,
        redirect_uri=redirect_uri,
        scope=scope,
        **extra,
    )


def refresh(
    idp: IdentityPlatform,
    token: str,
    *,
    scope: str = SCOPES,
    client_id: str = APP,
    secret: str = SECRET,
    tenant: str = "common",
) -> requests.Response:
    return token_request(
        idp,
        tenant,
        grant_type="refresh_token",
        client_id=client_id,
        client_secret=secret,
        refresh_token=token,
        scope=scope,
    )


def tokens(
    idp: IdentityPlatform, upn: str = "john@example.com", scope: str = SCOPES, **params: str
) -> dict[str, Any]:
    """Browser leg plus code redemption; the token JSON."""
    verifier, challenge = pkce_pair()
    callback = Browser(idp).login_and_consent(
        upn, scope=scope, code_challenge=challenge, code_challenge_method="S256", **params
    )
    reply = redeem(idp, callback["code"], scope=scope, code_verifier=verifier)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def assert_error(
    reply: requests.Response, status: int, error: str, code: int, message: str | None = None
) -> dict[str, Any]:
    """Research §1.5: the JSON shape, the status, the AADSTS code and (if given) the text."""
    assert reply.status_code == status, reply.text
    body: dict[str, Any] = reply.json()
    assert body["error"] == error
    assert code in body["error_codes"]
    description = body["error_description"]
    assert description.startswith(f"AADSTS{code}: ")
    assert SUFFIX.search(description), description
    if message is not None:
        assert description.split("\r\n")[0] == f"AADSTS{code}: {message}"
    return body


def claims_of(idp: IdentityPlatform, token: str) -> dict[str, Any]:
    """Verify a JWT against the published JWKS, as a client would."""
    keys = requests.get(f"{idp.base_url}/common/discovery/v2.0/keys", timeout=10).json()
    return dict(jwt.decode(token, JsonWebKey.import_key_set(keys)))


def error_on_page(browser: Browser) -> str:
    assert browser.page is not None
    assert browser.page.status_code != 302, "an error page must not redirect"
    assert "Location" not in browser.page.headers
    return browser.text


# --- 1. tenants and account types ---------------------------------------------------------------
def test_single_tenant_app_on_common_shows_aadsts50194_page_not_a_redirect(
    idp: IdentityPlatform,
) -> None:
    """A single-tenant app on /common gets Microsoft's AADSTS50194 error page, no callback."""
    browser = Browser(idp)
    browser.authorize("common", client_id=SINGLE_APP)
    text = error_on_page(browser)
    assert ERROR_PAGE in text
    assert (
        f"AADSTS50194: Application '{SINGLE_APP}'(Konvergo Single Tenant) is not configured "
        "as a multi-tenant application. Usage of the /common endpoint is not supported for "
        "such applications created after '10/15/2018'. Use a tenant-specific endpoint or "
        "configure the application to be multi-tenant."
    ) in text


def test_single_tenant_app_works_on_its_tenant_by_guid_and_by_domain(
    idp: IdentityPlatform,
) -> None:
    """The tenant may be named by GUID or verified domain; both reach the sign-in page."""
    for tenant in (TENANT, "example.com", "EXAMPLE.onmicrosoft.com"):
        browser = Browser(idp)
        browser.authorize(tenant, client_id=SINGLE_APP)
        assert browser.page is not None and browser.page.status_code == 200
        assert "Pick an account" in browser.text


def test_unknown_client_id_shows_aadsts700016_page(idp: IdentityPlatform) -> None:
    """An unknown Application (client) ID gets the AADSTS700016 page."""
    browser = Browser(idp)
    browser.authorize(TENANT, client_id="g.schiavo")
    text = error_on_page(browser)
    assert (
        "AADSTS700016: Application with identifier 'g.schiavo' was not found in the directory "
        "'Example Ltd'. This can happen if the application has not been installed by the "
        "administrator of the tenant or consented to by any user in the tenant. You may have "
        "sent your authentication request to the wrong tenant."
    ) in text


def test_single_tenant_app_on_another_tenant_shows_aadsts700016(idp: IdentityPlatform) -> None:
    """A single-tenant app does not exist in any other tenant's directory."""
    browser = Browser(idp)
    browser.authorize(LOCKED_TENANT, client_id=SINGLE_APP)
    assert "AADSTS700016" in error_on_page(browser)


def test_unknown_tenant_shows_aadsts90002_page(idp: IdentityPlatform) -> None:
    """A tenant that is neither a known GUID nor a verified domain is AADSTS90002."""
    browser = Browser(idp)
    browser.authorize("nosuch.example.org")
    assert "AADSTS90002: Tenant 'nosuch.example.org' not found." in error_on_page(browser)


def test_user_of_another_tenant_on_single_tenant_app_gets_aadsts50020(
    idp: IdentityPlatform,
) -> None:
    """A user from another tenant signing in to a single-tenant app gets AADSTS50020."""
    browser = Browser(idp)
    browser.authorize(TENANT, client_id=SINGLE_APP)
    browser.sign_in("alice@locked.example.net")
    text = error_on_page(browser)
    assert (
        "AADSTS50020: User account 'alice@locked.example.net' from identity provider "
        "'https://sts.windows.net/7d3e9f10-2b4c-4e5a-8f6d-1c2b3a4d5e66/' does not exist in "
        f"tenant 'Example Ltd' and cannot access the application '{SINGLE_APP}'"
        "(Konvergo Single Tenant) in that tenant."
    ) in text


def test_personal_account_on_a_tenant_endpoint_gets_aadsts50020_from_live_com(
    idp: IdentityPlatform,
) -> None:
    """A personal account on /<tenant> is a foreign user from identity provider live.com."""
    browser = Browser(idp)
    browser.authorize(TENANT)
    browser.sign_in("sam@outlook.com")
    assert "from identity provider 'live.com' does not exist in tenant" in error_on_page(browser)


def test_personal_account_on_org_only_app_sees_not_enabled_for_consumers(
    idp: IdentityPlatform,
) -> None:
    """A personal account on an org-only app gets "not enabled for consumers"."""
    browser = Browser(idp)
    browser.authorize("common", client_id=MULTI_APP)
    browser.sign_in("sam@outlook.com")
    assert (
        "unauthorized_client: The client does not exist or is not enabled for consumers. If "
        "you are the application developer, configure a new application through the App "
        "Registrations in the Azure Portal at https://go.microsoft.com/fwlink/?linkid=2083908."
    ) in error_on_page(browser)


def test_org_only_app_on_consumers_gets_aadsts9002332(idp: IdentityPlatform) -> None:
    """/consumers is refused for apps registered for work accounts only."""
    browser = Browser(idp)
    browser.authorize("consumers", client_id=MULTI_APP)
    assert "AADSTS9002332" in error_on_page(browser)


def test_personal_account_on_organizations_is_refused_at_sign_in(idp: IdentityPlatform) -> None:
    """/organizations does not take personal accounts."""
    browser = Browser(idp)
    browser.authorize("organizations")
    browser.sign_in("sam@outlook.com")
    assert "You can't sign in here with a personal account." in browser.text


def test_wrong_password_is_aadsts50126_on_the_sign_in_page(idp: IdentityPlatform) -> None:
    """A wrong password keeps the user on the sign-in page with AADSTS50126."""
    browser = Browser(idp)
    browser.authorize()
    browser.sign_in("john@example.com", "wrong")
    assert (
        "AADSTS50126: Error validating credentials due to invalid username or password."
        in browser.text
    )
    assert browser.forms[0].fields["login"] == "john@example.com"


def test_account_picker_lists_mailboxes_preselected_by_login_hint(idp: IdentityPlatform) -> None:
    """The sign-in page lists the directory's mailboxes; login_hint preselects one."""
    browser = Browser(idp)
    browser.authorize(login_hint="jane@example.com")
    form = browser.forms[0]
    assert {"john@example.com", "jane@example.com", "sam@outlook.com"} <= set(form.radios["login"])
    assert form.fields["login"] == "jane@example.com"
    assert "passwd" in form.fields


def test_unknown_account_is_aadsts50034_on_the_sign_in_page(idp: IdentityPlatform) -> None:
    """An account that is not in the directory stays on the sign-in page with AADSTS50034."""
    browser = Browser(idp)
    browser.authorize(TENANT)
    browser.sign_in("nobody@example.com")
    assert "AADSTS50034: The user account nobody@example.com does not exist in the " in (
        browser.text
    )


def test_request_errors_after_the_redirect_uri_check_go_back_to_the_app(
    idp: IdentityPlatform,
) -> None:
    """A bad scope or response_type is redirected with ?error=…&state=, not shown on a page."""
    browser = Browser(idp)
    browser.authorize(scope="https://mail.example.org/Send offline_access", state="s1")
    callback = browser.callback
    assert callback["error"] == "invalid_resource"
    assert callback["error_description"].startswith("AADSTS500011: The resource principal ")
    assert callback["state"] == "s1"
    browser.authorize(response_type="token", state="s2")
    assert browser.callback["error"] == "unsupported_response_type"
    browser.authorize(scope="https://outlook.office.com/SMTP.SendAsApp", state="s3")
    assert browser.callback["error"] == "invalid_scope"  # an app role is not delegated


def test_prompt_none_without_a_session_is_login_required(idp: IdentityPlatform) -> None:
    """prompt=none cannot show UI, so it comes back with login_required (AADSTS50058)."""
    browser = Browser(idp)
    browser.authorize(prompt="none")
    assert browser.callback["error"] == "login_required"


def test_form_post_response_mode_posts_code_and_state_to_the_app(idp: IdentityPlatform) -> None:
    """response_mode=form_post returns a self-posting form to the redirect URI."""
    browser = Browser(idp)
    browser.authorize(response_mode="form_post", state="fp", login_hint="john@example.com")
    browser.sign_in("john@example.com")
    browser.consent("Yes")
    form = browser.forms[0]
    assert form.action == REDIRECT and form.method == "post"
    assert form.fields["state"] == "fp" and form.fields["code"].startswith("0.A")


# --- 2. redirect URI ----------------------------------------------------------------------------
def test_redirect_uri_mismatch_is_an_aadsts50011_page_never_a_redirect(
    idp: IdentityPlatform,
) -> None:
    """An unregistered redirect URI shows AADSTS50011 on Microsoft's page."""
    wrong = "https://erp.example.com/microsoft_outlook/confirm/"
    browser = Browser(idp)
    browser.authorize(redirect_uri=wrong)
    assert (
        f"AADSTS50011: The redirect URI '{wrong}' specified in the request does not match the "
        f"redirect URIs configured for the application '{APP}'. Make sure the redirect URI "
        "sent in the request matches one added to your application in the Azure portal. "
        "Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix "
        "this."
    ) in error_on_page(browser)


@pytest.mark.parametrize(
    ("redirect_uri", "accepted"),
    [
        ("http://127.0.0.1:8069/microsoft_outlook/confirm", True),
        ("http://127.0.0.1:53117/microsoft_outlook/confirm", True),  # loopback: port ignored
        ("http://localhost:9/microsoft_outlook/confirm", True),
        ("http://127.0.0.1:8069/Microsoft_Outlook/confirm", False),  # path is case-sensitive
        ("http://127.0.0.1:8069/microsoft_outlook/confirm/", False),  # trailing slash
        ("https://127.0.0.1:8069/microsoft_outlook/confirm", False),  # scheme differs
        ("http://erp.example.com/microsoft_outlook/confirm", False),  # http off loopback
        ("https://erp.example.com/microsoft_outlook/confirm", True),
        ("https://ERP.example.com:443/microsoft_outlook/confirm", True),  # host case, port
        ("https://erp.example.com:8443/microsoft_outlook/confirm", False),  # port counts
        ("https://erp.example.com/microsoft_outlook/confirm?x=1", False),  # query counts
    ],
)
def test_redirect_uri_matching_follows_microsofts_rules(
    idp: IdentityPlatform, redirect_uri: str, accepted: bool
) -> None:
    """Exact match; http only on loopback where the port is ignored; case-sensitive path."""
    browser = Browser(idp)
    browser.authorize(TENANT, client_id=SINGLE_APP, redirect_uri=redirect_uri)
    assert browser.page is not None
    assert ("AADSTS50011" not in browser.text) is accepted
    assert browser.page.status_code == (200 if accepted else 400)


# --- 3. consent ---------------------------------------------------------------------------------
def test_consent_screen_lists_the_requested_permissions_with_yes_and_cancel(
    idp: IdentityPlatform,
) -> None:
    """After sign-in the user sees the requested permissions and Yes / Cancel."""
    browser = Browser(idp)
    browser.authorize()
    browser.sign_in("john@example.com")
    assert "Permissions requested" in browser.text
    assert "https://outlook.office.com/SMTP.Send" in browser.text
    assert "offline_access" in browser.text
    assert [v for _, v in browser.forms[0].submits] == ["Yes", "Cancel"]


def test_cancel_redirects_access_denied_aadsts65004_with_state(idp: IdentityPlatform) -> None:
    """Cancel on the consent screen returns error=access_denied with AADSTS65004 and state."""
    browser = Browser(idp)
    browser.authorize(state="abc123")
    browser.sign_in("john@example.com")
    browser.consent("Cancel")
    callback = browser.callback
    assert callback["error"] == "access_denied"
    assert callback["state"] == "abc123"
    description = callback["error_description"]
    assert description.startswith("AADSTS65004: User declined to consent to access the app.")
    assert SUFFIX.search(description)
    assert callback["error_uri"] == "https://login.microsoftonline.com/error?code=65004"
    assert browser.page is not None
    location = browser.page.headers["Location"]
    assert location.startswith(REDIRECT + "?error=access_denied&error_description=AADSTS65004")
    assert "%0D%0ATrace+ID%3A+" in location


def test_consent_is_remembered_and_not_asked_again(idp: IdentityPlatform) -> None:
    """Once consented, the next sign-in goes straight back to the app with a code."""
    Browser(idp).login_and_consent("john@example.com")
    browser = Browser(idp)
    browser.authorize(login_hint="john@example.com")
    browser.sign_in("john@example.com")
    assert "code" in browser.callback


def test_prompt_consent_asks_again(idp: IdentityPlatform) -> None:
    """prompt=consent shows the consent screen even when consent exists."""
    Browser(idp).login_and_consent("john@example.com")
    browser = Browser(idp)
    browser.authorize(prompt="consent")
    browser.sign_in("john@example.com")
    assert "Permissions requested" in browser.text


def test_tenant_without_user_consent_shows_need_admin_approval(idp: IdentityPlatform) -> None:
    """Where users may not consent and no admin has, the user sees "Need admin approval"."""
    browser = Browser(idp)
    browser.authorize()
    browser.sign_in("alice@locked.example.net")
    text = browser.text
    assert "Need admin approval" in text
    assert (
        "Konvergo ERP needs permission to access resources in your organization that only an "
        "admin can grant. Please ask an admin to grant permission to this app before you can "
        "use it."
    ) in text
    assert "Have an admin account? Sign in with that account" in text
    browser.open(urlsplit(idp.base_url)._replace(path="").geturl() + browser.link("return"))
    assert browser.callback["error"] == "access_denied"


def test_admin_consent_for_the_organization_lets_users_in_without_a_prompt(
    idp: IdentityPlatform,
) -> None:
    """An admin who consents on behalf of the organization unblocks the tenant's users."""
    browser = Browser(idp)
    browser.authorize()
    browser.sign_in("admin@locked.example.net")
    assert "Consent on behalf of your organization" in browser.text
    browser.consent("Yes", consent_org="true")
    assert "code" in browser.callback
    user = Browser(idp)
    user.authorize()
    user.sign_in("alice@locked.example.net")
    assert "code" in user.callback


def test_redeeming_scopes_never_consented_is_aadsts65001(idp: IdentityPlatform) -> None:
    """A token request for a scope the user never consented to is AADSTS65001."""
    callback = Browser(idp).login_and_consent()
    reply = redeem(idp, callback["code"], scope="https://outlook.office.com/IMAP.AccessAsUser.All")
    body = assert_error(reply, 400, "invalid_grant", 65001)
    assert body["suberror"] == "consent_required"


# --- 4. authorization codes ---------------------------------------------------------------------
def test_code_is_single_use_aadsts54005(idp: IdentityPlatform) -> None:
    """Redeeming a code twice fails with AADSTS54005 and error_codes [70002, 54005]."""
    callback = Browser(idp).login_and_consent()
    assert redeem(idp, callback["code"]).status_code == 200
    body = assert_error(
        redeem(idp, callback["code"]),
        400,
        "invalid_grant",
        54005,
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
        "or use an existing refresh token.",
    )
    assert body["error_codes"] == [70002, 54005]


def test_code_expires_after_ten_minutes_aadsts70008(idp: IdentityPlatform) -> None:
    """A code older than 10 minutes fails with AADSTS70008."""
    callback = Browser(idp).login_and_consent()
    idp.advance_clock(601)
    assert_error(
        redeem(idp, callback["code"]),
        400,
        "invalid_grant",
        70008,
        "The provided authorization code or refresh token has expired due to inactivity. Send "
        "a new interactive authorization request for this user and resource.",
    )


def test_code_is_bound_to_the_redirect_uri_aadsts500112(idp: IdentityPlatform) -> None:
    """The token leg must repeat the authorize leg's redirect_uri exactly (AADSTS500112)."""
    callback = Browser(idp).login_and_consent()
    other = "http://localhost:8069/microsoft_outlook/confirm"
    assert_error(
        redeem(idp, callback["code"], redirect_uri=other),
        400,
        "invalid_grant",
        500112,
        f"The reply address '{other}' does not match the reply address '{REDIRECT}' provided "
        "when requesting Authorization code.",
    )


def test_code_is_bound_to_the_client(idp: IdentityPlatform) -> None:
    """Another app cannot redeem the code."""
    callback = Browser(idp).login_and_consent()
    reply = redeem(idp, callback["code"], client_id=MULTI_APP, secret=MULTI_SECRET)
    assert_error(reply, 400, "invalid_grant", 70000)


def test_pkce_verifier_mismatch_is_aadsts501481(idp: IdentityPlatform) -> None:
    """With a challenge at /authorize, a wrong or missing verifier fails (AADSTS501481)."""
    _, challenge = pkce_pair()
    callback = Browser(idp).login_and_consent(
        code_challenge=challenge, code_challenge_method="S256"
    )
    message = (
        "The Code_Verifier doesn't match the code_challenge supplied in the authorization request."
    )
    wrong = redeem(idp, callback["code"], code_verifier="x" * 43)
    assert_error(wrong, 400, "invalid_grant", 501481, message)
    assert_error(redeem(idp, callback["code"]), 400, "invalid_grant", 501481, message)


def test_pkce_plain_is_accepted(idp: IdentityPlatform) -> None:
    """code_challenge_method plain compares the verifier as is."""
    verifier = "v" * 50
    callback = Browser(idp).login_and_consent(
        code_challenge=verifier, code_challenge_method="plain"
    )
    assert redeem(idp, callback["code"], code_verifier=verifier).status_code == 200


def test_empty_scope_on_code_redemption_is_aadsts28003(idp: IdentityPlatform) -> None:
    """The code redemption must name a scope (Authlib does not add one by itself)."""
    callback = Browser(idp).login_and_consent()
    assert_error(redeem(idp, callback["code"], scope=""), 400, "invalid_scope", 28003)


# --- 5. token endpoint --------------------------------------------------------------------------
def test_token_endpoint_takes_form_encoding_only(idp: IdentityPlatform) -> None:
    """A JSON body is unreadable for the token endpoint: "must contain grant_type"."""
    reply = requests.post(
        idp.endpoint() + "token", json={"grant_type": "client_credentials"}, timeout=10
    )
    assert_error(
        reply,
        400,
        "invalid_request",
        900144,
        "The request body must contain the following parameter: 'grant_type'.",
    )


def test_token_endpoint_refuses_get_aadsts900561(idp: IdentityPlatform) -> None:
    """GET on the token endpoint is AADSTS900561."""
    assert_error(requests.get(idp.endpoint() + "token", timeout=10), 400, "invalid_request", 900561)


def test_client_secret_by_http_basic_is_accepted(idp: IdentityPlatform) -> None:
    """RFC 6749 HTTP Basic client authentication works like the body secret."""
    callback = Browser(idp).login_and_consent()
    reply = token_request(
        idp,
        auth=(APP, SECRET),
        grant_type="authorization_code",
        code=callback["code"],
        redirect_uri=REDIRECT,
        scope=SCOPES,
    )
    assert reply.status_code == 200, reply.text


def test_secret_id_instead_of_value_is_401_aadsts7000215(idp: IdentityPlatform) -> None:
    """Pasting the Secret ID instead of its Value is 401 invalid_client AADSTS7000215."""
    callback = Browser(idp).login_and_consent()
    assert_error(
        redeem(idp, callback["code"], secret=SECRET_ID),
        401,
        "invalid_client",
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        f"client secret value, not the client secret ID, for a secret added to app '{APP}'.",
    )


def test_expired_secret_is_401_aadsts7000222(idp: IdentityPlatform, world: World) -> None:
    """A secret past its expiry date is 401 invalid_client AADSTS7000222."""
    app = world.apps[APP]
    app.secrets = [(SECRET_ID, SECRET, dt.date(2020, 1, 1))]
    reply = token_request(
        idp,
        grant_type="refresh_token",
        client_id=APP,
        client_secret=SECRET,
        refresh_token="x",
        scope=SCOPES,
    )
    assert_error(
        reply,
        401,
        "invalid_client",
        7000222,
        f"The provided client secret keys for app '{APP}' are expired. Visit the Azure portal "
        "to create new keys for your app: https://aka.ms/NewClientSecret, or consider using "
        "certificate credentials for added security: https://aka.ms/certCreds.",
    )


def test_missing_secret_is_401_aadsts7000218(idp: IdentityPlatform) -> None:
    """No client secret at all is 401 invalid_client AADSTS7000218."""
    reply = token_request(idp, grant_type="refresh_token", client_id=APP, refresh_token="x")
    assert_error(
        reply,
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
    )


def test_two_resources_in_one_code_redemption_are_aadsts70011(idp: IdentityPlatform) -> None:
    """/authorize may span resources, /token may not (AADSTS70011)."""
    both = (
        "offline_access https://graph.microsoft.com/Mail.Read "
        "https://outlook.office.com/IMAP.AccessAsUser.All"
    )
    callback = Browser(idp).login_and_consent(scope=both)
    assert_error(
        redeem(idp, callback["code"], scope=both),
        400,
        "invalid_scope",
        70011,
        f"The provided value for the input parameter 'scope' is not valid. One or more scopes "
        f"in '{both}' are not compatible with each other.",
    )


def test_two_resources_in_one_refresh_are_aadsts28000(idp: IdentityPlatform) -> None:
    """A refresh naming two resources is AADSTS28000."""
    both = (
        "offline_access https://graph.microsoft.com/User.Read https://outlook.office.com/SMTP.Send"
    )
    body = tokens(idp, scope=both.replace(" https://graph.microsoft.com/User.Read", ""))
    assert_error(refresh(idp, body["refresh_token"], scope=both), 400, "invalid_scope", 28000)


def test_one_refresh_token_mints_tokens_for_another_consented_resource(
    idp: IdentityPlatform,
) -> None:
    """Refresh tokens are not tied to a resource: consent Graph too, then ask for Graph."""
    both = (
        "offline_access https://graph.microsoft.com/User.Read https://outlook.office.com/SMTP.Send"
    )
    verifier, challenge = pkce_pair()
    callback = Browser(idp).login_and_consent(
        scope=both, code_challenge=challenge, code_challenge_method="S256"
    )
    first = redeem(
        idp,
        callback["code"],
        scope="offline_access https://outlook.office.com/SMTP.Send",
        code_verifier=verifier,
    ).json()
    graph = refresh(idp, first["refresh_token"], scope="https://graph.microsoft.com/User.Read")
    assert graph.status_code == 200, graph.text
    assert graph.json()["scope"] == "https://graph.microsoft.com/User.Read"


def test_token_response_has_microsofts_shape_and_no_store_headers(idp: IdentityPlatform) -> None:
    """Research §1.4: key order, full-URI resource scopes, integer expiry, no-store headers."""
    verifier, challenge = pkce_pair()
    scope = (
        "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send "
        "offline_access openid profile"
    )
    callback = Browser(idp).login_and_consent(
        scope=scope, code_challenge=challenge, code_challenge_method="S256"
    )
    reply = redeem(idp, callback["code"], scope=scope, code_verifier=verifier)
    body = reply.json()
    assert list(body) == [
        "token_type",
        "scope",
        "expires_in",
        "ext_expires_in",
        "access_token",
        "refresh_token",
        "id_token",
    ]
    assert body["token_type"] == "Bearer"
    assert body["scope"] == (
        "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send"
    )
    assert isinstance(body["expires_in"], int)
    assert body["ext_expires_in"] == body["expires_in"]
    assert reply.headers["Cache-Control"] == "no-store, no-cache"
    assert reply.headers["Pragma"] == "no-cache"
    assert reply.headers["Content-Type"].startswith("application/json")


def test_offline_access_gates_the_refresh_token(idp: IdentityPlatform) -> None:
    """Without offline_access there is no refresh_token."""
    body = tokens(idp, scope="https://outlook.office.com/SMTP.Send openid profile")
    assert "refresh_token" not in body
    assert "id_token" in body


def test_openid_gates_the_id_token(idp: IdentityPlatform) -> None:
    """Without openid there is no id_token."""
    body = tokens(idp, scope="https://outlook.office.com/SMTP.Send offline_access")
    assert "id_token" not in body
    assert "refresh_token" in body


def test_profile_gates_preferred_username_oid_and_name(idp: IdentityPlatform) -> None:
    """Without profile the ID token lacks preferred_username, oid and name."""
    bare = claims_of(
        idp, tokens(idp, scope="https://outlook.office.com/SMTP.Send openid")["id_token"]
    )
    assert not {"preferred_username", "oid", "name", "email"} & set(bare)
    full = claims_of(idp, tokens(idp, scope=SCOPES + " email")["id_token"])
    assert full["preferred_username"] == "john@example.com"
    assert full["oid"] == "00000000-0000-4000-8000-000000000002"
    assert full["name"] == "John Doe"
    assert full["email"] == "john@example.com"


def test_unsupported_grant_type_is_aadsts70003(idp: IdentityPlatform) -> None:
    """An unknown grant_type is unsupported_grant_type AADSTS70003."""
    reply = token_request(idp, grant_type="password", client_id=APP, client_secret=SECRET)
    assert_error(reply, 400, "unsupported_grant_type", 70003)


# --- 6. error JSON ------------------------------------------------------------------------------
def test_error_json_has_microsofts_exact_shape(idp: IdentityPlatform) -> None:
    """Research §1.5: \\r\\n suffix lines, int codes, timestamp, GUIDs, error_uri."""
    reply = token_request(
        idp,
        grant_type="refresh_token",
        client_id=APP,
        client_secret=SECRET,
        refresh_token="garbage",
        scope=SCOPES,
    )
    body = reply.json()
    assert list(body) == [
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
        "error_uri",
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", body["timestamp"])
    assert re.fullmatch(GUID, body["trace_id"]) and re.fullmatch(GUID, body["correlation_id"])
    lines = body["error_description"].split("\r\n")
    assert lines[1:] == [
        f"Trace ID: {body['trace_id']}",
        f"Correlation ID: {body['correlation_id']}",
        f"Timestamp: {body['timestamp']}",
    ]
    code = body["error_codes"][0]
    assert body["error_uri"] == f"https://login.microsoftonline.com/error?code={code}"
    assert reply.headers["Cache-Control"] == "no-store, no-cache"


# --- 7. refresh tokens --------------------------------------------------------------------------
def test_refresh_rotates_and_the_old_token_works_only_for_the_grace_period(
    idp: IdentityPlatform,
) -> None:
    """Every refresh returns a new refresh token; the old one dies after the grace period."""
    first = tokens(idp)["refresh_token"]
    second = refresh(idp, first).json()["refresh_token"]
    assert second != first
    assert refresh(idp, first).status_code == 200  # within refresh_grace_seconds
    idp.advance_clock(301)
    assert_error(refresh(idp, first), 400, "invalid_grant", 70000)
    assert refresh(idp, second).status_code == 200


def test_strict_rotation_fails_a_used_refresh_token_at_once(idp: IdentityPlatform) -> None:
    """refresh_grace_seconds=0: a used refresh token fails on its second use."""
    idp.refresh_grace_seconds = 0
    first = tokens(idp)["refresh_token"]
    assert refresh(idp, first).status_code == 200
    assert_error(refresh(idp, first), 400, "invalid_grant", 70000)


def test_refresh_token_unused_for_90_days_is_aadsts700082(idp: IdentityPlatform) -> None:
    """A refresh token unused for 90 days fails with AADSTS700082."""
    token = tokens(idp)["refresh_token"]
    idp.advance_clock(90 * 86400 + 1)
    body = assert_error(refresh(idp, token), 400, "invalid_grant", 700082)
    assert re.search(
        r"AADSTS700082: The refresh token has expired due to inactivity\. The token was issued "
        r"on \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z and was inactive for 90\.00:00:00\.\r\n",
        body["error_description"],
    )


def test_rotated_refresh_tokens_keep_a_grant_alive_past_90_days(idp: IdentityPlatform) -> None:
    """The inactivity window slides: refreshing monthly keeps the grant alive."""
    token = tokens(idp)["refresh_token"]
    for _ in range(4):
        idp.advance_clock(30 * 86400)
        token = refresh(idp, token).json()["refresh_token"]


def test_revoke_sessions_fails_refresh_with_aadsts50173(idp: IdentityPlatform) -> None:
    """After "Revoke sessions" earlier grants fail with AADSTS50173."""
    token = tokens(idp)["refresh_token"]
    idp.advance_clock(5)
    idp.revoke_sessions("John@Example.com")
    body = assert_error(refresh(idp, token), 400, "invalid_grant", 50173)
    assert "The user might have changed or reset their password." in body["error_description"]
    assert (
        "and the TokensValidFrom date (before which tokens are not valid)"
        in (body["error_description"])
    )
    assert "refresh_token" in tokens(idp)  # a new sign-in works again


def test_mfa_required_after_the_grant_is_aadsts50076_basic_action(
    idp: IdentityPlatform, world: World
) -> None:
    """MFA enforced after sign-in fails the refresh with AADSTS50076, suberror basic_action."""
    token = tokens(idp)["refresh_token"]
    mailbox = world.mailbox("john@example.com")
    assert mailbox is not None
    mailbox.mfa_required = True
    body = assert_error(
        refresh(idp, token),
        400,
        "invalid_grant",
        50076,
        "Due to a configuration change made by your administrator, or because you moved to a "
        "new location, you must use multi-factor authentication to access "
        "'00000002-0000-0ff1-ce00-000000000000'.",
    )
    assert body["suberror"] == "basic_action"
    assert "refresh_token" in tokens(idp)  # signing in again performs MFA


def test_scope_not_consented_at_refresh_is_aadsts65001_consent_required(
    idp: IdentityPlatform,
) -> None:
    """Asking a refresh for a scope never consented is AADSTS65001 consent_required."""
    token = tokens(idp)["refresh_token"]
    body = assert_error(
        refresh(idp, token, scope="https://outlook.office.com/IMAP.AccessAsUser.All"),
        400,
        "invalid_grant",
        65001,
        f"The user or administrator has not consented to use the application with ID '{APP}' "
        "named 'Konvergo ERP'. Send an interactive authorization request for this user and "
        "resource.",
    )
    assert body["suberror"] == "consent_required"


def test_token_requests_counts_requests_by_grant_type(idp: IdentityPlatform) -> None:
    """token_requests lets a test assert exactly how many refreshes happened."""
    token = tokens(idp)["refresh_token"]
    refresh(idp, token)
    assert idp.token_requests == {"authorization_code": 1, "refresh_token": 1}


def test_concurrent_refreshes_are_all_answered_consistently(idp: IdentityPlatform) -> None:
    """Eight clients refreshing the same token at once all get distinct new tokens."""
    token = tokens(idp)["refresh_token"]
    results: list[requests.Response] = []

    def worker() -> None:
        results.append(refresh(idp, token))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 8
    assert len({r.json()["refresh_token"] for r in results}) == 8
    assert idp.token_requests["refresh_token"] == 8


def test_sandbox_knobs_work_over_http(idp: IdentityPlatform) -> None:
    """A separate process can advance the clock, revoke, set lifetimes and read counters."""
    token = tokens(idp)["refresh_token"]

    def knob(name: str, **data: Any) -> Any:
        reply = requests.post(f"{idp.base_url}/_sandbox/{name}", json=data, timeout=10)
        assert reply.status_code == 200, reply.text
        return reply.json()

    before = idp.now()
    assert knob("clock", advance=3600)["now"] >= before + 3600
    assert knob("settings", access_token_lifetime=600)["access_token_lifetime"] == 600
    assert refresh(idp, token).json()["expires_in"] == 600
    assert knob("counters")["token_requests"]["refresh_token"] == 1
    knob("revoke-sessions", upn="john@example.com")
    knob("mailbox", upn="jane@example.com", set={"mfa_required": True})
    assert_error(refresh(idp, token), 400, "invalid_grant", 50173)
    minted = knob("mint", upn="jane@example.com", scopes="https://outlook.office.com/SMTP.Send")
    assert idp.introspect(minted["access_token"]).scopes == {"SMTP.Send"}


# --- 8. access tokens ---------------------------------------------------------------------------
def test_work_access_token_is_an_rs256_jwt_for_outlook(idp: IdentityPlatform) -> None:
    """Work accounts get a signed JWT with aud, scp, upn, tid, oid, exp for Exchange."""
    body = tokens(idp)
    claims = claims_of(idp, body["access_token"])
    assert claims["aud"] == OUTLOOK_RESOURCE
    assert claims["scp"] == "SMTP.Send"
    assert claims["upn"] == "john@example.com"
    assert claims["tid"] == TENANT
    assert claims["oid"] == "00000000-0000-4000-8000-000000000002"
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    info = idp.introspect(body["access_token"])
    assert (info.active, info.upn, info.audience) == (True, "john@example.com", OUTLOOK_RESOURCE)
    assert info.scopes == {"SMTP.Send"}


def test_bare_scope_yields_a_graph_token_exchange_would_refuse(idp: IdentityPlatform) -> None:
    """A bare "SMTP.Send" (the portal's Graph name) yields a Graph-audience token."""
    body = tokens(idp, scope="SMTP.Send offline_access")
    assert body["scope"] == "https://graph.microsoft.com/SMTP.Send"
    assert claims_of(idp, body["access_token"])["aud"] == "https://graph.microsoft.com"
    assert idp.introspect(body["access_token"]).audience == "https://graph.microsoft.com"


def test_tokens_have_microsofts_sizes(idp: IdentityPlatform) -> None:
    """Access tokens are 1.5-3 KB like Microsoft's, so line and column limits get exercised."""
    body = tokens(idp)
    assert 1500 <= len(body["access_token"]) <= 3000
    assert len(body["refresh_token"]) >= 1000
    personal = idp.mint_access_token("sam@outlook.com", "https://outlook.office.com/SMTP.Send")
    assert 1500 <= len(personal) <= 3000


def test_mint_helper_takes_bare_names_as_outlook_permissions(idp: IdentityPlatform) -> None:
    """mint_access_token("…", {"SMTP.Send"}) is an Outlook token (the mail tests' helper)."""
    info = idp.introspect(idp.mint_access_token("jane@example.com", {"SMTP.Send"}, lifetime=30))
    assert (info.audience, info.scopes) == (OUTLOOK_RESOURCE, {"SMTP.Send"})
    assert info.expires_at - idp.now() <= 30
    graph = idp.mint_access_token("jane@example.com", ["https://graph.microsoft.com/Mail.Send"])
    assert idp.introspect(graph).audience == "https://graph.microsoft.com"


def test_personal_account_gets_an_opaque_access_token(idp: IdentityPlatform) -> None:
    """MSA access tokens are opaque, not JWTs, yet introspect like any other."""
    body = tokens(idp, upn="sam@outlook.com")
    assert body["access_token"].startswith("EwB")
    assert body["access_token"].count(".") == 0
    info = idp.introspect(body["access_token"])
    assert (info.active, info.upn, info.tenant_id) == (True, "sam@outlook.com", MSA_TENANT_ID)
    assert claims_of(idp, body["id_token"])["tid"] == MSA_TENANT_ID


def test_access_token_lifetime_is_random_between_60_and_90_minutes(idp: IdentityPlatform) -> None:
    """Without a fixed lifetime, expires_in is 3599..5399 seconds."""
    lifetimes = {
        int(
            idp.introspect(idp.mint_access_token("john@example.com", SCOPES)).expires_at - idp.now()
        )
        for _ in range(20)
    }
    assert all(3590 <= s <= 5399 for s in lifetimes)
    assert len(lifetimes) > 1


def test_introspect_endpoint_answers_dovecot(idp: IdentityPlatform) -> None:
    """POST /introspect (form, Bearer or query) gives active/email; expired gives false."""
    token = idp.mint_access_token("jane@example.com", SCOPES, lifetime=60)
    url = f"{idp.base_url}/introspect"
    for reply in (
        requests.post(url, data={"token": token}, timeout=10),
        requests.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=10),
        requests.get(url, params={"token": token}, timeout=10),
    ):
        body = reply.json()
        assert body["active"] is True
        assert body["email"] == body["upn"] == "jane@example.com"
        assert body["aud"] == OUTLOOK_RESOURCE and body["scope"] == "SMTP.Send"
    idp.advance_clock(61)
    assert requests.post(url, data={"token": token}, timeout=10).json() == {"active": False}
    assert idp.introspect(token).reason == "expired"
    assert idp.introspect("nonsense").reason == "unknown"


# --- 9. ID token and metadata -------------------------------------------------------------------
def test_id_token_is_signed_with_the_published_key_and_has_the_v2_claims(
    idp: IdentityPlatform,
) -> None:
    """The ID token carries aud, iss, iat/nbf/exp, tid, oid, sub, ver and the nonce."""
    body = tokens(idp, nonce="n-0S6_WzA2Mj")
    claims = claims_of(idp, body["id_token"])
    assert claims["aud"] == APP
    assert claims["iss"] == f"{idp.base_url}/{TENANT}/v2.0"
    assert claims["ver"] == "2.0"
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["tid"] == TENANT and claims["sub"]
    assert claims["nbf"] <= claims["iat"] < claims["exp"]


def test_openid_configuration_names_the_endpoints_and_keys(idp: IdentityPlatform) -> None:
    """The discovery document points at this server's authorize, token and JWKS URLs."""
    meta = requests.get(
        f"{idp.base_url}/{TENANT}/v2.0/.well-known/openid-configuration", timeout=10
    ).json()
    assert meta["token_endpoint"] == idp.endpoint(TENANT) + "token"
    assert meta["authorization_endpoint"] == idp.endpoint(TENANT) + "authorize"
    assert meta["issuer"] == f"{idp.base_url}/{TENANT}/v2.0"
    keys = requests.get(meta["jwks_uri"], timeout=10).json()["keys"]
    assert keys and keys[0]["kty"] == "RSA" and keys[0]["use"] == "sig"
    common = requests.get(
        f"{idp.base_url}/common/v2.0/.well-known/openid-configuration", timeout=10
    )
    assert common.json()["issuer"] == f"{idp.base_url}/{{tenantid}}/v2.0"


# --- 10. app-only -------------------------------------------------------------------------------
def test_client_credentials_returns_an_app_token_without_refresh(idp: IdentityPlatform) -> None:
    """client_credentials with outlook.office365.com/.default: roles, no refresh token."""
    reply = token_request(
        idp,
        TENANT,
        grant_type="client_credentials",
        client_id=SINGLE_APP,
        client_secret=SINGLE_SECRET,
        scope="https://outlook.office365.com/.default",
    )
    body = reply.json()
    assert list(body) == ["token_type", "expires_in", "ext_expires_in", "access_token"]
    claims = claims_of(idp, body["access_token"])
    assert claims["aud"] == "https://outlook.office365.com"
    assert claims["roles"] == ["IMAP.AccessAsApp", "SMTP.SendAsApp"]
    assert "upn" not in claims and "scp" not in claims
    info = idp.introspect(body["access_token"])
    assert info.audience == OUTLOOK_RESOURCE and info.upn == ""
    extra = idp.claims(body["access_token"])
    assert extra is not None and extra["client_id"] == SINGLE_APP and extra["app_only"]


def test_client_credentials_needs_a_tenant_aadsts50059(idp: IdentityPlatform) -> None:
    """App-only on /common cannot tell the tenant (AADSTS50059)."""
    reply = token_request(
        idp,
        "organizations",
        grant_type="client_credentials",
        client_id=APP,
        client_secret=SECRET,
        scope="https://outlook.office365.com/.default",
    )
    assert_error(reply, 400, "invalid_request", 50059)


def test_client_credentials_scope_must_end_in_default_aadsts1002012(
    idp: IdentityPlatform,
) -> None:
    """App-only scopes must be <resource>/.default."""
    reply = token_request(
        idp,
        TENANT,
        grant_type="client_credentials",
        client_id=SINGLE_APP,
        client_secret=SINGLE_SECRET,
        scope="https://outlook.office.com/SMTP.Send",
    )
    assert_error(reply, 400, "invalid_scope", 1002012)


# --- the product's client and the server itself ---------------------------------------------------
def test_authlib_oauth2session_completes_code_exchange_and_refresh(idp: IdentityPlatform) -> None:
    """Authlib as the product uses it (client_secret_post, S256) gets and refreshes tokens."""
    from authlib.common.security import generate_token
    from authlib.integrations.requests_client import OAuth2Session

    endpoint = idp.endpoint("common")
    client = OAuth2Session(
        APP,
        SECRET,
        scope=SCOPES,
        redirect_uri=REDIRECT,
        token_endpoint_auth_method="client_secret_post",
        code_challenge_method="S256",
    )
    verifier = generate_token(48)
    url, state = client.create_authorization_url(
        endpoint + "authorize",
        code_verifier=verifier,
        response_mode="query",
        login_hint="john@example.com",
    )
    browser = Browser(idp)
    browser.open(url)
    browser.sign_in("john@example.com")
    browser.consent("Yes")
    assert browser.page is not None
    callback_url = browser.page.headers["Location"]
    assert parse_qs(urlsplit(callback_url).query)["state"] == [state]
    token = client.fetch_token(
        endpoint + "token",
        authorization_response=callback_url,
        code_verifier=verifier,
        scope=SCOPES,  # Microsoft requires scope on the code redemption (AADSTS28003)
    )
    assert token["refresh_token"] and token["id_token"]
    refreshed = client.refresh_token(endpoint + "token", refresh_token=token["refresh_token"])
    assert refreshed["refresh_token"] != token["refresh_token"]
    assert idp.token_requests == {"authorization_code": 1, "refresh_token": 1}


def test_server_starts_well_under_a_second_on_loopback(world: World) -> None:
    """start() returns a listening server on 127.0.0.1 in well under a second."""
    began = time.monotonic()
    with IdentityPlatform(world) as platform:
        assert time.monotonic() - began < 0.5
        assert platform.base_url.startswith("http://127.0.0.1:")
        assert platform.endpoint(TENANT) == f"{platform.base_url}/{TENANT}/oauth2/v2.0/"
        assert requests.get(f"{platform.base_url}/common/discovery/v2.0/keys", timeout=5).ok
