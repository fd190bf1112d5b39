"""Webhook helpers: Phaxio signature (providers.md §1.8 vectors), callbacks, Openfax postbacks."""

from __future__ import annotations

import json

import pytest

from faxbridge.models import FaxOutcome
from faxbridge.providers import openfax, phaxio


@pytest.mark.parametrize(
    ("token", "files", "expected"),
    [
        pytest.param("test-webhook-token", [], "64a735ef0c47a0ae671e381c046648f0966deb29", id="ruby-master"),
        pytest.param("test-webhook-token", [("file", b""), ("file", b"")],
                     "1d2426c242a8c5de7eb1d9b662b7fda1d0b6edab", id="ruby-two-files"),
        pytest.param("1234567890", [], "15adeecb7eca79676ece07ee4bc1bbba2c69eddd", id="ruby-v1"),
    ],
)
def test_signature_vectors(token: str, files: list[tuple[str, bytes]], expected: str) -> None:
    fields = {"test": "true"}
    assert phaxio.signature(token, "example.com", fields, files) == expected
    assert phaxio.verify_signature(token, "example.com", fields, files, expected)
    assert phaxio.verify_signature(token, "example.com", fields, files, expected.upper())
    assert not phaxio.verify_signature(token, "example.com/", fields, files, expected)
    assert not phaxio.verify_signature(token, "example.com", {"test": "false"}, files, expected)
    assert not phaxio.verify_signature("other", "example.com", fields, files, expected)
    assert not phaxio.verify_signature(token, "example.com", fields, files, None)
    assert not phaxio.verify_signature("", "example.com", fields, files, expected)


def _fax(**over: object) -> dict[str, object]:
    fax: dict[str, object] = {
        "id": 323034813, "direction": "sent", "num_pages": 3, "status": "failure", "is_test": True,
        "created_at": "2021-11-04T16:28:30.000-05:00", "cost": 21, "tags": {"faxbridge_job": "J1"},
        "recipients": [{"phone_number": "+15558675309", "status": "failure", "retry_count": 2,
                        "error_type": "lineError", "error_id": 17, "error_message": "Busy"}],
        "error_type": "lineError", "error_id": 17, "error_message": "Busy",
    }
    fax.update(over)
    return fax


def test_callback_v2() -> None:
    fields = {"fax": json.dumps(_fax()), "success": "false", "is_test": "true", "direction": "sent"}
    u = phaxio.parse_callback(fields)
    assert u is not None
    assert (u.provider, u.provider_id, u.outcome, u.attempts, u.pages, u.job_id) == (
        "phaxio", "323034813", FaxOutcome.FAILED, 3, 3, "J1")
    assert u.reason == "Busy: the line was busy on all 3 attempts"
    assert u.cost == pytest.approx(0.21)
    assert u.status_code == 17 and u.retryable


def test_callback_v21_completed_success() -> None:
    fax = _fax(status="success", error_type=None, error_id=None, error_message=None,
               recipients=[{"phone_number": "+15558675300", "status": "success", "retry_count": 0}])
    u = phaxio.parse_callback({"fax": json.dumps(fax), "event_type": "fax_completed"})
    assert u is not None and u.outcome is FaxOutcome.DELIVERED and u.attempts == 1 and u.reason is None


@pytest.mark.parametrize("event", ["transmitting_page", "retry_scheduled"])
def test_callback_inflight_never_final(event: str) -> None:
    fields = {"fax": json.dumps(_fax(status="inprogress")), "event_type": event, "page": "1",
              "recipient_phone_number": "+15558675309"}
    assert phaxio.parse_callback(fields) is None


def test_callback_v1_error_code_and_success_flag() -> None:
    fax = _fax(status=None, error_id=None, error_message=None, error_type="lineError",
               recipients=[{"phone_number": "+1555", "retry_count": 0, "error_type": "lineError",
                            "error_code": "No answer from the fax machine"}])
    u = phaxio.parse_callback({"fax": json.dumps(fax), "success": "0"})
    assert u is not None and u.outcome is FaxOutcome.FAILED and "No Answer" in (u.reason or "")


def test_callback_received_fax_ignored_and_bad_payloads() -> None:
    assert phaxio.parse_callback({"fax": json.dumps(_fax(direction="received"))}) is None
    with pytest.raises(ValueError):
        phaxio.parse_callback({})
    with pytest.raises(ValueError):
        phaxio.parse_callback({"fax": "{not json"})
    with pytest.raises(ValueError):
        phaxio.parse_callback({"fax": json.dumps({"status": "success"})})


@pytest.mark.parametrize(
    ("last", "outcome", "words"),
    [
        ("0", FaxOutcome.DELIVERED, None),
        ("2", FaxOutcome.FAILED, "Busy"),
        ("1", FaxOutcome.FAILED, "No Answer"),
        ("3", FaxOutcome.FAILED, "Not a fax machine"),
        ("8", FaxOutcome.FAILED, "Document conversion failed"),
    ],
)
def test_openfax_postback(last: str, outcome: FaxOutcome, words: str | None) -> None:
    fields = {"OutTransID": "779029", "AccountID": "123", "From": "Me", "To": "You", "PagesSent": "2",
              "CallDuration": "48", "LastStatus": last, "RealCost": "0.14"}
    u = openfax.parse_postback(fields)
    assert (u.provider, u.provider_id, u.outcome, u.pages, u.duration_s, u.cost) == (
        "openfax", "779029", outcome, 2, 48.0, 0.14)
    assert u.status_code == int(last)
    if words:
        assert u.reason and words in u.reason


def test_openfax_postback_needs_id() -> None:
    with pytest.raises(ValueError):
        openfax.parse_postback({"LastStatus": "0"})
