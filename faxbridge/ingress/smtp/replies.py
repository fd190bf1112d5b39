"""Every reply line the SMTP listener sends (named constants and the functions that build the rest).

Tests compare the wire against these, so a reply's words change in one place only.
"""

from __future__ import annotations

from collections.abc import Sequence

# --- DATA ---------------------------------------------------------------------------------------------

UNREADABLE_MESSAGE = "554 5.6.0 The message could not be read as a mail message"
INTERNAL_ERROR = ("554 5.6.0 The message could not be read: the fax server failed on it "
                  "(the error is logged for its operator)")
NO_CONTENT = ("554 5.6.0 Nothing to fax: attach a PDF, TIFF, JPEG, PNG, GIF or text file, "
              "or write the text in the mail body")
TOO_MUCH_WORK = ("554 5.3.4 Too much work: the message needs more CPU time or memory than the fax server "
                 "allows one message; send fewer or smaller documents")
OUR_TROUBLE = "451 4.3.0 Temporary trouble on the fax server: please try again later"
QUEUED = "250 2.0.0 Queued as job"     # how a reply that made new jobs begins


def _line(text: str) -> str:
    return " ".join(text.split())


def unreadable_part(why: str, more: int = 0) -> str:
    extra = f" (and {more} more part{'s' if more > 1 else ''} that cannot be faxed)" if more else ""
    return f"554 5.6.1 {_line(why)}{extra}"


def too_many_pages(why: str) -> str:
    return f"554 5.3.4 Too many pages: {_line(why)}"


def queued(new_ids: Sequence[str], duplicates: Sequence[str]) -> str:
    """250 naming the jobs made, and the jobs an earlier copy of this message already made."""
    words = []
    if new_ids:
        words.append(f"Queued as job{'s' if len(new_ids) > 1 else ''} {', '.join(new_ids)}")
    if duplicates:
        words.append(f"Duplicate of job {', '.join(sorted(set(duplicates)))}: already received, not faxed again")
    return "250 2.0.0 " + "; ".join(words)
