"""The JSON API: API keys, sending a message, following it, and reading threads."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.test import Client

from konvergo.services import apikeys, inbox, parameters
from konvergo.store.models import (
    ApiKey,
    Message,
    OutboxItem,
    OutgoingServer,
    Thread,
    ThreadParticipant,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def example_server(db: Any) -> OutgoingServer:
    parameters.set_value("mail.catchall.domain", "example.com")
    return OutgoingServer.objects.create(
        name="Example",
        auth_type="none",
        smtp_host="127.0.0.1",
        smtp_port=2525,
        encryption="none",
        from_filter="example.com",
    )


def _bearer(user: Any) -> dict[str, str]:
    _, key = apikeys.create(user, "test")
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def _post(client: Client, body: dict[str, Any], **extra: str) -> Any:
    return client.post("/api/v1/messages", body, content_type="application/json", **extra)


def test_api_key_is_stored_only_as_a_digest(plain_user: Any) -> None:
    """The clear key is returned once; the database holds a SHA-256 digest and a prefix."""
    row, key = apikeys.create(plain_user, "job")
    assert key.startswith("kvg_") and key not in (row.digest, row.prefix)
    assert apikeys.user_for_key(key) == plain_user
    apikeys.revoke(row, plain_user)
    assert apikeys.user_for_key(key) is None


def test_message_sent_with_an_api_key_is_queued_as_the_calling_user(
    plain_user: Any, example_server: OutgoingServer
) -> None:
    """POST /api/v1/messages queues a routed message whose sender is the key's user."""
    response = _post(
        Client(),
        {
            "to": ["customer@external.test"],
            "subject": "Invoice",
            "text": "Attached.",
            "attachments": [
                {
                    "filename": "a.txt",
                    "content_type": "text/plain",
                    "content_base64": base64.b64encode(b"hello").decode(),
                }
            ],
        },
        **_bearer(plain_user),
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["state"] == "queued" and data["server_id"] == example_server.pk
    assert "john@example.com" in data["header_from"]
    raw = bytes(OutboxItem.objects.get(pk=data["id"]).raw)
    assert b"a.txt" in raw and base64.b64encode(b"hello") in raw


def test_plain_user_may_not_name_another_sender(plain_user: Any, example_server: Any) -> None:
    """Only administrators may send as someone else; a user gets 403 and nothing is queued."""
    response = _post(
        Client(),
        {"from": "ceo@example.com", "to": ["x@external.test"], "subject": "s", "text": "t"},
        **_bearer(plain_user),
    )
    assert response.status_code == 403 and not OutboxItem.objects.exists()


def test_administrator_may_name_another_sender(admin_user: Any, example_server: Any) -> None:
    """An administrator's call may send as another address of an accepted domain."""
    response = _post(
        Client(),
        {
            "from": "Sales <sales@example.com>",
            "to": ["x@external.test"],
            "subject": "s",
            "text": "t",
        },
        **_bearer(admin_user),
    )
    assert response.status_code == 201 and "sales@example.com" in response.json()["header_from"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to": ["not an address"], "subject": "s", "text": "t"}, "to"),
        ({"to": ["a@external.test"], "subject": "s\r\nBcc: evil@x.test", "text": "t"}, "subject"),
        (
            {
                "to": ["a@external.test"],
                "subject": "s",
                "text": "t",
                "attachments": [{"filename": "x", "content_base64": "***"}],
            },
            "attachments[0].content_base64",
        ),
    ],
)
def test_bad_input_gets_400_with_the_field_named_and_nothing_queued(
    plain_user: Any, example_server: Any, body: dict[str, Any], field: str
) -> None:
    """Invalid addresses, header injection and bad base64 are refused naming the field."""
    response = _post(Client(), body, **_bearer(plain_user))
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert not OutboxItem.objects.exists()


def test_unroutable_sender_is_refused_with_the_setting_to_change(plain_user: Any) -> None:
    """Without a server accepting the sender, the API says which setting to change."""
    OutgoingServer.objects.create(
        name="Other",
        auth_type="none",
        smtp_host="127.0.0.1",
        encryption="none",
        from_filter="other.test",
    )
    response = _post(
        Client(), {"to": ["a@external.test"], "subject": "s", "text": "t"}, **_bearer(plain_user)
    )
    assert response.status_code == 400 and "FROM Filtering" in response.json()["detail"]


