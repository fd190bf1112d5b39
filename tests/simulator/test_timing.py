"""The call model, as a table: attempts and results by the destination's last digit."""

from __future__ import annotations

import pytest

from faxbridge.simulator.timing import (
    BUSY_S,
    NO_ANSWER_S,
    REDIAL_WAIT_S,
    RENDER_S,
    CallResult,
    Phase,
    RenderError,
    plan,
    snapshot,
)

B, D, N, X = CallResult.BUSY, CallResult.DELIVERED, CallResult.NO_ANSWER, CallResult.NOT_FAX


@pytest.mark.parametrize(
    ("digit", "results", "delivered"),
    [
        *[(str(d), (D,), True) for d in range(6)],
        ("6", (B, D), True),
        ("7", (N, N, N), False),
        ("8", (X,), False),
        ("9", (B, B, B), False),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_outcome_by_last_digit(digit: str, results: tuple[CallResult, ...], delivered: bool) -> None:
    tl = plan("+1555555010" + digit, pages=3)
    assert tuple(a.result for a in tl.attempts) == results
    assert tl.delivered is delivered
    assert [a.number for a in tl.attempts] == list(range(1, len(results) + 1))
    assert tl.pages_sent == (3 if delivered else 0)
    assert tl.cost_cents == (21 if delivered else 0)


def test_busy_then_redial_timing() -> None:
    tl = plan("+15555550106", pages=2)
    first, second = tl.attempts
    assert first.start == RENDER_S and first.duration == BUSY_S
    assert second.start == first.end + REDIAL_WAIT_S
    assert second.duration == 20 + 2 * 30
    assert tl.final_at == second.end


def test_no_answer_timing() -> None:
    tl = plan("+15555550107", pages=1)
    assert [a.duration for a in tl.attempts] == [NO_ANSWER_S] * 3
    assert tl.final_at == RENDER_S + 3 * NO_ANSWER_S + 2 * REDIAL_WAIT_S


def test_snapshot_phases_follow_the_clock() -> None:
    tl = plan("+15555550106", pages=1)
    second = tl.attempts[1]
    expected = [
        (0.0, Phase.RENDERING),
        (RENDER_S + 1, Phase.RINGING),
        (RENDER_S + BUSY_S + 1, Phase.WAITING_REDIAL),
        (second.start + 1, Phase.RINGING),
        (second.start + 21, Phase.CONNECTED),
        (second.end, Phase.DELIVERED),
    ]
    for elapsed, phase in expected:
        assert snapshot(tl, elapsed).phase is phase, elapsed


def test_snapshot_cancel_and_batch_delay() -> None:
    tl = plan("+15555550107", pages=1, delay=60)
    assert snapshot(tl, 10).phase is Phase.BATCHING
    snap = snapshot(tl, 400, canceled_at=200)
    assert snap.phase is Phase.CANCELED and snap.final_at == 200
    assert snapshot(tl, 100, canceled_at=200).phase is Phase.RINGING


def test_render_error_has_no_calls() -> None:
    tl = plan("+15555550100", pages=0, render_error=RenderError.CONVERSION)
    assert tl.attempts == () and not tl.delivered and tl.final_at == RENDER_S
    assert snapshot(tl, RENDER_S).phase is Phase.FAILED
