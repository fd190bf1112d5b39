"""A real PostgreSQL server for the tests, started by the tests themselves.

``pg_server`` (session): ``initdb`` + ``pg_ctl start`` in a fresh temporary folder, listening on
loopback at a free port (and a Unix socket in that folder), stopped and removed at the end of the
session; started only when a test asks for it. PostgreSQL refuses to run as root, so under root
(``.ci/run``) the server runs as ``nobody`` (``runuser``), its folder given to that user.
``pg_url``: a new, empty database on that server for one test, dropped after it.

Without ``initdb`` on PATH (``.ci/run`` installs the ``postgresql`` package), the PostgreSQL tests
are skipped with that reason.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "faxbridge"
_databases = itertools.count(1)


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):   # Debian's layout
        if (folder / name).is_file():
            return str(folder / name)
    return None


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    folder: Path
    pg_ctl: str
    options: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server (fast: connections are closed), as a database outage would."""
        _run([self.pg_ctl, "-D", str(self.folder / "data"), "-m", "fast", "-w", "-t", "60", "stop"], "pg_ctl stop")

    def start(self) -> None:
        _run([self.pg_ctl, "-D", str(self.folder / "data"), "-o", self.options, "-l",
              str(self.folder / "server.log"), "-w", "-t", "60", "start"], "pg_ctl start")


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "nobody", "--", *argv]


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(_as_server_user(argv), capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    if _binary("initdb") is None or _binary("pg_ctl") is None:
        pytest.skip("PostgreSQL is not installed (initdb not on PATH; .ci/run installs the postgresql package)")
    with local_server() as server:
        yield server


@contextmanager
def local_server() -> Iterator[PgServer]:
    """A PostgreSQL server of its own in a temporary folder (the tests' and the benchmarks'),
    stopped and removed on exit."""
    from tests.conftest import free_port

    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL is not installed (initdb not on PATH)")
    folder = Path(tempfile.mkdtemp(prefix="faxbridge-pg-"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    data = folder / "data"
    started = False
    try:
        _run([initdb, "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"], "initdb")
        for _ in range(5):          # a free port can be taken between the probe and the start: try another
            port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            try:
                _run([pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w",
                      "-t", "60", "start"], "pg_ctl start")
            except RuntimeError:
                continue
            started = True
            break
        if not started:
            raise RuntimeError(f"PostgreSQL did not start: {(folder / 'server.log').read_text(errors='replace')}")
        yield PgServer("127.0.0.1", port, folder, pg_ctl, options)
    finally:
        status = subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "status"]), capture_output=True,
                                check=False)
        if started and status.returncode == 0:      # (a test may have left it stopped)
            _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "-t", "60", "stop"], "pg_ctl stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database for one test (dropped after it, whoever is still connected)."""
    import psycopg

    name = f"t{os.getpid()}_{next(_databases)}"
    with psycopg.connect(pg_server.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.url(name)
    with psycopg.connect(pg_server.url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
