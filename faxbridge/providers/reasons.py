"""Provider status codes → outcome, reason in words, and whether a later retry may help.

Pure functions shared by both adapters (and their webhook parsers). The reasons are what a
person reads in the reply mail and the result file, so each starts with a short label
("Busy:", "No Answer:", "Bad number:") and then says what happened.

Openfax (providers.md §2.5): ``LastStatus`` -1..9 is the result of the latest call attempt,
``CurrentState`` 0..13 the stage of the request. Final states are 8, 9, 10 and 13 [I]; 11
(Credit Hold) waits for the operator. Report rows may lack ``LastStatus`` [U]; then the
outcome is inferred from ``CurrentState`` alone. A postback carries ``LastStatus`` but no
``CurrentState`` and is sent only once the fax is final. ``CurrentState`` 12 (Retry Eligible)
is not among the documented final states, but nothing moves a fax on from it: Openfax's API
has no retry call, so the only retry there is is a new submission. It is read as the end of
the fax, failed for the reason its ``LastStatus`` gives, retryable (``faxbridge retry``), so a
job never waits on it forever.

Phaxio (providers.md §1.3, §1.6): fax ``status`` queued | pendingbatch | inprogress |
success | failure | partialsuccess; recipient statuses add ringing, callactive, willretry
(the list was cut off [U]: any other word is treated as not final). Errors come as
``error_type`` + ``error_id`` (v2) or ``error_code`` (v1 naming); the ids are from Phaxio's
error table, the message text is matched too since ids are not all published [U].
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from faxbridge.models import FaxOutcome


@dataclass(frozen=True)
class Verdict:
    outcome: FaxOutcome
    reason: str | None = None
    retryable: bool = False


def on_attempts(attempts: int | None) -> str:
    if attempts is None or attempts <= 0:
        return "on every attempt"
    if attempts == 1:
        return "on the one attempt made"
    return f"on all {attempts} attempts"


def busy(attempts: int | None) -> str:
    return f"Busy: the line was busy {on_attempts(attempts)}"


def no_answer(attempts: int | None) -> str:
    return f"No Answer: there was no answer {on_attempts(attempts)}"


NOT_A_FAX = "Not a fax machine: the number answered but no fax machine did"
CANCELED = "Canceled: the fax was canceled before it was delivered"
CREDIT_HOLD = "Credit Hold: the fax is held for lack of credit and needs the operator: add credit"


def bad_number(detail: str = "the number is not a valid telephone number") -> str:
    return f"Bad number: {detail}"


def doc_conversion(detail: str = "the provider could not convert the document") -> str:
    return f"Document conversion failed: {detail}"


def insufficient_credit(detail: str = "the account has too little credit to send this fax") -> str:
    return f"Insufficient credit: {detail}"


# --- Openfax -------------------------------------------------------------------------------------

OPENFAX_FINAL_STATES = frozenset({8, 9, 10, 13})
OPENFAX_CREDIT_HOLD = 11
OPENFAX_RETRY_ELIGIBLE = 12
RETRY_ELIGIBLE = ("Failed: Openfax stopped dialing without delivering the fax (Retry Eligible); "
                  "`faxbridge retry` sends it again")
# LastStatus codes after which Openfax redials (providers.md §2.5, marked * there).
OPENFAX_REDIAL_CODES = frozenset({1, 2, 4, 6, 7})

OPENFAX_STATE_WORDS = {
    0: "Received",
    1: "Document Rendering",
    2: "Checking Credit",
    3: "Waiting for queue space",
    4: "In queue",
    5: "Dialing",
    6: "Reporting",
    7: "Waiting for Redial",
    8: "Fax Successful",
    9: "Fax Failed",
    10: "Fax Failed (document conversion)",
    11: "Credit Hold",
    12: "Retry Eligible",
    13: "Canceled",
}


def openfax_failure(last_status: int | None, attempts: int | None) -> Verdict:
    """Why an Openfax fax failed, from the LastStatus of its final attempt."""
    failed = FaxOutcome.FAILED
    match last_status:
        case 1:
            return Verdict(failed, no_answer(attempts), True)
        case 2:
            return Verdict(failed, busy(attempts), True)
        case 3:
            return Verdict(failed, NOT_A_FAX, False)
        case 4:
            return Verdict(
                failed, f"All circuits busy: the carrier had no free route {on_attempts(attempts)}", True
            )
        case 5:
            return Verdict(failed, bad_number(), False)
        case 6:
            return Verdict(
                failed,
                f"Call disconnected: the call dropped before the fax went through {on_attempts(attempts)}"
                " (perhaps a person answered)",
                True,
            )
        case 7:
            return Verdict(
                failed,
                f"Transmission failed: the receiving side never confirmed the pages {on_attempts(attempts)}"
                " (line noise, or not a fax machine)",
                True,
            )
        case 8:
            return Verdict(failed, doc_conversion("Openfax could not convert the document"), False)
        case 9:
            return Verdict(
                failed, insufficient_credit("Openfax's credit check failed; add credit to the account"), True
            )
        case _:
            return Verdict(failed, "Failed: Openfax reports the fax failed without saying why", True)


def openfax_verdict(current_state: int | None, last_status: int | None, attempts: int | None) -> Verdict:
    """Outcome of an Openfax fax from a report row (both codes) or a postback (LastStatus only)."""
    if current_state is None:
        # A postback: sent only when the fax is final, so any LastStatus but -1 and 0 is a failure.
        if last_status is None or last_status == -1:
            return Verdict(FaxOutcome.PENDING)
        if last_status == 0:
            return Verdict(FaxOutcome.DELIVERED)
        return openfax_failure(last_status, attempts)
    if current_state == 8:
        return Verdict(FaxOutcome.DELIVERED)
    if current_state == 13:
        return Verdict(FaxOutcome.CANCELED, CANCELED)
    if current_state == OPENFAX_CREDIT_HOLD:
        return Verdict(FaxOutcome.ATTENTION, CREDIT_HOLD, True)
    if current_state == 10:
        return openfax_failure(8, attempts)
    if current_state == 9:
        # A row without LastStatus [U], or one that says "success" in a failed state: no detail.
        return openfax_failure(last_status if last_status not in (None, -1, 0) else None, attempts)
    if current_state == OPENFAX_RETRY_ELIGIBLE:
        if last_status not in (None, -1, 0):
            return openfax_failure(last_status, attempts)
        return Verdict(FaxOutcome.FAILED, RETRY_ELIGIBLE, True)
    return Verdict(FaxOutcome.PENDING)


# Openfax ``Response`` condition (normalised by condition()) → (kind, reason). "Failed" is
# transient: the request was not taken, and nothing in it is known to be wrong.
OPENFAX_CONDITIONS: dict[str, tuple[str, str]] = {
    "failed": ("transient", "Openfax could not take the fax just now (it answered Failed)"),
    "invalidauthentication": ("auth", "Openfax rejected the account ID or API key (InvalidAuthentication)"),
    # Openfax's answer when a required field is missing: in practice an empty account ID or API key
    # (every other field faxbridge always sends), so an account problem, not this fax's.
    "invalidmissingvalue": (
        "auth",
        "Openfax says a required value is missing (InvalidMissingValue): check "
        "provider.openfax.account_id and provider.openfax.api_key",
    ),
    "accountinactive": (
        "inactive",
        "The Openfax account is inactive: it has run out of funds or was deactivated; "
        "check the balance, add credit or contact Openfax support",
    ),
    "restrictedfaxnumber": (
        "refused",
        "Restricted number: Openfax will not dial this number "
        "(the owner's request, a compliance list or another reason)",
    ),
    "invalidfaxnumberlength": (
        "refused",
        "Invalid fax number: Openfax cannot dial it (North America needs 1 and 10 digits; "
        "elsewhere the country code and the number)",
    ),
    "invalidfaxresolution": ("refused", "Invalid fax resolution: Openfax accepts only standard or fine"),
    "invalidpapersize": ("refused", "Invalid paper size: Openfax accepts only Letter, Legal or A4"),
    "invalidpriority": ("refused", "Invalid priority: Openfax accepts only Normal or Low"),
}
OPENFAX_CONDITIONS["restrictednumber"] = OPENFAX_CONDITIONS["restrictedfaxnumber"]


def condition(value: object) -> str:
    """A ``Response`` value, normalised: lower case, no spaces, dashes or underscores."""
    return re.sub(r"[\s_\-]", "", str(value)).lower()


# --- Phaxio --------------------------------------------------------------------------------------

PHAXIO_FINAL = frozenset({"success", "failure", "partialsuccess"})
_PHAXIO_CANCELED = frozenset({"canceled", "cancelled"})  # not in the documented enum [U]

_BUSY_IDS = frozenset({17})
_NO_ANSWER_IDS = frozenset({16, 30, 87, 112})
_BAD_NUMBER_IDS = frozenset({34, 49, 52, 73, 115})
PHAXIO_FAR_SIDE_ID = 6
_NOT_FAX_WORDS = ("not a fax", "no fax", "fax tone", "initial communication", "not fax")
_BAD_NUMBER_WORDS = (
    "not operational",
    "no route",
    "invalid number",
    "number changed",
    "has been changed",
    "bad number",
    "invalid phone",
    "not in service",
)
_CREDIT_WORDS = ("insufficient", "funds", "credit", "balance")


def phaxio_failure(
    error_type: str | None, error_id: int | None, message: str | None, attempts: int | None,
    label: str = "Phaxio",
) -> Verdict:
    """Why a Phaxio fax failed, from its (recipient's) error fields. ``label`` names who said it
    in the words (the built-in simulator speaks Phaxio's protocol but is not Phaxio)."""
    failed = FaxOutcome.FAILED
    kind = (error_type or "").strip()
    text = " ".join((message or "").split())
    low = text.lower()
    said = f" ({label}: {text})" if text else ""
    if error_id in _BUSY_IDS or "busy" in low:
        return Verdict(failed, busy(attempts), True)
    if error_id in _NO_ANSWER_IDS or "no answer" in low or "ring timeout" in low:
        return Verdict(failed, no_answer(attempts), True)
    if "cancel" in low:
        return Verdict(FaxOutcome.CANCELED, f"{CANCELED}{said}", False)
    if any(w in low for w in _NOT_FAX_WORDS):
        return Verdict(failed, NOT_A_FAX, False)
    # faxError 6 as Phaxio words it; a voice answer is one cause among others, so it is not
    # called "not a fax machine" unless the message says so.
    if kind == "faxError" and error_id == PHAXIO_FAR_SIDE_ID:
        return Verdict(failed, f"Fax error: an error communicating with the far side {on_attempts(attempts)}"
                               f"{said}", True)
    if error_id in _BAD_NUMBER_IDS or any(w in low for w in _BAD_NUMBER_WORDS):
        return Verdict(failed, bad_number((text or "the number cannot be reached").rstrip(".")), False)
    if kind == "documentConversionError":
        return Verdict(failed, doc_conversion(f"{label} could not read or convert the document{said}"), False)
    if any(w in low for w in _CREDIT_WORDS):
        return Verdict(failed, insufficient_credit(f"{label} refused to send{said}"), True)
    if kind == "lineError":
        return Verdict(
            failed, f"Line error: the call could not be completed {on_attempts(attempts)}{said}", True
        )
    if kind == "faxError":
        return Verdict(failed, f"Fax error: the fax machines could not complete the exchange{said}", True)
    if kind == "fatalError":
        return Verdict(failed, f"Fatal error: {label} cannot send this fax{said}", False)
    if kind == "generalError":
        title = label.removeprefix("the ").capitalize() if label.startswith("the ") else label
        return Verdict(failed, f"{title} error: the fax was not sent{said}", True)
    return Verdict(failed, f"Failed: {text}" if text else f"Failed: {label} gave no reason", True)


def phaxio_verdict(
    status: str | None,
    error_type: str | None,
    error_id: int | None,
    message: str | None,
    attempts: int | None,
    label: str = "Phaxio",
) -> Verdict:
    word = (status or "").strip().lower()
    if word == "success":
        return Verdict(FaxOutcome.DELIVERED)
    if word == "partialsuccess":
        # One recipient per fax here, so this should not happen; some recipients got it.
        note = phaxio_failure(error_type, error_id, message, attempts, label).reason
        return Verdict(FaxOutcome.DELIVERED, f"Partly delivered: some recipients did not get it: {note}")
    if word == "failure":
        return phaxio_failure(error_type, error_id, message, attempts, label)
    if word in _PHAXIO_CANCELED:
        return Verdict(FaxOutcome.CANCELED, CANCELED)
    return Verdict(FaxOutcome.PENDING)


# --- Sinch (Fax API v3) --------------------------------------------------------------------------

# Sinch's ``errorType`` words → Phaxio's, whose error table Sinch keeps (its ``errorCode`` values
# are Phaxio's error ids: 17 busy, 30 no answer, 6 far side, 4 conversion ...). CALL_ERROR is
# Sinch's own name for what Phaxio called a lineError (the call failed).
SINCH_ERROR_TYPES = {
    "DOCUMENT_CONVERSION_ERROR": "documentConversionError",
    "CALL_ERROR": "lineError",
    "LINE_ERROR": "lineError",
    "FAX_ERROR": "faxError",
    "FATAL_ERROR": "fatalError",
    "GENERAL_ERROR": "generalError",
}
SINCH_FINAL = frozenset({"COMPLETED", "FAILURE"})


def sinch_verdict(
    status: str | None,
    error_type: str | None,
    error_code: int | None,
    message: str | None,
    attempts: int | None,
    label: str = "Sinch",
) -> Verdict:
    """Outcome of a Sinch fax: ``status`` QUEUED | IN_PROGRESS | COMPLETED | FAILURE (any other
    word is not final); a failure's reason from Phaxio's table (:func:`phaxio_failure`)."""
    word = (status or "").strip().upper()
    if word == "COMPLETED":
        return Verdict(FaxOutcome.DELIVERED)
    if word in ("CANCELED", "CANCELLED"):         # not in the documented enum [U]
        return Verdict(FaxOutcome.CANCELED, CANCELED)
    if word == "FAILURE":
        kind = SINCH_ERROR_TYPES.get((error_type or "").strip().upper(), error_type)
        return phaxio_failure(kind, error_code, message, attempts, label)
    return Verdict(FaxOutcome.PENDING)
