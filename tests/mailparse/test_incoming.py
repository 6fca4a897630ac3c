"""parse(): the corpus, charsets, ids, dates, defects, garbage and memory."""

from __future__ import annotations

import dataclasses
import gc
import os
import random
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from email.headerregistry import AddressHeader
from typing import Any

import pytest

from konvergo.errors import KonvergoError
from konvergo.mailparse import (
    MAX_REFERENCES,
    ParsedMessage,
    UnparseableMessage,
    build_message,
    parse,
    plain_text,
)

from .conftest import CORPUS_NAMES, read_corpus

Loader = Callable[[str], bytes]

# Expected values per corpus file; fields not listed are checked by the generic tests only.
EXPECTED: dict[str, dict[str, Any]] = {
    "plain.eml": {
        "message_id": "<CAF1234abcd@mail.example.com>",
        "subject": "Invoice 2025-0042",
        "from_address": "Alice Martin <alice@example.com>",
        "from_email": "alice@example.com",
        "to": ("support@konvergo.example", "bob@example.org"),
        "to_text": "Support <support@konvergo.example>, bob@example.org",
        "cc": ("carol@example.net",),
        "cc_text": '"Carol, Finance" <carol@example.net>',
        "delivered_to": ("support@konvergo.example",),
        "recipients": ("support@konvergo.example", "bob@example.org", "carol@example.net"),
        "date": datetime(2025, 2, 3, 8, 13, 58, tzinfo=UTC),
        "body_html": "",
        "attachments": (),
        "defects": (),
    },
    "alternative.eml": {
        "subject": "Café crème order",
        "from_address": "Renée Dupont <renee@example.fr>",
        "body_text": "Bonjour, je voudrais un café crème.",
        "body_html": "<p>Bonjour, je voudrais un <b>café crème</b>.</p>",
        "attachments": (),
    },
    "rfc2047_charsets.eml": {
        "subject": "Résumé — Привет 你好",
        "from_address": "François Müller <francois@example.fr>",
        "to_text": "山田 <yamada@example.jp>, Иван <ivan@example.ru>",
        "cc_text": "Γιάννης <giannis@example.gr>",
        "date": datetime(2025, 2, 8, 3, 0, tzinfo=UTC),
        "body_text": "Prix: 10 €\n",
    },
    "wrong_charset.eml": {"body_text": "Grüße aus Köln \u2013 naïve café\n"},
    "wrong_charset_latin1.eml": {"body_text": "Ça coûte 5 € à Besançon.\n"},
    "unknown_charset.eml": {"subject": "Qaplaé", "body_text": "Señor Müller\n"},
    "eight_bit_headers.eml": {
        "subject": "Réunion à 15h — ordre du jour",
        "from_address": "Zoë Ångström <zoe@example.se>",
        "cc_text": "José Pérez <jose@example.es>",
    },
    "missing_date.eml": {"date": None, "message_id": "<nodate-1@example.com>"},
    "garbage_date.eml": {"date": None},
    "missing_message_id.eml": {"message_id_synthetic": True},
    "outlook_reply.eml": {
        "subject": "RE: [#42] Delivery address",
        "from_address": "Björn Åström <bjorn.astrom@fabrikam.example>",
        "message_id": (
            "<AM0PR01MB55551A2B3C4D5E6F7A8B9C0D1E2F3@AM0PR01MB5555.eurprd01.prod.exchangelabs.com>"
        ),
        "in_reply_to": "<second.1739100000000@konvergo.example>",
        "references": (
            "<root.1739000000000@konvergo.example>",
            "<CAF1234abcd@mail.example.com>",
            "<second.1739100000000@konvergo.example>",
        ),
    },
    "broken_boundary.eml": {"subject": "Broken boundary", "attachments": ()},
    "unterminated_multipart.eml": {"body_text": "The closing boundary never comes."},
    "bounce_postfix.eml": {"from_email": "mailer-daemon@mx.konvergo.example"},
    "html_only_hostile.eml": {"content_type": "text/html"},
}


