"""The layer contracts (import-linter, ``[tool.importlinter]`` in pyproject.toml) hold, and they
would catch a procedure that reaches into the simulator."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(where: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    args = [str(LINT_IMPORTS), "--no-cache", "--no-logo"]
    for contract in contracts:
        args += ["--contract", contract]
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run(
        args, cwd=where, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_repository_keeps_every_layer_contract() -> None:
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "BROKEN" not in run.stdout and "6 kept, 0 broken" in run.stdout, run.stdout


def test_a_procedure_that_imports_the_bench_breaks_the_contract(tmp_path: Path) -> None:
    for package in ("labrig", "instruments"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    probe = tmp_path / "labrig" / "procedures" / "peek.py"
    probe.write_text('"""Asks the bench for its model."""\n\nfrom labrig.sim.bench import Bench\n')
    run = _lint(tmp_path, "procedures-see-roles")
    assert run.returncode != 0, run.stdout
    assert "labrig.procedures.peek -> labrig.sim.bench" in run.stdout, run.stdout
    assert "Procedures and algorithms cannot tell the bench from the lab BROKEN" in run.stdout
