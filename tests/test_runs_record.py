"""Run records: what is emitted is what is read back, live readers, and crashes lose <= 1 event."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from labrig.procedures.base import Procedure
from labrig.procedures.runner import RunController, run_procedure
from labrig.runs.documents import EventDoc, StartDoc
from labrig.runs.record import RecordWriter, RunRecord, default_runs_dir, new_run_dir


def _start(uid: str = "0123456789abcdef") -> StartDoc:
    return StartDoc(
        run_uid=uid,
        procedure="unit",
        procedure_class="x:y",
        parameters={"a": 1.5, "n": 3, "name": "é"},
        parameter_units={"a": "V"},
        station_text='[station]\nname = "sim"\n',
        station={"electrodes": [1, 2]},
        snapshot={"dac": {"identity": "QDevil,QDAC-II", "settings": {"ch1": 0.1}}},
        versions={"labrig": "0"},
        seeds={"device": 7},
        host={},
        time=time.time(),
    )


class Emitter(Procedure):
    """Emits a planned list of (scalars, arrays)."""

    name = "test-emitter"

    def __init__(self, plan: list[tuple[dict[str, float], dict[str, np.ndarray]]]) -> None:
        super().__init__()
        self.plan = plan

    def execute(self) -> None:
        for scalars, arrays in self.plan:
            self.emit_event(scalars, arrays)


def test_runs_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABRIG_RUNS_DIR", str(tmp_path / "env"))
    assert default_runs_dir() == tmp_path / "env"
    assert default_runs_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("LABRIG_RUNS_DIR")
    assert default_runs_dir().name == "runs" and "labrig" in str(default_runs_dir())
    folder = new_run_dir(tmp_path, "hge training!", "abcdef0123456789", 0.0)
    assert folder.parent == tmp_path
    assert folder.name.endswith("-hge_training-abcdef01")
    assert len(folder.name.split("-")[0]) == 8  # YYYYmmdd


def test_round_trip_scalars_arrays_dtypes_and_shape_changes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    plan: list[tuple[dict[str, float], dict[str, np.ndarray]]] = []
    for i in range(12):
        scalars = {"loss": float(rng.random())}
        if i >= 4:
            scalars["accuracy"] = i / 12  # appears mid-run
        arrays: dict[str, np.ndarray] = {
            "controls": rng.normal(size=5),
            "counts": np.arange(3, dtype=np.int16) + i,
            "flags": np.array([i % 2 == 0, True]),
            "iq": rng.normal(size=2) + 1j * rng.normal(size=2),
        }
        if i % 3 == 0:
            arrays["trace"] = rng.normal(size=(2, 7)).astype(np.float32)
        # a waveform whose length changes part-way (ragged)
        arrays["signal"] = np.linspace(0, 1, 4 if i < 6 else 9)
        plan.append((scalars, arrays))
    result = run_procedure(Emitter(plan), runs_dir=tmp_path, station_text="[s]\nx = 1\n")
    assert result.status == "success", result.reason
    record = RunRecord.open(result.run_dir)
    events = record.events
    assert record.status == "success" and record.stop is not None
    assert record.stop.n_events == 12 == len(events)
    assert events.seq_num.tolist() == list(range(12))
    assert np.array_equal(events.scalars["loss"], [p[0]["loss"] for p in plan])
    assert np.all(np.isnan(events.scalars["accuracy"][:4]))
    assert np.array_equal(events.scalars["accuracy"][4:], [i / 12 for i in range(4, 12)])
    for name in ("controls", "counts", "flags", "iq"):
        expected = np.stack([p[1][name] for p in plan])
        assert events.arrays[name].dtype == expected.dtype, name
        assert np.array_equal(events.arrays[name], expected), name
    assert events.arrays["trace"].shape == (4, 2, 7)
    assert events.arrays["trace"].dtype == np.float32
    assert events.array_seq["trace"].tolist() == [0, 3, 6, 9]
    assert np.array_equal(events.arrays["trace"][2], plan[6][1]["trace"])
    assert "signal" in events.ragged_arrays and "signal" not in events.arrays
    assert [r.shape for r in events.rows("signal")] == [(4,)] * 6 + [(9,)] * 6
    assert events.array_seq["signal"].tolist() == list(range(12))
    assert record.start.parameters == {}
    assert record.start.station_text == "[s]\nx = 1\n"
    assert record.start.versions["labrig"] and record.start.versions["numpy"] == np.__version__


def test_start_doc_and_logs_round_trip(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    start = _start()
    writer = RecordWriter.create(run_dir, start)
    writer.append_event(EventDoc(start.run_uid, 0, 1.0, {"x": 1.0}, {}))
    from labrig.runs.documents import LogDoc

    writer.append_log(LogDoc(start.run_uid, 2.0, "warning", "line\nwith newline ü", 1))
    writer.close()
    record = RunRecord.open(run_dir / "run.h5")
    assert record.start == start
    assert record.status == "crashed"  # no stop document, no writer
    assert record.logs[0].message == "line\nwith newline ü" and record.logs[0].level == "warning"
    with h5py.File(run_dir / "run.h5", "r") as f:  # a plain reader sees the documented layout
        assert json.loads(f["start/parameters"][()]) == {"a": 1.5, "n": 3, "name": "é"}
        assert f["events/scalars/x"][0] == 1.0


def test_plain_h5py_reader_sees_events_while_the_run_is_going(tmp_path: Path) -> None:
    """SWMR: another process opens the file with h5py mid-run and reads the events so far."""
    from test_runs_toys import SleepyCounter

    controller = RunController()
    procedure = SleepyCounter(n_events=100_000, period_s=0.002)
    controller.start(procedure, runs_dir=tmp_path)
    try:
        deadline = time.monotonic() + 20
        runs: list[Path] = []
        while time.monotonic() < deadline and not runs:
            runs = [p for p in tmp_path.iterdir() if (p / "run.h5").exists()]
            time.sleep(0.05)
        h5 = runs[0] / "run.h5"
        time.sleep(0.3)
        reader = textwrap.dedent(
            f"""
            import h5py, json, time
            seen = []
            for _ in range(3):
                with h5py.File({str(h5)!r}, "r", swmr=True) as f:
                    n = f["events/seq_num"].shape[0]
                    counts = f["events/scalars/count"][:n]
                    seen.append((int(n), counts.tolist() == list(range(n))))
                time.sleep(0.2)
            print(json.dumps(seen))
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", reader], capture_output=True, text=True, timeout=60, check=True
        )
        seen = json.loads(out.stdout)
        assert all(consistent for _, consistent in seen)
        counts = [n for n, _ in seen]
        assert counts[0] > 0 and counts[-1] > counts[0]  # it kept growing under the reader
        assert RunRecord.open(runs[0]).status == "running"
    finally:
        controller.request_stop("test done")
        result = controller.join(timeout_s=30)
    assert result is not None and result.status == "aborted"
    assert RunRecord.open(result.run_dir).status == "aborted"


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [7, 40, 133])
def test_sigkill_loses_at_most_the_event_in_flight(tmp_path: Path, kill_after: int) -> None:
    """The toy prints each seq_num after emit_event returned (flushed); kill -9 right after."""
    from test_runs_toys import spawn_toy

    proc = spawn_toy(["sleepy", str(tmp_path), "n_events=100000", "period_s=0.0005"])
    confirmed = -1
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while confirmed < kill_after and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            message = json.loads(line)
            confirmed = int(message.get("seq", confirmed))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert confirmed >= kill_after
    (run_dir,) = list(tmp_path.iterdir())
    with h5py.File(run_dir / "run.h5", "r", swmr=True) as f:  # plain h5py, no labrig
        n = f["events/seq_num"].shape[0]
        assert n >= confirmed + 1  # everything confirmed is there
        assert f["events/scalars/count"][: confirmed + 1].tolist() == list(range(confirmed + 1))
    record = RunRecord.open(run_dir)
    assert record.status == "crashed" and record.stop is None
    n_read = len(record.events)
    # all confirmed events, plus at most the ones emitted between the print and the kill
    assert confirmed + 1 <= n_read
    assert record.events.scalars["count"].tolist() == list(range(n_read))
    assert np.array_equal(record.events.arrays["signal"][:, 0], np.arange(n_read, dtype=float))
    assert not any(math.isnan(v) for v in record.events.scalars["count"])


