"""The parsing shortcuts (plain-ASCII headers, single text part) change nothing but speed."""

from __future__ import annotations

import base64
import dataclasses
import pickle
import quopri
import random
from email import policy

import pytest

from konvergo.mailparse import fastheaders, incoming, parse, plain_text

from .conftest import CORPUS_NAMES, read_corpus

# Header values in and just outside the shapes the shortcuts read themselves.
ADDRESS_VALUES = [
    "alice@example.com",
    "Alice Martin <alice@example.com>",
    "Alice   Martin\t<alice@example.com>",
    '"Martin, Alice" <alice@example.com>',
    '" spaced " <alice@example.com>',
    '""<alice@example.com>',
    "<alice@example.com>",
    "a@b.c ,  d@e.f",
    'a@b.c, Bob <bob@x.y>, "C, D" <c@d.e>',
    "a@b.c,",
    "a@b.c,, d@e.f",
    "Mr. X <x@example.com>",
    "x@example.com (comment)",
    "undisclosed-recipients:;",
    "=?utf-8?q?J=C3=BCrgen?= <j@example.com>",
    "Jürgen <j@example.com>",
    "a..b@example.com",
    "<a@[127.0.0.1]>",
    "a@b@c",
    "",
    "   ",
    "Name <a@b.c> trailing",
    '"unclosed <a@b.c>',
    'Esc "q\\"x" <a@b.c>',
    "A <a@b.c>\r\n B <b@c.d>",
    "A\r\n <a@b.c>",
    "UPPER@Example.COM",
]
TEXT_VALUES = [
    "Hello",
    "  spaced   out  \t x ",
    "Re: [ticket #42] =?utf-8?b?w6k=?=",
    "price = 5 ?",
    "a=?b",
    "folded\r\n line",
    "caf\u00e9",
    "",
    "<a@b.c> <d@e.f>",
    "ctl\x01char",
]
ID_VALUES = [
    "<abc@example.com>",
    "<a.b.c@mail.example.com>",
    "<a..b@example.com>",
    "<abc@example.com> ",
    " <abc@example.com>",
    "abc@example.com",
    "<abc@example.com> (comment)",
    "<>",
    "<a b@c>",
]
DATE_VALUES = [
    "Mon, 01 Jan 2024 10:00:00 +0000",
    "Mon, 1 Jan 2024 10:00:00 -0000",
    "1 Jan 24 10:00 EST",
    "2024-01-01T10:00:00",
    "Someday",
    "Mon, 01 Jan 2024 10:00:00",
    "Mon, 31 Feb 2024 10:00:00 +0000",
    "Mon, 01 Jan 99999 10:00:00 +0000",
    "",
]
CONTENT_TYPES = [
    None,
    "text/plain",
    "text/plain; charset=utf-8",
    'TEXT/HTML; charset="ISO-8859-1"; format=flowed',
    "text/plain; charset=utf-8; charset=latin1",
    "text/plain; charset*=utf-8''x",
    "text/plain; charset=x-unknown",
    "text/plain; charset=utf-7",
    "text/plain; (comment) charset=utf-8",
    "text/plain;",
    "text/calendar; method=REQUEST",
    "multipart/alternative; boundary=b",
    "application/octet-stream",
    "text",
]
ENCODINGS = [None, "7bit", "8BIT", "quoted-printable", "base64", "base64 ", "x-uuencode", "binary"]
DISPOSITIONS = [None, None, None, "inline", "attachment; filename=a.txt"]
BODIES = [
    "Plain body.\r\nSecond line.\r\n",
    "Caf\u00e9 cr\u00e8me \u20ac 5\r\n",
    "<p>Hello <b>there</b><script>alert(1)</script></p>\r\n",
    "",
    "no final newline",
]


def _full(raw: bytes) -> incoming.ParsedMessage | str:
    previous = incoming._FAST
    incoming._FAST = False
    try:
        return _outcome(raw)
    finally:
        incoming._FAST = previous


def _outcome(raw: bytes) -> incoming.ParsedMessage | str:
    try:
        return parse(raw)
    except Exception as exc:  # both paths must fail the same way, too
        return f"{type(exc).__name__}: {exc}"


