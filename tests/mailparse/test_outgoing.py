"""build_message() and rewrite_from()."""

from __future__ import annotations

import re
from collections.abc import Callable
from email import message_from_bytes, policy
from typing import Any

import pytest

from konvergo.errors import ValidationFailed
from konvergo.mailparse import BuiltMessage, build_message, parse, rewrite_from

Loader = Callable[[str], bytes]


def build(**overrides: Any) -> BuiltMessage:
    arguments: dict[str, Any] = {
        "from_": "Support <support@konvergo.example>",
        "to": ["alice@example.com"],
        "subject": "Hello",
        "text": "Hello Alice",
        "html": None,
        "domain": "konvergo.example",
    }
    arguments.update(overrides)
    return build_message(**arguments)


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def test_built_message_round_trips_through_parse() -> None:
    """Names, subject, bodies, attachments and threading headers survive build then parse."""
    built = build(
        from_="Jürgen Müller <juergen@konvergo.example>",
        to=["Zoë Ångström <zoe@example.se>", '"Doe, Jane" <jane@example.com>'],
        cc=["Иван <ivan@example.ru>"],
        subject="Grüße — 你好 " + "long subject words " * 8,
        text="Hallo Welt ✓\nzweite Zeile",
        html="<p>Hallo <b>Welt</b> ✓</p>",
        attachments=[
            ("Rechnung März.pdf", "application/pdf", b"%PDF-1.4 fake"),
            ("notes.txt", "text/plain", "naïve\n".encode()),
        ],
        in_reply_to="<parent@example.com>",
        references=["<root@example.com>", "<parent@example.com>"],
    )
    parsed = parse(built.raw)
    assert parsed.message_id == built.message_id
    assert parsed.subject == "Grüße — 你好 " + ("long subject words " * 8).strip()
    assert parsed.from_address == "Jürgen Müller <juergen@konvergo.example>"
    assert parsed.to_text == 'Zoë Ångström <zoe@example.se>, "Doe, Jane" <jane@example.com>'
    assert parsed.cc_text == "Иван <ivan@example.ru>"
    assert parsed.body_text.rstrip("\n") == "Hallo Welt ✓\nzweite Zeile"
    assert parsed.body_html == "<p>Hallo <b>Welt</b> ✓</p>"
    assert [(a.filename, a.content_type, a.content) for a in parsed.attachments] == [
        ("Rechnung März.pdf", "application/pdf", b"%PDF-1.4 fake"),
        ("notes.txt", "text/plain", "naïve\n".encode()),
    ]
    assert parsed.in_reply_to == "<parent@example.com>"
    assert parsed.references == ("<root@example.com>", "<parent@example.com>")
    assert parsed.defects == ()


def test_raw_is_seven_bit_with_crlf_line_endings_only() -> None:
    """The bytes are ASCII with CRLF everywhere, ready for SMTP DATA without 8BITMIME."""
    built = build(subject="Ünïcödé", text="Grüße\nmit\nZeilen", html="<p>é</p>")
    assert built.raw.isascii()
    assert b"\n" not in built.raw.replace(b"\r\n", b"")
    assert b"\r" not in built.raw.replace(b"\r\n", b"")
    assert built.raw.endswith(b"\r\n")
    assert built.size == len(built.raw)


def test_bcc_is_in_the_envelope_but_not_in_the_headers() -> None:
    """Bcc recipients receive the message without appearing in any header."""
    built = build(cc=["carol@example.com"], bcc=["Secret <hidden@example.net>"])
    assert b"hidden@example.net" not in built.raw
    assert b"bcc" not in header_block(built.raw).lower()
    assert built.envelope_recipients == (
        "alice@example.com",
        "carol@example.com",
        "hidden@example.net",
    )


def test_envelope_recipients_are_bare_and_deduplicated() -> None:
    """An address given twice, in any case or list, is one envelope recipient."""
    built = build(
        to=["Alice <alice@example.com>"], cc=["ALICE@EXAMPLE.COM"], bcc=["alice@example.com"]
    )
    assert built.envelope_recipients == ("alice@example.com",)
    assert built.envelope_from == "support@konvergo.example"


def test_bcc_only_message_gets_an_undisclosed_recipients_group() -> None:
    """With only Bcc, To is the empty undisclosed-recipients group, never the Bcc list."""
    built = build(to=[], bcc=["hidden@example.net"])
    assert b"To: undisclosed-recipients:;" in built.raw
    assert built.envelope_recipients == ("hidden@example.net",)


