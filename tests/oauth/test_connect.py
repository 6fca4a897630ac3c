"""Connect your Outlook account: authorize request, state checks, account check, errors."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from konvergo.sandbox.idp import IdentityPlatform
from konvergo.store.models import MailSettings, OAuthGrant, OAuthState, OutgoingServer
from tests.oauth.conftest import BASE_URL, confirm, connect, microsoft_leg, start_connect

pytestmark = pytest.mark.django_db


def test_connect_sends_the_documented_authorize_request(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """The authorize URL carries client_id, code, redirect URI, query mode, scopes, hint, PKCE."""
    url = start_connect(admin_client, john_server)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert url.startswith(outlook_configured.endpoint("common") + "authorize?")
    assert query["client_id"] == "11111111-2222-4333-8444-555555555555"
    assert query["response_type"] == "code"
    assert query["redirect_uri"] == f"{BASE_URL}/microsoft_outlook/confirm"
    assert query["response_mode"] == "query"
    assert set(query["scope"].split()) == {
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
        "openid",
        "profile",
    }
    assert query["login_hint"] == "john@example.com"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 40


def test_incoming_server_asks_for_the_imap_scope(
    admin_client: Client, outlook_configured: IdentityPlatform
) -> None:
    """An incoming server requests IMAP.AccessAsUser.All, never mixed with SMTP.Send."""
    from konvergo.store.models import IncomingServer

    server = IncomingServer.objects.create(
        name="Inbox", server_type="outlook", host="127.0.0.1", username="john@example.com"
    )
    url = start_connect(admin_client, server, kind="incoming")  # type: ignore[arg-type]
    scope = parse_qs(urlsplit(url).query)["scope"][0].split()
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in scope
    assert not any("SMTP" in s for s in scope)


def test_successful_connect_stores_encrypted_tokens_and_shows_the_green_tag(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """After consent the server has a valid grant, and its form shows Outlook Token Valid."""
    response = connect(admin_client, outlook_configured, john_server, "john@example.com")
    assert response.status_code == 302
    assert response["Location"] == f"/settings/outgoing-servers/{john_server.pk}"
    john_server.refresh_from_db()
    grant = john_server.grant
    assert (
        grant is not None and grant.status == "valid" and grant.signed_in_as == "john@example.com"
    )
    assert outlook_configured.introspect(grant.access_token).active
    page = admin_client.get(response["Location"]).content.decode()
    assert "Outlook Token Valid" in page and "tag-ok" in page
    with connection.cursor() as cursor:
        cursor.execute("SELECT refresh_token, access_token FROM store_oauthgrant")
        stored = cursor.fetchone()
    assert all(value.startswith("fernet:") for value in stored)
    assert grant.refresh_token not in str(stored) and grant.access_token not in str(stored)


def test_consent_by_another_account_is_refused_and_stores_nothing(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """Signing in at Microsoft as the admin instead of the mailbox is refused with a clear fix."""
    response = connect(admin_client, outlook_configured, john_server, "admin@example.com")
    assert response.status_code == 400
    text = response.content.decode()
    assert "admin@example.com" in text and "john@example.com" in text
    john_server.refresh_from_db()
    assert john_server.grant is None and not OAuthGrant.objects.exists()


def test_forged_state_is_refused_before_anything_is_shown(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """A state Konvergo never issued gets 403, and the query's text is not echoed."""
    response = confirm(
        admin_client,
        {"state": "forged", "code": "x", "error_description": "<b>Call 555-EVIL</b>"},
    )
    assert response.status_code == 403
    assert "555-EVIL" not in response.content.decode()
    assert not OAuthGrant.objects.exists()