def test_message_status_is_visible_to_its_sender_only(
    plain_user: Any, admin_user: Any, example_server: Any
) -> None:
    """GET /api/v1/messages/<id> shows state and attempts to the sender, 404 to other users."""
    created = _post(
        Client(), {"to": ["a@external.test"], "subject": "s", "text": "t"}, **_bearer(plain_user)
    ).json()
    mine = Client().get(f"/api/v1/messages/{created['id']}", **_bearer(plain_user))
    assert mine.status_code == 200 and mine.json()["attempts"] == 0
    from konvergo.store.models import User

    other = User.objects.create_user(username="eve", password="x" * 12, email="eve@example.com")
    assert Client().get(f"/api/v1/messages/{created['id']}", **_bearer(other)).status_code == 404
    assert (
        Client().get(f"/api/v1/messages/{created['id']}", **_bearer(admin_user)).status_code == 200
    )


def test_threads_api_lists_only_threads_the_user_takes_part_in(plain_user: Any) -> None:
    """Users see threads with their address; another user's thread is not listed nor readable."""
    mine = Thread.objects.create(subject="Mine")
    ThreadParticipant.objects.create(thread=mine, address="john@example.com")
    Message.objects.create(
        thread=mine, direction="in", message_id="<1@x>", subject="Mine", body_text="hello"
    )
    theirs = Thread.objects.create(subject="Theirs")
    ThreadParticipant.objects.create(thread=theirs, address="jane@example.com")
    headers = _bearer(plain_user)
    listed = Client().get("/api/v1/threads", **headers).json()
    assert [t["subject"] for t in listed] == ["Mine"]
    Message.objects.create(
        thread=mine,
        direction="in",
        message_id="<2@x>",
        raw=b"From: a@x\r\nSubject: Mine\r\n\r\nstored once\r\n",
        text_in_raw=True,
    )
    detail = Client().get(f"/api/v1/threads/{mine.pk}", **headers).json()
    texts = {m["message_id"]: m["body_text"] for m in detail["messages"]}
    assert texts == {"<1@x>": "hello", "<2@x>": "stored once\n"}
    assert Client().get(f"/api/v1/threads/{theirs.pk}", **headers).status_code == 404


def test_reply_in_a_thread_carries_threading_headers(plain_user: Any, example_server: Any) -> None:
    """A reply from the Inbox sets In-Reply-To/References and is recorded in the thread."""
    thread = Thread.objects.create(subject="Question")
    Message.objects.create(
        thread=thread,
        direction="in",
        message_id="<q1@customer.test>",
        subject="Question",
        from_address="c@customer.test",
    )
    message = inbox.send(
        user=plain_user,
        to=["c@customer.test"],
        subject="Re: Question",
        text="Answer",
        thread=thread,
    )
    raw = bytes(message.outbox_item.raw)  # type: ignore[union-attr]
    assert b"In-Reply-To: <q1@customer.test>" in raw and b"References: <q1@customer.test>" in raw
    assert thread.messages.filter(direction="out", message_id=message.message_id).exists()


def test_api_keys_page_shows_a_new_key_once(user_client: Client) -> None:
    """Creating a key in the UI shows it on the next page only; later pages show its prefix;
    while it waits for that page it is nowhere in clear (sessions are stored rows, and
    Django's message cookie is only signed)."""
    from django.contrib.sessions.models import Session

    created = user_client.post("/account/api-keys/new", {"name": "job"})
    waiting = [
        text
        for s in Session.objects.all()
        for text in (s.session_data, json.dumps(s.get_decoded()))
    ] + [str(cookie.value) for cookie in created.cookies.values()]
    first = user_client.get("/account/api-keys").content.decode()
    key = first.split("<code>kvg_")[1].split("</code>")[0]
    second = user_client.get("/account/api-keys").content.decode()
    assert key not in second and ApiKey.objects.count() == 1
    assert len(key) > 20 and not any(key in text for text in waiting)


def test_api_key_calls_need_no_csrf_token_but_session_calls_do(
    plain_user: Any, example_server: Any
) -> None:
    """A program's keyed POST works under CSRF enforcement; a cookie-only POST is refused."""
    strict = Client(enforce_csrf_checks=True)
    body = {"to": ["a@external.test"], "subject": "s", "text": "t"}
    assert _post(strict, body, **_bearer(plain_user)).status_code == 201
    strict.force_login(plain_user)
    assert _post(strict, body).status_code == 403
