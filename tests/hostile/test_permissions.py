"""Contract section 9: ``state_dir`` is 0700, the database (and its -wal/-shm) and spool files 0600,
whatever the umask: the real daemon in a subprocess started under umask 0."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from faxbridge.store import Store
from tests.conftest import wait_until
from tests.support import DaemonProcess, base_settings, cli, make_pdf, write_config


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _config(tmp: Path) -> Path:
    settings = base_settings(tmp)
    settings["watch"] = [{"path": str(tmp / "outbox"), "results": str(tmp / "results"), "done": str(tmp / "done"),
                          "failed": str(tmp / "failed"), "settle": "200ms"}]
    return write_config(tmp / "faxbridge.toml", settings)


def _spool_modes(state: Path) -> dict[str, int]:
    out = {}
    for folder in (state / "spool").iterdir():
        if folder.name == ".staging":
            continue
        out[folder.name] = mode(folder)
        for doc in folder.iterdir():
            out[f"{folder.name}/{doc.name}"] = mode(doc)
            if doc.is_dir():                      # received/: the documents as received
                out.update({f"{folder.name}/{doc.name}/{f.name}": mode(f) for f in doc.iterdir()})
    return out


def test_state_dir_database_and_spool_are_private_under_umask_zero(tmp_path: Path, umask_zero: None) -> None:
    config = _config(tmp_path)
    state = tmp_path / "var"
    (tmp_path / "outbox").mkdir()
    proc = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        proc.wait_ready(60)
        make_pdf(tmp_path / "made" / "15555551212.pdf").rename(tmp_path / "outbox" / "15555551212.pdf")
        wait_until(lambda: _spool_modes(state), timeout=60, what="a document in the spool")
        assert mode(state) == 0o700
        assert mode(state / "faxbridge.db") == 0o600
        for name in ("faxbridge.db-wal", "faxbridge.db-shm"):
            assert (state / name).exists() and mode(state / name) == 0o600, name
        assert mode(state / "spool") == 0o700 and mode(state / "spool" / ".staging") == 0o700
        spooled = _spool_modes(state)
        assert set(spooled.values()) == {0o700, 0o600} and len(spooled) == 4
        assert [m for name, m in spooled.items() if name.endswith("/fax.pdf")] == [0o600]
        assert [m for name, m in spooled.items() if name.endswith("/received/0-15555551212.pdf")] == [0o600]
        assert [m for name, m in spooled.items() if name.endswith("/received")] == [0o700]
        wait_until(lambda: (tmp_path / "results" / "15555551212.result.json").exists(), timeout=60,
                   what="the job's result")
    finally:
        assert proc.stop() == 0
    jobs = cli("jobs", "--json", "--state", "delivered", config=config)
    assert '"document": "15555551212.pdf"' in jobs.stdout          # the job went through


def test_an_open_state_dir_of_an_older_version_is_tightened(tmp_path: Path, umask_zero: None) -> None:
    """A state_dir 0755 with a database 0644 (as created before, outside the unit): a store opened on it
    makes them 0700 and 0600, and every job in it is still there."""
    state = tmp_path / "var"
    state.mkdir(mode=0o755)
    Store(state, "simulator").close()
    os.chmod(state, 0o755)
    os.chmod(state / "faxbridge.db", 0o644)
    os.chmod(state / "spool", 0o755)
    store = Store(state, "simulator")
    try:
        assert (mode(state), mode(state / "faxbridge.db"), mode(state / "spool")) == (0o700, 0o600, 0o700)
        for name in ("faxbridge.db-wal", "faxbridge.db-shm"):
            if (state / name).exists():
                assert mode(state / name) == 0o600, name
        assert store.schema_version > 0
    finally:
        store.close()
