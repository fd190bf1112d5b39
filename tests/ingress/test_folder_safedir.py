"""The working area checked once a round (safedir.one_check_per_round): the round uses the folder it
checked, whatever is swapped in under the name meanwhile, and the next use checks again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faxbridge.ingress.folder import safedir


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_one_check_a_round_then_the_next_use_checks_again(tmp_path: Path) -> None:
    watch = tmp_path / "outbox"
    watch.mkdir()
    os.close(safedir.open_area(watch, repair=True))       # made, 0700
    before = open_fds()
    with safedir.one_check_per_round():
        first = safedir.open_area(watch)
        checked = os.fstat(first)
        os.rename(watch / ".faxbridge", watch / ".moved")  # swapped for a link to a folder of the same shape
        (tmp_path / "elsewhere" / "processing").mkdir(parents=True, mode=0o700)
        (watch / ".faxbridge").symlink_to(tmp_path / "elsewhere")
        second = safedir.open_area(watch)                 # the round goes on in the folder it checked
        assert os.path.samestat(os.fstat(second), checked)
        assert second != first                            # a descriptor of its own, closed by the caller
        os.close(first)
        os.close(second)
    assert open_fds() == before                           # the round's own descriptor is closed with it
    with pytest.raises(safedir.UnsafeFolder, match="a symbolic link"):
        safedir.open_area(watch)                          # outside a round: checked at every use
    with safedir.one_check_per_round(), pytest.raises(safedir.UnsafeFolder, match="a symbolic link"):
        safedir.open_area(watch)                          # a new round: checked again
    fresh = safedir.open_area(watch, repair=True)         # the intake moves the link aside, makes its own
    try:
        assert not os.path.samestat(os.fstat(fresh), os.stat(tmp_path / "elsewhere" / "processing"))
        assert [n for n in os.listdir(watch) if n.startswith(".faxbridge.refused-")]
    finally:
        os.close(fresh)


def test_rounds_of_two_folders_keep_each_its_own(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for watch in (a, b):
        watch.mkdir()
    with safedir.one_check_per_round():
        fa = safedir.open_area(a, repair=True)
        fb = safedir.open_area(b, repair=True)
        try:
            assert os.path.samestat(os.fstat(fa), os.stat(a / ".faxbridge" / "processing"))
            assert os.path.samestat(os.fstat(fb), os.stat(b / ".faxbridge" / "processing"))
        finally:
            os.close(fa)
            os.close(fb)
