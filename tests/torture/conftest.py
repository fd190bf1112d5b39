"""Fixtures of the torture tests: the state folder on a file system of its own (statefs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.torture import statefs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MB tmpfs, to fill up."""
    with statefs.tmpfs(tmp_path / "state") as mount:
        yield mount


@pytest.fixture
def ext4_disk(tmp_path: Path) -> Iterator[Path]:
    """An ext4 loop device mounted with errors=remount-ro (its image is ``tmp_path / "state.img"``)."""
    with statefs.ext4_loop(tmp_path / "state.img", tmp_path / "state") as mount:
        yield mount
