"""The HTML sanitiser and the HTML-to-text derivation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from konvergo.mailparse import html_to_text, parse, sanitize_html

Loader = Callable[[str], bytes]

# Every construct of html_only_hostile.eml that could run code, load a resource, submit
# data or navigate; none may survive.
DANGEROUS = [
    "<script",
    "document.cookie",
    "onload",
    "onerror",
    "onclick",
    "javascript",
    "vbscript",
    "data:text",
    "<iframe",
    "<object",
    "<embed",
    "<svg",
    "<math",
    "<form",
    "<input",
    "<button",
    "formaction",
    "<meta",
    "<base",
    "<link",
    "<style",
    "<video",
    "poster",
    "@import",
    "url(",
    "expression(",
    "behavior",
    "position",
    "srcset",
    "background=",
    "ping=",
    "tracker.example",
    "evil.example",
    'href="/admin',
    "id=",
    "name=",
    "class=",
    "<!--",
]


@pytest.fixture
def hostile_html(eml: Loader) -> str:
    """Return the sanitised body of the hostile HTML-only corpus message."""
    return parse(eml("html_only_hostile.eml")).body_html


@pytest.mark.parametrize("construct", DANGEROUS)
def test_sanitizer_removes_dangerous_construct(hostile_html: str, construct: str) -> None:
    """No script, handler, dangerous URL, remote resource or form survives sanitising."""
    assert construct not in hostile_html.lower()


def test_sanitizer_keeps_safe_content(hostile_html: str) -> None:
    """Text, safe links, cid: images and harmless inline CSS are kept."""
    assert "<h1>Congratulations!</h1>" in hostile_html
    assert '<p style="color:red">Claim your prize</p>' in hostile_html
    assert '<img src="cid:logo@prize.example" alt="logo">' in hostile_html
    assert 'href="https://prize.example/claim"' in hostile_html
    assert 'href="mailto:claims@prize.example"' in hostile_html
    assert "<td>cell</td>" in hostile_html


def test_remote_images_lose_their_source_but_keep_alt_text() -> None:
    """A remote image is removed (no src left, nothing fetched); its alt text stays."""
    cleaned = sanitize_html('<img src="https://t.example/p.gif" alt="Logo" width="1">')
    assert "src" not in cleaned and 'alt="Logo"' in cleaned and cleaned.startswith("<img")


def test_links_open_in_a_new_context_without_referrer() -> None:
    """Kept links get target=_blank and rel=noopener noreferrer nofollow."""
    cleaned = sanitize_html('<a href="https://example.com/" target="_self" rel="opener">x</a>')
    assert cleaned == (
        '<a href="https://example.com/" target="_blank" rel="noopener noreferrer nofollow">x</a>'
    )


@pytest.mark.parametrize(
    "html",
    [
        '<a href="java\nscript:alert(1)">x</a>',
        '<a href="&#106;avascript:alert(1)">x</a>',
        '<a href="javascript&colon;alert(1)">x</a>',
        '<a href="  JAVASCRIPT:alert(1)">x</a>',
        '<a href="data:text/html,<script>alert(1)</script>">x</a>',
        '<a href="cid:part@x">x</a>',
        '<a href="//evil.example/">x</a>',
        '<a href="?next=/admin">x</a>',
    ],
)
def test_obfuscated_and_non_web_links_lose_their_href(html: str) -> None:
    """Encoded, whitespace-split, data:, cid:, protocol-relative and relative hrefs go."""
    assert "href" not in sanitize_html(html)


@pytest.mark.parametrize(
    "src",
    [
        "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=",
        "data:text/html,x",
        "http://example.com/a.png",
        "//example.com/a.png",
        "a.png",
    ],
)
def test_images_load_only_from_cid_or_raster_data(src: str) -> None:
    """Images keep a src only for cid: parts and inline PNG/GIF/JPEG/WebP data."""
    assert "src" not in sanitize_html(f'<img src="{src}">')


def test_inline_raster_data_images_are_kept() -> None:
    """A data:image/png source is kept: it loads nothing from the network."""
    html = '<img src="data:image/png;base64,iVBORw0KGgo=">'
    assert sanitize_html(html) == html


def test_css_keeps_only_properties_that_cannot_load_anything() -> None:
    """Style attributes keep presentational properties and drop anything taking url()."""
    cleaned = sanitize_html(
        '<div style="color:#333;font-weight:bold;background:url(https://t.example/x);'
        'list-style-image:url(x.png);cursor:url(x.cur),auto;content:url(x)">x</div>'
    )
    assert cleaned == '<div style="color:#333;font-weight:bold">x</div>'


def test_outlook_markup_is_reduced_to_its_text_structure(eml: Loader) -> None:
    """Word/Outlook HTML loses its head, classes and o:p tags but keeps its paragraphs."""
    html = parse(eml("outlook_reply.eml")).body_html
    assert html.startswith("<div>\n<p>Hej,</p>")
    assert "MsoNormal" not in html and "o:p" not in html


@pytest.mark.parametrize(
    "style",
    [
        "width: expression(alert(1))",
        "color: red; width: \\65xpression(alert(1))",
        "color: red; /* */ background-color: blue",
        "-moz-binding: url(x.xml#xss); color: red",
    ],
)
def test_css_with_executable_or_obfuscated_values_is_dropped(style: str) -> None:
    """expression(), bindings, CSS escapes and comments never reach the output."""
    cleaned = sanitize_html(f'<div style="{style}">x</div>')
    assert not any(bad in cleaned for bad in ("expression", "binding", "\\", "/*", "url("))


def test_empty_html_stays_empty() -> None:
    """Empty input gives empty output for both the sanitiser and the text derivation."""
    assert sanitize_html("") == "" and html_to_text("") == ""


def test_html_to_text_lays_out_blocks_lists_and_cells() -> None:
    """Paragraphs get a blank line, items and rows a line break, <pre> keeps its spaces."""
    html = (
        "<p>Hello <b>world</b></p><ul><li>one</li><li>two</li></ul>"
        "<div>a<br>b</div><table><tr><td>x</td><td>y</td></tr></table>"
        "<pre>  keep\n  this</pre><script>hidden()</script>"
    )
    assert html_to_text(html) == "Hello world\n\n- one\n- two\n\na\nb\n\nx\ty\n\n  keep\n  this"


def test_html_to_text_decodes_entities_and_collapses_source_whitespace() -> None:
    """Character references decode and source line breaks inside a paragraph become spaces."""
    assert html_to_text("<p>Caf&eacute;\n   &amp;   more</p>") == "Café & more"