def _storable(value: str) -> bool:
    # PostgreSQL text refuses NUL and the driver refuses lone surrogates.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _texts(parsed: ParsedMessage) -> list[str]:
    texts: list[str] = []
    for item in dataclasses.fields(parsed):
        value = getattr(parsed, item.name)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, tuple):
            texts.extend(v for v in value if isinstance(v, str))
    for attachment in parsed.attachments:
        texts += [attachment.filename, attachment.content_type, attachment.content_id]
    return texts


@pytest.mark.parametrize("name", CORPUS_NAMES)
@pytest.mark.parametrize("line_ending", [b"\n", b"\r\n"])
def test_every_corpus_message_parses_into_storable_values(name: str, line_ending: bytes) -> None:
    """Every corpus message parses, with LF or CRLF endings, into values a database accepts."""
    raw = read_corpus(name).replace(b"\n", line_ending)
    parsed = parse(raw)
    assert parsed.message_id.startswith("<") and parsed.message_id.endswith(">")
    assert all(_storable(text) for text in _texts(parsed))
    assert len(parsed.subject) <= 998 and len(parsed.from_address) <= 998
    assert parsed.date is None or parsed.date.tzinfo is UTC
    assert all(a.size == len(a.content) for a in parsed.attachments)
    assert all(len(a.filename) <= 255 and a.filename for a in parsed.attachments)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_plain_text_is_the_text_parse_gives(name: str) -> None:
    """plain_text(raw) is parse(raw).body_text for every corpus message, and empty for bytes
    that are not mail (a reader never fails on them)."""
    raw = read_corpus(name)
    assert plain_text(raw) == parse(raw).body_text
    assert plain_text(b"\r\n") == "" and plain_text(b"no header here") == ""


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_line_endings_do_not_change_what_is_read(name: str) -> None:
    """A message read with CRLF endings gives the same headers and bodies as with LF."""
    lf = parse(read_corpus(name))
    crlf = parse(read_corpus(name).replace(b"\n", b"\r\n"))
    for attribute in ("subject", "from_address", "to", "cc", "date", "body_text", "body_html"):
        assert getattr(lf, attribute) == getattr(crlf, attribute), attribute


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_message_has_expected_fields(name: str) -> None:
    """Each corpus message yields the field values a person reading it would expect."""
    parsed = parse(read_corpus(name))
    for attribute, expected in EXPECTED[name].items():
        assert getattr(parsed, attribute) == expected, attribute


