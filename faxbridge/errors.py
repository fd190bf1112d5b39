"""The one exception tree of faxbridge.

Every error faxbridge raises on purpose is a :class:`FaxbridgeError`. Most are defined here; the
few that belong to one part are defined beside it (the module is named) and drawn here all the
same, so this is the whole tree::

    FaxbridgeError
    ├── ConfigError                  the configuration is wrong; .problems lists "key: what" lines
    ├── UsageError                   a command-line usage mistake (exit code 2)
    ├── AlreadyRunning               another daemon holds the state_dir lock (one daemon per store)
    ├── InputError                   what a user handed us cannot be faxed (a rejection, with .reason)
    │   ├── DocumentError            unreadable, encrypted, unsupported, zero or too many pages
    │   ├── NumberError              unreadable number, or one the number policy forbids
    │   ├── OptionError              options.py: a per-fax option with a value it cannot take; the
    │   │                            message names the header, flag or key
    │   └── ControlError             ingress/folder/control.py: a control file (NAME.json) that cannot be
    │                                used; .reason names the file and what is wrong
    ├── DuplicateJob                 the job was not made: the same input made one within the window
    │                                (.job_id is that job: the input is answered as that job's)
    ├── SenderOverLimit              the job was not made: its sender reached limits.per_sender_per_hour
    │                                (counted as the job commits; SMTP answers 451 4.7.1)
    ├── StoreError                   the job store failed (disk full, database locked, corrupt)
    │   ├── StoreBusy                transient: try again (SMTP answers 451 4.3.0)
    │   ├── UnreadableJob            a job's row does not decode (lists skip it; get names it)
    │   ├── Conflict                 the job changed since it was read: read again, decide again
    │   └── JobNotFound              no job with that id (or a prefix that names several: .matches)
    ├── ProviderError                a fax provider call failed; .reason is words for a person
    │   ├── TransientProviderError   connect error, timeout, 5xx, 429: retry with backoff
    │   │                            (.retry_after from Retry-After; .maybe_sent when the request
    │   │                            may have reached the provider, e.g. a read timeout: the
    │   │                            submission must be reconciled before it is sent again)
    │   └── PermanentProviderError   retrying cannot help; the job is final with .reason
    │       ├── RefusedError         the provider refused this fax (number, document, field)
    │       └── AccountError         bad credentials, account inactive, no credit: the operator
    │                                must act (.kind: "auth" | "inactive" | "credit")
    ├── WorkerError                  workers/engine.py: a job did not come back from its worker process
    │   ├── WorkerLost               workers/engine.py: the worker died or could not start (try later)
    │   └── TooMuchWork              workers/engine.py: over limits.job_cpu or job_memory (every try)
    ├── NotifyRetry                  notify/outbox.py: a reply mail (or result file) cannot be
    │                                delivered now; the outbox row is tried again with backoff
    ├── NotifyGiveUp                 notify/outbox.py: it can never be delivered (a 5xx for this
    │                                reply, an unsafe result name); the row is given up with the reason
    ├── ResultRefused                ingress/folder/results.py: a folder job's result can never be
    │                                written (no folder origin, an unsafe name); notify/sidecar.py
    │                                gives its row up (NotifyGiveUp)
    ├── Refused                      ingress/smtp/policy.py: an SMTP refusal at RCPT; .reply is the
    │                                full reply line, answered in the dialogue itself
    ├── BadRequest                   webform.py: a webhook body cannot be read as a form (400)
    └── TooLarge                     webform.py: a webhook body passes webhook.max_body (413)

Outside the tree on purpose:

- ``workers.caps.OverCpu`` is a ``BaseException``: raised from the CPU-time signal
  handler in the middle of parsing, it must pass every ``except Exception`` of the libraries.
- ``ingress.folder.safedir.UnsafeFolder`` is an ``OSError``: a folder we will not use is file trouble
  to its callers, who handle it as they handle any other ``OSError``.
- ``config_parse.Invalid`` (a ``ValueError``) never leaves the config parser: it becomes one
  line of a :class:`ConfigError`.
- The simulator's own errors (``simulator.forms``, ``simulator.phaxio_submit.Refused``) are the
  other side's: the simulator stands for a provider and shares nothing with the daemon.

Foreign exceptions (httpx, sqlite3, pypdf, Pillow) are translated into this tree at one
chokepoint per boundary, chained with ``from``.
"""