def test_generated_message_id_is_random_timestamp_at_domain() -> None:
    """Without message_id, the id is <random.timestamp@domain> and differs every time."""
    first, second = build(), build()
    assert re.fullmatch(r"<[0-9a-f]{24}\.\d{13}@konvergo\.example>", first.message_id)
    assert first.message_id != second.message_id
    assert f"Message-ID: {first.message_id}".encode() in first.raw


def test_given_message_id_is_used_and_normalised() -> None:
    """A given Message-ID is used as is, brackets added when missing."""
    assert build(message_id="abc.1@konvergo.example").message_id == "<abc.1@konvergo.example>"


def test_internationalised_domains_are_encoded_as_idna() -> None:
    """Unicode domains in addresses and in the id domain become IDNA 2008 A-labels."""
    built = build(from_="info@bücher.example", to=["kunde@straße.de"], domain="bücher.example")
    assert built.envelope_from == "info@xn--bcher-kva.example"
    assert built.envelope_recipients == ("kunde@xn--strae-oqa.de",)
    assert built.message_id.endswith("@xn--bcher-kva.example>")


def test_html_only_message_gets_a_text_alternative() -> None:
    """HTML without text is sent as multipart/alternative with a text part derived from it."""
    message = message_from_bytes(
        build(text=None, html="<p>Hi <b>there</b></p>").raw, policy=policy.default
    )
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert (
        parse(build(text=None, html="<p>Hi <b>there</b></p>").raw).body_text.strip() == "Hi there"
    )


def test_extra_headers_are_written() -> None:
    """Extra header fields given in headers= appear in the message."""
    built = build(headers={"X-Konvergo-Outbox": "42", "Auto-Submitted": "auto-generated"})
    assert b"X-Konvergo-Outbox: 42\r\n" in built.raw
    assert b"Auto-Submitted: auto-generated\r\n" in built.raw


def test_reply_to_is_written_when_given() -> None:
    """reply_to becomes the Reply-To header."""
    assert parse(build(reply_to="Team <team@konvergo.example>").raw).reply_to == (
        "team@konvergo.example",
    )


INJECTIONS: list[tuple[str, dict[str, Any]]] = [
    ("from_", {"from_": "a@example.com\r\nBcc: victim@example.com"}),
    ("to", {"to": ["alice@example.com\nBcc: victim@example.com"]}),
    ("cc", {"cc": ["Carol\r <carol@example.com>"]}),
    ("bcc", {"bcc": ["x@example.com\u2028Bcc: y@example.com"]}),
    ("reply_to", {"reply_to": "r@example.com\r\nX-Evil: 1"}),
    ("subject", {"subject": "Hello\r\nBcc: victim@example.com"}),
    ("subject", {"subject": "Hello\nX-Evil: 1"}),
    ("in_reply_to", {"in_reply_to": "<a@b.c>\r\nX-Evil: 1"}),
    ("references", {"references": ["<a@b.c>\nX-Evil: 1"]}),
    ("message_id", {"message_id": "<a@b.c>\r\nX-Evil: 1"}),
    ("headers", {"headers": {"X-Tag": "ok\r\nBcc: victim@example.com"}}),
    ("headers", {"headers": {"X-Tag\r\nBcc": "victim@example.com"}}),
    ("attachments", {"attachments": [("a.txt\r\nX-Evil: 1", "text/plain", b"x")]}),
    ("attachments", {"attachments": [("a.txt", "text/plain\r\nX-Evil: 1", b"x")]}),
]


@pytest.mark.parametrize(("field", "overrides"), INJECTIONS, ids=[f for f, _ in INJECTIONS])
def test_header_injection_is_refused_naming_the_field(
    field: str, overrides: dict[str, Any]
) -> None:
    """A line break in any header value, address or name is refused with the field named."""
    with pytest.raises(ValidationFailed) as caught:
        build(**overrides)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("to", {"to": ["not-an-address"]}),
        ("to", {"to": ["a@b@c.com"]}),
        ("to", {"to": ["two@example.com, addresses@example.com"]}),
        ("to", {"to": "alice@example.com"}),
        ("cc", {"cc": ["user@localhost"]}),
        ("cc", {"cc": ["user@[192.0.2.1]"]}),
        ("bcc", {"bcc": ["jürgen@example.com"]}),
        ("from_", {"from_": ""}),
        ("from_", {"from_": "Support <support@-bad-.example>"}),
        ("reply_to", {"reply_to": "nobody"}),
        ("domain", {"domain": "not a domain"}),
        ("in_reply_to", {"in_reply_to": "no-at-sign"}),
        ("headers", {"headers": {"Subject": "override"}}),
        ("headers", {"headers": {"Bcc": "victim@example.com"}}),
        ("attachments", {"attachments": [("../etc/passwd", "text/plain", b"x")]}),
        ("attachments", {"attachments": [("a.bin", "not a type", b"x")]}),
        ("attachments", {"attachments": [("a.txt", "text/plain", "str, not bytes")]}),
        ("text", {"text": b"bytes, not str"}),
    ],
)
def test_invalid_input_is_refused_naming_the_field(field: str, overrides: dict[str, Any]) -> None:
    """Malformed addresses, domains, ids, managed headers and attachments name their field."""
    with pytest.raises(ValidationFailed) as caught:
        build(**overrides)
    assert caught.value.field == field


