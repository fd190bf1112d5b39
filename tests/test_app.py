"""app.py's wiring, on the real daemon in this event loop: one worker engine for mail and folder work
(reconfigured by app.py on a reload, closed after every part) and the daemon's one store in every part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faxbridge.ingress.folder.watch import FolderWatcher
from faxbridge.models import JobState
from faxbridge.workers import WorkerLost
from tests.conftest import async_wait_until
from tests.ingress import mailkit
from tests.ingress.mailkit import config_of, running, smtp_settings
from tests.support import make_pdf, write_config


async def test_one_engine_and_one_store_for_mail_and_folder(tmp_path: Path) -> None:
    (tmp_path / "outbox").mkdir()
    settings: dict[str, Any] = smtp_settings(tmp_path, cover_page="never")
    settings["watch"] = [{"path": str(tmp_path / "outbox"), "results": str(tmp_path / "results"),
                          "done": str(tmp_path / "done"), "failed": str(tmp_path / "failed"), "settle": "200ms"}]
    settings["limits"] = {"worker_idle": "30s"}
    cfg = config_of(tmp_path, settings)
    async with running(cfg) as daemon:
        engine, store = daemon.engine, daemon.store
        assert engine is not None and store is not None
        smtp = mailkit.listener(daemon)
        [folder] = [c for c in daemon.components if isinstance(c, FolderWatcher)]
        assert smtp.handler.intake.engine is engine and folder.engine is engine
        assert smtp.handler.store is store and folder.store is store
        assert daemon.reconfigurable == [engine, smtp, folder]

        settings["limits"] = {"worker_idle": "45s"}       # SIGHUP: a live key
        assert cfg.source is not None
        write_config(cfg.source, settings)
        daemon.reload()
        assert engine.idle == 45.0 and smtp.cfg.limits.worker_idle == 45.0

        pdf = mailkit.pdf_bytes(tmp_path)
        answers = await mailkit.asend(mailkit.address(daemon), "alice@example.com", ["15555551212@fax.local"],
                                      mailkit.with_attachment(pdf, name="doc.pdf", ctype="application/pdf"))
        assert answers[-1].code == 250
        make_pdf(tmp_path / "outbox" / "15555551213.pdf")
        await async_wait_until(lambda: (tmp_path / "results" / "15555551213.result.json").exists(), timeout=60,
                               what="the file's result")

        async def both_sent() -> bool:
            jobs = await store.jobs()
            return len(jobs) == 2 and all(j.state is not JobState.QUEUED for j in jobs)
        await async_wait_until(both_sent, timeout=60, what="both jobs taken by the dispatcher")
    assert smtp.handler.store is None                   # the listener let go of the daemon's store...
    with pytest.raises(WorkerLost, match="closed"):      # ...and app.py closed the engine after the parts
        await engine.run(len, b"")
