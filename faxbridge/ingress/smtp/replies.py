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


# --- connect, AUTH, session limits ------------------------------------------------------------------------

TOO_MANY_SESSIONS = "421 4.7.0 Too many SMTP sessions at once (smtp.max_sessions = {limit}): try again later"
TOO_MANY_FROM_CLIENT = ("421 4.7.0 Too many SMTP sessions from your address "
                        "(smtp.max_sessions_per_client = {limit}): try again later")
TIMED_OUT = "421 4.4.2 Timeout: nothing received for {seconds:g} seconds (smtp.timeout), closing the connection"
AUTH_TOO_MANY = "421 4.7.0 Too many failed AUTH attempts on this connection: closing it"
AUTH_LOCKED = ("454 4.7.0 Too many failed AUTH attempts from your address: "
               "try again in {minutes} minutes")
LOGIN_SENDER_DENIED = "550 5.7.1 Sender address not allowed for the login {user}: see its senders in smtp.users_file"
CANT_DECODE_BASE64 = "501 5.5.2 Can't decode base64"          # aiosmtpd's words, kept
CANT_SPLIT_AUTH = "501 5.5.2 Can't split auth value"


# --- MAIL, RCPT --------------------------------------------------------------------------------------------

OK = "250 2.1.5 OK"
SENDER_OK = "250 2.1.0 OK"
RELAY_DENIED = "550 5.7.1 Relaying denied: this server only accepts mail for fax numbers at {domains}"
CLIENT_DENIED = "550 5.7.1 Client address not allowed to send faxes"
SENDER_DENIED = "550 5.7.1 Sender address not allowed to send faxes"
RATE_LIMITED = "451 4.7.1 Too many faxes from this sender in the last hour (limit {limit}): try again later"
CLIENT_RATE_LIMITED = ("451 4.7.1 Too many faxes from this client address in the last hour (limit {limit}): "
                       "try again later")
MAX_RECIPIENTS = "452 4.5.3 Too many fax recipients in one message (limit {limit})"
TOO_BIG = "552 5.3.4 Message too big: the limit is {limit} bytes"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required: use STARTTLS before AUTH"

BAD_SENDER_SYNTAX = "501 5.1.7 Bad sender address syntax: {why} is not allowed in an address"
BAD_RCPT_SYNTAX = "501 5.1.3 Bad recipient address syntax: {why} is not allowed in an address"


def bad_sender_syntax(why: str) -> str:
    return BAD_SENDER_SYNTAX.format(why=why)


def bad_rcpt_syntax(why: str) -> str:
    return BAD_RCPT_SYNTAX.format(why=why)


def bad_number(reason: str) -> str:
    """An unreadable number: 550 5.1.1 with the reason in words."""
    return f"550 5.1.1 Bad fax number: {_line(reason)}"


def bad_flag(reason: str) -> str:
    """An address flag that is no fax option (``NUMBER+FLAG@DOMAIN``): 553 5.1.3 naming it."""
    return f"553 5.1.3 Bad fax option in the address: {_line(reason)}"


def bad_option(reason: str) -> str:
    """An ``X-Fax-*`` header with a value it cannot take: 554 5.6.0 naming the header and its values."""
    return f"554 5.6.0 Bad fax option: {_line(reason)}"


def forbidden_number(reason: str) -> str:
    """A number the ``[numbers]`` policy forbids: 550 5.7.1 naming the reason."""
    return f"550 5.7.1 Fax number not allowed: {_line(reason)}"


def relay_denied(domains: Sequence[str]) -> str:
    return RELAY_DENIED.format(domains=", ".join(domains) or "no domain")


def rate_limited(limit: int) -> str:
    return RATE_LIMITED.format(limit=limit)


def client_rate_limited(limit: int) -> str:
    return CLIENT_RATE_LIMITED.format(limit=limit)


def too_big(limit: int) -> str:
    return TOO_BIG.format(limit=limit)


# --- the dialogue's order (aiosmtpd's words, kept) -----------------------------------------------------------

NESTED_MAIL = "503 Error: nested MAIL command"
NEED_RCPT = "503 Error: need RCPT command"
DATA_SYNTAX = "501 Syntax: DATA"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
DATA_OK = "250 OK"                  # DATA without a handler's answer (not reached in faxbridge)


# --- the message's shape (mime_bounds) -------------------------------------------------------------------


def too_deep(limit: int) -> str:
    return (f"554 5.6.0 The message is nested more than {limit} levels deep (multiparts or forwarded "
            f"messages within each other); the limit is {limit}")


def too_many_parts(limit: int) -> str:
    return (f"554 5.3.4 The message has more than {limit} parts; the limit is {limit}: "
            "send fewer attachments per message")


def too_many_headers(limit: int) -> str:
    return f"554 5.6.0 The message has a part with more than {limit} header fields; the limit is {limit}"


def too_many_parameters(limit: int) -> str:
    return (f"554 5.6.0 The message has a Content-Type or Content-Disposition with more than "
            f"{limit} parameters; the limit is {limit}")
