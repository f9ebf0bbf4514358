"""The original XNovu's template filters, in the sandbox (docs/architecture.md, "Templates of
the original").

`html_to_text`, `markdown_to_html`, `strip_html`, `sanitize_email`, `sanitize_inapp`,
`sanitize_sms`, `extract_subject` and `json` behave as the original documents them, with
maintained libraries doing the work: Ammonia (`nh3`) sanitizes with the original's
allowlists per channel, markdown-it-py renders CommonMark (raw HTML in the markdown is
escaped, unsafe link schemes refused, so its output is safe to print unescaped), and the
standard library's HTML parser reads HTML for `html_to_text`.

The sandbox wraps every filter (shared.templates.sandbox): the render's deadline is checked
before it runs, its input and output are held to TEMPLATE_MAX_OUTPUT_BYTES and its output is
charged to the render's memory budget. A parser's trees and tokens are much larger than its
text, and freed when it returns: so a filter is refused before it starts when its parser's peak
(the input's length times a factor measured on hostile inputs, below) does not fit in what is
left of TEMPLATE_MAX_MEMORY_BYTES. With the default 8 MiB that is about 13 KB of markdown,
85 KB of HTML to sanitize and 500 KB of HTML to read as text. The parsers written in Python
check the render's deadline as they go; Ammonia (Rust) cannot be stopped, and its parser
(html5ever) spends time quadratic in the depth of nested block elements (16 000 nested `<div>`
took 0.8 s), so its input is held to MAX_SANITIZED_TAGS opening tags (about 0.1 s at worst).
HTML these filters return is marked safe in HTML fields (it was built or sanitized here); text
they return is escaped there like any other value.
"""

from __future__ import annotations

import html
import json as jsonlib
from collections.abc import Callable, Iterator
from functools import partial
from html.parser import HTMLParser
from typing import Any

import nh3
from jinja2 import pass_eval_context
from jinja2.nodes import EvalContext
from jinja2.runtime import Undefined
from jinja2.utils import htmlsafe_json_dumps
from markdown_it import MarkdownIt
from markdown_it.rules_block import StateBlock
from markdown_it.rules_inline import StateInline
from markupsafe import Markup

from shared.templates.errors import RenderLimitExceeded
from shared.templates.limits import charge, check_deadline, check_room

# Peak bytes of parser state per input character, measured on hostile inputs of 50 KB: for
# markdown-it-py with tracemalloc (a table row per 6 characters peaked at 608, a list item per
# 4 at 532, a line per 2 at 284), for Ammonia by the process's peak RSS (`<b>` repeated: 63),
# for html_to_text's HTMLParser with tracemalloc (8).
MARKDOWN_WORK_FACTOR = 640
SANITIZE_WORK_FACTOR = 96
HTML_TO_TEXT_WORK_FACTOR = 16
# Opening tags Ammonia is given at most (see above).
MAX_SANITIZED_TAGS = 5_000
# html_to_text feeds the parser this much at a time, checking the deadline in between.
FEED_CHUNK = 16_384

