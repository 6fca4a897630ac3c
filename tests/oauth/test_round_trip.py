"""The whole loop against the sandbox: send from Konvergo, answer from outside, same thread."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from konvergo import config as config_module
from konvergo.config import get_config
from konvergo.sandbox.runner import Sandbox
from konvergo.services import inbox, intake, outbox, parameters
from konvergo.store.models import IncomingServer, MailSettings, OutgoingServer, Thread
from tests.oauth.conftest import confirm, microsoft_leg, start_connect
from tests.sandbox.fixtures_idp import APP, SECRET
from tests.sandbox.fixtures_mail import xoauth2

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with Sandbox() as running:
        trusted = dataclasses.replace(get_config(), ca_bundle=running.tls.ca_file)
        monkeypatch.setattr(config_module, "_CONFIG", trusted)
        yield running


def _connect(client: Client, sandbox: Sandbox, server: Any, kind: str, upn: str) -> None:
    params = microsoft_leg(sandbox.idp, start_connect(client, server, kind=kind), upn)
    assert confirm(client, params).status_code == 302


def test_mail_sent_from_konvergo_and_answered_from_outside_lands_in_the_same_thread(
    sandbox: Sandbox, admin_client: Client, plain_user: Any
) -> None:
    """John writes from the Inbox; Jane answers from her mail client; it joins the thread."""
    assert sandbox.imap is not None
    settings = MailSettings.load()
    settings.custom_email_servers = True
    settings.outlook_client_id = APP
    settings.outlook_client_secret = SECRET
    settings.save()
    parameters.set_value("web.base.url", "http://127.0.0.1:8069")
    parameters.set_value("microsoft_outlook.endpoint", sandbox.idp.endpoint("common"))
    parameters.set_value("mail.catchall.domain", "example.com")
    outgoing = OutgoingServer.objects.create(
        name="John out",
        auth_type="outlook",
        smtp_host="127.0.0.1",
        smtp_port=sandbox.smtp.port,
        encryption="starttls",
        username="john@example.com",
        from_filter="john@example.com",
    )
    incoming = IncomingServer.objects.create(
        name="John in",
        server_type="outlook",
        host="127.0.0.1",
        port=sandbox.imap.port,
        ssl=True,
        username="john@example.com",
    )
    _connect(admin_client, sandbox, outgoing, "outgoing", "john@example.com")
    _connect(admin_client, sandbox, incoming, "incoming", "john@example.com")
    assert intake.test_and_confirm(IncomingServer.objects.get()).ok

    sent = inbox.send(
        user=plain_user, to=["jane@example.com"], subject="Quote 42", text="Here is the quote."
    )
    outbox.send_due(timeout=30)
    accepted = [m for m in sandbox.smtp.accepted if "jane@example.com" in m.rcpt_tos]
    assert len(accepted) == 1 and accepted[0].upn == "john@example.com"

    # Jane answers from her own mail client, through Exchange, as Outlook would thread it.
    answer = EmailMessage()
    answer["From"] = "Jane Roe <jane@example.com>"
    answer["To"] = "john@example.com"
    answer["Subject"] = "Re: Quote 42"
    answer["Message-ID"] = "<answer-1@example.com>"
    answer["Date"] = email.utils.format_datetime(timezone.now() + dt.timedelta(seconds=1))
    answer["In-Reply-To"] = sent.message_id
    answer["References"] = sent.message_id
    answer.set_content("Accepted, thanks.")
    token = sandbox.idp.mint_access_token("jane@example.com")
    with smtplib.SMTP("127.0.0.1", sandbox.smtp.port, timeout=10) as smtp:
        smtp.starttls(context=sandbox.tls.client_context())
        smtp.ehlo()
        assert smtp.docmd("AUTH", "XOAUTH2 " + xoauth2("jane@example.com", token))[0] == 235
        smtp.send_message(answer)

    intake.fetch_now(IncomingServer.objects.get())
    thread = Thread.objects.get(pk=sent.thread_id)
    directions = list(thread.messages.values_list("direction", "subject"))
    assert directions == [("out", "Quote 42"), ("in", "Re: Quote 42")]
    assert Thread.objects.count() == 1
