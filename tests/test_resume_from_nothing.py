"""A run killed before its first checkpoint resumes from the beginning, in the same record
(issue 13, item 5: 2 of 10 SIGKILL trials left a run folder and no way forward).

The run is SIGKILLed in a child process as soon as its procedure starts executing — after the
rig was opened and the start document written, before any event or checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labrig.procedures.characterise import IvSweep
from labrig.runs.catalog import list_runs
from labrig.runs.checkpoint import checkpoint_paths, is_resumable, resume_point
from labrig.runs.record import RunRecord
from labrig.shell import resume_on_station, run_on_station

REPO = Path(__file__).resolve().parents[1]
PARAMS = {"electrode": 3, "start_v": -0.4, "stop_v": 0.4, "points": 4}

KILLED = f"""
import os, signal, sys
from labrig.procedures.characterise import IvSweep
from labrig.shell import run_on_station

def killed(self):
    os.kill(os.getpid(), signal.SIGKILL)

IvSweep.execute = killed
run_on_station(IvSweep(**{PARAMS!r}), "sim-dnpu", runs_dir=sys.argv[1])
"""

pytestmark = pytest.mark.slow


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_beginning(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    child = subprocess.run(
        [sys.executable, "-c", KILLED, str(runs)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr.decode()
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    assert checkpoint_paths(run_dir) == []
    assert RunRecord.open(run_dir).status == "crashed"

    # `labrig runs list` shows it as resumable, and from where
    (listed,) = list_runs(runs)
    assert listed.status == "crashed" and listed.resumable
    assert resume_point(run_dir) is None  # from the beginning

    result = resume_on_station(run_dir, echo=False, handle_signals=False)
    assert result.status == "success", result.reason
    assert result.run_dir == run_dir
    record = RunRecord.open(run_dir)
    assert len(record.segments) == 2
    assert record.segments[1].parameters == record.segments[0].parameters
    assert record.segments[1].seeds == record.segments[0].seeds
    assert list(record.events.seq_num) == [0, 1, 2, 3]
    (listed,) = list_runs(runs)
    assert listed.status == "success" and not listed.resumable

    # the same numbers as a run never interrupted (same seeds, a fresh seeded bench)
    plain = run_on_station(
        IvSweep(**PARAMS), "sim-dnpu", runs_dir=tmp_path / "plain", handle_signals=False
    )
    again = RunRecord.open(plain.run_dir)
    np.testing.assert_array_equal(
        record.events.scalars["current_na"], again.events.scalars["current_na"]
    )


def test_only_unfinished_runs_are_resumable(tmp_path: Path) -> None:
    for status in ("crashed", "aborted", "failed"):
        assert is_resumable(tmp_path, status)
    for status in ("success", "running", "unreadable"):
        assert not is_resumable(tmp_path, status)
