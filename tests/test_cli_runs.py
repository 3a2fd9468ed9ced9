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
    assert [Path(r["run_dir"]).name for r in listing["runs"]] == [iv_run.name]
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


# --------------------------------------------------------------------- finding runs (issue 16)
@pytest.fixture(scope="module")
def _made_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder with a finished iv run, a finished hge run and an aborted one."""
    from labrig.procedures.characterise import IvSweep
    from labrig.procedures.hge import HgeTraining
    from labrig.procedures.runner import RunController
    from labrig.shell import run_on_station

    folder = tmp_path_factory.mktemp("made") / "runs"
    run_on_station(IvSweep(points=3), "sim-dnpu", runs_dir=folder)
    run_on_station(HgeTraining(max_iterations=2, initializations=1), "sim-dnpu", runs_dir=folder)

    class StopAfterTwo(RunController):
        def stop_after(self, procedure: HgeTraining) -> None:
            original = procedure.emit_event

            def emit(*a: object, **k: object) -> int:
                seq = original(*a, **k)  # type: ignore[arg-type]
                if seq >= 1:
                    self.request_stop("stop requested by the test")
                return seq

            procedure.emit_event = emit  # type: ignore[method-assign]

    controller = StopAfterTwo()
    procedure = HgeTraining(task="sphere", max_iterations=5, initializations=1)
    controller.stop_after(procedure)
    result = run_on_station(procedure, "sim-dnpu", runs_dir=folder, controller=controller)
    assert result.status == "aborted"
    return folder


@pytest.fixture
def runs(_made_runs: Path, tmp_path: Path) -> Path:
    """A copy of the three runs, for a test to read or change."""
    import shutil

    return Path(shutil.copytree(_made_runs, tmp_path / "runs"))


def test_runs_list_is_a_table_with_a_header_and_filters(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "list", "--out", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header == ["started", "run", "procedure", "task", "status", "result", "resumable"]
    assert len(lines) == 1 + 3 + 1 and lines[-1].startswith("3 run(s)")
    aborted = next(line for line in lines if "aborted" in line)
    assert "sphere" in aborted and aborted.rstrip().endswith("yes")
    assert "<20" not in "".join(lines)
    assert lines[1][:4].isdigit() and lines[1][4] == "-"  # the start date, where it belongs
    assert main(["runs", "--out", str(runs), "--status", "aborted", "--json"]) == 0
    only = last_json(capsys.readouterr().out)["runs"]
    assert [(r["procedure"], r["task"], r["resumable"]) for r in only] == [("hge", "sphere", True)]
    assert main(["runs", "list", "--out", str(runs), "--procedure", "iv", "--json"]) == 0
    only = last_json(capsys.readouterr().out)["runs"]
    assert [r["procedure"] for r in only] == ["iv"] and "points" in only[0]["result"]


def test_runs_show_takes_a_name_or_a_unique_prefix(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = sorted(p.name for p in runs.iterdir())
    hge_runs = [n for n in names if "-hge-" in n]
    for ref in (hge_runs[0], hge_runs[0][:-3], hge_runs[0][-8:]):
        assert main(["runs", "show", ref, "--out", str(runs), "--json"]) == 0, ref
        assert last_json(capsys.readouterr().out)["run"] == hge_runs[0]
    # a prefix shared by several runs: a clear one-line error naming them, not an HDF5 errno
    common = hge_runs[0][:8]
    assert main(["runs", "show", common, "--out", str(runs)]) == 2
    err = capsys.readouterr().err
    assert f"'{common}' matches 3 runs" in err and "errno" not in err.lower()
    assert main(["runs", "show", "nosuchrun", "--out", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labrig: error: no run named 'nosuchrun' in ") and err.count("\n") == 1
    assert main(["resume", "/nonexistent/run", "--out", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "no such run folder" in err and "errno" not in err.lower()


def test_runs_show_prints_values_with_units_not_float_noise(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = next(p.name for p in runs.iterdir() if "-iv-" in p.name)
    assert main(["runs", "show", name, "--out", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "start_v" in out and "-1.2 V" in out
    assert "settle_s" in out and "10 ms" in out
    assert "0000000" not in out and "{" not in out  # no float noise, no raw dicts
    assert "dac:1 0 V" in out


def test_resume_continues_an_aborted_run_by_prefix(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "list", "--out", str(runs), "--resumable", "--json"]) == 0
    (aborted,) = last_json(capsys.readouterr().out)["runs"]
    prefix = aborted["run"][:-4]
    assert main(["resume", prefix, "--out", str(runs), "-q", "--json"]) == 0
    out = last_json(capsys.readouterr().out)
    assert out["status"] == "success" and out["run"] == aborted["run"]
    assert out["last"]["step"] == 5 and out["next"] == ""


def test_report_of_a_run_without_events_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from labrig.procedures.base import Procedure
    from labrig.procedures.runner import run_procedure

    class Idle(Procedure):
        name = "idle"

        def execute(self) -> None:
            return None

    result = run_procedure(Idle(), runs_dir=tmp_path, echo=False)
    assert main(["report", str(result.run_dir)]) == 2
    err = capsys.readouterr().err
    assert "recorded no events" in err and result.run_dir.name in err


def test_a_closed_pipe_ends_the_command_cleanly(runs: Path) -> None:
    import subprocess
    import sys

    name = next(p.name for p in runs.iterdir() if "-hge-" in p.name)
    command = (
        f"{sys.executable} -m labrig.cli runs show {name} --out {runs} | head -1; "
        "exit ${PIPESTATUS[0]}"
    )
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("run ")
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    # 141 when the pipe closed while labrig still wrote; 0 if it all fit in the pipe first
    assert done.returncode in (0, 141)


def test_a_broken_pipe_mid_output_exits_141_without_a_traceback(
    runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    class ClosedPipe(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.lines = 0

        def write(self, text: str) -> int:
            self.lines += text.count("\n")
            if self.lines > 2:  # the reader took two lines and went away
                raise BrokenPipeError(32, "Broken pipe")
            return super().write(text)

    pipe = ClosedPipe()
    monkeypatch.setattr(sys, "stdout", pipe)
    name = next(p.name for p in runs.iterdir() if "-hge-" in p.name)
    assert main(["runs", "show", name, "--out", str(runs)]) == 141
    assert pipe.getvalue().startswith("run ")


def test_every_command_takes_json(capsys: pytest.CaptureFixture[str]) -> None:
    from labrig.cli import build_parser

    parser = build_parser()
    for argv in (
        ["station", "check", "sim-dnpu"],
        ["sim", "serve"],
        ["measure", "iv"],
        ["measure", "transfer"],
        ["train", "hge"],
        ["train", "dfa"],
        ["runs"],
        ["runs", "list"],
        ["runs", "show", "x"],
        ["report", "x"],
        ["resume", "x"],
    ):
        assert parser.parse_args([*argv, "--json"]).json is True, argv
