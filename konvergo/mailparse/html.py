"""HTML of incoming mail: sanitising with nh3 and deriving a text version.

Sanitiser policy (an allow-list; anything not listed is removed):

* **Tags**: text formatting, lists, tables, links and images (:data:`ALLOWED_TAGS`).
  ``script``, ``style``, ``title``, ``noscript``, ``template``, ``iframe``, ``object``,
  ``embed`` and ``svg``/``math`` are removed *with their content*; other unknown tags
  (``form``, ``input``, ``link``, ``meta``, ``base``, ``video`` ...) are removed, their text
  kept.
* **Attributes**: presentational ones only (:data:`ALLOWED_ATTRIBUTES`); every ``on*``
  event handler, ``id``/``name``/``class`` (no DOM clobbering, no clash with the app's CSS),
  ``srcset``, ``background``, ``ping``, ``formaction`` are dropped.
* **Links**: ``href`` keeps only ``http``, ``https``, ``mailto`` and ``tel`` URLs; relative
  URLs (which would point into the ERP itself), ``javascript:``, ``data:``, ``vbscript:`` are
  dropped. Every link gets ``target="_blank" rel="noopener noreferrer nofollow"``.
* **Images**: ``src`` keeps only ``cid:`` references (inline parts of the same message) and
  ``data:image/(png|gif|jpeg|webp)``. **Remote images are removed**: the ``src`` of an image
  on ``http(s)`` is dropped, so opening the mail fetches nothing (no tracking pixel, no IP
  leak); the ``alt`` text stays.
* **CSS**: ``<style>`` blocks are removed; ``style`` attributes keep only the properties in
  :data:`ALLOWED_CSS_PROPERTIES`, none of which accept ``url()``, so CSS cannot load
  anything either.
* Comments are removed (conditional comments are an old IE script vector).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import nh3

ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "a", "abbr", "acronym", "address", "b", "bdi", "bdo", "big", "blockquote", "br",
        "caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "details",
        "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "font", "h1", "h2", "h3",
        "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre",
        "q", "s", "samp", "small", "span", "strike", "strong", "sub", "summary", "sup",
        "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt", "u", "ul",
        "var", "wbr",
    }
)  # fmt: skip

# Removed together with everything inside them: their content is code or chrome, not text.
CONTENT_REMOVED_TAGS: frozenset[str] = frozenset(
    {
        "script", "style", "title", "noscript", "template", "iframe", "object", "embed",
        "applet", "noembed", "noframes", "xmp", "svg", "math", "head",
    }
)  # fmt: skip

ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"style", "title", "dir", "lang", "align", "valign"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height", "border"},
    "table": {"width", "height", "border", "cellpadding", "cellspacing", "bgcolor"},
    "tr": {"bgcolor", "height"},
    "td": {"width", "height", "colspan", "rowspan", "bgcolor", "nowrap"},
    "th": {"width", "height", "colspan", "rowspan", "bgcolor", "nowrap", "scope"},
    "col": {"span", "width"},
    "colgroup": {"span", "width"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type", "reversed"},
    "ul": {"type"},
    "li": {"value"},
    "blockquote": {"cite"},
    "q": {"cite"},
    "time": {"datetime"},
}

# No property here accepts url(), image-set() or similar: CSS must not fetch anything.
ALLOWED_CSS_PROPERTIES: frozenset[str] = frozenset(
    {
        "color", "background-color", "font", "font-family", "font-size", "font-style",
        "font-weight", "font-variant", "text-align", "text-decoration", "text-indent",
        "text-transform", "line-height", "letter-spacing", "word-spacing", "white-space",
        "vertical-align", "direction", "margin", "margin-top", "margin-right",
        "margin-bottom", "margin-left", "padding", "padding-top", "padding-right",
        "padding-bottom", "padding-left", "border", "border-top", "border-right",
        "border-bottom", "border-left", "border-color", "border-style", "border-width",
        "border-collapse", "border-spacing", "border-radius", "width", "height",
        "max-width", "min-width", "max-height", "min-height", "list-style-type",
        "table-layout", "text-overflow", "word-break", "word-wrap", "overflow-wrap",
    }
)  # fmt: skip

# The url schemes nh3 lets through at all; the per-attribute filter below narrows them.
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}
_LINK_SCHEMES = ("http:", "https:", "mailto:", "tel:")
_INLINE_IMAGE = re.compile(r"^(cid:|data:image/(png|gif|jpeg|webp)[;,])", re.IGNORECASE)
# Browsers ignore ASCII tab and newline inside URLs ("java\tscript:"); compare without them.
_URL_NOISE = re.compile(r"[\x00-\x20]")


# Values that load or execute something, whatever property they are given to.
_CSS_FORBIDDEN = re.compile(
    r"url\(|image-set\(|image\(|element\(|expression\(|-moz-binding|behavior|javascript:",
    re.IGNORECASE,
)


def _filter_style(value: str) -> str | None:
    # Escapes and comments can hide a forbidden token from the check below: drop it all.
    if "\\" in value or "/*" in value:
        return None
    kept = [decl for decl in value.split(";") if decl.strip() and not _CSS_FORBIDDEN.search(decl)]
    return ";".join(kept) or None


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "style":
        # nh3 keeps only the allowed property names; this removes dangerous values of them.
        return _filter_style(value)
    if attribute == "href":
        url = _URL_NOISE.sub("", value).lower()
        return value if url.startswith(_LINK_SCHEMES) else None
    if attribute == "src":
        url = _URL_NOISE.sub("", value)
        return value if _INLINE_IMAGE.match(url) else None
    return value


_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags=set(CONTENT_REMOVED_TAGS),
    attributes=ALLOWED_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    strip_comments=True,
    link_rel="noopener noreferrer nofollow",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    url_schemes=_URL_SCHEMES,
    url_relative="deny",
    filter_style_properties=set(ALLOWED_CSS_PROPERTIES),
)


def sanitize_html(html: str) -> str:
    """Return ``html`` reduced to the allow-listed tags, attributes, URLs and CSS above."""
    if not html:
        return ""
    # Removed <head> content leaves blank lines behind; they carry nothing.
    return _CLEANER.clean(html).strip()


# Paragraph-like blocks are separated by a blank line, line-like ones by a line break.
_PARAGRAPH_TAGS = frozenset(
    {
        "address", "blockquote", "caption", "center", "dl", "figure", "h1", "h2", "h3",
        "h4", "h5", "h6", "ol", "p", "pre", "table", "ul",
    }
)  # fmt: skip
_LINE_TAGS = frozenset({"br", "dd", "div", "dt", "figcaption", "hr", "li", "tr"})
_SKIPPED_TAGS = frozenset(CONTENT_REMOVED_TAGS)


class _TextExtractor(HTMLParser):
    """Collect the visible text of an HTML document, one line per block element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
            return
        if tag == "pre":
            self._pre_depth += 1
        if tag in _PARAGRAPH_TAGS:
            self._break("\n\n")
        elif tag in _LINE_TAGS:
            self._break("\n")
        if tag == "li":
            self.chunks.append("- ")
        elif tag in {"td", "th"} and not self._at_line_start():
            self.chunks.append("\t")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"br", "hr"}:
            self._break("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
        if tag in _PARAGRAPH_TAGS:
            self._break("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._pre_depth:
            self.chunks.append(data)
            return
        # Outside <pre>, source line breaks and runs of spaces are not visible, nor is a
        # space at the start of a rendered line.
        data = re.sub(r"\s+", " ", data)
        if self._at_line_start():
            data = data.lstrip(" ")
        if data:
            self.chunks.append(data)

    def _at_line_start(self) -> bool:
        return not self.chunks or self.chunks[-1].endswith(("\n", "\t"))

    def _break(self, newlines: str) -> None:
        # Trailing spaces before a line break are invisible; <pre> content keeps its own.
        if self.chunks and not self._pre_depth:
            self.chunks[-1] = self.chunks[-1].rstrip(" ")
        self.chunks.append(newlines)


def html_to_text(html: str) -> str:
    """Return the readable text of ``html``: block elements on their own lines, no markup."""
    if not html:
        return ""
    extractor = _TextExtractor()
    try:
        extractor.feed(html)
        extractor.close()
    except Exception:  # text derivation is best effort and must not fail intake
        # HTMLParser is lenient, but a derived text body is not worth losing a message for.
        return re.sub(r"<[^>]*>", " ", html).strip()
    # Collapse the blank lines nested blocks produce into at most one.
    return re.sub(r"\n{3,}", "\n\n", "".join(extractor.chunks)).strip()