def _encode(body: str, cte: str | None, charset: str) -> bytes:
    data = body.encode(charset, "replace")
    kind = (cte or "").strip().lower()
    if kind == "base64":
        return base64.encodebytes(data)
    if kind == "quoted-printable":
        return quopri.encodestring(data)
    return data


def _message(rng: random.Random) -> bytes:
    lines = [
        f"From: {rng.choice(ADDRESS_VALUES)}",
        f"To: {rng.choice(ADDRESS_VALUES)}",
        f"Subject: {rng.choice(TEXT_VALUES)}",
        f"Date: {rng.choice(DATE_VALUES)}",
    ]
    for name, values in (
        ("Cc", ADDRESS_VALUES),
        ("Reply-To", ADDRESS_VALUES),
        ("Delivered-To", ADDRESS_VALUES),
        ("Sender", ADDRESS_VALUES),
        ("Message-ID", ID_VALUES),
        ("In-Reply-To", ID_VALUES + TEXT_VALUES),
        ("References", ID_VALUES + TEXT_VALUES),
    ):
        if rng.random() < 0.6:
            lines.append(f"{name}: {rng.choice(values)}")
    content_type = rng.choice(CONTENT_TYPES)
    cte = rng.choice(ENCODINGS)
    disposition = rng.choice(DISPOSITIONS)
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
        if rng.random() < 0.05:
            lines.append("Content-Type: text/html")
    if cte is not None:
        lines.append(f"Content-Transfer-Encoding: {cte}")
    if disposition is not None:
        lines.append(f"Content-Disposition: {disposition}")
    rng.shuffle(lines)
    charset = "latin-1" if content_type and "8859" in content_type else "utf-8"
    body = _encode(rng.choice(BODIES), cte, charset)
    eol = rng.choice(["\r\n", "\n"])
    head = eol.join(lines).encode("utf-8")
    if rng.random() < 0.05:
        head += (eol + "not a header line").encode()
    return head + (eol + eol).encode() + body


def test_shortcut_parse_equals_full_parse_on_generated_messages() -> None:
    """Generated messages of every shape parse to equal results with and without shortcuts."""
    rng = random.Random(20241127)
    for _ in range(1500):
        raw = _message(rng)
        assert _outcome(raw) == _full(raw), raw


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_shortcut_parse_equals_full_parse_on_the_corpus(name: str) -> None:
    """Every corpus message parses to an equal result with and without shortcuts."""
    raw = read_corpus(name)
    assert _outcome(raw) == _full(raw)


def test_cheap_header_readings_match_policy_default() -> None:
    """Whatever a cheap reader accepts, policy.default reads the same way without defects."""
    factory = policy.default.header_factory
    for value in ADDRESS_VALUES:
        pairs = fastheaders.addresses(value)
        if pairs is not None:
            header = factory("To", "".join(value.splitlines()))
            assert not header.defects, value
            expected = [(a.display_name, a.addr_spec) for a in header.addresses]
            assert pairs == expected, value
    for value in TEXT_VALUES:
        text = fastheaders.unstructured(value)
        if text is not None:
            header = factory("Subject", text)
            assert (str(header), tuple(header.defects)) == (text, ()), value
    for value in ID_VALUES:
        text = fastheaders.message_id(value)
        if text is not None:
            header = factory("Message-ID", text)
            assert (str(header), tuple(header.defects)) == (text, ()), value
    for value in DATE_VALUES:
        text = fastheaders.date(value)
        if text is not None:
            header = factory("Date", value)
            assert (str(header), tuple(header.defects)) == (text, ()), value


