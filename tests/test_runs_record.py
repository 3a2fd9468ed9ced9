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
from labrig.runs.documents import (
    DataKey,
    DescriptorDoc,
    EventDoc,
    LogDoc,
    StartDoc,
    StopDoc,
    StreamDeclaration,
)
from labrig.runs.record import (
    RecordWriter,
    RunRecord,
    default_runs_dir,
    lock_run_dir,
    new_run_dir,
)


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
    ).with_bluesky()


def _descriptors(start: StartDoc, *keys: DataKey) -> list[DescriptorDoc]:
    return [DescriptorDoc.compose(start, StreamDeclaration(keys), "labrig:unit")]


def _writer(run_dir: Path, start: StartDoc, *keys: DataKey) -> RecordWriter:
    run_dir.mkdir(exist_ok=True)
    return RecordWriter.create(lock_run_dir(run_dir), start, _descriptors(start, *keys))


class Emitter(Procedure):
    """Emits a planned list of (scalars, arrays)."""

    name = "test-emitter"

    def __init__(
        self,
        plan: list[tuple[dict[str, float], dict[str, np.ndarray]]],
        keys: tuple[DataKey, ...] = (),
    ) -> None:
        super().__init__()
        self.plan = plan
        self.keys = keys

    def describe_data(self) -> list[StreamDeclaration] | None:
        return [StreamDeclaration(self.keys)] if self.keys else None

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
    keys = (
        DataKey("loss"),
        DataKey("accuracy", optional=True),
        DataKey("controls", "V", (5,), ("electrode",), {"electrode": list("abcde")}),
        DataKey("counts", shape=(3,), dtype="int16"),
        DataKey("flags", shape=(2,), dtype="bool"),
        DataKey("iq", shape=(2,), dtype="complex128"),
        DataKey("trace", shape=(2, 7), dtype="float32", optional=True),
        DataKey("signal", "V", (None,), ("time",)),
    )
    result = run_procedure(Emitter(plan, keys), runs_dir=tmp_path, station_text="[s]\nx = 1\n")
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
    assert record.data_key("controls").labels(0) == tuple("abcde")
    assert record.data_key("signal").units == "V"
    assert record.start.parameters == {}
    assert record.start.station_text == "[s]\nx = 1\n"
    assert record.start.versions["labrig"] and record.start.versions["numpy"] == np.__version__


def test_every_dataset_exists_before_the_first_event_and_none_is_added(tmp_path: Path) -> None:
    """The record's structure is fixed when the data are declared: SWMR mode from the first
    byte to the stop, one file handle, no object created while events are written."""
    start = _start()
    writer = _writer(tmp_path / "r", start, DataKey("x"), DataKey("v", shape=(3,)))
    objects: list[list[str]] = []

    def names() -> list[str]:
        found: list[str] = []
        writer._require_file().visit(found.append)
        return found

    handle = writer._require_file()
    assert handle.swmr_mode
    objects.append(names())
    for seq in range(4):
        writer.append_event(EventDoc(start.run_uid, seq, 1.0, {"x": 1.0}, {"v": np.ones(3)}))
        writer.append_log(LogDoc(start.run_uid, 2.0, "info", f"event {seq}", seq))
    writer.write_stop(StopDoc(start.run_uid, 3.0, "success", "", 4, 0.0, 0.0))
    objects.append(names())
    assert writer._require_file() is handle and handle.swmr_mode
    writer.close()
    assert objects[0] == objects[1]
    assert "events/data/x" in objects[0] and "stop/json" in objects[0]


