"""MIME intake, pure: messages as real clients send them → parts in order, skipped parts, refusals, body."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from faxbridge.ingress.smtp import mime
from faxbridge.ingress.smtp.mime import Headers
from tests.ingress import mailkit

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "mime"


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 20), "red").save(out, format="PNG")
    return out.getvalue()


def extract(raw: bytes) -> mime.MailContent:
    return mime.extract(mime.parse(raw))


def summary(content: mime.MailContent) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    return ([(p.name, p.kind) for p in content.parts], [s.name for s in content.skipped],
            [r.why for r in content.refusals])


def test_outlook_octet_stream_pdf_and_cid_logo(tmp_path: Path) -> None:
    pdf = mailkit.pdf_bytes(tmp_path)
    content = extract(mailkit.outlook(pdf, logo=png()))
    assert summary(content) == ([("invoice.pdf", "pdf")], ["image001.png"], [])
    assert content.parts[0].data == pdf
    assert content.skipped[0].why == mime.SKIP_INLINE_IMAGE
    assert content.body == "Please fax the attached invoice.\n\nAlice Example | Accounts"
    h = content.headers
    assert (h.subject, h.message_id, h.from_) == ("Invoice 42", "<AM0PR01MB1234@EURPRD01.prod.outlook.com>",
                                                 "Alice Example <alice@example.com>")


def test_apple_mail_inline_pdf_inside_the_html_alternative(tmp_path: Path) -> None:
    pdf = mailkit.pdf_bytes(tmp_path)
    content = extract(mailkit.apple_mail_inline(pdf))
    assert summary(content) == ([("Scan.pdf", "pdf")], [], [])
    assert content.body == "Here it is, signed."


def test_gmail_related_logo_skipped_pdf_taken(tmp_path: Path) -> None:
    content = extract(mailkit.gmail(mailkit.pdf_bytes(tmp_path), png()))
    assert summary(content) == ([("letter.pdf", "pdf")], ["logo.png"], [])
    assert content.body.startswith("Hi, the letter is attached.")


def test_thunderbird_rfc2231_name_8bit_text_and_text_attachment(tmp_path: Path) -> None:
    content = extract(mailkit.thunderbird(mailkit.pdf_bytes(tmp_path), b"Bitte an Herrn M=C3=BCller."))
    assert summary(content) == ([("Rechnung März.pdf", "pdf"), ("notiz.txt", "text")], [], [])
    assert content.parts[1].data.decode() == "Bitte an Herrn Müller."
    assert content.headers.subject == "Rechnung für März"
    assert content.headers.from_ == "Jürgen Müller <juergen@example.de>"
    assert "anbei die Rechnung für März" in content.body


def test_scanner_and_forwarded_message(tmp_path: Path) -> None:
    pdf = mailkit.pdf_bytes(tmp_path)
    scan = extract(mailkit.scanner(pdf))
    assert summary(scan) == ([("Scan_0001.pdf", "pdf")], [], [])
    assert scan.headers.message_id == ""
    fwd = extract(mailkit.forwarded(pdf))
    assert summary(fwd) == ([("contract.pdf", "pdf")], [], [])
    assert fwd.body == "See the forwarded mail."          # the forwarded mail's own text is not the body


def test_html_only_mail_gives_its_text() -> None:
    raw = (b"From: a@example.com\r\nSubject: html\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/html; charset=utf-8\r\n\r\n"
           b"<html><head><style>p {color: red}</style></head><body><p>Dear Sir,</p><p>Please call&nbsp;me."
           b"<br>Thanks &amp; regards</p><script>alert(1)</script></body></html>\r\n")
    content = extract(raw)
    assert content.body == "Dear Sir,\n\nPlease call me.\nThanks & regards"
    assert content.parts == []


def test_unsupported_parts_refused_by_name(tmp_path: Path) -> None:
    zipped = mailkit.with_attachment(b"PK\x03\x04" + b"\0" * 40 + b"word/document.xml", name="letter.docx",
                                     ctype="application/vnd.openxmlformats-officedocument.wordprocessingml.document")
    assert summary(extract(zipped))[2] == [
        "letter.docx is a Word document; only PDF, TIFF, JPEG, PNG, GIF and plain text can be faxed"]
    fake_pdf = mailkit.with_attachment(b"just some words", name="scan.pdf", ctype="application/pdf")
    assert summary(extract(fake_pdf))[2] == [
        "scan.pdf is not a readable PDF (it holds no PDF data); attach the PDF again"]
    fake_jpg = mailkit.with_attachment(b"hello there", name="photo.jpg", ctype="image/jpeg")
    assert summary(extract(fake_jpg))[2] == [
        "photo.jpg could not be read: it is labelled image/jpeg but holds plain text"]
    empty = mailkit.with_attachment(b"", name="empty.pdf", ctype="application/pdf")
    assert summary(extract(empty))[2] == ["empty.pdf is empty"]


@pytest.mark.parametrize(("name", "shown"), [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\bob\\scan.pdf", "scan.pdf"),
    ("..", "attachment 1 (application/pdf)"),
    ("=?utf-8?B?VGhpcyBpcyBhIHRlc3QucGRm?=", "This is a test.pdf"),
    ("a\x00b\x1fc.pdf", "abc.pdf"),
], ids=["traversal", "windows-path", "dots-only", "rfc2047", "controls"])
def test_names_are_for_display_only(name: str, shown: str) -> None:
    assert (mime.safe_name(name) or "attachment 1 (application/pdf)") == shown


# --- the real samples (tests/samples/mime, described in SOURCES.md) ----------------------------------------

TNEF = ("winmail.dat is a Microsoft Outlook (TNEF) attachment, not a document: send the mail in HTML or plain "
        "text format, with the document attached as PDF")
SAMPLE_CASES = {
    "apple-mail-inline-jpeg-rfc2231-latin1-filename.eml": ([("Eelanalüüsi päring.jpg", "jpeg")], [], []),
    "apple-mail-rfc2231-continuation-utf8-filename.eml": (
        [("かきくけこかきくけこかきくけこかきくけこかきくけこ.txt", "text")], [], []),
    "apple-mail-smime-signed-nested-inline-pdf-not-really-pdf.eml": (
        [("test.rb", "text")], ["smime.p7s"],
        ["test.pdf is not a readable PDF (it holds no PDF data); attach the PDF again"]),
    "cdo-malformed-content-type-truncated-linearized-pdf.eml": ([("Invoice_302232133150612.pdf", "pdf")], [], []),
    "eudora42-mac-binhex40-attachments.eml": ([], [], [
        "blueball.png is a BinHex archive; only PDF, TIFF, JPEG, PNG, GIF and plain text can be faxed",
        "HasenundFr\ufffdsche.txt is a BinHex archive; only PDF, TIFF, JPEG, PNG, GIF and plain text can be faxed"]),
    "eudora42-x-uuencode-png-attachments.eml": ([("greenball.png", "png"), ("blueball.png", "png")], [], []),
    "forwarded-message-rfc822-carrying-truncated-pdf.eml": ([("broken.pdf", "pdf")], [], []),
    "gmail-octet-stream-attachment-with-mbox-from-line.eml": ([("attach02", "text")], [], []),
    "iphone-mail-inline-jpeg-between-text-parts.eml": ([("image1.jpeg", "jpeg")], [], []),
    "malformed-base64-attachment.eml": ([], [], [
        "some.doc could not be read: it is labelled application/msword but holds plain text"]),
    "missing-final-boundary.eml": ([], [], [
        "foo_9E5D72.zip could not be read: it is labelled application/x-zip-compressed but holds plain text"]),
    "netscape47-mixed-alternative-related-cid-plus-attachments.eml": (
        [("redball.png", "png"), ("greenball.png", "png")], ["C:TEMPnsmailEG.png", "C:TEMPnsmail39.png"], []),
    "netscape47-rfc2047-encoded-word-inside-quoted-filename.eml": ([("HasenundFrösche.txt", "text")], [], []),
    "outlook-korean-ks_c_5601-rfc2047-filenames.eml": ([("ATT00001.txt", "text")], [], [
        "사진.JPG could not be read: it is labelled image/jpeg but holds plain text"]),
    "outlook-pdf-attachment-raw-8bit-iso8859-2-filename.eml": ([("K\ufffdrelem.pdf", "pdf")], [], []),
    "outlook2000-8bit-latin1-body-and-raw-8bit-subject.eml": ([], [], []),
    "outlook-express-single-part-octet-stream-raw-8bit-name.eml": (
        [("\ufffd½\ufffd \ufffdı\ufffd\ufffdĵ\ufffd.txt", "text")], [], []),
    "outlook2000-uuencoded-attachments-in-plain-body.eml": (
        [("blueball.png", "png"), ("greenball.png", "png"), ("redball.png", "png")], [], []),
    "outlook2000-malformed-boundary-folded-inside-quotes.eml": (
        [("blueball.png", "png"), ("greenball.png", "png"), ("redball.png", "png")], [], []),
    "outlook2000-mixed-related-cid-image-plus-png-attachments.eml": (
        [("greenball.png", "png"), ("redball.png", "png")], ["blueball.png"], []),
    "outlook2013-tnef-winmail-dat-only-part.eml": ([], [], [TNEF]),
    "outlook365-pdf-attachment-rfc2047-filename-stub-content.eml": ([], [], [
        "50032266 CAR 11_MNPA00A01_9PTX_H00 ATT N° 1467829.pdf is not a readable PDF (it holds no PDF data); "
        "attach the PDF again"]),
    "outlook365-tnef-winmail-dat-koi8r-body.eml": ([], [], [TNEF]),
    "path-traversal-attachment-name.eml": ([], [], ["1234.txt is empty"]),
    "pdf-named-attachment-rfc2047-unquoted-filename-is-pkcs7.eml": ([], [], [
        "attachment 1 (application/pdf) is signed or encrypted data (PKCS#7), not a document; only PDF, TIFF, "
        "JPEG, PNG, GIF and plain text can be faxed"]),
    "pine-octet-stream-attachments-uppercase-base64.eml": ([("redball.png", "png"), ("blueball.png", "png")], [], []),
    "pine-rfc2231-latin1-filename.eml": ([("HasenundFrösche.txt", "text")], [], []),
    "swiftmailer-pdf-docx-odt-rfc2231-png-base64-rfc822.eml": (
        [("Hello from SwiftMailer.pdf", "pdf"), ("Cours-Tutoriels-Serge-Tahé-1568x268.png", "png")], [], [
            "Hello from SwiftMailer.docx is a Word document; this fax server cannot convert Office documents; "
            "send it as PDF (only PDF, TIFF, JPEG, PNG, GIF and plain text can be faxed)",
            "Hello from SwiftMailer.odt is an OpenDocument text; this fax server cannot convert Office documents; "
            "send it as PDF (only PDF, TIFF, JPEG, PNG, GIF and plain text can be faxed)"]),
    "thunderbird-html-alternative-related-cid-inline-image.eml": ([], ["IntM6gnXFm00FEV5.png"], []),
}


def test_every_sample_is_covered() -> None:
    assert sorted(SAMPLE_CASES) == sorted(p.name for p in SAMPLES.glob("*.eml"))


@pytest.mark.parametrize("name", sorted(SAMPLE_CASES))
def test_samples(name: str) -> None:
    content = extract((SAMPLES / name).read_bytes())
    parts, skipped, refusals = summary(content)
    # a refusal's order follows the message; the listener names the first
    assert (parts, skipped, sorted(refusals)) == (SAMPLE_CASES[name][0], SAMPLE_CASES[name][1],
                                                 sorted(SAMPLE_CASES[name][2]))
    for part in content.parts:
        assert "/" not in part.name and "\\" not in part.name


def test_sample_bodies_and_headers() -> None:
    latin = extract((SAMPLES / "outlook2000-8bit-latin1-body-and-raw-8bit-subject.eml").read_bytes())
    assert latin.body.startswith("Die Hasen und die Frösche")
    koi8 = extract((SAMPLES / "outlook365-tnef-winmail-dat-koi8r-body.eml").read_bytes())
    assert koi8.body.startswith("шостий")
    korean = extract((SAMPLES / "outlook-korean-ks_c_5601-rfc2047-filenames.eml").read_bytes())
    assert korean.headers.subject == "[Korea] Name"
    japanese = extract((SAMPLES / "apple-mail-rfc2231-continuation-utf8-filename.eml").read_bytes())
    assert japanese.headers.subject == "まみむめも" * 10


# --- decisions on the content ---------------------------------------------------------------------------


@pytest.mark.parametrize(("sender", "headers", "why"), [
    ("alice@example.com", Headers(), None),
    ("", Headers(), "the envelope sender is empty (a bounce)"),
    ("MAILER-DAEMON@mx.example.com", Headers(), "the sender mailer-daemon@ is a mail system address"),
    ("postmaster@example.com", Headers(), "the sender postmaster@ is a mail system address"),
    ("list-request@example.com", Headers(), "the sender list-request@ is a mail system address"),
    ("alice@example.com", Headers(return_path="<>"), "the mail has Return-Path: <> (a bounce)"),
    ("alice@example.com", Headers(auto_submitted="auto-replied"), "the mail is marked Auto-Submitted"),
    ("alice@example.com", Headers(auto_submitted="No"), None),
    ("alice@example.com", Headers(precedence="bulk"), "the mail is marked Precedence: bulk"),
    ("alice@example.com", Headers(list_id="<news.example.com>"), "the mail came from a mailing list"),
    ("alice@example.com", Headers(content_type="multipart/report"), "the mail is a delivery report"),
    ("15555551212@fax.local", Headers(), "the sender is a fax address of this server"),
], ids=["person", "null", "mailer-daemon", "postmaster", "request", "return-path", "auto-submitted",
        "auto-submitted-no", "bulk", "list", "report", "own-domain"])
def test_no_reply_reasons(sender: str, headers: Headers, why: str | None) -> None:
    assert mime.no_reply_reason(sender, headers, ["fax.local"]) == why


def test_return_path_header_read_from_the_message() -> None:
    raw = mailkit.plain("a bounce", extra="Return-Path: <>\r\n")
    assert mime.no_reply_reason("alice@example.com", extract(raw).headers) == "the mail has Return-Path: <> (a bounce)"


@pytest.mark.parametrize(("mode", "body", "cover"), [
    ("never", "text", False), ("always", "", True), ("if-body", "text", True), ("if-body", " \n", False),
])
def test_cover_modes(mode: str, body: str, cover: bool) -> None:
    assert mime.wants_cover(mode, mime.MailContent(Headers(), body)) is cover


def test_fax_header_cut_to_the_provider_limit() -> None:
    assert mime.fax_header("  Invoice\t42   for  March ", 15) == "Invoice 42 for"
    assert mime.fax_header("Invoice 42", 50) == "Invoice 42"
    assert mime.fax_header("   ", 50) is None


def _everything(content: mime.MailContent) -> tuple[object, ...]:
    return (content.headers, content.body, [(p.name, p.kind, p.data) for p in content.parts], content.skipped,
            content.refusals)


def test_fast_parse_gives_the_same_result(tmp_path: Path) -> None:
    big = mailkit.pdf_bytes(tmp_path, pages=80)
    assert len(big) > 20_000
    messages = [mailkit.outlook(big, logo=png()), mailkit.apple_mail_inline(big), mailkit.gmail(big, png()),
                mailkit.thunderbird(big, b"Notiz"), mailkit.scanner(big), mailkit.forwarded(big),
                mailkit.with_attachment(big, name="x.pdf", ctype="application/pdf")]
    messages += [p.read_bytes() for p in sorted(SAMPLES.glob("*.eml"))]
    slimmed = 0
    for raw in messages:
        msg, stash = mime.parse_fast(raw)
        slimmed += len(stash)
        assert _everything(mime.extract(msg, stash)) == _everything(mime.extract(mime.parse(raw)))
    assert slimmed >= 8      # the big PDFs (one per built message) and the large sample attachments


def test_fast_parse_token_cannot_be_forged(tmp_path: Path) -> None:
    from email import policy
    from email.message import EmailMessage

    big = mailkit.pdf_bytes(tmp_path, pages=80)
    msg = EmailMessage()
    msg["Subject"] = "two"
    msg.set_content("two files")
    msg.add_attachment(b"%PDF-1.4 small", maintype="application", subtype="pdf", filename="small.pdf")
    msg.add_attachment(big, maintype="application", subtype="pdf", filename="big.pdf")
    msg["X-Faxbridge-Stash"] = "ignored on the top level"
    small = msg.get_payload()[1]
    small["X-Faxbridge-Stash"] = "0123456789abcdef-0"        # a guess at another part's key
    parsed, stash = mime.parse_fast(msg.as_bytes(policy=policy.SMTP))
    assert len(stash) == 1 and "0123456789abcdef-0" not in stash
    content = mime.extract(parsed, stash)
    assert [(p.name, p.data) for p in content.parts] == [("small.pdf", b"%PDF-1.4 small"), ("big.pdf", big)]


# ---- header values taken as they are (``mime._plain``) -------------------------------------------

_PLAIN_VALUES = [
    ("content-type", 'application/pdf; name="scan-0f3a.pdf"'),
    ("content-type", "text/plain; charset=utf-8"),
    ("content-type", 'multipart/mixed;\r\n\tboundary="=_b 1:2,3"'),
    ("content-type", "Application/PDF ; Name=\"a;b=c.pdf\" ; format=flowed"),
    ("content-disposition", 'attachment; filename="Invoice 42 (final).pdf"'),
    ("content-disposition", "inline"),
    ("message-id", "<0f3a.1@mail.example.com>"),
]
_PARSED_VALUES = [       # the parser has work to do: never taken as they are
    ("content-type", 'application/pdf; name="=?utf-8?q?Rechnung_f=C3=BCr.pdf?="'),
    ("content-disposition", "attachment; filename*=utf-8''Rechnung%20f%C3%BCr.pdf"),
    ("content-disposition", 'attachment; filename="a.pdf"; FileName="b.pdf"'),
    ("content-type", "text/plain (a comment); charset=utf-8"),
    ("content-type", 'text/plain; name="a\\"b"'),
    ("content-type", "text/plain; name=a'b"),
    ("message-id", "<a b@x>"),
    ("subject", "Scan 42"),
]


class _ParsedPolicy(mime._OncePolicy):
    """The policy as it was before values were taken as they are: every one through the parser."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        if hasattr(value, "name"):
            return value
        return mime._parsed_or_lenient(name, value)


def _answers(raw: bytes, policy: mime._OncePolicy) -> list[object]:
    import email

    msg = email.message_from_bytes(raw, policy=policy)
    out: list[object] = []
    for part in msg.walk():
        out += [part.get_content_type(), part.get_filename(), part.get_boundary(), part.get_content_charset(),
                part.get_content_disposition(), part.get_param("name"), part.is_multipart(),
                str(part.get("message-id"))]
    return out


@pytest.mark.parametrize(("name", "value"), _PLAIN_VALUES + _PARSED_VALUES,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(_PLAIN_VALUES + _PARSED_VALUES)])
def test_a_plain_header_value_gets_the_answers_the_parser_gives(name: str, value: str) -> None:
    taken = mime._plain(name, value)
    assert (taken is not None) == ((name, value) in _PLAIN_VALUES)
    header = f"{name}: {value}\r\n".encode()
    raw = (b"From: a@example.com\r\n" + header + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + header +
           b"Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n--b--\r\n")
    assert _answers(raw, mime.PARSE_POLICY) == _answers(raw, _ParsedPolicy())
