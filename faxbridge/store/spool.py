"""The document spool on local disk: ``state_dir/spool/<job id>/fax.pdf``, staged under ``.staging``.

Intake (in the daemon or in an intake worker process) makes a private staging folder per job
(:meth:`FileSpool.stage`) and writes the fax-ready PDF into it; the store moves that folder into
the spool (rename + fsync) before it commits the job's row. Plain paths: a :class:`FileSpool` is
picklable, so worker processes get their own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from faxbridge.store.protocol import DOC_NAME, RECEIVED_DIR


class FileSpool:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "spool"
        self.staging = self.root / ".staging"

    def stage(self, job_id: str) -> Path:
        """A fresh staging folder; a failure (a full or read-only disk) is the store's
        (:func:`faxbridge.store.threaded.translate`: StoreBusy / StoreError)."""
        path = self.staging / job_id
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=False)
        except OSError as exc:
            from faxbridge.store.threaded import translate  # (threaded imports this module)

            raise translate(exc) from exc
        return path

    def discard_stage(self, job_id: str) -> None:
        shutil.rmtree(self.staging / job_id, ignore_errors=True)

    def document_path(self, job_id: str) -> Path:
        return self.root / job_id / DOC_NAME

    def received_path(self, job_id: str) -> Path:
        return self.root / job_id / RECEIVED_DIR

    def __repr__(self) -> str:
        return f"FileSpool({str(self.root)!r})"