def test_parsed_message_is_immutable(eml: Loader) -> None:
    """A ParsedMessage is a frozen value: fields cannot be reassigned."""
    parsed = parse(eml("plain.eml"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.subject = "changed"  # type: ignore[misc]


def test_missing_message_id_is_replaced_by_a_stable_synthetic_id(eml: Loader) -> None:
    """The same bytes without a Message-ID always get the same synthetic id; other bytes not."""
    raw = eml("missing_message_id.eml")
    first, second = parse(raw), parse(bytes(raw))
    other = parse(raw + b"PS: one more line.\n")
    assert first.message_id == second.message_id
    assert first.message_id.endswith("@konvergo.missing-message-id>")
    assert other.message_id != first.message_id
    assert any("Message-ID" in defect for defect in first.defects)


def test_message_id_without_brackets_is_normalised() -> None:
    """A bare Message-ID value is stored in the bracketed form replies refer to."""
    parsed = parse(b"From: a@example.com\nMessage-ID: abc.123@host.example\n\nhi\n")
    assert parsed.message_id == "<abc.123@host.example>"
    assert parsed.message_id_synthetic is False


def test_wrong_and_unknown_charsets_fall_back_without_replacement_characters(eml: Loader) -> None:
    """Mislabelled and unknown charsets decode through UTF-8 and windows-1252, never U+FFFD."""
    for name in ("wrong_charset.eml", "wrong_charset_latin1.eml", "unknown_charset.eml"):
        parsed = parse(eml(name))
        assert "\ufffd" not in parsed.body_text + parsed.subject, name


def test_garbage_date_is_none_and_reported(eml: Loader) -> None:
    """An unparsable Date gives date None and a defect, never an exception or "now"."""
    parsed = parse(eml("garbage_date.eml"))
    assert parsed.date is None
    assert any(defect.startswith("Date:") for defect in parsed.defects)


def test_date_without_zone_is_taken_as_utc() -> None:
    """A Date with the "-0000" unknown zone is read as UTC, so it is still comparable."""
    parsed = parse(b"From: a@example.com\nDate: Mon, 3 Feb 2025 09:00:00 -0000\n\nx\n")
    assert parsed.date == datetime(2025, 2, 3, 9, 0, tzinfo=UTC)


def test_broken_boundary_keeps_the_text_and_reports_defects(eml: Loader) -> None:
    """A multipart whose boundary never appears still yields its text, with defects listed."""
    parsed = parse(eml("broken_boundary.eml"))
    assert "The boundary above is not the declared one." in parsed.body_text
    assert "StartBoundaryNotFoundDefect" in parsed.defects


def test_eight_bit_headers_are_decoded_and_reported(eml: Loader) -> None:
    """Raw 8-bit header bytes decode as UTF-8 or windows-1252 and are listed as defects."""
    parsed = parse(eml("eight_bit_headers.eml"))
    assert parsed.cc == ("jose@example.es",)
    assert any("UndecodableBytesDefect" in defect for defect in parsed.defects)


def test_attachments_keep_names_types_and_bytes(eml: Loader) -> None:
    """Attachments carry their decoded name (RFC 2231 too), fixed type and exact bytes."""
    parsed = parse(eml("attachments.eml"))
    names = [a.filename for a in parsed.attachments]
    assert names == ["invoice.pdf", "Übersicht März.csv", "passwd", "attachment-4.bin"]
    pdf, csv, passwd, unnamed = parsed.attachments
    assert pdf.content.startswith(b"%PDF-1.4") and pdf.content_type == "application/pdf"
    assert csv.content == "Artikel;Menge\nKäse;3\n".encode()
    # "binary/octet-stream" is a common misspelling; the path in "../../etc/passwd" is dropped.
    assert passwd.content_type == "application/octet-stream"
    assert unnamed.content == bytes(range(256))
    assert not any(a.inline for a in parsed.attachments)


def test_inline_image_is_recorded_with_its_content_id(eml: Loader) -> None:
    """An image referenced by cid: is an inline attachment whose content_id matches the HTML."""
    parsed = parse(eml("inline_cid_image.eml"))
    (logo,) = parsed.attachments
    assert logo.inline is True
    assert logo.content_id == "logo.png@01DB7A"
    assert logo.content.startswith(b"\x89PNG")
    assert f'src="cid:{logo.content_id}"' in parsed.body_html


def test_html_only_message_gets_a_derived_text_body(eml: Loader) -> None:
    """When only HTML is sent, body_text is its readable text without markup or scripts."""
    parsed = parse(eml("html_only_hostile.eml"))
    assert parsed.body_text.startswith("Congratulations!\n\nClaim your prize")
    assert "<" not in parsed.body_text and "document.cookie" not in parsed.body_text


def test_references_are_unfolded_deduplicated_and_capped() -> None:
    """References keep the last 32 distinct ids, oldest first, across folded lines."""
    ids = [f"<id{n}@example.com>" for n in range(40)]
    folded = "\n ".join([*ids, ids[-1]])
    raw = f"From: a@example.com\nReferences: {folded}\nIn-Reply-To: {ids[-1]} (Bob)\n\nx\n"
    parsed = parse(raw.encode())
    assert parsed.references == tuple(ids[-MAX_REFERENCES:])
    assert parsed.in_reply_to == ids[-1]


def test_nul_bytes_never_reach_text_fields() -> None:
    """NUL characters, which PostgreSQL text columns refuse, are removed from text."""
    parsed = parse(b"From: a@example.com\nSubject: a\x00b\n\nbody\x00text\n")
    assert parsed.subject == "ab" and parsed.body_text == "bodytext\n"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \r\n\r\n",
        b"just a line of text, no headers\nand another\n",
        bytes(random.Random(7).randrange(256) for _ in range(4096)),
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    ],
    ids=["empty", "blank", "text-without-headers", "random-bytes", "png-file"],
)
def test_non_messages_raise_unparseable_message(raw: bytes) -> None:
    """Bytes without any message header field raise UnparseableMessage, a KonvergoError."""
    with pytest.raises(UnparseableMessage) as caught:
        parse(raw)
    assert isinstance(caught.value, KonvergoError) and isinstance(caught.value, ValueError)


