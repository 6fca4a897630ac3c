"""The whole loop against the sandbox: send from Konvergo, answer from outside, same thread."""

from __future__ import annotations

import datetime as dt
import email.utils
import smtplib
from email.message import EmailMessage
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from konvergo.sandbox.runner import Sandbox
from konvergo.services import inbox, intake, outbox
from konvergo.store.models import IncomingServer, OutgoingServer, Thread
from tests.oauth.conftest import confirm, microsoft_leg, start_connect
from tests.sandbox.fixtures_mail import xoauth2
from tests.support import use_sandbox_identity

pytestmark = pytest.mark.django_db(transaction=True)


def _connect(client: Client, sandbox: Sandbox, server: Any, kind: str, upn: str) -> None:
    params = microsoft_leg(sandbox.idp, start_connect(client, server, kind=kind), upn)
    assert confirm(client, params).status_code == 302


def test_mail_sent_from_konvergo_and_answered_from_outside_lands_in_the_same_thread(
    ms365: Sandbox, admin_client: Client, plain_user: Any
) -> None:
    """John writes from the Inbox; Jane answers from her mail client; it joins the thread."""
    sandbox = ms365
    assert sandbox.imap is not None
    use_sandbox_identity(sandbox)
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
