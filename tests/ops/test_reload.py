"""SIGHUP reload plan: live keys apply, the rest is reported as not reloaded."""

from __future__ import annotations

from pathlib import Path

from faxbridge import config
from faxbridge.reload import plan
from tests.support import write_config


def load(tmp_path: Path, **sections: object) -> config.Config:
    settings = {"state_dir": str(tmp_path / "var"), **sections}
    return config.load(write_config(tmp_path / "f.toml", settings), {})


def test_nothing_changed(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    p = plan(cfg, load(tmp_path))
    assert p.applied == [] and p.not_applied == [] and p.config == cfg


def test_live_keys_apply_and_others_wait_for_a_restart(tmp_path: Path) -> None:
    old = load(tmp_path)
    new = load(tmp_path,
               smtp={"allowed_senders": ["*@example.com"], "listen": "127.0.0.1:2526"},
               numbers={"allowed_countries": ["US"], "max_pages": 20},
               limits={"max_in_flight": 5},
               provider={"poll_interval": "10s"},
               log={"level": "debug"})
    p = plan(old, new)
    assert sorted(p.applied) == ["limits.max_in_flight", "log.level", "numbers.allowed_countries",
                                 "numbers.max_pages", "smtp.allowed_senders"]
    assert sorted(p.not_applied) == ["provider.poll_interval", "smtp.listen"]
    assert p.config.smtp.allowed_senders == ("*@example.com",)
    assert p.config.smtp.listen == old.smtp.listen          # kept: needs a restart
    assert p.config.provider.poll_interval == old.provider.poll_interval
    assert p.config.numbers.max_pages == 20 and p.config.limits.max_in_flight == 5
    assert p.config.log.level == "debug"


def test_watch_folder_changes_are_not_live(tmp_path: Path) -> None:
    old = load(tmp_path, watch=[{"path": str(tmp_path / "a")}])
    new = load(tmp_path, watch=[{"path": str(tmp_path / "b")}])
    p = plan(old, new)
    assert p.applied == [] and p.not_applied == ["watch[0].path"]
    assert plan(old, load(tmp_path)).not_applied == ["watch"]