def test_text_only_message_takes_the_shortcut_and_skips_the_html_sanitiser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 10 KB text/plain message is read from its header block and never sees nh3."""
    called: list[str] = []

    def sanitize(html: str) -> str:
        called.append(html)
        return html

    monkeypatch.setattr(incoming, "sanitize_html", sanitize)
    raw = (
        b"From: Sender <s@example.com>\r\nTo: john@example.com\r\nSubject: Hi\r\n"
        b"Message-ID: <x@example.com>\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n\r\n"
        + b"The quick brown fox.\r\n"
        * 450
    )
    assert incoming._read_simple(raw) is not None
    parsed = parse(raw)
    assert parsed.body_text.startswith("The quick brown fox.\nThe quick")
    assert called == []


HEADER_BLOCKS = [
    b"From: a@b.c\r\nSubject: Hi\r\n\r\n",
    b"From: a@b.c\nSubject: Hi\n\n",
    b"Subject: folded\r\n  line\r\n\tand tab\r\nTo: x@y.z\r\n\r\n",
    b"Subject:no space\r\nX-Empty:\r\nX-Spaces:   \r\n\r\n",
    b" continuation first\r\nSubject: x\r\n\r\n",
    b"From sender@example.com Mon Jan  1 00:00:00 2024\r\nSubject: x\r\n\r\n",
    b"Subject: x\r\nFrom nobody\r\n\r\n",
    b"Subject: lone\rcarriage\r\n\r\n",
    b"Subject: x\r\nnot a field\r\n\r\n",
    b": no name\r\n\r\n",
    b"Subject: caf\xc3\xa9\r\n\r\n",
    b"Weird-Name!#$: v\r\nA:B:C\r\n\r\n",
    b"Subject: x\r\n\r\n",
    b"Subject: x\n\r\n",
]


@pytest.mark.parametrize("block", HEADER_BLOCKS)
def test_the_header_block_shortcut_stores_what_the_feed_parser_stores(block: bytes) -> None:
    """Where the shortcut reads a header block itself, it yields the feed parser's fields,
    and it leaves to the parser every block that parser would flag or read differently."""
    shortcut = incoming._header_block(block)
    parsed = incoming._read(block)
    if shortcut is None:
        return
    assert list(shortcut.raw_items()) == list(parsed.raw_items())
    assert not parsed.defects and not parsed.get_payload()
    assert parsed.get_unixfrom() is None


def test_the_header_block_shortcut_reads_the_everyday_shapes() -> None:
    """Plain fields, folded lines and both line endings take the shortcut."""
    for block in (HEADER_BLOCKS[0], HEADER_BLOCKS[1], HEADER_BLOCKS[2], HEADER_BLOCKS[3]):
        assert incoming._header_block(block) is not None
    for block in (HEADER_BLOCKS[4], HEADER_BLOCKS[5], HEADER_BLOCKS[7], HEADER_BLOCKS[10]):
        assert incoming._header_block(block) is None


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_a_parsed_message_comes_back_from_a_parser_process_unchanged(name: str) -> None:
    """What a parser process pickles is what the fetching process gets: equal in every field."""
    outcome = _outcome(read_corpus(name))
    if isinstance(outcome, str):
        pytest.skip("not a message: nothing travels back")
    assert pickle.loads(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)) == outcome


def _left_in_raw(raw: bytes, limit: int) -> bool:
    """Check parse(raw, text_in_raw_max=limit) against parse(raw); whether it left the text."""
    full = _outcome(raw)
    if isinstance(full, str):
        return False
    lean = parse(raw, text_in_raw_max=limit)
    plain_only = full.content_type == "text/plain" and not full.body_html
    if len(raw) <= limit and plain_only and not full.attachments:
        assert lean == dataclasses.replace(full, body_text="", text_in_raw=True), raw
        assert plain_text(raw) == full.body_text
        return True
    assert lean == full, raw
    return False


def test_text_left_in_raw_is_exactly_what_plain_text_gives_back() -> None:
    """Below text_in_raw_max a plain-text-only message comes back without its text, which
    plain_text(raw) gives exactly; every other message parses as it does without the limit."""
    rng = random.Random(20261203)
    left = 0
    for _ in range(1500):
        left += _left_in_raw(_message(rng), rng.choice([0, 200, 1 << 20]))
    for name in CORPUS_NAMES:
        left += _left_in_raw(read_corpus(name), 1 << 30)
    assert left > 100  # the shortcut and the full parse both had their turn
