"""Progress while a run works (on stderr, quiet with -q), and summaries that tell the truth:
last and best labelled, taken from the recorded events; what to do next; exit codes."""

from __future__ import annotations

import io
import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from labrig.cli import main
from labrig.procedures.plan import RunPlan
from labrig.progress import ProgressReporter
from labrig.runs.documents import EventDoc, StartDoc, StopDoc
from labrig.runs.record import RunRecord


def _start(first_seq: int = 0) -> StartDoc:
    return StartDoc(
        run_uid="u",
        procedure="hge",
        procedure_class="x:Y",
        parameters={"task": "XOR"},
        parameter_units={},
        station_text="",
        station={},
        snapshot={},
        versions={},
        seeds={},
        host={},
        time=time.time(),
        first_seq_num=first_seq,
    )


def _event(seq: int, loss: float, accuracy: float, device_s: float) -> EventDoc:
    scalars = {"loss": loss, "accuracy": accuracy, "device_time_s": device_s}
    return EventDoc("u", seq, time.time(), scalars, {})


PLAN = RunPlan("hge", "iteration", 10, (), 30.0)


def test_plain_progress_lines_carry_step_loss_accuracy_device_time_and_eta() -> None:
    out = io.StringIO()
    reporter = ProgressReporter(PLAN, file=out, live=False, line_interval_s=0.0)
    reporter(_start())
    for seq in range(4):
        reporter(_event(seq, 1.0 / (seq + 1), 0.75, 2.5 * (seq + 1)))
    reporter(StopDoc("u", time.time(), "aborted", "", 4, 10.0, 1.0))
    lines = out.getvalue().splitlines()
    assert lines[0] == "labrig: hge XOR started: at most 10 iterations"
    assert lines[1].startswith("labrig: iteration 1/10  loss 1  accuracy 75 %  device time 2.5 s")
    assert "ETA" in lines[1]
    assert lines[4].startswith("labrig: iteration 4/10  loss 0.25  accuracy 75 %  device time 10")


def test_plain_progress_is_throttled_but_always_shows_the_last_step() -> None:
    out = io.StringIO()
    reporter = ProgressReporter(PLAN, file=out, live=False, line_interval_s=3600.0)
    reporter(_start(first_seq=2))
    for seq in range(2, 9):
        reporter(_event(seq, 0.5, 1.0, 1.0))
    reporter.close()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("resumed after 2")
    assert [line.split()[2] for line in lines[1:]] == ["3/10", "9/10"]


def test_live_progress_draws_a_bar_with_the_figures() -> None:
    out = io.StringIO()
    reporter = ProgressReporter(PLAN, file=out, live=True, width=160)
    reporter(_start())
    reporter(_event(0, 0.5, 1.0, 3.0))
    reporter(_event(1, 0.25, 1.0, 6.0))
    reporter.close()
    text = out.getvalue()
    assert "hge XOR iterations" in text and "2/10" in text
    assert "loss 0.25" in text and "device time 6 s" in text


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_progress_goes_to_stderr_and_json_stays_one_clean_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "hge", "--max-iterations", "3", "--initializations", "1", "--json"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    (line,) = _lines(captured.out)
    out = json.loads(line)
    assert out["status"] == "success"
    assert "iteration 1/3" in captured.err and "loss" in captured.err
    assert main([*argv, "--out", str(tmp_path), "-q"]) == 0
    captured = capsys.readouterr()
    assert len(_lines(captured.out)) == 1 and "iteration" not in captured.err


def test_summary_last_and_best_come_from_the_recorded_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "hge", "--task", "sphere", "--max-iterations", "4", "--initializations", "1"]
    assert main([*argv, "--out", str(tmp_path), "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    events = RunRecord.open(out["run_dir"], load_arrays=False).events
    loss, accuracy = events.scalars["loss"], events.scalars["accuracy"]
    assert out["last"]["step"] == len(events) == 4
    assert out["last"]["loss"] == pytest.approx(loss[-1])
    assert out["last"]["accuracy"] == pytest.approx(accuracy[-1])
    assert not math.isnan(out["last"]["accuracy"])
    assert out["best"]["loss"]["value"] == pytest.approx(np.min(loss))
    assert out["best"]["loss"]["step"] == int(np.argmin(loss)) + 1
    assert out["best"]["accuracy"]["value"] == pytest.approx(np.max(accuracy))
    assert main(["runs", "show", out["run"], "--out", str(tmp_path)]) == 0  # and by name


def _wait_for_iteration(stream: io.TextIOBase, at_least: int, timeout_s: float) -> str:
    """Read progress lines until one reports iteration ``at_least`` or later (the plain
    reporter prints at most once a second, so a given iteration's line may be skipped)."""
    seen = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = stream.readline()
        seen += line
        found = re.search(r"iteration (\d+)/", line)
        if found and int(found.group(1)) >= at_least:
            return seen
    raise AssertionError(f"no iteration >= {at_least} in {timeout_s} s: {seen}")


@pytest.mark.slow
def test_ctrl_c_exits_130_with_an_honest_summary_and_the_resume_command(tmp_path: Path) -> None:
    argv = ["train", "hge", "--task", "sphere", "--max-iterations", "200", "--initializations", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "labrig.cli", *argv, "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        _wait_for_iteration(process.stderr, 3, 120)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, (out, err)
    run_dir = next(tmp_path.iterdir())
    events = RunRecord.open(run_dir, load_arrays=False).events
    n = len(events)
    assert f"hge: aborted after {n} iterations" in out
    last = next(line for line in out.splitlines() if line.startswith("  last ("))
    assert last.startswith(f"  last (iteration {n}): loss {events.scalars['loss'][-1]:.4g}")
    assert "accuracy" in last and "n/a" not in last
    best = next(line for line in out.splitlines() if line.startswith("  best: "))
    i = int(np.argmin(events.scalars["loss"]))
    assert f"loss {events.scalars['loss'][i]:.4g} (iteration {i + 1})" in best
    assert f"to continue: labrig resume {run_dir}" in out
    assert "Traceback" not in err
