"""Text helpers for mail intake: header values and file names decoded for people, HTML as plain text. Pure."""

from __future__ import annotations

import re
from email.header import decode_header, make_header
from email.message import Message
from html.parser import HTMLParser

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def clean(text: str) -> str:
    """Printable text: raw 8-bit bytes (kept as surrogates by the parser) read as UTF-8 or Latin-1;
    any other lone surrogate (an encoded-word or a charset that decodes to one) becomes U+FFFD, so
    the text can always be stored, logged and set on a page (contract section 9: a Subject with a
    lone surrogate is accepted with the bad character replaced, not answered 451)."""
    if _SURROGATE.search(text):
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:   # a surrogate that stands for no raw byte: leave the rest as is
            pass
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
        text = _SURROGATE.sub("\ufffd", text)
    return _CONTROL.sub("", text)


def decode_words(text: str) -> str:
    if not _ENCODED_WORD.search(text):
        return text
    try:
        return str(make_header(decode_header(text)))
    except (LookupError, ValueError, UnicodeError):
        return text


def header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except (ValueError, IndexError, TypeError, LookupError, AttributeError):  # malformed header values
        value = None
    if value is None:
        try:
            raws = [v for k, v in msg.raw_items() if k.lower() == name.lower()]
        except AttributeError:
            raws = []
        value = raws[0] if raws else ""
    return " ".join(clean(decode_words(str(value))).split())


def safe_name(name: str) -> str:
    """A display name: decoded, no folders, no control characters, at most 120 characters."""
    name = clean(decode_words(name)).replace("\\", "/")
    name = name.rsplit("/", 1)[-1].strip().lstrip(".")
    name = " ".join(name.split())
    if len(name) > 120:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 110] + dot + ext[:8]) if dot and len(ext) <= 8 else name[:120]
    return name


class _HtmlText(HTMLParser):
    _BLOCK = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table",
                        "blockquote", "pre", "hr", "ul", "ol", "dd", "dt", "section", "article"})
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self.hidden += 1
        elif tag in self._BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self._BLOCK and tag != "br":
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.out.append(data)


def html_to_text(html: str) -> str:
    parser = _HtmlText()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):  # html.parser gives up on some broken markup
        pass
    lines = [" ".join(line.split()) for line in "".join(parser.out).replace("\xa0", " ").splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
