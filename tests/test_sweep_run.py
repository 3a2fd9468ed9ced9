"""Sweeps that run: on a 2-worker LocalCluster against the same points run serially, killed and
interrupted mid-way and re-run, with a failing point, and reported. Small points (a couple of
HGE iterations, five-point I-V sweeps): the machine has two cores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from labrig.procedures.hge import HgeTraining
from labrig.runs.record import RunRecord
from labrig.shell import run_on_station
from labrig.station import builtin_station_path
from labrig.sweep import SweepSpec, read_table, run_sweep

pytestmark = pytest.mark.slow

HGE_FIXED = {"max_iterations": 2, "initializations": 1}


def station_with_device(device_seed: int, folder: Path) -> str:
    """The built-in DNPU station with another device, written independently of the sweep."""
    text = builtin_station_path("sim-dnpu").read_text(encoding="utf-8")
    assert text.count("device_seed = 0") == 1
    path = folder / f"device{device_seed}.toml"
    path.write_text(text.replace("device_seed = 0", f"device_seed = {device_seed}"), "utf-8")
    return str(path)


def test_two_workers_give_the_serial_results(tmp_path: Path) -> None:
    spec = SweepSpec("hge", fixed=HGE_FIXED, grid={"task": ["AND", "XOR"], "device_seed": [0, 1]})
    result = run_sweep(spec, runs_dir=tmp_path / "sweep", workers=2, progress=None)
    assert result.complete and result.ran == 4
    table = read_table(result.sweep_dir)
    assert list(table["task"]) == ["AND", "AND", "XOR", "XOR"]
    assert list(table["device_seed"]) == [0, 1, 0, 1]
    assert table["worker"].nunique() == 2  # the points did fan out
    serial_dir = tmp_path / "serial"
    serial_dir.mkdir()
    for row in table.itertuples():
        alone = run_on_station(
            HgeTraining(task=row.task, **HGE_FIXED),
            station_with_device(int(row.device_seed), serial_dir),
            runs_dir=serial_dir / "runs",
            handle_signals=False,
        )
        assert alone.status == "success"
        assert row.final_loss == alone.summary["final_loss"]
        assert bool(row.found) == alone.summary["found"]
        assert row.device_time_s == alone.device_time_s
        swept = RunRecord.open(result.sweep_dir / row.run_dir)
        serial = RunRecord.open(alone.run_dir)
        np.testing.assert_array_equal(swept.events.scalars["loss"], serial.events.scalars["loss"])
        np.testing.assert_array_equal(
            swept.events.arrays["controls_v"], serial.events.arrays["controls_v"]
        )
    # Different devices really were simulated.
    assert table.loc[0, "final_loss"] != table.loc[1, "final_loss"]
    # A second run of the same sweep finds every point done.
    again = run_sweep(spec, runs_dir=tmp_path / "sweep", workers=2, progress=None)
    assert again.ran == 0 and again.complete


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    # Electrode 2's activation range does not reach the I-V sweep's default start: it fails.
    spec = SweepSpec("iv", fixed={"points": 5}, grid={"electrode": [2, 3, 4]})
    result = run_sweep(spec, runs_dir=tmp_path, workers=2, progress=None)
    table = read_table(result.sweep_dir).set_index("electrode")
    assert list(table["status"]) == ["failed", "success", "success"]
    assert "outside electrode 2's activation range" in table.loc[2, "reason"]
    assert (result.sweep_dir / table.loc[2, "run_dir"] / "run.h5").exists()
    assert not result.complete and result.counts == {"failed": 1, "success": 2}
    assert list(table["points"].fillna(0)) == [0, 5, 5]
    # Failed points are kept on a re-run, and run again on request.
    assert run_sweep(spec, runs_dir=tmp_path, workers=2, progress=None).ran == 0
    retried = run_sweep(spec, runs_dir=tmp_path, workers=2, progress=None, retry_failed=True)
    assert retried.ran == 1 and retried.counts == {"failed": 1, "success": 2}


def _labrig(*args: str, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "labrig.cli", *args, "--out", str(out), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the test can kill driver and workers
    )


def _wait_for_successes(sweep_root: Path, n: int, proc: subprocess.Popen[str]) -> Path:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for table in sweep_root.glob("sweeps/*/points.parquet"):
            try:
                done = (read_table(table.parent)["status"] == "success").sum()
            except Exception:
                continue
            if done >= n:
                return table.parent
        time.sleep(0.2)
    raise AssertionError("the sweep made no progress")


HGE_ARGS = ("sweep", "hge", "--task", "AND,OR,XOR", "--device-seed", "0:2",
            "--max-iterations", "4", "--initializations", "1", "--workers", "2")  # fmt: skip


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_killed_sweep_completes_only_the_missing_points(tmp_path: Path, how: str) -> None:
    proc = _labrig(*HGE_ARGS, out=tmp_path)
    sweep_dir = _wait_for_successes(tmp_path, 2, proc)
    if how == "SIGKILL":
        os.killpg(proc.pid, signal.SIGKILL)  # driver and workers die mid-step
        proc.communicate(timeout=30)
    else:
        os.kill(proc.pid, signal.SIGINT)  # the driver only, as a Ctrl-C would reach it first
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "labrig sweep resume" in err
        assert json.loads(out.strip().splitlines()[-1])["interrupted"] is True
    before = read_table(sweep_dir)
    finished = dict(
        zip(
            before["point"][before["status"] == "success"],
            before["run_dir"][before["status"] == "success"],
            strict=True,
        )
    )
    assert 2 <= len(finished) < 6
    if how == "SIGINT":
        # Running points were stopped at a step and brought to their safe state: resumable.
        stopped = before[before["status"] == "aborted"]
        assert len(stopped) >= 1
        for run_dir in stopped["run_dir"]:
            record = RunRecord.open(sweep_dir / run_dir, load_arrays=False)
            assert record.status == "aborted" and record.stop is not None
            assert all(v.startswith("ok") for v in record.stop.safe_state.values())
    again = _labrig(*HGE_ARGS, out=tmp_path)
    out, err = again.communicate(timeout=400)
    assert again.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["complete"] and summary["ran"] == 6 - len(finished)
    after = read_table(sweep_dir)
    assert (after["status"] == "success").all()
    for point, run_dir in finished.items():  # finished points were not run again
        assert after.set_index("point").loc[point, "run_dir"] == run_dir
    # Interrupted runs were resumed in their own records: one record per point.
    records = [RunRecord.open(sweep_dir / d, load_arrays=False) for d in after["run_dir"]]
    assert all(r.status == "success" for r in records)
    assert len(set(after["run_dir"])) == 6
    if how == "SIGINT":
        from labrig.runs.checkpoint import checkpoint_paths

        for point, run_dir in zip(stopped["point"], stopped["run_dir"], strict=True):
            if checkpoint_paths(sweep_dir / run_dir):  # stopped after its first iteration
                assert after.set_index("point").loc[point, "run_dir"] == run_dir
                assert len(RunRecord.open(sweep_dir / run_dir).segments) == 2


def test_report_of_a_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from labrig.cli import main

    spec = SweepSpec(
        "iv", fixed={"points": 5}, grid={"others_v": [-0.2, 0.0, 0.2], "device_seed": [0, 1]}
    )
    result = run_sweep(spec, runs_dir=tmp_path, workers=2, progress=None)
    assert result.complete
    assert main(["report", str(result.sweep_dir), "--json"]) == 0
    files = [Path(f) for f in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["files"]]
    names = {f.name for f in files}
    assert "status.png" in names and any(n.startswith("metric_") for n in names)
    assert all(f.stat().st_size > 5_000 for f in files)


def test_a_point_whose_worker_dies_is_recorded_failed(tmp_path: Path) -> None:
    import sweep_fixtures  # noqa: F401 - registers 'sweep-probe' (workers import it by path)

    spec = SweepSpec(
        "sweep-probe",
        listed=(
            {"action": "ok", "value": 1},
            {"action": "die", "value": 2},
            {"action": "raise", "value": 3},
            {"action": "ok", "value": 4},
        ),
    )
    result = run_sweep(spec, runs_dir=tmp_path, workers=2, progress=None)
    table = read_table(result.sweep_dir).set_index("value")
    assert list(table["status"]) == ["success", "failed", "failed", "success"]
    assert "worker died" in table.loc[2, "reason"]
    assert "probe 3 raised on purpose" in table.loc[3, "reason"]
    assert list(table["doubled"].fillna(-1)) == [2, -1, 6, 8]
    # The dead worker's run was found by its station file's marker: a crashed record.
    assert RunRecord.open(result.sweep_dir / table.loc[2, "run_dir"]).status == "crashed"


def test_a_station_with_instruments_runs_its_points_one_after_another(tmp_path: Path) -> None:
    """A bench served over TCP stands for a rig of real instruments: one rig, so its points
    run one after another, here, through the same driver; nothing fans out."""
    from labrig.sim.assemble import build_bench
    from labrig.sim.tcp import BenchServer
    from labrig.station import load_station, served_station_text
    from labrig.sweep import SweepError

    station = load_station("sim-dnpu")
    with BenchServer(build_bench(station).emulators) as server:
        path = tmp_path / "lab.toml"
        path.write_text(served_station_text(station, server.resources()), encoding="utf-8")
        spec = SweepSpec(
            "iv", station=str(path), fixed={"points": 5}, grid={"electrode": [3, 4, 5]}
        )
        result = run_sweep(spec, runs_dir=tmp_path, progress=None)
        assert result.complete
        table = read_table(result.sweep_dir).sort_values("started")
        assert table["worker"].nunique() == 1
        starts, ends = table["started"].to_numpy(), table["finished"].to_numpy()
        assert (starts[1:] >= ends[:-1]).all()  # never two at once on the one rig
        with pytest.raises(SweepError, match="one after another on its one rig"):
            run_sweep(spec, runs_dir=tmp_path / "x", scheduler="tcp://127.0.0.1:1", progress=None)
        with pytest.raises(SweepError, match=r"no \[bench\] table"):
            run_sweep(
                SweepSpec("iv", station=str(path), grid={"device_seed": [0, 1]}),
                runs_dir=tmp_path / "y",
                progress=None,
            )


def test_sweep_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from labrig.cli import main

    def last() -> dict:
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    args = ["sweep", "iv", "--points", "5", "--electrode", "3,4", "--workers", "1"]
    assert main([*args, "--out", str(tmp_path), "--json"]) == 0
    run = last()
    assert run["complete"] and run["n_points"] == 2 and run["counts"] == {"success": 2}
    sweep_dir = run["sweep_dir"]
    assert main(["sweep", "show", sweep_dir, "--json"]) == 0
    shown = last()
    assert [p["electrode"] for p in shown["points"]] == [3, 4]
    assert all(p["points"] == 5 and p["status"] == "success" for p in shown["points"])
    assert main(["sweep", "resume", sweep_dir, "--json"]) == 0
    assert last()["ran"] == 0
    # The folder's sweep file runs the same sweep; its runs are ordinary runs.
    assert main(["sweep", "iv", "--from", f"{sweep_dir}/sweep.toml", "--out", str(tmp_path),
                 "--json"]) == 0  # fmt: skip
    assert last()["sweep_dir"] == sweep_dir
    assert main(["runs", "--out", f"{sweep_dir}/runs", "--json"]) == 0
    assert len(last()["runs"]) == 2
    # Bad input: a clear error, exit code 2, before anything runs.
    assert main(["sweep", "iv", "--electrod", "3", "--out", str(tmp_path)]) == 2
    assert "'electrod' is neither a parameter of iv" in capsys.readouterr().err
    assert main(["sweep", "resume", str(tmp_path)]) == 2
