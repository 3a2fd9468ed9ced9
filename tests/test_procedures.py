"""Procedures on the built-in simulated rigs: real runs through drivers, bench and runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from labrig.cli import main
from labrig.physics.dnpu import DnpuModel
from labrig.procedures.base import register_procedure
from labrig.procedures.characterise import IvSweep, TransferCurve
from labrig.procedures.hge import HgeTraining
from labrig.runs.record import RunRecord
from labrig.shell import resume_on_station, run_on_station
from labrig.station import load_station

REPO = Path(__file__).resolve().parents[1]


def assert_within_limits_and_safe(summary: dict, station_name: str) -> None:
    """The run's safety evidence: every DAC channel stayed inside its station limits and
    ended at its safe voltage."""
    station = load_station(station_name)
    extremes = summary["voltage_extremes_v"]
    finals = summary["final_voltages_v"]
    for ch in station.channels:
        port = f"{ch.instrument}.ch{ch.channel}"
        if port in extremes:
            low, high = extremes[port]
            assert ch.limits.min_v <= low and high <= ch.limits.max_v, (port, low, high)
        assert finals[f"{ch.instrument}:{ch.channel}"] == pytest.approx(ch.limits.safe_v, abs=1e-6)


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_iv_sweep_measures_the_device_current(tmp_path: Path) -> None:
    result = run_on_station(
        IvSweep(electrode=3, start_v=-1.0, stop_v=0.5, points=6, others_v=0.0),
        "sim-dnpu",
        runs_dir=tmp_path,
        echo=False,
    )
    assert result.status == "success", result.reason
    assert result.n_events == 6
    # the same seed is the same device: compare with its noise-free current
    model = DnpuModel(seed=load_station("sim-dnpu").bench.device_seed)  # type: ignore[union-attr]
    volts = np.linspace(-1.0, 0.5, 6)
    v = np.zeros((6, 7))
    v[:, 3] = volts
    exact = model.current_na(v)
    from labrig.runs.record import RunRecord

    record = RunRecord.open(result.run_dir)
    measured = record.events.scalars["current_na"]
    assert np.allclose(measured, exact, atol=2.0, rtol=0.02), (measured, exact)
    # The station the procedure opened in startup() is in the record: name, limits, file text.
    assert record.start.station["name"] == "sim-dnpu"
    assert "[dnpu]" in record.start.station["text"]
    assert result.device_time_s > 6 * 0.01  # each point settles and acquires on the bench clock
    assert_within_limits_and_safe(result.summary, "sim-dnpu")


def test_iv_refuses_a_sweep_outside_the_activation_range(tmp_path: Path) -> None:
    result = run_on_station(
        IvSweep(electrode=2, start_v=-1.0, stop_v=0.2, points=3),
        "sim-dnpu",
        runs_dir=tmp_path,
        echo=False,
    )
    assert result.status == "failed"
    assert "start_v = -1.0 V" in result.reason and "[-0.7, 0.3]" in result.reason
    # nothing was driven: electrode 2's channel never left 0 V
    low, high = result.summary["voltage_extremes_v"].get("dac.ch3", (0.0, 0.0))
    assert low == 0.0 and high == 0.0


def test_cli_measure_iv_json_writes_csv_and_png(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", "iv", "--points", "4", "--json"]) == 0
    out = last_json(capsys.readouterr().out)
    for key in ("run_dir", "status", "device_time_s", "wall_time_s", "csv", "png"):
        assert key in out, key
    assert out["status"] == "success"
    rows = np.loadtxt(out["csv"], delimiter=",", skiprows=1)
    assert rows.shape == (4, 3)
    assert Path(out["png"]).stat().st_size > 10_000


def test_transfer_finds_the_loop_delay_and_the_modulator_null(tmp_path: Path) -> None:
    result = run_on_station(
        TransferCurve(points=21), "sim-reservoir", runs_dir=tmp_path, echo=False
    )
    assert result.status == "success", result.reason
    reservoir = load_station("sim-reservoir").reservoir
    assert reservoir is not None
    # the device's loop is N + 1 nodes long (one node of desynchronisation)
    expected = (reservoir.node_count + 1) * reservoir.node_duration_s
    assert result.summary["loop_delay_s"] == pytest.approx(expected, rel=0.02)
    assert abs(result.summary["drive_at_min_v"]) < 0.5  # sin^2 null at zero drive, zero bias
    cal = result.summary["calibration"]
    assert cal["v_pi_v"] == pytest.approx(4.0, rel=0.02)  # the simulator's modulator
    assert abs(cal["null_drive_v"]) < 0.05
    # biased at the steepest point, the loop's echoes last (a null-biased pulse gave one)
    assert result.summary["echoes_above_noise"] >= 4
    assert_within_limits_and_safe(result.summary, "sim-reservoir")


def test_cli_train_hge_json_contract_and_limits(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "hge", "--max-iterations", "2", "--initializations", "1", "--json"])
    out = last_json(capsys.readouterr().out)
    assert code == 0, out
    for key in (
        "task",
        "found",
        "accuracy",
        "iterations",
        "final_loss",
        "device_time_s",
        "wall_time_s",
        "run_dir",
        "status",
    ):
        assert key in out, key
    assert out["task"] == "XOR" and out["status"] == "success"
    assert 1 <= out["iterations"] <= 2
    # two playbacks of four 70 ms cases plus the final measurement, on the bench clock
    assert out["device_time_s"] >= 3 * 0.28
    assert_within_limits_and_safe(out, "sim-dnpu")


@pytest.mark.slow
def test_hge_finds_xor_on_the_default_device(tmp_path: Path) -> None:
    result = run_on_station(HgeTraining(task="XOR"), "sim-dnpu", runs_dir=tmp_path, echo=False)
    assert result.status == "success", result.reason
    assert result.summary["found"] is True
    assert result.summary["accuracy"] == 1.0
    outputs = np.array(result.summary["outputs_na"])
    assert min(outputs[[1, 2]]) > max(outputs[[0, 3]])  # XOR: 0110
    assert_within_limits_and_safe(result.summary, "sim-dnpu")
    bench = load_station("sim-dnpu").bench
    assert bench is not None
    seeds = RunRecord.open(result.run_dir).start.seeds  # known only once the rig is open
    assert seeds == {"training": 0, "bench": bench.seed, "device": bench.device_seed}


def _events_in(run_dir: Path) -> int:
    try:
        with h5py.File(run_dir / "run.h5", "r", swmr=True) as f:
            return int(f["events/seq_num"].shape[0])
    except (OSError, KeyError):
        return 0


@pytest.mark.slow
def test_hge_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    args = ["train", "hge", "--task", "XNOR", "--max-iterations", "4", "--initializations", "2"]
    straight = run_on_station(
        HgeTraining(task="XNOR", max_iterations=4, initializations=2),
        "sim-dnpu",
        runs_dir=tmp_path / "straight",
        echo=False,
        handle_signals=False,
    )
    crashed_dir = tmp_path / "crashed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "labrig.cli", *args, "--out", str(crashed_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        run_dir = None
        while time.monotonic() < deadline:
            runs = list(crashed_dir.glob("*-hge-*"))
            if runs and _events_in(runs[0]) >= 3:
                run_dir = runs[0]
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        assert run_dir is not None, "the run never reached its third event"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    import labrig.procedures.hge  # noqa: F401  (registers the procedure for resume)

    resumed = resume_on_station(run_dir, echo=False, handle_signals=False)
    assert resumed.status == "success", resumed.reason
    for key in ("iterations", "final_loss", "found", "controls_v", "outputs_na"):
        assert resumed.summary[key] == straight.summary[key], key


@register_procedure
class IvFailingShutdown(IvSweep):
    """An I-V sweep whose first segment measures every point and then fails in shutdown()."""

    name = "iv-failing-shutdown"

    def shutdown(self) -> None:
        if not self.resumed:
            raise RuntimeError("planned shutdown failure")


def test_resuming_a_sweep_that_measured_every_point_finishes_it(tmp_path: Path) -> None:
    first = run_on_station(
        IvFailingShutdown(electrode=2, start_v=-0.5, stop_v=0.2, points=3),
        "sim-dnpu",
        runs_dir=tmp_path,
        echo=False,
        handle_signals=False,
    )
    assert first.status == "failed" and first.n_events == 3, first.reason
    again = resume_on_station(first.run_dir, handle_signals=False, echo=False)
    assert again.status == "success", again.reason
    assert again.n_events == 3  # nothing measured twice, nothing out of range