def test_parse_refuses_text_instead_of_bytes() -> None:
    """Passing str is a programming error (the charset would be unknown), not bad mail."""
    with pytest.raises(TypeError):
        parse("From: a@example.com\n\nx\n")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_damaged_corpus_messages_never_crash_the_parser(name: str) -> None:
    """Truncated and byte-flipped corpus messages parse or raise UnparseableMessage only."""
    raw = read_corpus(name)
    rng = random.Random(name)
    variants = [raw[: rng.randrange(1, len(raw))] for _ in range(10)]
    for _ in range(20):
        damaged = bytearray(raw)
        for _ in range(8):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        variants.append(bytes(damaged))
    for variant in variants:
        try:
            parsed = parse(variant)
        except UnparseableMessage:
            continue
        assert all(_storable(text) for text in _texts(parsed))


def test_a_25_mb_attachment_parses_within_three_and_a_half_copies_of_the_message() -> None:
    """Parsing a 25 MiB attachment peaks below 3.5x the raw size and keeps only the content.

    Measured with tracemalloc (CPython 3.11): raw message 34.2 MiB (base64); parse() peaks at
    about 2.75x the raw size (the feed parser's line list plus the joined payload) and
    retains 1.0x the attachment (25 MiB). The stdlib's own path
    (``BytesParser.parsebytes`` + ``get_content()``) peaks at about 7.7x and retains 1.7x.
    """
    content = os.urandom(25 * 1024 * 1024)
    raw = build_message(
        from_="a@example.com",
        to=["b@example.com"],
        subject="big",
        text="see attached",
        html=None,
        attachments=[("big.bin", "application/octet-stream", content)],
        domain="example.com",
    ).raw
    gc.collect()
    tracemalloc.start()
    try:
        parsed = parse(raw)
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.attachments[0].content == content
    assert peak < 3.5 * len(raw), f"peak {peak / len(raw):.2f}x the raw size"
    assert retained < 1.1 * len(content), f"retained {retained / len(content):.2f}x the content"


def test_very_long_address_lists_use_the_linear_parser_and_are_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20,000 recipients bypass policy.default's super-linear address parser, names decoded."""
    calls: list[str] = []
    original = AddressHeader.parse.__func__  # type: ignore[attr-defined]

    def spy(cls: type[AddressHeader], value: object, kwds: dict[str, Any]) -> None:
        calls.append(str(value)[:20])
        original(cls, value, kwds)

    monkeypatch.setattr(AddressHeader, "parse", classmethod(spy))
    names = ", ".join(f"=?utf-8?q?J=C3=BCrgen_{n}?= <u{n}@example.com>" for n in range(20000))
    parsed = parse(f"From: a@example.com\nTo: {names}\n\nx\n".encode())
    # The long To never went through the slow parser (20,000 addresses take it 15 s); the
    # short From may (or may be read by the plain-ASCII shortcut).
    assert calls in ([], ["a@example.com"])
    assert len(parsed.to) == 20000
    assert parsed.to_text.startswith("Jürgen 0 <u0@example.com>, Jürgen 1 <u1@example.com>")


def _nested(depth: int) -> bytes:
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (n, n) for n in range(depth)
    )
    closing = b"".join(b"\n--b%d--\n" % n for n in reversed(range(depth)))
    head = b"From: a@example.com\nMIME-Version: 1.0\n"
    return head + opening + b"Content-Type: text/plain\n\nin\n" + closing


def test_deep_mime_nesting_is_bounded() -> None:
    """Nesting past 50 levels is cut off with a defect; past the parser's reach, refused."""
    parsed = parse(_nested(200))
    assert "MIME nesting deeper than 50 levels; inner parts ignored" in parsed.defects
    with pytest.raises(UnparseableMessage):
        parse(_nested(3000))
