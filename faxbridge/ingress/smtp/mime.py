"""A mail message → what to fax: an ordered list of parts, the parts skipped (and why), the parts
refused (naming them), and the cover-page text. Pure: a parsed message in, values out; no I/O.

What real clients send, and what is taken from it (contract section 3):

- Attachments are recognised by their bytes (``documents.sniff``), not their Content-Type: Outlook
  and Gmail send PDFs as ``application/octet-stream``, Apple Mail sends them ``inline`` (often inside
  the HTML branch of a ``multipart/alternative``), some PDFs carry junk before ``%PDF``.
- Body text: the first ``text/plain`` alternative (the text of the HTML alternative, tags stripped
  with ``html.parser``, when there is no plain one). Text parts with a file name, or marked
  ``attachment``, are attachments and are faxed as text pages.
- Images the HTML body shows by ``cid:`` (signature logos) are skipped and listed. So are digital
  signatures (S/MIME, PGP). Everything else that is not faxable refuses the whole message
  (554 5.6.1 naming the part): winmail.dat (TNEF), Office files, archives, BinHex, a part that says
  it is a PDF but holds no PDF, an empty attachment.
- A forwarded message (``message/rfc822``) contributes its attachments, not its text.
- Names (RFC 2231 and RFC 2047, also the common illegal encoded-word inside quotes) are decoded
  for display only and reduced to a base name: a part's name is never used as a path.
"""

from __future__ import annotations

import binascii
import email
import functools
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email import policy as email_policy
from email.headerregistry import BaseHeader, UnstructuredHeader
from email.message import EmailMessage, Message
from urllib.parse import unquote

from faxbridge.documents import NO_CONVERTER, describe, office_kind, sniff
from faxbridge.ingress.smtp.mime_slim import STASH_HEADER, Raw, slim
from faxbridge.ingress.smtp.mime_text import clean, header, html_to_text, safe_name

HEAD_SIZE = 8192
FAXABLE = "only PDF, TIFF, JPEG, PNG, GIF and plain text can be faxed"

TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
SIGNATURE_TYPES = frozenset({"application/pkcs7-signature", "application/x-pkcs7-signature",
                             "application/pgp-signature"})
REPORT_TYPES = frozenset({"message/delivery-status", "message/disposition-notification",
                          "text/rfc822-headers", "message/feedback-report"})

SKIP_INLINE_IMAGE = "an image the mail's HTML shows inline (such as a signature logo); not faxed"
SKIP_SIGNATURE = "a digital signature; not faxed"
SKIP_REPORT = "a delivery report part; not faxed"


@dataclass(frozen=True, slots=True)
class Part:
    """One thing to fax, in the message's order."""

    name: str       # for people only (never a path)
    data: bytes
    kind: str       # "pdf" | "jpeg" | "png" | "gif" | "tiff" | "text"


@dataclass(frozen=True, slots=True)
class Skipped:
    name: str
    why: str


@dataclass(frozen=True, slots=True)
class Refusal:
    name: str
    why: str        # a sentence naming the part


@dataclass(frozen=True, slots=True)
class Headers:
    from_: str = ""
    subject: str = ""
    date: str = ""
    message_id: str = ""
    reply_to: str = ""
    auto_submitted: str = ""
    precedence: str = ""
    list_id: str = ""
    return_path: str | None = None
    content_type: str = ""
    fax: tuple[tuple[str, str], ...] = ()      # the X-Fax-* headers (options, contract section 11), as written


@dataclass(frozen=True, slots=True)
class MailContent:
    headers: Headers
    body: str
    parts: list[Part] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


class _OncePolicy(email_policy.EmailPolicy):
    """``policy.default``, except that a header value is parsed once, not at every look, and a value
    the stdlib's header parser cannot read does not raise.

    ``policy.default`` parses a header (its slow, pure-Python header parser) each time it is read,
    and finding out what a part is reads ``Content-Type`` a dozen times. The parse depends on the
    name and value only and gives an immutable header object, so the result is kept (a bounded
    cache, shared by threads: ``lru_cache`` is thread-safe) and the answers are those of
    ``policy.default`` itself.

    That parser raises on some malformed values (``IndexError`` for a cut
    ``Content-Disposition: attachment; filename*``, and others). Such a header is kept as an
    unstructured header holding its raw value (see :func:`_lenient`): the legacy ``Message``
    methods we use (``get_content_type``, ``get_filename``, ``get_param``...) read it as a string,
    so the mail still gets its proper answer instead of failing as a whole.
    """

    def header_fetch_parse(self, name: str, value: str) -> str:
        if hasattr(value, "name"):
            return value
        plain = _plain(name, value)
        if plain is not None:
            return plain
        if len(value) > PARSED_VALUE_MAX:
            raw = _unfolded(value)
            return _COMMENT.sub(" ", raw) if name.lower().startswith("content-") else raw
        if len(value) > _CACHED_VALUE_MAX:
            return _parsed_or_lenient(name, value)
        return _parsed_header(name, value)


