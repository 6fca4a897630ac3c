"""Fetching a mailbox into the database: every message once, flags untouched, errors kept."""

from __future__ import annotations

import pytest

from konvergo.mailparse import parse
from konvergo.sandbox.imap import SandboxImap
from konvergo.services import intake, intake_parse, intake_store
from konvergo.services.inbox import with_text
from konvergo.store.models import Attachment, FolderState, IncomingServer, Message
from tests.intake.conftest import MAILBOX, message, sized_messages

pytestmark = pytest.mark.dovecot


def test_fetch_stores_every_message_once_with_headers_body_and_attachments(
    outlook_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """A fetch over XOAUTH2 stores each message once with its headers, body and attachments."""
    from email.message import EmailMessage

    with_file = EmailMessage()
    with_file["From"] = "Alice <alice@external.test>"
    with_file["To"] = MAILBOX
    with_file["Cc"] = "bob@external.test"
    with_file["Subject"] = "Invoice"
    with_file["Message-ID"] = "<invoice-1@external.test>"
    with_file.set_content("Please find the invoice attached.\n")
    with_file.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                             filename="invoice.pdf")  # fmt: skip
    imap_server.populate(MAILBOX, [message("First"), with_file.as_bytes(), message("Third")])

    result = intake.fetch_now(outlook_server)
    again = intake.fetch_now(outlook_server)

    assert result.ok and result.stored == 3, result
    assert again.ok and again.stored == 0 and again.found == 0
    invoice = Message.objects.get(message_id="<invoice-1@external.test>")
    assert invoice.subject == "Invoice" and "alice@external.test" in invoice.from_address
    assert "bob@external.test" in invoice.cc and invoice.body_text.startswith("Please find")
    assert bytes(invoice.raw or b"").startswith(b"From:") or b"Subject: Invoice" in bytes(
        invoice.raw or b""
    )
    attachment = Attachment.objects.get(message=invoice)
    assert attachment.filename == "invoice.pdf" and bytes(attachment.content) == b"%PDF-1.4 fake"
    assert sorted(Message.objects.values_list("uid", flat=True)) == [1, 2, 3]
    state = FolderState.objects.get(server=outlook_server, folder="INBOX")
    assert state.last_uid == 3
    outlook_server.refresh_from_db()
    assert outlook_server.messages_fetched == 3 and outlook_server.last_success_at is not None
    assert outlook_server.last_error == ""


