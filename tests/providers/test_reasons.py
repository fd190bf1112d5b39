"""Provider codes → outcome and reason in words (pure tables)."""

from __future__ import annotations

import pytest

from faxbridge.models import FaxOutcome
from faxbridge.providers.reasons import (
    OPENFAX_CONDITIONS,
    condition,
    on_attempts,
    openfax_verdict,
    phaxio_verdict,
)

D, F, P, C, A = (FaxOutcome.DELIVERED, FaxOutcome.FAILED, FaxOutcome.PENDING, FaxOutcome.CANCELED,
                 FaxOutcome.ATTENTION)


@pytest.mark.parametrize(
    ("state", "last", "attempts", "outcome", "words", "retryable"),
    [
        pytest.param(0, -1, None, P, None, False, id="received"),
        pytest.param(1, None, None, P, None, False, id="rendering-no-laststatus"),
        pytest.param(5, -1, 1, P, None, False, id="dialing"),
        pytest.param(7, 2, 1, P, None, False, id="waiting-redial-after-busy"),
        pytest.param(12, 1, 2, F, "No Answer: there was no answer on all 2 attempts", True, id="retry-eligible"),
        pytest.param(12, None, 1, F, "Failed: Openfax stopped dialing without delivering the fax (Retry Eligible)",
                     True, id="retry-eligible-no-laststatus"),
        pytest.param(8, 0, 1, D, None, False, id="delivered"),
        pytest.param(8, None, 2, D, None, False, id="delivered-no-laststatus"),
        pytest.param(9, 1, 3, F, "No Answer: there was no answer on all 3 attempts", True, id="no-answer"),
        pytest.param(9, 2, 3, F, "Busy: the line was busy on all 3 attempts", True, id="busy"),
        pytest.param(9, 3, 1, F, "Not a fax machine: the number answered but no fax machine did", False,
                     id="not-fax"),
        pytest.param(9, 4, 3, F, "All circuits busy", True, id="circuits"),
        pytest.param(9, 5, 1, F, "Bad number:", False, id="bad-number"),
        pytest.param(9, 6, 3, F, "Call disconnected", True, id="disconnected"),
        pytest.param(9, 7, 3, F, "Transmission failed", True, id="unknown-other"),
        pytest.param(9, 8, 0, F, "Document conversion failed:", False, id="doc-status-8"),
        pytest.param(9, 9, 0, F, "Insufficient credit:", True, id="credit-check"),
        pytest.param(9, None, 3, F, "Failed: Openfax reports", True, id="failed-no-laststatus"),
        pytest.param(10, None, 0, F, "Document conversion failed:", False, id="doc-state-10"),
        pytest.param(11, -1, None, A, "needs the operator: add credit", True, id="credit-hold"),
        pytest.param(13, None, 1, C, "Canceled", False, id="canceled"),
        # postbacks: LastStatus only, sent when final
        pytest.param(None, 0, None, D, None, False, id="postback-ok"),
        pytest.param(None, 2, 3, F, "Busy: the line was busy on all 3 attempts", True, id="postback-busy"),
        pytest.param(None, 1, None, F, "No Answer: there was no answer on every attempt", True,
                     id="postback-no-answer"),
        pytest.param(None, -1, None, P, None, False, id="postback-received"),
        pytest.param(None, None, None, P, None, False, id="nothing"),
    ],
)
def test_openfax_verdict(
    state: int | None, last: int | None, attempts: int | None, outcome: FaxOutcome, words: str | None,
    retryable: bool,
) -> None:
    v = openfax_verdict(state, last, attempts)
    assert v.outcome is outcome
    if words is None:
        assert v.reason is None or outcome is not P
    else:
        assert v.reason is not None and words in v.reason
    assert v.retryable is retryable