from __future__ import annotations

from collections.abc import Sequence


class FaxbridgeError(Exception):
    """Base of every error faxbridge raises on purpose."""


class ConfigError(FaxbridgeError):
    """The configuration is wrong. Each problem is one line that names its key."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class InputError(FaxbridgeError):
    """Input that cannot be faxed. ``reason`` is the sentence a person reads."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class DocumentError(InputError):
    """A document cannot be turned into fax pages (corrupt, encrypted, unsupported, pages)."""

    def __init__(self, reason: str, *, name: str | None = None, too_many_pages: bool = False) -> None:
        self.name = name
        self.too_many_pages = too_many_pages
        super().__init__(reason)


class NumberError(InputError):
    """A destination number is unreadable (``policy=False``) or forbidden by policy (``policy=True``)."""

    def __init__(self, reason: str, *, policy: bool = False) -> None:
        self.policy = policy
        super().__init__(reason)


class StoreError(FaxbridgeError):
    """The job store failed."""


class StoreBusy(StoreError):
    """Transient store trouble (locked database, full disk): the caller should try again later."""


class Conflict(StoreError):
    """The job changed since it was read; read it again and decide again."""


class UnreadableJob(StoreError):
    """A job's stored row does not decode (a ``state`` no :class:`JobState` has, ``meta`` that is
    not JSON...): raised by :meth:`faxbridge.store.JobStore.get` naming the id. List reads skip such a row (logged
    once as ``store.bad_row``), so one corrupt row never stops a loop."""

    def __init__(self, job_id: str, why: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id}: its row in the job store does not decode: {why}")


class JobNotFound(StoreError):
    def __init__(self, job_id: str, matches: int = 0) -> None:
        self.job_id = job_id
        self.matches = matches
        if matches > 1:
            super().__init__(f"{job_id} is ambiguous: {matches} jobs start with it; give more of the id")
        else:
            super().__init__(f"no job with id {job_id}")


class SenderOverLimit(FaxbridgeError):
    """The job was not made: its sender already has ``limit`` jobs in the window
    (``limits.per_sender_per_hour``). Counted inside the committing transaction, under a lock on the
    sender, so daemons sharing a store cannot each let one more through."""

    def __init__(self, sender: str, limit: int) -> None:
        super().__init__(f"{sender} has reached its limit of {limit} jobs")
        self.sender = sender
        self.limit = limit


class DuplicateJob(FaxbridgeError):
    """The job was not made: a job from the same input (its dedup key) was made within the window.
    Found inside the committing transaction, so two copies sent at the same moment make one job."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"duplicate of job {job_id}")
        self.job_id = job_id


class ProviderError(FaxbridgeError):
    """A provider call failed. ``reason`` is words for a person, never a secret."""

    def __init__(self, reason: str, *, provider: str = "", code: str | None = None) -> None:
        self.reason = reason
        self.provider = provider
        self.code = code
        super().__init__(reason)


class TransientProviderError(ProviderError):
    """Worth retrying later: connect error, timeout, 5xx, 429."""

    def __init__(
        self,
        reason: str,
        *,
        provider: str = "",
        code: str | None = None,
        retry_after: float | None = None,
        maybe_sent: bool = False,
    ) -> None:
        self.retry_after = retry_after
        self.maybe_sent = maybe_sent
        super().__init__(reason, provider=provider, code=code)


class PermanentProviderError(ProviderError):
    """Retrying the same request cannot help."""


class RefusedError(PermanentProviderError):
    """The provider refused this fax: its number, its document or one of its fields."""


class AccountError(PermanentProviderError):
    """The account cannot send: bad credentials, inactive account or no credit."""

    def __init__(self, reason: str, *, provider: str = "", code: str | None = None, kind: str = "auth") -> None:
        self.kind = kind
        super().__init__(reason, provider=provider, code=code)


class UsageError(FaxbridgeError):
    """A command-line usage mistake."""


class AlreadyRunning(FaxbridgeError):
    """Another faxbridge daemon holds the lock on this ``state_dir``: one daemon per store."""