# The original's allowlists (its sanitizeConfig): what email and in-app HTML may keep.
EMAIL_TAGS = frozenset(
    {
        "p", "br", "strong", "b", "em", "i", "u", "span", "div", "h1", "h2", "h3", "h4", "h5",
        "h6", "ul", "ol", "li", "a", "img", "table", "thead", "tbody", "tr", "td", "th",
        "blockquote", "pre", "code", "hr", "header", "footer", "main", "section", "article",
        "aside", "nav", "center", "font",
    }
)  # fmt: skip
_CELL = {"colspan", "rowspan", "width", "height", "style", "align", "valign"}
EMAIL_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title", "target"},
    "img": {"src", "alt", "title", "width", "height", "style"},
    "table": {"border", "cellpadding", "cellspacing", "width", "style"},
    "td": _CELL,
    "th": _CELL,
    "tr": {"style"},
    "div": {"style", "align"},
    "p": {"style", "align"},
    "span": {"style"},
    "font": {"color", "size", "face"},
    "*": {"class", "id"},
}
INAPP_TAGS = frozenset(
    {
        "p", "br", "strong", "b", "em", "i", "span", "div", "h3", "h4", "h5", "h6", "ul", "ol",
        "li", "a", "code", "pre",
    }
)  # fmt: skip
INAPP_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title", "target", "data-external-link"},
    "span": {"class"},
    "div": {"class"},
    "p": {"class"},
    "code": {"class"},
    "pre": {"class"},
}
# Elements whose text goes with them when they are removed (the original's sanitize-html).
_DROPPED_WITH_TEXT = {"script", "style", "textarea", "option", "noscript"}
_HTML_TO_TEXT_BLOCKS = frozenset({"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "br", "hr", "li"})


def _reserve(text: str, what: str, factor: int) -> None:
    """Refuse parsing `text` when its parser's peak would not fit in the render's budget."""
    check_room(f"{what} (parsing {len(text)} characters)", len(text) * factor)
    check_deadline()


def _reserve_sanitizing(text: str, what: str) -> None:
    _reserve(text, what, SANITIZE_WORK_FACTOR)
    tags = text.count("<") - text.count("</")
    if tags > MAX_SANITIZED_TAGS:
        raise RenderLimitExceeded(f"{what} takes at most {MAX_SANITIZED_TAGS} HTML tags")


def _text(value: Any) -> str:
    """The filter's input as text; an undefined value is "" (or fails, when strict)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _html(eval_ctx: EvalContext, value: str) -> str:
    """HTML built or sanitized here: safe where it is printed into HTML."""
    return Markup(value) if eval_ctx.autoescape else value


# -- sanitizers --------------------------------------------------------------------------


def _email_attribute(tag: str, attribute: str, value: str) -> str | None:
    # The original blocks CSS expressions, and data: URLs except in an image's src.
    if attribute == "style" and "expression" in value.lower():
        return None
    if attribute == "href" and value.strip().lower().startswith("data:"):
        return None
    return value


def _inapp_attribute(tag: str, attribute: str, value: str) -> str | None:
    return value


def _sanitizer(
    tags: frozenset[str],
    attributes: dict[str, set[str]],
    schemes: set[str],
    tag_values: dict[str, dict[str, str]],
    attribute_filter: Callable[[str, str, str], str | None],
) -> Callable[[str], str]:
    return partial(
        nh3.clean,
        tags=set(tags),
        attributes=attributes,
        url_schemes=schemes,
        set_tag_attribute_values=tag_values,
        attribute_filter=attribute_filter,
        clean_content_tags=_DROPPED_WITH_TEXT,
        link_rel="noopener noreferrer",
    )


_clean_email = _sanitizer(
    EMAIL_TAGS,
    EMAIL_ATTRIBUTES,
    {"http", "https", "mailto", "tel", "data"},
    {"a": {"target": "_blank"}},
    _email_attribute,
)
_clean_inapp = _sanitizer(
    INAPP_TAGS,
    INAPP_ATTRIBUTES,
    {"http", "https", "mailto"},
    {"a": {"target": "_blank", "data-external-link": "true"}},
    _inapp_attribute,
)


def _plain_text(value: Any, what: str) -> str:
    text = _text(value)
    _reserve_sanitizing(text, what)
    cleaned = nh3.clean(text, tags=set(), attributes={}, clean_content_tags=_DROPPED_WITH_TEXT)
    charge(cleaned, what)
    return html.unescape(cleaned).replace("\xa0", " ")


@pass_eval_context
def sanitize_email(eval_ctx: EvalContext, value: Any) -> str:
    """HTML with only what email may show (the original's allowlist)."""
    text = _text(value)
    _reserve_sanitizing(text, "the sanitize_email filter")
    return _html(eval_ctx, _clean_email(text))


@pass_eval_context
def sanitize_inapp(eval_ctx: EvalContext, value: Any) -> str:
    """HTML with only what an in-app message may show (no styles, links open outside)."""
    text = _text(value)
    _reserve_sanitizing(text, "the sanitize_inapp filter")
    return _html(eval_ctx, _clean_inapp(text))


def sanitize_sms(value: Any) -> str:
    """Text only: every tag removed (scripts and styles with their text), entities decoded."""
    return _plain_text(value, "the sanitize_sms filter")


def strip_html(value: Any) -> str:
    """Every tag removed, as `sanitize_sms` (the original's alias)."""
    return _plain_text(value, "the strip_html filter")


# -- html_to_text ------------------------------------------------------------------------


class _TextParser(HTMLParser):
    """The original's html_to_text: block elements break lines, links keep their address,
    scripts and styles go, entities are decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.hidden += 1
        elif tag in _HTML_TO_TEXT_BLOCKS:
            self.parts.append("\n")
        elif tag == "a":
            self.links.append(dict(attrs).get("href"))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_TO_TEXT_BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.hidden = max(self.hidden - 1, 0)
        elif tag in _HTML_TO_TEXT_BLOCKS:
            self.parts.append("\n")
        elif tag == "a" and self.links:
            href = self.links.pop()
            if href:
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def _collapse_blank_lines(text: str) -> Iterator[str]:
    """Runs of two or more blank lines become one (the original's `\\n\\s*\\n\\s*\\n` →
    `\\n\\n`), in one pass: a regular expression of that shape backtracks quadratically."""
    blank: list[str] = []
    for line in text.split("\n"):
        if line.strip():
            if len(blank) == 1:
                yield blank[0]
            elif blank:
                yield ""
            blank = []
            yield line
        else:
            blank.append(line)
    if len(blank) == 1:
        yield blank[0]
    elif blank:
        yield ""


def html_to_text(value: Any) -> str:
    """Plain text of HTML, its structure kept as line breaks (the original's html_to_text)."""
    text = _text(value)
    _reserve(text, "the html_to_text filter", HTML_TO_TEXT_WORK_FACTOR)
    parser = _TextParser()
    for start in range(0, len(text), FEED_CHUNK):
        parser.feed(text[start : start + FEED_CHUNK])
        check_deadline()
    parser.close()
    out = "".join(parser.parts).replace("\xa0", " ")
    return "\n".join(_collapse_blank_lines(out)).strip()


# -- markdown_to_html --------------------------------------------------------------------


def _deadline_block(state: StateBlock, start: int, end: int, silent: bool) -> bool:
    check_deadline()
    return False


def _deadline_inline(state: StateInline, silent: bool) -> bool:
    check_deadline()
    return False


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    # Rules that match nothing and check the render's deadline at each block and inline token.
    md.block.ruler.before("table", "xnovu_deadline", _deadline_block)
    md.inline.ruler.before("text", "xnovu_deadline", _deadline_inline)
    return md


_md = _markdown()


@pass_eval_context
def markdown_to_html(eval_ctx: EvalContext, value: Any) -> str:
    """CommonMark (with tables and strikethrough) as HTML; HTML inside the markdown is shown
    as text, and links of unsafe schemes (javascript:) are left unlinked."""
    text = _text(value)
    _reserve(text, "the markdown_to_html filter", MARKDOWN_WORK_FACTOR)
    return _html(eval_ctx, _md.render(text).rstrip("\n"))


# -- the rest ------------------------------------------------------------------------------


def extract_subject(value: Any) -> dict[str, str]:
    """`{subject, body}` of text that starts with a `Subject: ...` line (else subject "")."""
    text = _text(value)
    head, newline, rest = text.partition("\n")
    if head[:8].lower() == "subject:" and head[8:].strip():
        return {"subject": head[8:].strip(), "body": rest.strip() if newline else ""}
    return {"subject": "", "body": text}


@pass_eval_context
def json_filter(eval_ctx: EvalContext, value: Any) -> str:
    """Compact JSON, as JavaScript's JSON.stringify writes it; "{}" for what has none. In an
    HTML field `<`, `>`, `&` and `'` are written as \\u escapes, safe inside a <script>."""
    if isinstance(value, Undefined):
        return str(value)  # "" for a blank undefined; a strict one fails here
    dumps = partial(jsonlib.dumps, separators=(",", ":"), ensure_ascii=False)
    try:
        if eval_ctx.autoescape:
            return htmlsafe_json_dumps(value, dumps=dumps)
        return dumps(value)
    except (TypeError, ValueError, RecursionError):
        return "{}"


ORIGINAL_FILTERS: dict[str, Callable[..., Any]] = {
    "html_to_text": html_to_text,
    "markdown_to_html": markdown_to_html,
    "strip_html": strip_html,
    "sanitize_email": sanitize_email,
    "sanitize_inapp": sanitize_inapp,
    "sanitize_sms": sanitize_sms,
    "extract_subject": extract_subject,
    "json": json_filter,
}
