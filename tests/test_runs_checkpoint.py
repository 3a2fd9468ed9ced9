"""Checkpoints round-trip exactly; a run killed by SIGKILL, then resumed, equals an unbroken one."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_runs_toys import QuadraticDescent, spawn_toy

from labrig.errors import ProcedureError
from labrig.procedures.base import IntegerParameter, Procedure, RunAborted, register_procedure
from labrig.procedures.runner import resume_run, run_procedure
from labrig.runs.checkpoint import (
    checkpoint_paths,
    decode_state,
    encode_state,
    load_checkpoint,
    save_checkpoint,
)
from labrig.runs.record import RecordError, RunRecord


def test_state_round_trips_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    rng.normal(size=3)
    state: dict[str, Any] = {
        "x": rng.normal(size=(3, 2)),
        "ints": np.arange(4, dtype=np.int8),
        "scalar": np.float32(1.25),
        "rng": rng.bit_generator.state,  # holds 128-bit Python ints
        "nested": {"t": 3, "none": None, "flag": True, "name": "é", "raw": b"\x00\xff"},
        "list": [1.5, np.zeros(2), ("a", 2)],
        "nan": float("nan"),
    }
    back = decode_state(encode_state(state))
    assert np.array_equal(back["x"], state["x"]) and back["x"].dtype == np.float64
    assert back["ints"].dtype == np.int8
    assert isinstance(back["scalar"], np.float32) and back["scalar"] == np.float32(1.25)
    assert back["rng"] == state["rng"]
    assert back["nested"] == state["nested"]
    assert back["list"][0] == 1.5 and back["list"][2] == ("a", 2)
    assert np.isnan(back["nan"])
    restored = np.random.default_rng()
    restored.bit_generator.state = back["rng"]
    assert restored.normal() == rng.normal()


def test_refuses_objects_it_cannot_store_exactly() -> None:
    with pytest.raises(TypeError, match="'/model'"):
        encode_state({"model": object()})
    with pytest.raises(TypeError, match="object arrays"):
        encode_state({"a": np.array([1, "x"], dtype=object)})


def test_falls_back_to_previous_checkpoint_if_newest_is_torn(tmp_path: Path) -> None:
    info = dict(n_events=1, segment=0, wall_time_s=0.0, device_time_s=0.0, procedure="p")
    save_checkpoint(tmp_path, {"v": 1}, seq_num=4, **info)  # type: ignore[arg-type]
    first = checkpoint_paths(tmp_path)[0]
    keep = first.read_bytes()
    save_checkpoint(tmp_path, {"v": 2}, seq_num=5, **info)  # type: ignore[arg-type]
    assert [p.name for p in checkpoint_paths(tmp_path)] == ["checkpoint.5.npz"]
    assert load_checkpoint(tmp_path).state == {"v": 2}
    # a crash between writing the new one and deleting the old, with the new one torn
    first.write_bytes(keep)
    newest = tmp_path / "checkpoint.5.npz"
    newest.write_bytes(newest.read_bytes()[:40])
    loaded = load_checkpoint(tmp_path)
    assert loaded.state == {"v": 1} and loaded.seq_num == 4


def _final_x(run_dir: Path) -> np.ndarray:
    record = RunRecord.open(run_dir)
    return np.asarray(record.stop.summary["x"]) if record.stop else np.array([])


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path: Path) -> None:
    n = 120
    reference = run_procedure(
        QuadraticDescent(n_iterations=n, trace_every=7), runs_dir=tmp_path / "a"
    )
    assert reference.status == "success"

    proc = spawn_toy(
        ["quadratic", str(tmp_path / "b"), f"n_iterations={n}", "trace_every=7", "delay_s=0.01"]
    )
    try:
        deadline = time.monotonic() + 30
        run_dir = None
        while time.monotonic() < deadline:
            dirs = list((tmp_path / "b").glob("*")) if (tmp_path / "b").exists() else []
            if dirs and checkpoint_paths(dirs[0]):
                seq = int(checkpoint_paths(dirs[0])[0].name.split(".")[1])
                if seq >= 45:
                    run_dir = dirs[0]
                    break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run_dir is not None, "the subprocess never reached iteration 45"
    crashed = RunRecord.open(run_dir)
    assert crashed.status == "crashed" and 45 <= len(crashed.events) < n

    checkpoint = load_checkpoint(run_dir)
    resumed = resume_run(run_dir, overrides={"delay_s": 0.0}, handle_signals=False)
    assert resumed.status == "success", resumed.reason
    assert resumed.run_dir == run_dir

    a = RunRecord.open(reference.run_dir)
    b = RunRecord.open(run_dir)
    assert [s.segment for s in b.segments] == [0, 1]
    assert b.segments[1].first_seq_num == checkpoint.seq_num + 1  # continues after it
    assert b.events.seq_num.tolist() == list(range(n))
    assert set(b.events.segment.tolist()) == {0, 1}
    # bit for bit: every scalar and array, and the final state
    for name in a.events.scalars:
        assert np.array_equal(a.events.scalars[name], b.events.scalars[name]), name
    for name in a.events.arrays:
        assert np.array_equal(a.events.arrays[name], b.events.arrays[name]), name
        assert np.array_equal(a.events.array_seq[name], b.events.array_seq[name]), name
    assert np.array_equal(_final_x(reference.run_dir), _final_x(run_dir))
    assert b.stop is not None and b.stop.n_events == n
    assert b.stop.device_time_s == pytest.approx(a.stop.device_time_s)  # type: ignore[union-attr]


def test_resume_refuses_finished_and_unresumable_runs(tmp_path: Path) -> None:
    done = run_procedure(QuadraticDescent(n_iterations=3), runs_dir=tmp_path)
    with pytest.raises(ProcedureError, match="successfully"):
        resume_run(done.run_dir)
    for path in checkpoint_paths(done.run_dir):
        path.unlink()
    stopped = tmp_path / "other"
    stopped.mkdir()
    with pytest.raises(RecordError):
        resume_run(stopped)


def test_resume_extends_an_aborted_run_with_overrides(tmp_path: Path) -> None:
    """Aborted after 10 of 30 iterations, resumed with 30 -> same as 30 uninterrupted."""

    @register_procedure
    class StopAtTen(QuadraticDescent):
        name = "toy-quadratic-stop10"

        def emit_event(self, scalars=None, arrays=None):  # type: ignore[no-untyped-def]
            seq = super().emit_event(scalars, arrays)
            if seq == 9 and not self.resumed:
                raise RunAborted("test stop")
            return seq

    first = run_procedure(StopAtTen(n_iterations=30), runs_dir=tmp_path / "x", handle_signals=False)
    assert first.status == "aborted" and first.n_events == 10
    resumed = resume_run(first.run_dir, handle_signals=False)
    assert resumed.status == "success" and resumed.n_events == 30
    reference = run_procedure(QuadraticDescent(n_iterations=30), runs_dir=tmp_path / "y")
    a, b = RunRecord.open(reference.run_dir), RunRecord.open(first.run_dir)
    assert np.array_equal(a.events.scalars["loss"], b.events.scalars["loss"])
    assert json.loads(json.dumps(b.segments[1].parameters))["n_iterations"] == 30


@register_procedure
class CountTo(Procedure):
    """Counts to ``n`` one event at a time; fails on purpose at ``fail_at`` (0: never)."""

    name = "toy-count-to"
    n = IntegerParameter("Count to", default=5, minimum=1)
    fail_at = IntegerParameter("Fail at", default=0, minimum=0)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.i = 0

    def execute(self) -> None:
        while self.i < self.n:
            if self.fail_at and self.i == self.fail_at:
                raise RuntimeError("planned failure")
            self.i += 1
            self.emit_event({"i": float(self.i)})

    def checkpoint_state(self) -> dict[str, Any]:
        return {"i": self.i}

    def restore_state(self, state: dict[str, Any]) -> None:
        self.i = int(state["i"])


def test_a_resume_keeps_the_overrides_of_earlier_resumes(tmp_path: Path) -> None:
    first = run_procedure(CountTo(n=5, fail_at=3), runs_dir=tmp_path, handle_signals=False)
    assert first.status == "failed" and first.n_events == 3
    second = resume_run(first.run_dir, overrides={"n": 10, "fail_at": 7}, handle_signals=False)
    assert second.status == "failed" and second.n_events == 7
    third = resume_run(first.run_dir, overrides={"fail_at": 0}, handle_signals=False)
    # n = 10 from the second segment, not the first segment's 5
    assert third.status == "success" and third.n_events == 10
    record = RunRecord.open(first.run_dir)
    assert [s.parameters["n"] for s in record.segments] == [5, 10, 10]


def test_a_resume_that_fails_to_start_keeps_the_previous_stop_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_procedure(CountTo(n=5, fail_at=3), runs_dir=tmp_path, handle_signals=False)
    import labrig.runs.record as record_module

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(record_module, "_write_start", disk_full)
    # The continued record is built beside the old one and replaces it only when complete.
    result = resume_run(first.run_dir, handle_signals=False)
    assert result.status == "failed"
    monkeypatch.undo()
    record = RunRecord.open(first.run_dir)
    assert record.status == "failed"
    assert record.stop is not None and "planned failure" in record.stop.reason
    assert len(record.events) == 3
