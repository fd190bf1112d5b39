"""The architecture contracts of pyproject.toml ([tool.importlinter]) hold, and each one can fail.

``lint-imports`` (import-linter) checks who may import whom: the pure core imports no I/O part,
providers know only HTTP, the simulator is the other side, the store knows the core only,
nothing imports the CLI, only the CLI imports app.py, ingress imports neither providers nor the
dispatcher, tracker, simulator or notify, and the shape every part shares (``faxbridge.component``)
knows no part (no service locator). .ci/run runs it too; this test makes the README's test command
check it as well.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _contracts() -> list[dict[str, Any]]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        contracts: list[dict[str, Any]] = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    return contracts


def _lint(cwd: Path) -> tuple[int, str]:
    done = subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache"], cwd=cwd, capture_output=True,
                          text=True, timeout=100)
    return done.returncode, done.stdout + done.stderr


def _tally(output: str) -> tuple[int, int]:
    m = re.search(r"Contracts: (\d+) kept, (\d+) broken\.", output)
    assert m, output
    return int(m[1]), int(m[2])


def test_every_enabled_contract_is_kept() -> None:
    code, output = _lint(ROOT)
    assert (code, _tally(output)) == (0, (len(_contracts()), 0)), output


def _module_file(root: Path, module: str) -> Path:
    path = root.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _first_internal(modules: list[str]) -> str:
    return next(m for m in modules if m.startswith("faxbridge.") and "*" not in m)


def test_each_contract_breaks_on_an_import_it_forbids(tmp_path: Path) -> None:
    """A copy of the package with one forbidden import added per contract: every contract says BROKEN."""
    shutil.copytree(ROOT / "faxbridge", tmp_path / "faxbridge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    contracts = _contracts()
    for contract in contracts:
        if contract["type"] == "forbidden":
            importer, imported = contract["source_modules"][0], _first_internal(contract["forbidden_modules"])
        else:
            assert contract["type"] == "protected", contract
            importer, imported = "faxbridge.clock", _first_internal(contract["protected_modules"])
        with _module_file(tmp_path, importer).open("a") as f:
            f.write(f"\nimport {imported}  # added by the test: {contract['id']} must break\n")
    code, output = _lint(tmp_path)
    assert code != 0 and _tally(output) == (0, len(contracts)), output
    for contract in contracts:
        assert re.search(re.escape(contract["name"]).replace(r"\ ", r"\s+") + r"\s+BROKEN", output), contract