def test_a_reader_holding_the_file_open_cannot_break_the_run(tmp_path: Path) -> None:
    # A new scalar makes the writer reopen the file outside SWMR mode; a reader that has it
    # open (a person peeking, the run browser) holds HDF5's lock. The run must go on.
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    start = _start()
    writer = RecordWriter.create(run_dir, start)
    writer.append_event(EventDoc(start.run_uid, 0, 1.0, {"x": 1.0}, {}))
    with h5py.File(run_dir / "run.h5", "r", swmr=True) as reader:
        assert reader["events/scalars/x"].shape == (1,)
        writer.append_event(EventDoc(start.run_uid, 1, 2.0, {"x": 2.0, "y": 3.0}, {}))
    writer.close()
    record = RunRecord.open(run_dir / "run.h5")
    assert list(record.events.scalars["x"]) == [1.0, 2.0]
    assert np.isnan(record.events.scalars["y"][0]) and record.events.scalars["y"][1] == 3.0


def test_the_writer_goes_ahead_when_a_reader_holds_the_hdf5_lock(tmp_path: Path) -> None:
    import subprocess
    import sys

    from labrig.runs.record import LOCK_WAIT_S, _open_for_writing

    path = tmp_path / "x.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("a", data=np.arange(3.0))
    # Another process reading the file (a person with h5py) holds HDF5's file lock.
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import h5py,sys,time; f=h5py.File({str(path)!r},'r');"
            "print('open', flush=True); sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "open"
        with pytest.raises(OSError, match="lock"):
            h5py.File(path, "r+", libver="latest").close()  # what the writer used to do
        t0 = time.monotonic()
        with _open_for_writing(path) as f:
            f.create_dataset("b", data=np.ones(2))
        assert time.monotonic() - t0 >= LOCK_WAIT_S  # it waited for the reader first
    finally:
        reader.communicate("\n", timeout=30)
    with h5py.File(path, "r") as f:
        assert list(f["b"][:]) == [1.0, 1.0]