def test_replayed_state_is_refused(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """The same callback used twice (double click, browser retry) stores once, then 403."""
    params = microsoft_leg(
        outlook_configured, start_connect(admin_client, john_server), "john@example.com"
    )
    assert confirm(admin_client, params).status_code == 302
    version = OAuthGrant.objects.get().version
    assert confirm(admin_client, params).status_code == 403
    assert OAuthGrant.objects.get().version == version


def test_expired_state_is_refused(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """A state older than 10 minutes is refused and stores nothing."""
    params = microsoft_leg(
        outlook_configured, start_connect(admin_client, john_server), "john@example.com"
    )
    OAuthState.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert confirm(admin_client, params).status_code == 403
    assert not OAuthGrant.objects.exists()


def test_state_from_another_browser_session_is_refused(
    admin_client: Client,
    admin_user: object,
    john_server: OutgoingServer,
    outlook_configured: IdentityPlatform,
) -> None:
    """A callback opened in another session of the same user is refused (login-CSRF guard)."""
    params = microsoft_leg(
        outlook_configured, start_connect(admin_client, john_server), "john@example.com"
    )
    other = Client()
    other.force_login(admin_user)  # type: ignore[arg-type]
    assert confirm(other, params).status_code == 403
    assert not OAuthGrant.objects.exists()


def test_state_of_another_user_is_refused(
    admin_client: Client,
    plain_user: object,
    john_server: OutgoingServer,
    outlook_configured: IdentityPlatform,
) -> None:
    """A state bound to one user cannot be completed by another user, even in its session."""
    from konvergo.services.oauth import connect as connect_service

    params = microsoft_leg(
        outlook_configured, start_connect(admin_client, john_server), "john@example.com"
    )
    session_key = admin_client.session.session_key
    with pytest.raises(connect_service.StateRejected, match="another user"):
        connect_service.complete(params=params, user=plain_user, session_key=session_key)
    assert not OAuthGrant.objects.exists()


def test_cancel_at_consent_explains_the_aadsts_code_with_a_way_back(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """Cancel → AADSTS65004 explained (cause, who acts, fix) with 'Go back to your mail server'."""
    params = microsoft_leg(
        outlook_configured,
        start_connect(admin_client, john_server),
        "john@example.com",
        button="Cancel",
    )
    assert params["error"] == "access_denied"
    response = confirm(admin_client, params)
    text = response.content.decode()
    assert response.status_code == 400
    assert "65004" in text and "Go back to your mail server" in text
    assert f"/settings/outgoing-servers/{john_server.pk}" in text
    assert not OAuthGrant.objects.exists()


def test_missing_credentials_replace_the_button_with_a_settings_link(
    admin_client: Client, john_server: OutgoingServer
) -> None:
    """Without Client ID and Secret the form links to General Settings instead of Connect."""
    MailSettings.objects.update(outlook_client_id="", outlook_client_secret="")
    page = admin_client.get(f"/settings/outgoing-servers/{john_server.pk}").content.decode()
    assert "Setup your Outlook credentials in General Settings" in page
    assert 'id="connect-outlook"' not in page


def test_plain_user_may_connect_only_the_servers_they_own(
    user_client: Client,
    plain_user: object,
    john_server: OutgoingServer,
    outlook_configured: IdentityPlatform,
) -> None:
    """A user gets 403 on someone else's server and may connect the server they own."""
    assert (
        user_client.post(f"/microsoft_outlook/connect/outgoing/{john_server.pk}").status_code == 403
    )
    john_server.owner = plain_user  # type: ignore[assignment]
    john_server.save()
    response = connect(user_client, outlook_configured, john_server, "john@example.com")
    assert response.status_code == 302 and response["Location"] == "/my/servers"
    john_server.refresh_from_db()
    assert john_server.grant is not None and john_server.grant.status == "valid"


def _message_cookie(response: Any) -> list[Any]:
    """The flash messages a response left in Django's (signed, readable) message cookie."""
    from django.contrib.messages.storage.cookie import CookieStorage
    from django.http import HttpRequest

    cookie = response.cookies.get(CookieStorage.cookie_name)
    if cookie is None or not cookie.value:
        return []
    return CookieStorage(HttpRequest())._decode(cookie.value) or []


def test_consent_link_lets_the_mailbox_owner_connect_without_a_login(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """An admin's one-time link runs the consent for that server in the owner's own browser."""
    from django.contrib.sessions.models import Session

    from konvergo.store.models import ConsentLink

    created = admin_client.post(f"/settings/outgoing-servers/{john_server.pk}/consent-link")
    waiting = [
        text
        for s in Session.objects.all()
        for text in (s.session_data, json.dumps(s.get_decoded()))
    ] + [str(message) for message in _message_cookie(created)]
    assert ConsentLink.objects.count() == 1
    page = admin_client.get(f"/settings/outgoing-servers/{john_server.pk}").content.decode()
    token = page.split("/microsoft_outlook/link/")[1].split("<")[0].split()[0]
    link_path = "/microsoft_outlook/link/" + token
    assert len(token) > 20 and not any(token in text for text in waiting)  # never in clear
    again = admin_client.get(f"/settings/outgoing-servers/{john_server.pk}").content.decode()
    assert token not in again  # shown once
    owner = Client()
    assert owner.get(link_path).status_code == 200
    authorize = owner.post(link_path)
    assert authorize.status_code == 302
    params = microsoft_leg(outlook_configured, authorize["Location"], "john@example.com")
    assert confirm(owner, params).status_code == 302
    john_server.refresh_from_db()
    assert john_server.grant is not None and john_server.grant.status == "valid"
    assert owner.post(link_path).status_code == 403  # single use


def test_a_second_consent_link_made_before_the_page_withdraws_the_unseen_first(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """Two clicks before the page shows a link: the page shows the second, which opens, and
    the first, which nobody has seen, is no longer valid."""
    from konvergo.store.models import ConsentLink

    for _ in range(2):
        admin_client.post(f"/settings/outgoing-servers/{john_server.pk}/consent-link")
    page = admin_client.get(f"/settings/outgoing-servers/{john_server.pk}").content.decode()
    shown = page.split("/microsoft_outlook/link/")[1].split("<")[0].split()[0]
    assert Client().get(f"/microsoft_outlook/link/{shown}").status_code == 200
    valid = ConsentLink.objects.filter(used_at__isnull=True, expires_at__gt=timezone.now())
    assert ConsentLink.objects.count() == 2 and valid.count() == 1


def test_no_consent_link_is_made_where_the_owner_could_not_sign_in(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """A consent link for a password server is refused with the reason, and none is stored
    (it would never be shown, yet stay valid for a week)."""
    from konvergo.store.models import ConsentLink

    OutgoingServer.objects.filter(pk=john_server.pk).update(auth_type="password")
    response = admin_client.post(
        f"/settings/outgoing-servers/{john_server.pk}/consent-link", follow=True
    )
    assert "does not authenticate with Outlook" in response.content.decode()
    assert ConsentLink.objects.count() == 0


def test_disconnect_deletes_the_tokens(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """Disconnect forgets the tokens and the tag disappears."""
    connect(admin_client, outlook_configured, john_server, "john@example.com")
    admin_client.post(f"/microsoft_outlook/disconnect/outgoing/{john_server.pk}")
    grant = OAuthGrant.objects.get()
    assert grant.status == "disconnected" and grant.refresh_token == "" and grant.access_token == ""
    page = admin_client.get(f"/settings/outgoing-servers/{john_server.pk}").content.decode()
    assert 'id="token-tag"' not in page and 'id="connect-outlook"' in page


def test_changing_the_client_id_asks_every_mailbox_to_reconnect(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """Grants belong to the app that issued them: another Client ID turns them red at once."""
    connect(admin_client, outlook_configured, john_server, "john@example.com")
    admin_client.post(
        "/settings/general",
        {
            "custom_email_servers": "on",
            "base_url": BASE_URL,
            "outlook_client_id": "22222222-3333-4444-8555-666666666666",
        },
    )
    grant = OAuthGrant.objects.get()
    assert grant.status == "invalid" and "Client ID changed" in grant.last_error
    page = admin_client.get(f"/settings/outgoing-servers/{john_server.pk}").content.decode()
    assert "Outlook Token Invalid" in page


def test_cancel_fix_names_the_server_and_mailbox(
    admin_client: Client, john_server: OutgoingServer, outlook_configured: IdentityPlatform
) -> None:
    """The advice on the confirm page is filled in for this server and mailbox."""
    params = microsoft_leg(
        outlook_configured,
        start_connect(admin_client, john_server),
        "john@example.com",
        button="Cancel",
    )
    text = confirm(admin_client, params).content.decode()
    assert "&lt;server&gt;" not in text and "&lt;user&gt;" not in text
    assert "john@example.com" in text
