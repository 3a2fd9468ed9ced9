"""Safety on every exit path, proven by asking the bench itself.

A bench is served in one process; a procedure reaches it over TCP from another. The procedure
is interrupted with SIGINT (and, separately, twice in a row) mid-run; afterwards the still
running bench is asked what every DAC channel outputs now and the most extreme voltage each
ever saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest

from labrig.rig import open_rig
from labrig.runs.record import RunRecord
from labrig.station import load_station

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def served_dnpu(tmp_path: Path) -> Iterator[Path]:
    station_file = tmp_path / "served.toml"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labrig.cli",
            "sim",
            "serve",
            "--station",
            "sim-dnpu",
            "--write-station",
            str(station_file),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        assert server.stdout is not None
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            if line.strip() == "ready" or not line:
                break
        assert station_file.exists(), "the bench did not come up"
        yield station_file
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


def _events(run_dir: Path) -> int:
    try:
        with h5py.File(run_dir / "run.h5", "r", swmr=True) as f:
            return int(f["events/seq_num"].shape[0])
    except (OSError, KeyError):
        return 0


def _start_iv(station_file: Path, out: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labrig.cli",
            "measure",
            "iv",
            "--station",
            str(station_file),
            "--points",
            "400",
            "--electrode",
            "3",
            "--others",
            "0.3",
            "--out",
            str(out),
            "--json",
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        runs = list(out.glob("*-iv-*"))
        if runs and _events(runs[0]) >= 3:
            return proc, runs[0]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the sweep never got going: {proc.communicate(timeout=10)}")


def _check_bench_is_safe(station_file: Path) -> None:
    station = load_station(station_file)
    rig = open_rig(station)
    try:
        extremes = rig.voltage_extremes()
        for ch in station.channels:
            port = f"{ch.instrument}.ch{ch.channel}"
            now = rig.instruments[ch.instrument].get_voltage(ch.channel)
            assert now == pytest.approx(ch.limits.safe_v, abs=1e-6), (port, now)
            low, high = extremes[port]  # every channel is watched and was driven
            assert ch.limits.min_v <= low and high <= ch.limits.max_v, (port, low, high)
        # the sweep really drove the electrodes before it was stopped
        assert extremes["dac.ch4"][0] < -0.5 and extremes["dac.ch1"][1] >= 0.3 - 1e-9
    finally:
        rig.close()


@pytest.mark.slow
def test_sigint_leaves_every_output_at_its_safe_state(served_dnpu: Path, tmp_path: Path) -> None:
    proc, run_dir = _start_iv(served_dnpu, tmp_path / "runs")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err  # interrupted by Ctrl-C (issue 16)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "aborted"
    record = RunRecord.open(run_dir)
    assert record.status == "aborted" and record.stop is not None
    assert set(record.stop.safe_state.values()) == {"ok"}
    _check_bench_is_safe(served_dnpu)


@pytest.mark.slow
def test_second_sigint_does_not_skip_the_safe_state(served_dnpu: Path, tmp_path: Path) -> None:
    proc, run_dir = _start_iv(served_dnpu, tmp_path / "runs")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    record = RunRecord.open(run_dir)
    assert record.stop is not None and record.status == "aborted"
    _check_bench_is_safe(served_dnpu)