def test_plain_text_mail_keeps_its_text_once_and_readers_get_it_back(
    outlook_server: IncomingServer, imap_server: SandboxImap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small plain-text message is stored without a second copy of its text, and the pages'
    reader gives back exactly the text the parser gives; mail with attachments or over the
    size limit keeps its text beside the raw bytes."""
    from email.message import EmailMessage

    monkeypatch.setattr(intake_parse, "TEXT_IN_RAW_MAX", 4_000)
    accented = EmailMessage()
    accented["From"] = "Zoë <zoe@external.test>"
    accented["To"] = MAILBOX
    accented["Subject"] = "Grüße"
    accented["Message-ID"] = "<plain-1@external.test>"
    accented.set_content("Grüße aus Köln,\nbis bald.\n", cte="quoted-printable")
    with_file = EmailMessage()
    with_file["From"] = "alice@external.test"
    with_file["Message-ID"] = "<with-file@external.test>"
    with_file.set_content("See attached.\n")
    with_file.add_attachment(b"data", maintype="application", subtype="octet-stream")
    big = message(
        "Big", body="x" * 70 + "\n" * 1 + ("line of text\n" * 400), message_id="<big@external.test>"
    )
    imap_server.populate(MAILBOX, [accented.as_bytes(), with_file.as_bytes(), big])

    assert intake.fetch_now(outlook_server).stored == 3

    stored = {m.message_id: m for m in Message.objects.all()}
    plain = stored["<plain-1@external.test>"]
    assert plain.text_in_raw and plain.body_text == ""
    assert [m.body_text for m in with_text([plain])] == ["Grüße aus Köln,\nbis bald.\n"]
    assert with_text([plain])[0].body_text == parse(bytes(plain.raw or b"")).body_text
    for kept in (stored["<with-file@external.test>"], stored["<big@external.test>"]):
        assert not kept.text_in_raw and kept.body_text.strip()
        assert with_text([kept])[0].body_text == parse(bytes(kept.raw or b"")).body_text
    assert len(big) > 4_000


def test_a_message_written_without_text_in_raw_keeps_its_text(
    outlook_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """A row inserted without the text_in_raw column (a worker of the previous release while
    the database is migrated) is stored, and readers show its body_text."""
    imap_server.populate(MAILBOX, [message("First")])
    assert intake.fetch_now(outlook_server).stored == 1
    first = Message.objects.get()
    old_fields = [f for f in intake_store._MESSAGE_FIELDS if f != "text_in_raw"]
    intake_store._insert(
        Message,
        old_fields,
        [(first.thread_id, "in", "<old@x>", outlook_server.pk, "INBOX", 99, "Old", "a@x", "",
          "", None, "", "", "kept beside", "", b"Subject: Old\r\n\r\nraw\r\n",
          first.created_at)],
    )  # fmt: skip
    old = Message.objects.get(message_id="<old@x>")
    assert not old.text_in_raw and with_text([old])[0].body_text == "kept beside"


def test_fetch_leaves_flags_alone_unless_mark_read_is_on(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """Fetched messages stay unread on the server; with Mark as read they get \\Seen."""
    imap_server.populate(MAILBOX, sized_messages(3, 500))
    assert intake.fetch_now(password_server).stored == 3
    flags = _flags(password_server)
    assert all("\\Seen" not in f for f in flags.values()), flags

    imap_server.populate(MAILBOX, sized_messages(2, 500))
    password_server.mark_read = True
    password_server.save()
    assert intake.fetch_now(password_server).stored == 2
    flags = _flags(password_server)
    assert [("\\Seen" in flags[uid]) for uid in sorted(flags)] == [False, False, False, True, True]


def _flags(server: IncomingServer) -> dict[int, tuple[str, ...]]:
    from konvergo.transports.imap import ImapConnection

    with ImapConnection(intake.settings_for(server)) as conn:
        conn.select("INBOX")
        return {m.uid: m.flags for m in conn.fetch_batch(conn.uid_search_since(0))}


def test_uidvalidity_reset_refetches_without_duplicates_or_loss(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """After the server renumbers a folder, the fetch resyncs: nothing twice, nothing lost."""
    imap_server.populate(MAILBOX, sized_messages(5, 300))
    assert intake.fetch_now(password_server).stored == 5
    before = FolderState.objects.get(server=password_server).uidvalidity

    new = imap_server.reset_uidvalidity(MAILBOX)
    imap_server.populate(MAILBOX, sized_messages(2, 300))
    result = intake.fetch_now(password_server)

    assert result.ok and result.stored == 2 and result.duplicates == 5, result
    assert Message.objects.count() == 7
    state = FolderState.objects.get(server=password_server)
    assert state.uidvalidity == new != before and state.last_uid == 7


def test_fetch_since_limits_the_first_fetch_to_recent_mail(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """With fetch_since in the future of every delivery, the first fetch stores nothing."""
    import datetime as dt

    imap_server.populate(MAILBOX, sized_messages(3, 300))
    password_server.fetch_since = dt.date.today() + dt.timedelta(days=2)
    password_server.save()
    result = intake.fetch_now(password_server)
    assert result.ok and result.stored == 0 and Message.objects.count() == 0


def test_a_failed_fetch_is_recorded_on_the_server_with_the_fix(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """A wrong password leaves the server's words and a fix on the row, never only in a log."""
    password_server.password = "wrong"
    password_server.save()
    result = intake.fetch_now(password_server)
    password_server.refresh_from_db()
    assert not result.ok
    assert "AUTHENTICATIONFAILED" in password_server.last_error
    assert "password" in password_server.last_error_fix
    assert password_server.last_fetch_at is not None and password_server.last_success_at is None


def test_several_folders_are_fetched_with_their_own_high_water_marks(
    password_server: IncomingServer, imap_server: SandboxImap
) -> None:
    """Each folder keeps its own UIDVALIDITY and last UID."""
    imap_server.populate(MAILBOX, sized_messages(2, 300))
    imap_server.populate(MAILBOX, sized_messages(3, 300), folder="Archive")
    password_server.folders = "INBOX, Archive"
    password_server.save()
    assert intake.fetch_now(password_server).stored == 5
    marks = dict(FolderState.objects.values_list("folder", "last_uid"))
    assert marks == {"INBOX": 2, "Archive": 3}
    assert set(Message.objects.values_list("folder", flat=True)) == {"INBOX", "Archive"}
