"""`labrig runs`, `labrig runs show`, `labrig report` and `labrig resume` on real records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labrig.cli import main


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def iv_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["measure", "iv", "--points", "5", "--out", str(tmp_path), "--json"]) == 0
    return Path(last_json(capsys.readouterr().out)["run_dir"])


def test_runs_list_and_show(iv_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs_dir = iv_run.parent
    assert main(["runs", "--out", str(runs_dir), "--json"]) == 0
    listing = last_json(capsys.readouterr().out)
    assert [Path(r["path"]).name for r in listing["runs"]] == [iv_run.name]
    assert listing["runs"][0]["status"] == "success"
    assert main(["runs", "--out", str(runs_dir), "show", str(iv_run), "--json"]) == 0
    shown = last_json(capsys.readouterr().out)
    assert shown["procedure"] == "iv" and shown["n_events"] == 5
    assert shown["parameters"]["points"] == 5
    assert main(["runs", "--out", str(runs_dir)]) == 0
    assert iv_run.name in capsys.readouterr().out


def test_report_writes_pngs_into_the_run(iv_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(iv_run), "--json"]) == 0
    files = [Path(f) for f in last_json(capsys.readouterr().out)["files"]]
    assert files[0].name == "index.html"  # the report page, then its figures
    assert files and all(f.is_relative_to(iv_run) and f.suffix == ".png" for f in files[1:])
    assert all(f.stat().st_size > 5_000 for f in files[1:])


def test_resume_of_a_finished_run_is_refused_without_touching_it(
    iv_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["resume", str(iv_run), "--json"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    from labrig.runs.record import RunRecord

    record = RunRecord.open(iv_run)
    assert len(record.events) == 5 and record.status == "success"