def test_a_row_extended_but_never_written_is_not_read_as_an_event(tmp_path: Path) -> None:
    # An interrupt between a dataset's set_extent and its write (a second Ctrl-C mid-append)
    # leaves a row that holds only the fill value. Neither readers nor a resume may take it
    # for event 0.
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    start = _start()
    writer = RecordWriter.create(run_dir, start)
    for seq in range(5):
        writer.append_event(
            EventDoc(start.run_uid, seq, float(seq), {"x": float(seq)}, {"v": np.full(3, seq)})
        )
    writer.close()
    with h5py.File(run_dir / "run.h5", "a") as f:
        events = f["events"]
        for name in ("time", "segment", "scalars/x", "arrays/v", "array_seq/v"):
            events[name].resize(6, axis=0)  # written (or not) but for seq_num / array_seq
        events["seq_num"].resize((6,))  # extended, never written
    record = RunRecord.open(run_dir)
    assert record.events.seq_num.tolist() == [0, 1, 2, 3, 4]
    assert record.events.arrays["v"].shape == (5, 3)
    np.testing.assert_array_equal(record.events.arrays["v"][:, 0], [0, 1, 2, 3, 4])
    resumed = dataclasses.replace(start, segment=1, first_seq_num=5)
    writer, removed = RecordWriter.reopen(run_dir, resumed, keep_through_seq=4)
    writer.close()
    assert removed == 1  # the unwritten row went, the five events stayed
    assert RunRecord.open(run_dir).events.seq_num.tolist() == [0, 1, 2, 3, 4]


def test_a_writer_killed_outside_swmr_mode_leaves_a_readable_resumable_record(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    start = _start()
    writer = RecordWriter.create(run_dir, start)
    for seq in range(3):
        writer.append_event(EventDoc(start.run_uid, seq, float(seq), {"x": float(seq)}, {}))
    writer.close()
    # A process that dies while it has the file open for creating datasets (outside SWMR).
    code = textwrap.dedent(
        f"""
        import os, h5py
        f = h5py.File({str(run_dir / "run.h5")!r}, "r+", libver="latest")
        f["events/scalars"].create_dataset("late", (3,), maxshape=(None,), dtype="f8")
        f.flush()
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(run_dir / "run.h5", "r").close()  # as HDF5 left it
    record = RunRecord.open(run_dir)
    assert record.status == "crashed"
    assert record.events.scalars["x"].tolist() == [0.0, 1.0, 2.0]
    resumed = dataclasses.replace(start, segment=1, first_seq_num=3)
    writer, removed = RecordWriter.reopen(run_dir, resumed, keep_through_seq=2)
    writer.close()
    assert removed == 0 and len(RunRecord.open(run_dir).events) == 3
