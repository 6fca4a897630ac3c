"""thread_keys() and is_bounce()."""

from __future__ import annotations

from collections.abc import Callable

from konvergo.mailparse import Bounce, is_bounce, parse, thread_keys

Loader = Callable[[str], bytes]


def test_thread_keys_put_in_reply_to_first_then_references_newest_first(eml: Loader) -> None:
    """The direct parent is looked up first, then ancestors from the newest to the root."""
    parsed = parse(eml("outlook_reply.eml"))
    assert thread_keys(parsed) == [
        "<second.1739100000000@konvergo.example>",
        "<CAF1234abcd@mail.example.com>",
        "<root.1739000000000@konvergo.example>",
    ]


def test_thread_keys_use_in_reply_to_alone_when_there_are_no_references() -> None:
    """A reply that only carries In-Reply-To still yields its parent as the key."""
    parsed = parse(b"From: a@example.com\nIn-Reply-To: <p@example.com>\n\nx\n")
    assert thread_keys(parsed) == ["<p@example.com>"]


def test_thread_keys_never_include_the_message_itself() -> None:
    """A message listing its own id in References does not thread onto itself."""
    raw = (
        b"From: a@example.com\nMessage-ID: <self@example.com>\n"
        b"References: <root@example.com> <self@example.com>\n\nx\n"
    )
    assert thread_keys(parse(raw)) == ["<root@example.com>"]


def test_a_new_message_has_no_thread_keys(eml: Loader) -> None:
    """A message that replies to nothing gives an empty key list."""
    assert thread_keys(parse(eml("plain.eml"))) == []


def test_postfix_bounce_names_the_returned_message_and_recipient(eml: Loader) -> None:
    """A Postfix DSN is a bounce whose original id is the returned message's Message-ID."""
    bounce = is_bounce(parse(eml("bounce_postfix.eml")))
    assert bounce == Bounce(
        original_message_id="<8f2c1e.1739437200000@konvergo.example>",
        recipients=("nobody@example.com",),
        statuses=("5.1.1",),
        diagnostic=(
            "smtp; 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"
        ),
    )


def test_exchange_bounce_prefers_the_microsoft_original_message_id(eml: Loader) -> None:
    """Exchange re-stamps Message-ID, so X-Microsoft-Original-Message-ID identifies ours."""
    bounce = is_bounce(parse(eml("bounce_exchange.eml")))
    assert bounce is not None
    assert bounce.original_message_id == "<quote17.1739521809000@konvergo.example>"
    assert bounce.recipients == ("ghost@fabrikam.example",)
    assert bounce.statuses == ("5.1.10",)


def test_delay_notice_is_not_a_bounce(eml: Loader) -> None:
    """A DSN whose only action is "delayed" reports progress and is not a bounce."""
    assert is_bounce(parse(eml("delay_dsn.eml"))) is None


def test_ordinary_mail_is_not_a_bounce(eml: Loader) -> None:
    """Messages that are neither DSNs nor from MAILER-DAEMON are not bounces."""
    for name in ("plain.eml", "outlook_reply.eml", "attachments.eml"):
        assert is_bounce(parse(eml(name))) is None, name


def test_mailer_daemon_text_bounce_falls_back_to_in_reply_to() -> None:
    """A plain-text bounce from MAILER-DAEMON uses its In-Reply-To as the original id."""
    raw = (
        b"From: MAILER-DAEMON <MAILER-DAEMON@mx.example.com>\n"
        b"Subject: failure notice\nIn-Reply-To: <sent.1@konvergo.example>\n\n"
        b"Sorry, we were unable to deliver your message.\n"
    )
    bounce = is_bounce(parse(raw))
    assert bounce is not None
    assert bounce.original_message_id == "<sent.1@konvergo.example>"
    assert bounce.recipients == ()


def test_read_receipt_report_is_not_a_bounce() -> None:
    """A multipart/report of disposition notifications (read receipts) is not a bounce."""
    raw = (
        b"From: bob@example.com\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nRead.\n"
        b"--b\nContent-Type: message/disposition-notification\n\n"
        b"Final-Recipient: rfc822; bob@example.com\nDisposition: manual-action/MDN-sent-manually;"
        b" displayed\n\n--b--\n"
    )
    assert is_bounce(parse(raw)) is None
