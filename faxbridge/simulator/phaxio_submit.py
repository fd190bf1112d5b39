"""Phaxio ``POST /faxes``: checking a create request and turning it into a simulated fax.

Every refusal is HTTP 422 ``{"success": false, "message": ...}`` with one of the messages
below (tests import them). Decisions where Phaxio's behaviour is not published:

- ``content_url`` is refused: the simulator has no internet to fetch it from.
- A file part that is not a readable document (corrupt PDF, unknown type) is *accepted*
  and the fax fails once rendering time has passed, with documentConversionError 4
  (unreadable) or 129 (type not supported), as Phaxio renders asynchronously.
- The 200-page limit is checked at submit, on the pages that could be counted.
- Numbers under +1900 / +1976 (premium rate) are refused like a malformed number would be.
- ``batch_delay`` 1..3600 delays rendering (at least 5 s; status ``pendingbatch``);
  ``cancel_timeout`` cancels a fax not final after that many minutes (extended to
  batch_delay + 3 minutes), like a cancel request (generalError "Fax canceled ...").
- ``test_fail`` works with the simulator's normal key: documentConversionError fails at
  rendering (122), lineError after one call (121), faxError after one answered call (6),
  fatalError / generalError before dialing (error id null).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from faxbridge.simulator.documents import count_pages
from faxbridge.simulator.forms import FilePart, Form
from faxbridge.simulator.phaxio_model import ERROR_TYPES
from faxbridge.simulator.records import SimFax, SimRecipient, SimSend
from faxbridge.simulator.timing import CallResult, RenderError, Timeline, plan

MAX_REQUEST_BYTES = 20 * 1000 * 1000
MAX_FILES = 10
MAX_PAGES = 200
MAX_TAGS = 10
MAX_HEADER = 50
E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
RESTRICTED = ("+1900", "+1976")
TAG = re.compile(r"^tag\[(?P<name>[^\]]+)\]$")

MSG_TOO_LARGE = "The total request size for sending a fax may not exceed 20MB."
MSG_NO_RECIPIENT = "You must specify at least one recipient (to)."
MSG_BAD_NUMBER = "Phone number is not formatted correctly or invalid"
MSG_RESTRICTED = "Sending faxes to this phone number is not allowed."
MSG_CONTENT_URL = ("content_url is not supported by the simulated network (it has no internet "
                   "access); upload the document as a file part instead.")
MSG_NO_FILENAME = "Files must be uploaded with a file name in the file part's header."
MSG_NO_FILE = "You must provide at least one file or content_url."
MSG_TOO_MANY_FILES = "A maximum of 10 files may be submitted per fax."
MSG_TOO_MANY_PAGES = "The total number of pages for any fax may not exceed 200 pages."
MSG_HEADER = "header_text must be 50 characters or fewer."
MSG_BATCH = "batch_delay must be a whole number of seconds between 0 and 3600."
MSG_CANCEL_TIMEOUT = "cancel_timeout must be a whole number of minutes between 3 and 60."
MSG_TAGS = "You may specify up to 10 tags."
MSG_TEST_FAIL = "test_fail must be one of: " + ", ".join(ERROR_TYPES) + "."
MSG_CALLER_ID = "caller_id is not formatted correctly or invalid"
MSG_CALLBACK = "callback_url is not a valid URL."

TEST_FAIL_RENDER = {
    "documentConversionError": RenderError.SIMULATED,
    "fatalError": RenderError.FATAL,
    "generalError": RenderError.GENERAL,
}
TEST_FAIL_CALL = {"lineError": CallResult.SIM_LINE_ERROR, "faxError": CallResult.SIM_FAX_ERROR}


class Refused(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass
class Document:
    """What the renderer would make of the uploaded files."""

    sha256: str
    size: int
    pages: int
    error: RenderError | None
    filenames: tuple[str, ...] = ()


@dataclass
class CreateRequest:
    numbers: list[str]
    document: Document
    header: str | None = None
    callback_url: str | None = None
    caller_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    batch_delay: int = 0
    cancel_timeout: int | None = None
    test_fail: str | None = None


def document_of(files: Sequence[FilePart]) -> Document:
    """What the renderer would make of the uploaded files, in order (Sinch's endpoint too)."""
    digest = hashlib.sha256()
    size = pages = 0
    error: RenderError | None = None
    for part in files:
        digest.update(part.data)
        size += len(part.data)
        counted = count_pages(part.data, part.filename or "", part.content_type)
        pages += counted.pages
        error = error or counted.error
    return Document(digest.hexdigest(), size, pages, error, tuple(f.filename or "" for f in files))


def _int_in(value: str | None, low: int, high: int, message: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise Refused(message) from None
    if not low <= number <= high:
        raise Refused(message)
    return number


def _number(value: str, message: str) -> str:
    number = value.strip()
    if not E164.match(number):
        raise Refused(message)
    return number


def parse_create(form: Form) -> CreateRequest:
    numbers = [_number(v, MSG_BAD_NUMBER) for v in form.getall("to", "to[]") if v.strip()]
    if not numbers:
        raise Refused(MSG_NO_RECIPIENT)
    if any(n.startswith(RESTRICTED) for n in numbers):
        raise Refused(MSG_RESTRICTED)
    if form.getall("content_url", "content_url[]"):
        raise Refused(MSG_CONTENT_URL)
    if any(re.match(r"^file(\[\d*\])?$", name) for name, _ in form.fields):
        raise Refused(MSG_NO_FILENAME)
    files = [f for f in form.files if re.match(r"^file(\[\d*\])?$", f.name)]
    if any(not f.filename for f in files):
        raise Refused(MSG_NO_FILENAME)
    if not files:
        raise Refused(MSG_NO_FILE)
    if len(files) > MAX_FILES:
        raise Refused(MSG_TOO_MANY_FILES)
    header = form.get("header_text")
    if header is not None and len(header) > MAX_HEADER:
        raise Refused(MSG_HEADER)
    batch_delay = _int_in(form.get("batch_delay"), 0, 3600, MSG_BATCH) or 0
    cancel_timeout = _int_in(form.get("cancel_timeout"), 3, 60, MSG_CANCEL_TIMEOUT)
    tags = {m["name"]: value for name, value in form.fields if (m := TAG.match(name))}
    if len(tags) > MAX_TAGS:
        raise Refused(MSG_TAGS)
    test_fail = form.get("test_fail") or None
    if test_fail is not None and test_fail not in ERROR_TYPES:
        raise Refused(MSG_TEST_FAIL)
    caller_id = form.get("caller_id") or None
    if caller_id is not None:
        caller_id = _number(caller_id, MSG_CALLER_ID)
    callback_url = form.get("callback_url") or None
    if callback_url is not None and not re.match(r"^(https?://[^/\s]+|mailto:\S+@\S+)", callback_url):
        raise Refused(MSG_CALLBACK)
    document = document_of(files)
    if document.pages > MAX_PAGES:
        raise Refused(MSG_TOO_MANY_PAGES)
    return CreateRequest(numbers, document, header, callback_url, caller_id, tags, batch_delay,
                         cancel_timeout, test_fail)


def timelines(req: CreateRequest) -> list[Timeline]:
    delay = float(max(5, req.batch_delay)) if req.batch_delay else 0.0
    render_error = req.document.error or TEST_FAIL_RENDER.get(req.test_fail or "")
    call = TEST_FAIL_CALL.get(req.test_fail or "")
    return [
        plan(n, req.document.pages, render_error=render_error,
             results=(call,) if call is not None else None, delay=delay)
        for n in req.numbers
    ]


def build_fax(req: CreateRequest, fax_id: str, account: str, version: str, now: datetime,
              speed: float) -> SimFax:
    send = SimSend(
        provider="phaxio",
        id=fax_id,
        to=req.numbers[0],
        pdf_sha256=req.document.sha256,
        pdf_size=req.document.size,
        pages=req.document.pages,
        tags=dict(req.tags),
        job_tag=req.tags.get("faxbridge_job"),
        header=req.header,
        resolution=None,
        paper=None,
        accepted_at=now,
        callback_url=req.callback_url,
        filenames=req.document.filenames,
        recipients=tuple(req.numbers),
        api_version=version,
    )
    cancel_s = None
    if req.cancel_timeout is not None:
        cancel_s = float(max(req.cancel_timeout * 60, req.batch_delay + 180))
    callback = req.callback_url if req.callback_url and not req.callback_url.startswith("mailto:") else None
    return SimFax(
        provider="phaxio",
        id=fax_id,
        account=account,
        accepted_at=now,
        speed=speed,
        recipients=[SimRecipient(n, tl) for n, tl in zip(req.numbers, timelines(req), strict=True)],
        send=send,
        pages=req.document.pages,
        api_version=version,
        caller_id=req.caller_id,
        callback_url=callback,
        cancel_timeout_s=cancel_s,
    )