def test_a_message_without_any_recipient_is_refused() -> None:
    """No To, Cc or Bcc at all is refused on the "to" field."""
    with pytest.raises(ValidationFailed, match="no recipient") as caught:
        build(to=[], cc=[], bcc=[])
    assert caught.value.field == "to"


def test_oversize_message_is_refused_before_encoding() -> None:
    """Attachments that would exceed max_size are refused, naming attachments and the limit."""
    with pytest.raises(ValidationFailed, match="limit") as caught:
        build(attachments=[("big.bin", "application/octet-stream", b"\0" * 3000)], max_size=2000)
    assert caught.value.field == "attachments"
    assert caught.value.context["max_size"] == 2000


def test_size_limit_counts_the_encoded_message() -> None:
    """A message under the limit before encoding but over it once built is still refused."""
    limit = len(build(text="x").raw) + 10
    with pytest.raises(ValidationFailed) as caught:
        build(text="é" * 40, max_size=limit)
    assert caught.value.field == "text"


def test_default_size_limit_is_exchange_onlines_35_mb() -> None:
    """The default max_size is Exchange Online's 35 MB send limit."""
    from konvergo.mailparse import DEFAULT_MAX_SIZE

    assert DEFAULT_MAX_SIZE == 35 * 1024 * 1024


def test_rewrite_from_replaces_the_from_and_keeps_the_body_bytes() -> None:
    """Only the From changes; every other header line and the body stay byte-identical."""
    original = build(
        from_="Jane <jane@example.com>",
        text="Bödy ✓\n" * 50,
        html="<p>x</p>",
        attachments=[("a.bin", "application/octet-stream", bytes(range(256)))],
    ).raw
    rewritten = rewrite_from(original, "Notifications <notifications@konvergo.example>", None)
    head, body = original.split(b"\r\n\r\n", 1)
    new_head, new_body = rewritten.split(b"\r\n\r\n", 1)
    assert new_body == body
    assert new_head.split(b"\r\n")[1:] == head.split(b"\r\n")[1:]
    assert new_head.split(b"\r\n")[0] == b"From: Notifications <notifications@konvergo.example>"
    assert b"Reply-To" not in new_head


def test_rewrite_from_adds_reply_to_only_when_absent() -> None:
    """A Reply-To is added after the new From when missing, and an existing one is kept."""
    without = build().raw
    rewritten = rewrite_from(without, "n@konvergo.example", "Jürgen <j@example.com>")
    assert parse(rewritten).reply_to == ("j@example.com",)
    assert b"Reply-To: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\n" in rewritten

    with_reply_to = build(reply_to="team@example.com").raw
    kept = rewrite_from(with_reply_to, "n@konvergo.example", "other@example.com")
    assert parse(kept).reply_to == ("team@example.com",)


def test_rewrite_from_keeps_lf_messages_lf_and_unfolds_the_old_from() -> None:
    """A message with LF endings and a folded From gets an LF From and loses every old line."""
    raw = b"Subject: hi\nFrom: Very Long Name\n <old@example.com>\nTo: a@example.com\n\nbody\n"
    rewritten = rewrite_from(raw, "new@example.com", None)
    assert rewritten == b"Subject: hi\nFrom: new@example.com\nTo: a@example.com\n\nbody\n"


def test_rewrite_from_refuses_header_injection() -> None:
    """A line break in the new From or Reply-To is refused, naming the argument."""
    raw = build().raw
    with pytest.raises(ValidationFailed) as caught:
        rewrite_from(raw, "n@konvergo.example\r\nBcc: v@example.com", None)
    assert caught.value.field == "header_from"
    with pytest.raises(ValidationFailed) as caught:
        rewrite_from(raw, "n@konvergo.example", "r@example.com\nBcc: v@example.com")
    assert caught.value.field == "reply_to"