def test_start_doc_and_logs_round_trip(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    start = _start()
    writer = _writer(run_dir, start, DataKey("x", units="V"))
    writer.append_event(EventDoc(start.run_uid, 0, 1.0, {"x": 1.0}, {}))
    writer.append_log(LogDoc(start.run_uid, 2.0, "warning", "line\nwith newline ü", 1))
    writer.close()
    record = RunRecord.open(run_dir / "run.h5")
    assert record.start == start
    assert record.status == "crashed"  # no stop document, no writer
    assert record.logs[0].message == "line\nwith newline ü" and record.logs[0].level == "warning"
    with h5py.File(run_dir / "run.h5", "r") as f:  # a plain reader sees the documented layout
        assert json.loads(f["start/parameters"][()]) == {"a": 1.5, "n": 3, "name": "é"}
        assert f["events/data/x"][0] == 1.0
        (descriptor,) = json.loads(f["start/descriptors"][()])
        assert descriptor["data_keys"]["x"]["units"] == "V"
        assert json.loads(f["start/run_start"][()])["uid"] == start.run_uid
        assert f["stop/json"].shape == (0,)  # no stop yet


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
                    counts = f["events/data/count"][:n]
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


def _plain_open_fails(path: Path) -> bool:
    try:
        h5py.File(path, "r").close()
    except OSError:
        return True
    return False


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
        assert f["events/data/count"][: confirmed + 1].tolist() == list(range(confirmed + 1))
    assert _plain_open_fails(run_dir / "run.h5")  # the dead SWMR writer's flags
    record = RunRecord.open(run_dir)  # what `labrig runs show` does
    assert not _plain_open_fails(run_dir / "run.h5")  # ... clears them
    assert record.status == "crashed" and record.stop is None
    n_read = len(record.events)
    # all confirmed events, plus at most the ones emitted between the print and the kill
    assert confirmed + 1 <= n_read
    assert record.events.scalars["count"].tolist() == list(range(n_read))
    assert np.array_equal(record.events.arrays["signal"][:, 0], np.arange(n_read, dtype=float))
    assert not any(math.isnan(v) for v in record.events.scalars["count"])


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_record_a_swmr_reader_opens_at_once(
    tmp_path: Path,
) -> None:
    """Kill -9 at spread-out moments from process start (imports, startup, the record being
    built and renamed, events, the stop): there is either no run.h5 yet (killed before the data
    were declared) or one that a SWMR reader opens at once, and plain h5py after
    ``RunRecord.open``."""
    from test_runs_toys import spawn_toy

    outcomes = []
    for k, delay_s in enumerate((0.0, 0.4, 0.8, 1.0, 1.2, 1.5, 2.0, 2.5, 3.5)):
        root = tmp_path / f"k{k}"
        root.mkdir()
        proc = spawn_toy(["sleepy", str(root), "n_events=300", "period_s=0.0"])
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        folders = list(root.iterdir())
        if not folders or not (folders[0] / "run.h5").exists():
            outcomes.append("none")
            continue
        h5 = folders[0] / "run.h5"
        with h5py.File(h5, "r", swmr=True) as f:
            n = f["events/seq_num"].shape[0]
            assert f["events/data/count"][:n].shape == (n,)
        record = RunRecord.open(folders[0])
        assert not _plain_open_fails(h5)
        assert record.events.scalars["count"].tolist() == list(range(len(record.events)))
        outcomes.append(record.status)
    assert set(outcomes) <= {"none", "crashed", "success"}
    assert "crashed" in outcomes or "success" in outcomes, outcomes


def test_a_reader_holding_the_file_open_cannot_break_the_run(tmp_path: Path) -> None:
    # A reader that has the file open (a person peeking, the run browser) while events and the
    # stop are written: the writer never reopens the file, so nothing waits for its lock.
    run_dir = tmp_path / "r"
    start = _start()
    writer = _writer(run_dir, start, DataKey("x"), DataKey("y", optional=True))
    writer.append_event(EventDoc(start.run_uid, 0, 1.0, {"x": 1.0}, {}))
    with h5py.File(run_dir / "run.h5", "r", swmr=True) as reader:
        assert reader["events/data/x"].shape == (1,)
        writer.append_event(EventDoc(start.run_uid, 1, 2.0, {"x": 2.0, "y": 3.0}, {}))
        writer.write_stop(StopDoc(start.run_uid, 3.0, "success", "", 2, 0.0, 0.0))
        reader["events/data/x"].refresh()
        assert reader["events/data/x"].shape == (2,)
    writer.close()
    record = RunRecord.open(run_dir / "run.h5")
    assert list(record.events.scalars["x"]) == [1.0, 2.0]
    assert np.isnan(record.events.scalars["y"][0]) and record.events.scalars["y"][1] == 3.0
    assert record.status == "success"


def test_a_row_extended_but_never_written_is_not_read_as_an_event(tmp_path: Path) -> None:
    # An interrupt between a dataset's set_extent and its write (a second Ctrl-C mid-append)
    # leaves a row that holds only the fill value. Neither readers nor a resume may take it
    # for event 0.
    run_dir = tmp_path / "r"
    start = _start()
    writer = _writer(run_dir, start, DataKey("x"), DataKey("v", shape=(3,), dtype="int64"))
    for seq in range(5):
        writer.append_event(
            EventDoc(start.run_uid, seq, float(seq), {"x": float(seq)}, {"v": np.full(3, seq)})
        )
    writer.close()
    with h5py.File(run_dir / "run.h5", "a") as f:
        events = f["events"]
        for name in ("time", "segment", "stream", "data/x", "data/v"):
            events[name].resize(6, axis=0)  # written (or not) but for seq_num
        events["seq_num"].resize((6,))  # extended, never written
    record = RunRecord.open(run_dir)
    assert record.events.seq_num.tolist() == [0, 1, 2, 3, 4]
    assert record.events.arrays["v"].shape == (5, 3)
    np.testing.assert_array_equal(record.events.arrays["v"][:, 0], [0, 1, 2, 3, 4])
    resumed = dataclasses.replace(start, segment=1, first_seq_num=5).with_bluesky()
    writer, removed = RecordWriter.resume(
        lock_run_dir(run_dir),
        resumed,
        _descriptors(resumed, DataKey("x"), DataKey("v", shape=(3,), dtype="int64")),
        keep_through_seq=4,
    )
    writer.close()
    assert removed == 1  # the unwritten row went, the five events stayed
    assert RunRecord.open(run_dir).events.seq_num.tolist() == [0, 1, 2, 3, 4]


def test_a_killed_writer_leaves_a_record_readable_at_once_and_resumable(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "r"
    start = _start()
    code = textwrap.dedent(
        f"""
        import os, pickle, numpy as np
        from labrig.runs.documents import DataKey, EventDoc
        from test_runs_record import _start, _writer
        start = pickle.loads({__import__("pickle").dumps(start)!r})
        writer = _writer(__import__("pathlib").Path({str(run_dir)!r}), start, DataKey("x"))
        for seq in range(3):
            writer.append_event(EventDoc(start.run_uid, seq, float(seq), {{"x": float(seq)}}, {{}}))
        os._exit(0)  # dies with the file open in SWMR mode
        """
    )
    env_path = str(Path(__file__).parent)
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={**__import__("os").environ, "PYTHONPATH": env_path},
    )
    with h5py.File(run_dir / "run.h5", "r", swmr=True) as f:  # at once, with SWMR
        assert f["events/data/x"][:].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(OSError, match="already open for"):
        h5py.File(run_dir / "run.h5", "r").close()  # as HDF5 left it
    from labrig.cli import main

    assert main(["runs", "show", str(run_dir)]) == 0  # `labrig runs show` repairs it ...
    with h5py.File(run_dir / "run.h5", "r") as f:  # ... so plain h5py (and h5dump) open it
        assert f["events/data/x"][:].tolist() == [0.0, 1.0, 2.0]
    record = RunRecord.open(run_dir)
    assert record.status == "crashed"
    assert record.events.scalars["x"].tolist() == [0.0, 1.0, 2.0]
    resumed = dataclasses.replace(start, segment=1, first_seq_num=3).with_bluesky()
    writer, removed = RecordWriter.resume(
        lock_run_dir(run_dir), resumed, _descriptors(resumed, DataKey("x")), keep_through_seq=2
    )
    writer.append_event(EventDoc(start.run_uid, 3, 3.0, {"x": 3.0}, {}, descriptor="d"))
    writer.close()
    record = RunRecord.open(run_dir)
    assert removed == 0 and record.events.scalars["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert record.events.segment.tolist() == [0, 0, 0, 1]
    assert [s.segment for s in record.segments] == [0, 1]