_CACHED_VALUE_MAX = 998   # RFC 5322's line limit: longer values are parsed each time, not kept
# Longer header values are not given to the stdlib's header parser at all: it is pure Python and
# quadratic on some input (a 400 KB comment in Content-Type took 119 s of CPU, a 400 KB Subject 8 s).
# They are kept as their raw text, which every legacy ``Message`` method we use reads as a string.
PARSED_VALUE_MAX = 4096


_COMMENT = re.compile(r"\([^()]*\)")     # an RFC 5322 comment (not nested): what the legacy methods do not skip

# Values the stdlib's header parser has nothing to do for: a MIME type (or disposition) and plain
# parameters (no RFC 2231 "*", no encoded word, no comment, no backslash, quoted strings of printable
# ASCII without quotes, each name once), our own stash marker, a plain Message-ID. Every legacy
# ``Message`` method we use (``get_content_type``, ``get_param``, ``get_filename``, ``get_boundary``,
# ``get_content_charset``, ``get_content_disposition``) answers on the raw text what it answers on the
# parsed header (``tests/ingress/test_mime.py`` holds the two to the same answers), and a Message-ID
# like this is its own parse. Parsing them is most of the parser's time per mail: a new file name
# in every Content-Type and Content-Disposition, which no cache can keep.
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+"
_PARAMS = r"(?:[ \t]*;[ \t]*[A-Za-z0-9_.-]+=(?:\"[ !#-\[\]-~]*\"|[A-Za-z0-9!#$+.^_`{|}~-]+))*[ \t]*"
_PARAM_NAME = re.compile(r";[ \t]*([A-Za-z0-9_.-]+)=")
_QUOTED = re.compile(r'"[^"]*"')
_PLAIN = {
    "content-type": re.compile(_TOKEN + "/" + _TOKEN + _PARAMS),
    "content-disposition": re.compile(_TOKEN + _PARAMS),
    STASH_HEADER.lower(): re.compile(r"[0-9a-f]+-[0-9]+"),
    "message-id": re.compile(r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+>"),
}


def _plain(name: str, value: str) -> str | None:
    """The unfolded value when it is one the parser would only give back (see ``_PLAIN``); else None."""
    shape = _PLAIN.get(name.lower())
    if shape is None or len(value) > _CACHED_VALUE_MAX:
        return None
    flat = _unfolded(value)
    if "=?" in flat or not shape.fullmatch(flat):
        return None
    if ";" in flat:
        names = [n.lower() for n in _PARAM_NAME.findall(_QUOTED.sub('""', flat))]
        if len(names) != len(set(names)):
            return None
    return flat


def _unfolded(value: str) -> str:
    return value.replace("\r", "").replace("\n", "")


class _LenientHeader(UnstructuredHeader, BaseHeader):
    """A header kept as its raw text (the stdlib could not parse it as its structured kind)."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lenient(name: str, value: str) -> str:
    """The raw value as an unstructured header; if even that fails, the raw value as a string
    (lone surrogates that are no raw byte replaced, so it can always be encoded)."""
    flat = _unfolded(value)
    try:
        return _LenientHeader(name, flat)
    except Exception:   # the unstructured parser too (never seen): plain text is all we need
        return _SURROGATE.sub("\ufffd", flat)


def _parsed_or_lenient(name: str, value: str) -> str:
    try:
        return email_policy.default.header_fetch_parse(name, value)  # type: ignore[no-any-return]
    except Exception:   # the stdlib's header parser fails on some malformed values (IndexError...)
        if hasattr(value, "name"):
            return value
        return _lenient(name, value)


@functools.lru_cache(maxsize=2048)
def _parsed_header(name: str, value: str) -> str:
    return _parsed_or_lenient(name, value)


PARSE_POLICY = _OncePolicy()


def parse(raw: bytes) -> EmailMessage:
    """The stdlib parser with ``policy.default`` (it never raises on malformed input; defects are noted)."""
    msg = email.message_from_bytes(raw, policy=PARSE_POLICY)
    assert isinstance(msg, EmailMessage)
    return msg


def parse_fast(raw: Raw) -> tuple[EmailMessage, dict[str, bytes]]:
    """``parse`` with large base64 bodies cut out first (``mime_slim``); hand both to ``extract``."""
    slimmed, stash = slim(raw)
    return parse(slimmed), stash


_CID = re.compile(r"""cid:([^"'\s>)]+)""", re.IGNORECASE)


def _text_of(part: Message, stash: Mapping[str, bytes] | None = None) -> str:
    data = _bytes_of(part, stash)
    charset = part.get_content_charset() or "utf-8"
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:
        text = data.decode("utf-8", errors="replace")
    return re.sub(r"\r+\n", "\n", clean(text)).replace("\r", "\n")


def _bytes_of(part: Message, stash: Mapping[str, bytes] | None = None) -> bytes:
    if stash:
        key = part.get(STASH_HEADER)
        if key is not None and str(key) in stash:
            return stash[str(key)]
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError):
        return b""
    return payload if isinstance(payload, bytes) else b""


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _leaves(part: Message) -> Iterator[Message]:
    if part.is_multipart():
        for child in _children(part):
            yield from _leaves(child)
    else:
        yield part


def _content_id(part: Message) -> str:
    return header(part, "Content-ID").strip().strip("<>").strip().lower()


# --- extraction -----------------------------------------------------------------------------------------


class _Walker:
    def __init__(self, cids: frozenset[str], stash: Mapping[str, bytes], *, office: bool = False) -> None:
        self.cids = cids
        self.office = office          # documents.office: Office documents are converted, so taken
        self.stash = stash
        self.plain: list[str] = []
        self.html: list[str] = []
        self.parts: list[Part] = []
        self.skipped: list[Skipped] = []
        self.refusals: list[Refusal] = []
        self.count = 0

    def walk(self, part: Message, body: bool) -> None:
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            for inner in _children(part):
                self.walk(inner, body=False)   # a forwarded message: its attachments, not its text
            return
        if not part.is_multipart():
            self.leaf(part, body)
            return
        children = _children(part)
        if ctype == "multipart/alternative" and children:
            plain = next((i for i, c in enumerate(children)
                          if any(_is_body_text(leaf) and leaf.get_content_type() == "text/plain"
                                 for leaf in _leaves(c))), None)
            chosen = plain if plain is not None else len(children) - 1
            for index, child in enumerate(children):
                self.walk(child, body=body and index == chosen)
            return
        if ctype == "multipart/signed" and children:
            self.walk(children[0], body)
            for child in children[1:]:
                self.leaf(child, body=False)
            return
        for child in children:
            self.walk(child, body)

    def _name(self, part: Message, index: int) -> str:
        try:
            raw = part.get_filename() or part.get_param("name") or ""
        except (ValueError, TypeError, LookupError, IndexError):
            raw = ""
        name = safe_name(raw if isinstance(raw, str) else "")
        return name or f"attachment {index} ({part.get_content_type()[:80]})"

    def leaf(self, part: Message, body: bool) -> None:
        ctype = part.get_content_type()
        disposition = part.get_content_disposition()
        try:
            has_name = bool(part.get_filename())
        except (ValueError, TypeError, LookupError, IndexError):
            has_name = False
        if ctype in ("text/plain", "text/html") and not has_name and disposition != "attachment":
            if body:
                (self.plain if ctype == "text/plain" else self.html).append(_text_of(part, self.stash))
            return
        self.count += 1
        name = self._name(part, self.count)
        if ctype in SIGNATURE_TYPES:
            self.skipped.append(Skipped(name, SKIP_SIGNATURE))
            return
        if ctype in REPORT_TYPES:
            self.skipped.append(Skipped(name, SKIP_REPORT))
            return
        cid = _content_id(part)
        if cid and cid in self.cids and disposition != "attachment":
            self.skipped.append(Skipped(name, SKIP_INLINE_IMAGE))
            return
        if ctype in TNEF_TYPES or name.lower() == "winmail.dat":
            self.refusals.append(Refusal(name, f"{name} is a Microsoft Outlook (TNEF) attachment, not a "
                                               "document: send the mail in HTML or plain text format, "
                                               "with the document attached as PDF"))
            return
        data = _bytes_of(part, self.stash)
        if not data or data.isspace():      # (not data.strip(): that copies a 40 MB PDF)
            self.refusals.append(Refusal(name, f"{name} is empty"))
            return
        if self.office:
            document = office_kind(bytes(data[:HEAD_SIZE]), data)     # the whole is read for a ZIP only
            if document is not None and (document != "html" or disposition == "attachment" or has_name):
                self.parts.append(Part(name, data, "doc" if document == "ole2" else document))
                return
        kind = sniff(data[:HEAD_SIZE])
        said_pdf = ctype == "application/pdf" or name.lower().endswith(".pdf")
        if kind == "text" and said_pdf:
            self.refusals.append(Refusal(name, f"{name} is not a readable PDF (it holds no PDF data); "
                                               "attach the PDF again"))
            return
        if kind == "text" and not _may_be_text(ctype, name):
            self.refusals.append(Refusal(name, f"{name} could not be read: it is labelled {ctype} but holds "
                                               "plain text"))
            return
        if kind is None:
            head = bytes(data[:HEAD_SIZE])
            what = describe(head)
            if not self.office and office_kind(head, data) is not None:    # contract section 11
                self.refusals.append(Refusal(name, f"{name} is {what}; {NO_CONVERTER} ({FAXABLE})"))
            else:
                self.refusals.append(Refusal(name, f"{name} is {what}; {FAXABLE}"))
            return
        if kind == "text":
            text = _text_of(part, self.stash)
            if ctype == "text/html":
                text = html_to_text(text)
            if not text.strip():
                self.refusals.append(Refusal(name, f"{name} has no text to fax"))
                return
            data = text.encode("utf-8")
        self.parts.append(Part(name, data, kind))


GENERIC_TYPES = frozenset({"application/octet-stream", "application/txt", "application/text",
                           "application/x-unknown", "application/unknown"})
TEXT_EXTENSIONS = frozenset({"", "txt", "text", "csv", "log", "asc", "md", "htm", "html"})


def _may_be_text(ctype: str, name: str) -> bool:
    """Whether a part whose bytes are text may be faxed as text (a text type, or a generic one)."""
    if ctype.startswith("text/"):
        return True
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    return ctype in GENERIC_TYPES and ext in TEXT_EXTENSIONS


def _is_body_text(part: Message) -> bool:
    try:
        named = bool(part.get_filename())
    except (ValueError, TypeError, LookupError, IndexError):
        named = False
    return not named and part.get_content_disposition() != "attachment"


def headers_of(msg: Message) -> Headers:
    return_paths = [v for k, v in msg.raw_items() if k.lower() == "return-path"]
    return Headers(
        from_=header(msg, "From"), subject=header(msg, "Subject"), date=header(msg, "Date"),
        message_id=header(msg, "Message-ID"), reply_to=header(msg, "Reply-To"),
        auto_submitted=header(msg, "Auto-Submitted"), precedence=header(msg, "Precedence"),
        list_id=header(msg, "List-Id"),
        return_path=" ".join(str(return_paths[0]).split()) if return_paths else None,
        content_type=msg.get_content_type(),
        fax=tuple((k, " ".join(str(v).split())) for k, v in msg.raw_items() if k.lower().startswith("x-fax-")),
    )


def extract(msg: Message, stash: Mapping[str, bytes] | None = None, *, office: bool = False) -> MailContent:
    """What to fax from a parsed message (see the module docstring); ``stash`` from ``parse_fast``;
    ``office``: Office attachments (and HTML files attached) are taken, to be converted."""
    stash = stash or {}
    cids: set[str] = set()
    for leaf in _leaves(msg):
        if leaf.get_content_type() == "text/html":
            cids.update(unquote(m).strip("<>").lower() for m in _CID.findall(_text_of(leaf, stash)))
    walker = _Walker(frozenset(cids), stash, office=office)
    walker.walk(msg, body=True)
    if walker.plain:
        body = "\n\n".join(t.strip("\n") for t in walker.plain if t.strip())
        body = _uudecode_into(body, walker)
    else:
        body = "\n\n".join(html_to_text(h) for h in walker.html)
    return MailContent(headers_of(msg), body.strip(), walker.parts, walker.skipped, walker.refusals)


_UU_BEGIN = re.compile(r"^begin [0-7]{3,4} ([^\n]+)\n", re.MULTILINE)
_UU_END = re.compile(r"^end$\n?", re.MULTILINE)


def _uudecode_into(body: str, walker: _Walker) -> str:
    """Files uuencoded into a plain body (old Outlook, Eudora): taken out as attachments.

    Scanned forward once (linear): a ``begin`` line, then the first ``end`` line after it. When no
    ``end`` follows a ``begin``, none follows a later one either, so the scan stops (a regex with a
    lazy ``.*?`` retried from each of 170,000 ``begin`` lines took minutes)."""
    if "begin " not in body:
        return body
    out: list[str] = []
    pos = 0
    while (begin := _UU_BEGIN.search(body, pos)) is not None:
        end = _UU_END.search(body, begin.end())
        if end is None:
            break
        out.append(body[pos:begin.start()])
        _take_uu(begin.group(1), body[begin.end():end.start()], walker)
        pos = end.end()
    out.append(body[pos:])
    return "".join(out)


def _take_uu(raw_name: str, block: str, walker: _Walker) -> None:
    walker.count += 1
    name = safe_name(raw_name) or f"attachment {walker.count}"
    data = bytearray()
    try:
        for line in block.splitlines():
            if line.strip() and line != "`":
                data += binascii.a2b_uu(line)
    except binascii.Error:
        walker.refusals.append(Refusal(name, f"{name} (uuencoded in the text) is damaged"))
        return
    kind = sniff(bytes(data[:HEAD_SIZE]))
    if kind is None:
        walker.refusals.append(Refusal(name, f"{name} is {describe(bytes(data[:HEAD_SIZE]))}; {FAXABLE}"))
    else:
        walker.parts.append(Part(name, bytes(data), kind))


# --- decisions on the content -------------------------------------------------------------------------------


def wants_cover(mode: str, content: MailContent) -> bool:
    """``smtp.cover_page``: "never", "always", or "if-body" (the mail has text)."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return bool(content.body.strip())


COVER_VALUE_MAX = 1000    # characters of a heading value set on the cover page (a huge Subject is cut)


def cover_heading(content: MailContent, to: str) -> list[tuple[str, str]]:
    h = content.headers
    return [(label, value if len(value) <= COVER_VALUE_MAX else value[:COVER_VALUE_MAX] + " [...]")
            for label, value in (("From", h.from_), ("To", to), ("Subject", h.subject), ("Date", h.date))]


def fax_header(subject: str, limit: int) -> str | None:
    """The Subject as fax header text: one line, cut to the provider's limit."""
    text = " ".join(subject.split())
    return text[:limit].rstrip() or None


def content_hash(content: MailContent, cover: bool) -> str:
    """A hash of what is faxed (the parts in order and, with a cover page, its text)."""
    digest = hashlib.sha256()
    if cover:
        h = content.headers
        for value in (h.from_, h.subject, h.date, content.body):
            digest.update(value.encode("utf-8", "replace") + b"\0")
    for part in content.parts:
        digest.update(f"{part.name}\0{part.kind}\0{len(part.data)}\0".encode("utf-8", "replace"))
        digest.update(part.data)
    return digest.hexdigest()


BOUNCE_LOCALS = frozenset({"mailer-daemon", "postmaster"})


def no_reply_reason(envelope_sender: str, h: Headers, own_domains: Sequence[str] = ()) -> str | None:
    """Why no reply may be sent for this mail (RFC 3834), or None when one may."""
    sender = envelope_sender.strip()
    if not sender:
        return "the envelope sender is empty (a bounce)"
    local, _, domain = sender.lower().rpartition("@")
    if domain in {d.lower() for d in own_domains}:
        return "the sender is a fax address of this server"
    if local in BOUNCE_LOCALS or local.startswith("owner-") or local.endswith("-request"):
        return f"the sender {local}@ is a mail system address"
    if h.return_path is not None and h.return_path.strip() in ("<>", ""):
        return "the mail has Return-Path: <> (a bounce)"
    if h.auto_submitted and h.auto_submitted.strip().lower() != "no":
        return "the mail is marked Auto-Submitted"
    if h.precedence.strip().lower() in ("bulk", "junk", "list"):
        return f"the mail is marked Precedence: {h.precedence.strip().lower()}"
    if h.list_id:
        return "the mail came from a mailing list"
    if h.content_type in ("multipart/report", "message/delivery-status"):
        return "the mail is a delivery report"
    return None