@pytest.mark.parametrize(
    ("status", "etype", "eid", "msg", "attempts", "outcome", "words"),
    [
        pytest.param("queued", None, None, None, None, P, None, id="queued"),
        pytest.param("pendingbatch", None, None, None, None, P, None, id="pendingbatch"),
        pytest.param("inprogress", None, None, None, 1, P, None, id="inprogress"),
        pytest.param("willretry", "lineError", 17, "Busy", 1, P, None, id="recipient-willretry"),
        pytest.param("somethingnew", None, None, None, None, P, None, id="unknown-word-not-final"),
        pytest.param(None, None, None, None, None, P, None, id="null"),
        pytest.param("success", None, None, None, 1, D, None, id="success"),
        pytest.param("partialsuccess", "lineError", 17, "Busy", 1, D, "Partly delivered", id="partial"),
        pytest.param("failure", "lineError", 17, "Busy", 3, F, "Busy: the line was busy on all 3 attempts",
                     id="busy-17"),
        pytest.param("failure", "lineError", 30, "No answer from the fax machine.", 3, F,
                     "No Answer: there was no answer on all 3 attempts", id="no-answer-30"),
        pytest.param("failure", "lineError", 16, "Ring Timeout", 2, F, "No Answer", id="ring-timeout-16"),
        pytest.param("failure", "lineError", 112, None, 1, F, "No Answer", id="no-answer-112-no-msg"),
        pytest.param("failure", "lineError", 34, "Phone number not operational", 1, F,
                     "Bad number: Phone number not operational", id="bad-34"),
        pytest.param("failure", "lineError", 52, "No route available", 1, F, "Bad number", id="no-route-52"),
        pytest.param("failure", "faxError", None, "Not a fax machine", 1, F,
                     "Not a fax machine: the number answered but no fax machine did", id="not-fax-words"),
        pytest.param("failure", "faxError", 6, "Timed out waiting for initial communication", 1, F,
                     "Not a fax machine", id="not-fax-initial"),
        pytest.param("failure", "faxError", 8, "No response after sending a page", 1, F, "Fax error",
                     id="fax-error"),
        pytest.param("failure", "faxError", 6, "There was an error communicating with the far side.", 1, F,
                     "Fax error: an error communicating with the far side on the one attempt made (Phaxio: There "
                     "was an error communicating with the far side.)", id="far-side-6"),
        pytest.param("failure", "generalError", None, "Fax canceled (canceled by request)", 1, C, "Canceled",
                     id="canceled-as-failure"),
        pytest.param("failure", "documentConversionError", 129, "Mimetype not supported.", None, F,
                     "Document conversion failed:", id="doc"),
        pytest.param("failure", "generalError", None, "Insufficient funds", None, F, "Insufficient credit:",
                     id="credit"),
        pytest.param("failure", "lineError", 15, "Congestion", 2, F, "Line error", id="congestion"),
        pytest.param("failure", "fatalError", None, "boom", None, F, "Fatal error", id="fatal"),
        pytest.param("failure", "generalError", None, "odd", None, F, "Phaxio error", id="general"),
        pytest.param("failure", None, None, None, None, F, "Failed: Phaxio gave no reason", id="bare"),
        pytest.param("canceled", None, None, None, None, C, "Canceled", id="canceled"),
    ],
)
def test_phaxio_verdict(
    status: str | None, etype: str | None, eid: int | None, msg: str | None, attempts: int | None,
    outcome: FaxOutcome, words: str | None,
) -> None:
    v = phaxio_verdict(status, etype, eid, msg, attempts)
    assert v.outcome is outcome
    if words is not None:
        assert v.reason is not None and words in v.reason


def test_attempt_phrases() -> None:
    assert on_attempts(3) == "on all 3 attempts"
    assert on_attempts(1) == "on the one attempt made"
    assert on_attempts(None) == "on every attempt"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("Restricted Number", "restrictednumber"),
        ("RestrictedFaxNumber", "restrictedfaxnumber"),
        ("InvalidPapersize", "invalidpapersize"),
        ("InvalidPaperSize", "invalidpapersize"),
        (" invalid_Priority ", "invalidpriority"),
    ],
)
def test_condition_normalised(raw: str, key: str) -> None:
    assert condition(raw) == key
    assert key in OPENFAX_CONDITIONS


def test_phaxio_duration_is_seconds_from_creation_to_completion() -> None:
    from faxbridge.providers.phaxio import fax_update

    fax = {"id": 7, "status": "success", "created_at": "2021-11-04T16:28:30.000-05:00",
           "completed_at": "2021-11-04T16:29:18.000-05:00", "cost": 7,
           "recipients": [{"phone_number": "+15558675309", "status": "success", "retry_count": 0}]}
    update = fax_update(fax)
    assert update.duration_s == 48.0 and update.cost == 0.07
    assert fax_update({**fax, "completed_at": None}).duration_s is None
    assert fax_update({**fax, "created_at": 1636061310, "completed_at": 1636061358}).duration_s == 48.0


@pytest.mark.parametrize(("error_type", "message", "words"), [
    ("generalError", "User requested simulated generalError",
     "Simulator error: the fax was not sent (the simulator: User requested simulated generalError)"),
    ("documentConversionError", None, "Document conversion failed: the simulator could not read or convert"),
    (None, None, "Failed: the simulator gave no reason"),
], ids=["general", "conversion", "no-reason"])
def test_the_built_in_simulator_is_not_called_phaxio(error_type: str | None, message: str | None,
                                                     words: str) -> None:
    reason = phaxio_verdict("failure", error_type, None, message, 1, "the simulator").reason
    assert reason is not None and reason.startswith(words) and "Phaxio" not in reason
