"""Threading incoming mail: replies join their original, addresses route, users are matched."""

from __future__ import annotations

import pytest

from konvergo.sandbox.imap import SandboxImap
from konvergo.services import intake, parameters
from konvergo.store.models import IncomingServer, Message, Thread, ThreadParticipant, User
from tests.intake.conftest import MAILBOX, message

pytestmark = pytest.mark.dovecot

#: An unknown id first, then the reply: the newest known reference wins.
REFS = "<q1@x> <q2@external.test>"


def test_reply_with_in_reply_to_lands_in_the_thread_of_the_original(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """A reply fetched later joins the original's thread; a reply in the same batch does too."""
    imap_server.populate(MAILBOX, [message("Quote", message_id="<q1@external.test>")])
    intake.fetch_now(password_server)
    imap_server.populate(
        MAILBOX,
        [
            message("Re: Quote", message_id="<q2@external.test>", In_Reply_To="<q1@external.test>"),
            message(
                "Re: Re: Quote", message_id="<q3@x.test>", References="<q1@x> <q2@external.test>"
            ),
            message("Unrelated"),
        ],
    )
    intake.fetch_now(password_server)
    original = Message.objects.get(message_id="<q1@external.test>")
    replies = Message.objects.filter(message_id__in=["<q2@external.test>", "<q3@x.test>"])
    assert {m.thread_id for m in replies} == {original.thread_id}
    assert Thread.objects.count() == 2
    assert Message.objects.get(subject="Unrelated").thread_id != original.thread_id


def test_reply_to_our_own_outgoing_message_joins_its_thread(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """A customer's answer to mail we sent threads onto our outgoing message."""
    thread = Thread.objects.create(subject="Your order", kind="lead")
    Message.objects.create(
        thread=thread, direction=Message.Direction.OUT, message_id="<out-1@konvergo.test>"
    )
    imap_server.populate(MAILBOX, [message("Re: Your order", In_Reply_To="<out-1@konvergo.test>")])
    intake.fetch_now(password_server)
    assert Message.objects.get(direction="in").thread_id == thread.pk


def test_new_mail_opens_a_thread_of_the_servers_kind_with_matched_participants(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """A new message opens a thread of "Create a New Record" kind; known users are linked."""
    john = User.objects.create_user(username="john", email="John@Example.com")
    password_server.create_record = IncomingServer.Target.TICKET
    password_server.save()
    imap_server.populate(MAILBOX, [message("Help", Cc="carol@external.test")])
    intake.fetch_now(password_server)
    thread = Thread.objects.get()
    assert thread.kind == "ticket" and thread.subject == "Help"
    assert thread.last_message_at is not None
    people = dict(ThreadParticipant.objects.values_list("address", "user"))
    assert people == {"alice@external.test": None, MAILBOX: john.pk, "carol@external.test": None}


def test_catchall_sub_address_and_aliases_route_by_recipient(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """catchall+<thread>@domain joins that thread; an alias opens a thread of its kind."""
    parameters.set_value("mail.catchall.domain", "example.com")
    parameters.set_value("mail.alias.lead", "sales")
    existing = Thread.objects.create(subject="Old", kind="inbox")
    imap_server.populate(
        MAILBOX,
        [
            message("To the thread", to=f"catchall+{existing.pk}@example.com"),
            message("To sales", to="sales@example.com"),
        ],
    )
    intake.fetch_now(password_server)
    assert Message.objects.get(subject="To the thread").thread_id == existing.pk
    assert Message.objects.get(subject="To sales").thread.kind == "lead"
