"""The extension key ``watch.max_size``: default, parsing, and its errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from faxbridge.config import ConfigError, defaults, load


def test_max_size_default_is_50mb(tmp_path: Path) -> None:
    assert defaults(tmp_path).watch[0].max_size == 50_000_000
    f = tmp_path / "c.toml"
    f.write_text('[[watch]]\npath = "in"\n')
    assert load(f, {}).watch[0].max_size == 50_000_000


@pytest.mark.parametrize(("text", "size"), [('"2MB"', 2_000_000), ('"1.5 KiB"', 1536), ('"1GB"', 10**9)])
def test_max_size_is_a_size(tmp_path: Path, text: str, size: int) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f'[[watch]]\npath = "in"\nmax_size = {text}\n')
    assert load(f, {}).watch[0].max_size == size


@pytest.mark.parametrize(("text", "problem"), [
    ('"0MB"', "watch[0].max_size: must be more than 0, got '0MB'"),
    ("5", "watch[0].max_size: expected a size"),
    ('"lots"', "watch[0].max_size: expected a size"),
])
def test_bad_max_size_names_its_key(tmp_path: Path, text: str, problem: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f'[[watch]]\npath = "in"\nmax_size = {text}\n')
    with pytest.raises(ConfigError) as caught:
        load(f, {})
    assert len(caught.value.problems) == 1 and caught.value.problems[0].startswith(problem)
