"""Crash points: a test hook that kills the daemon with SIGKILL at a named moment.

``hit(name)`` is called, one line each, at the moments where a crash matters most for
"nothing lost, nothing twice" (a job committed but the 250 not yet sent, a fax accepted by the
provider but its id not yet recorded, a result file written but not yet renamed, ...). It does
nothing unless the environment variable ``FAXBRIDGE_CRASHPOINT`` names that point, as ``name``
(kill at the first hit) or ``name:N`` (kill at the N-th hit). Then it kills its own process with
SIGKILL, logging nothing first: as abrupt as the OOM killer or a power cut, minus the lost page
cache. ``tests/torture/test_crashpoints.py`` uses it to pin a kill to each moment and check the
invariants after a restart.

This is a TEST HOOK: never set ``FAXBRIDGE_CRASHPOINT`` in production. The variable is read once,
at import; unset, ``hit`` is one comparison with None. The names are a closed set
(:data:`POINTS`); :func:`check` (called by ``faxbridge run`` before anything starts) refuses an
unknown name, so a misspelt point in a test fails loudly instead of testing nothing.

The points and where they are:

- ``smtp.data``: DATA being received, no answer given (``ingress.smtp.protocol.FaxSMTP._read_data``).
- ``smtp.job_committed``: one recipient's job committed, the others of the message not yet
  (``ingress.smtp.commit.MailIntake.commit``, in the daemon; ``:N`` for the N-th job).
- ``smtp.before_reply``: every job of the message committed, the DATA reply (250) not yet sent
  (``ingress.smtp.protocol.FaxSMTP.smtp_DATA``).
- ``folder.claimed``: dropped files claimed (moved into the processing area, synced), no job
  committed yet (``ingress.folder.intake.FolderIntake._take``).
- ``folder.committed``: the folder round's jobs committed, nothing after
  (``ingress.folder.commit.Committer.complete``).
- ``dispatch.submitting``: ``submitting`` recorded, the provider request about to go out
  (``dispatcher.Dispatcher._submit``).
- ``dispatch.accepted``: the provider accepted the fax and gave its id, not yet recorded
  (``dispatcher.Dispatcher._submit``).
- ``webhook.parsed``: an authentic final webhook parsed, the state not yet advanced
  (``web.Handlers.phaxio``).
- ``webhook.applied``: the webhook's state change committed, the HTTP answer not yet sent
  (``web.Handlers._apply``).
- ``sidecar.temp_written``: the result file's temporary copy written and fsynced, not yet renamed
  (``ingress.folder.results.write_result``).
- ``sidecar.written``: the result file in place, its outbox row not yet marked delivered
  (``notify.sidecar.deliver``).
- ``mail.before_send``: the reply mail composed, not yet handed to the smarthost
  (``notify.mail.make_deliver``).
- ``mail.sent``: the smarthost accepted the reply, its outbox row not yet marked delivered
  (``notify.mail.make_deliver``).
"""

from __future__ import annotations

import os
import signal

ENV = "FAXBRIDGE_CRASHPOINT"

POINTS: frozenset[str] = frozenset({
    "smtp.data",
    "smtp.job_committed",
    "smtp.before_reply",
    "folder.claimed",
    "folder.committed",
    "dispatch.submitting",
    "dispatch.accepted",
    "webhook.parsed",
    "webhook.applied",
    "sidecar.temp_written",
    "sidecar.written",
    "mail.before_send",
    "mail.sent",
})


def parse(value: str) -> tuple[str, int]:
    """``name`` or ``name:N`` → (name, N). ValueError naming the problem for anything else."""
    name, sep, count = value.strip().partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={value!r}: unknown crash point {name!r} (known: {', '.join(sorted(POINTS))})")
    if not sep:
        return name, 1
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{ENV}={value!r}: the count after ':' must be a whole number from 1")
    return name, int(count)


def _armed(value: str | None) -> dict[str, int] | None:
    if not value:
        return None
    try:
        name, count = parse(value)
    except ValueError:
        return None              # check() reports it; hit() stays inert
    return {name: count}


_ARMED: dict[str, int] | None = _armed(os.environ.get(ENV))


def check() -> None:
    """Raise ValueError when ``FAXBRIDGE_CRASHPOINT`` is set to something that is not a known point."""
    value = os.environ.get(ENV)
    if value:
        parse(value)


_ALSO: list[int] = []


def also_kill(pid: int) -> None:
    """In a worker process (SMTP intake): a hit kills the daemon ``pid`` too, as a crash of the
    machine would, not the worker alone (counts of ``name:N`` are per process)."""
    _ALSO.append(pid)


def hit(name: str) -> None:
    """Kill this process with SIGKILL if ``FAXBRIDGE_CRASHPOINT`` names this point (at its N-th hit)."""
    if _ARMED is None or name not in _ARMED:
        return
    _ARMED[name] -= 1
    if _ARMED[name] <= 0:
        for pid in _ALSO:
            os.kill(pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
