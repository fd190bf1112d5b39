"""Accepting a document for faxing: number policy, fax-ready PDF, durable job.

Every ingress (the CLI now; SMTP and folders later) ends here. The document is prepared
into the store's staging folder and the job committed by :meth:`Store.enqueue`, which
fsyncs before it commits: when ``accept`` returns, the job is durable.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from faxbridge.clock import Clock
from faxbridge.config import NumbersConfig
from faxbridge.documents import prepare
from faxbridge.errors import FaxbridgeError
from faxbridge.models import InputFile, Job, NewJob
from faxbridge.numbers import ParsedNumber, check_policy, parse
from faxbridge.store import DOC_NAME, Store, new_job_id

log = structlog.get_logger("faxbridge.intake")


def destination(text: str, policy: NumbersConfig) -> ParsedNumber:
    """Parse and check a destination; NumberError with a reason for a person."""
    number = parse(text, policy.default_country, strict=policy.strict)
    check_policy(number, policy)
    return number


def accept(store: Store, clock: Clock, new: NewJob, files: Sequence[InputFile], *, max_pages: int) -> Job:
    """Prepare the documents and commit the job. Raises DocumentError / StoreError; leaves no trace then."""
    job_id = new_job_id()
    staged = store.stage(job_id)
    try:
        doc = prepare(files, staged / DOC_NAME, max_pages=max_pages, paper=new.options.paper)
        job = store.enqueue(job_id, new, doc, clock.now())
    except (FaxbridgeError, OSError):
        store.discard_stage(job_id)
        raise
    log.info("job.enqueued", job_id=job.id, source=job.source.value, to=job.to, pages=job.pages,
             document=job.document)
    return job
