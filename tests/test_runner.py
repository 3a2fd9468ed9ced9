"""The runner: safe state on every exit path, signals, retries, controller, slow subscribers."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_runs_toys import SleepyCounter, ToyInstrument, spawn_toy

from instruments.errors import InstrumentConnectionError, InstrumentReportedError, LimitError
from labrig.errors import ProcedureError
from labrig.procedures.base import Procedure
from labrig.procedures.runner import (
    RetriesExhaustedError,
    RunController,
    retry,
    run_procedure,
)
from labrig.runs.documents import (
    BlueskyAdapter,
    DataKey,
    Document,
    EventDoc,
    LogDoc,
    PlotHint,
    StartDoc,
    StopDoc,
    StreamDeclaration,
    validate_bluesky,
)
from labrig.runs.record import RunRecord
from labrig.runs.stream import Subscriber


def _wait_for_seq(proc: subprocess.Popen[str], seq: int, timeout_s: float = 30) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(
                f"subprocess ended early: {proc.stderr.read() if proc.stderr else ''}"
            )
        if json.loads(line).get("seq", -1) >= seq:
            return
    raise AssertionError(f"subprocess did not reach event {seq}")


def _finish(proc: subprocess.Popen[str], timeout_s: float = 30) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out, err


def test_exception_fails_the_run_and_still_makes_every_instrument_safe(tmp_path: Path) -> None:
    procedure = SleepyCounter(n_events=10, period_s=0.0, fail_at=4)
    other = ToyInstrument("awg")
    procedure.instruments = {"awg": other}
    docs: list[Document] = []
    result = run_procedure(procedure, runs_dir=tmp_path, subscribers=[docs.append], echo=False)
    assert result.status == "failed"
    assert "RuntimeError: toy failure at event 4" in result.reason
    assert result.n_events == 4
    assert other.safe_calls == 1
    assert procedure.instruments["dac"].safe_calls == 1  # type: ignore[attr-defined]
    assert result.safe_state == {"awg": "ok", "dac": "ok"}
    record = RunRecord.open(result.run_dir)
    assert record.status == "failed" and record.stop is not None
    assert "toy failure" in record.stop.reason
    assert any(log.level == "error" and "Traceback" in log.message for log in record.logs)
    assert isinstance(docs[0], StartDoc) and isinstance(docs[-1], StopDoc)
    assert [d.seq_num for d in docs if isinstance(d, EventDoc)] == [0, 1, 2, 3]


def test_one_failing_safe_state_does_not_stop_the_others(tmp_path: Path) -> None:
    procedure = SleepyCounter(n_events=2, period_s=0.0)
    broken, fine = ToyInstrument("a", fail_safe=True), ToyInstrument("b")
    procedure.instruments = {"a": broken, "b": fine}
    result = run_procedure(procedure, runs_dir=tmp_path, echo=False)
    assert fine.safe_calls == 1 and broken.safe_calls == 1
    assert result.status == "failed"  # the run would have succeeded, but an output may be live
    assert "safe_state failed for a" in result.reason and "connection lost" in result.reason
    stop = RunRecord.open(result.run_dir).stop
    assert stop is not None and stop.safe_state["b"] == "ok"
    assert "InstrumentConnectionError" in stop.safe_state["a"]


def test_instrument_error_queue_entries_become_log_documents(tmp_path: Path) -> None:
    class Checking(Procedure):
        name = "test-checking"

        def execute(self) -> None:
            dac = self.instruments["dac"]
            assert isinstance(dac, ToyInstrument)
            dac.errors.append(
                InstrumentReportedError("QDAC", -222, "Data out of range", "sour1:volt 9")
            )
            found = self.check_instruments()
            assert len(found) == 1
            self.emit_event({"x": 1.0})
            dac.errors.append(InstrumentReportedError("QDAC", -113, "Undefined header"))

    procedure = Checking()
    procedure.instruments = {"dac": ToyInstrument("dac")}
    result = run_procedure(procedure, runs_dir=tmp_path, echo=False)
    assert result.status == "success"
    logs = [log.message for log in RunRecord.open(result.run_dir).logs if log.level == "warning"]
    assert any("-222" in m and "Data out of range" in m for m in logs)
    assert any("-113" in m for m in logs)  # drained at shutdown


def test_retry_backs_off_reconnects_and_gives_up() -> None:
    calls: list[float] = []
    reconnects: list[int] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise InstrumentConnectionError("socket closed")
        return "ok"

    assert retry(flaky, attempts=3, backoff_s=0.02, reconnect=lambda: reconnects.append(1)) == "ok"
    assert len(calls) == 3 and len(reconnects) == 2
    gaps = np.diff(calls)
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04  # exponential
    logged: list[str] = []

    def timeout() -> None:
        raise TimeoutError("VI_ERROR_TMO")

    with pytest.raises(RetriesExhaustedError, match=r"read-lockin: gave up after 4 attempts"):
        retry(timeout, attempts=4, backoff_s=0.001, log=logged.append, what="read-lockin")
    assert len(logged) == 3 and "TimeoutError: VI_ERROR_TMO" in logged[0]
    refused: list[int] = []

    def out_of_range() -> None:
        refused.append(1)
        raise LimitError("ch1", 2.0, -1, 1, "V", "test")

    with pytest.raises(LimitError):  # not retryable: propagates at once
        retry(out_of_range, attempts=5)
    assert refused == [1]


def test_exhausted_retries_abort_the_run_safely(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Unreachable(Procedure):
        name = "test-unreachable"

        def execute(self) -> None:
            def read() -> float:
                raise InstrumentConnectionError("lock-in 2 does not answer")

            self.retry(read, attempts=3, backoff_s=0.001, what="lockin2.read_xy")

    procedure = Unreachable()
    dac = ToyInstrument("dac")
    procedure.instruments = {"dac": dac}
    result = run_procedure(procedure, runs_dir=tmp_path)
    assert result.status == "aborted"
    assert "lockin2.read_xy: gave up after 3 attempts" in result.reason
    assert dac.safe_calls == 1
    assert "aborted" in capsys.readouterr().err  # and on the console
    logs = RunRecord.open(result.run_dir).logs
    assert sum("attempt" in log.message for log in logs) == 2


def test_controller_pauses_resumes_and_stops_a_worker_thread_run(tmp_path: Path) -> None:
    controller = RunController()
    procedure = SleepyCounter(n_events=100_000, period_s=0.002)
    controller.start(procedure, runs_dir=tmp_path, echo=False)
    time.sleep(0.2)
    controller.pause()
    time.sleep(0.15)
    assert controller.state == "paused"
    record = RunRecord.open(next(tmp_path.iterdir()))
    n_paused = len(record.events)
    time.sleep(0.2)
    assert len(RunRecord.open(next(tmp_path.iterdir())).events) <= n_paused + 1
    controller.resume()
    time.sleep(0.2)
    controller.request_stop("operator pressed stop")
    result = controller.join(timeout_s=20)
    assert result is not None and result.status == "aborted"
    assert result.reason == "operator pressed stop"
    assert result.n_events > n_paused + 5  # it did carry on after resume
    assert controller.state == "finished"
    messages = [log.message for log in RunRecord.open(result.run_dir).logs]
    assert "paused" in messages and "resumed" in messages


def test_pause_refused_for_procedures_that_cannot_pause() -> None:
    controller = RunController()

    class NoPause(Procedure):
        name = "test-nopause"

        def execute(self) -> None:
            self.sleep(5)

    controller.start(NoPause(), echo=False)
    time.sleep(0.1)
    with pytest.raises(ProcedureError, match="does not support pause"):
        controller.pause()
    controller.request_stop()
    result = controller.join(timeout_s=10)
    assert result is not None and result.status == "aborted"


def test_subscriber_exceptions_do_not_reach_the_procedure(tmp_path: Path) -> None:
    seen: list[int] = []

    def bad(doc: Document) -> None:
        if isinstance(doc, EventDoc):
            seen.append(doc.seq_num)
            raise ValueError("plot widget is gone")

    procedure = SleepyCounter(n_events=5, period_s=0.0)
    result = run_procedure(procedure, runs_dir=tmp_path, subscribers=[bad], echo=False)
    assert result.status == "success" and seen == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_sigint_stops_the_run_and_makes_instruments_safe(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    proc = spawn_toy(["sleepy", str(tmp_path / "runs"), "period_s=0.01", f"marker={marker}"])
    _wait_for_seq(proc, 5)
    proc.send_signal(signal.SIGINT)
    out, err = _finish(proc)
    assert proc.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["status"] == "aborted"
    assert "stopping after the current step" in err
    assert marker.read_text().splitlines() == ["dac safe-begin", "dac safe-end"]
    record = RunRecord.open(final["run_dir"])
    assert record.status == "aborted" and record.stop is not None
    assert "SIGINT" in record.stop.reason and record.stop.safe_state == {"dac": "ok"}


@pytest.mark.slow
def test_second_sigint_aborts_at_once_but_never_skips_the_safe_state(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    args = ["period_s=0.01", "ignore_stop=true", "safe_delay_s=1.0", f"marker={marker}"]
    proc = spawn_toy(["sleepy", str(tmp_path / "runs"), *args])
    _wait_for_seq(proc, 3)
    proc.send_signal(signal.SIGINT)  # ignored by this procedure: it keeps going
    _wait_for_seq(proc, 10)
    proc.send_signal(signal.SIGINT)  # second: abort now -> shutdown starts
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (marker.exists() and "begin" in marker.read_text()):
        time.sleep(0.01)
    for _ in range(3):  # an impatient operator during the 1 s safe-state ramp
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
    out, err = _finish(proc)
    assert proc.returncode == 0, err
    assert marker.read_text().splitlines() == ["dac safe-begin", "dac safe-end"]
    assert "please wait" in err
    final = json.loads(out.strip().splitlines()[-1])
    record = RunRecord.open(final["run_dir"])
    assert record.status == "aborted" and record.stop is not None
    assert "second signal" in record.stop.reason and record.stop.safe_state == {"dac": "ok"}


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    proc = spawn_toy(["sleepy", str(tmp_path / "runs"), "period_s=0.01", f"marker={marker}"])
    _wait_for_seq(proc, 3)
    proc.send_signal(signal.SIGTERM)
    out, _ = _finish(proc)
    assert json.loads(out.strip().splitlines()[-1])["status"] == "aborted"
    assert "safe-end" in marker.read_text()


@pytest.mark.slow
def test_slow_subscriber_does_not_slow_the_procedure(tmp_path: Path) -> None:
    """200 events with a subscriber that sleeps 50 ms per document: < 5 % slower than none.

    A subscriber called in the procedure thread would add 200 x 50 ms = 10 s to a ~1 s run.
    """
    release = threading.Event()

    def slow(doc: Document) -> None:
        if not release.is_set():
            time.sleep(0.05)

    def once(subscribers: list[Subscriber]) -> float:
        procedure = SleepyCounter(n_events=200, period_s=0.004)
        result = run_procedure(
            procedure, runs_dir=tmp_path, subscribers=subscribers, echo=False, drain_timeout_s=0.0
        )
        assert result.status == "success" and result.n_events == 200
        return result.wall_time_s

    once([])  # warm-up
    bare, with_slow = [], []
    for _ in range(3):
        bare.append(once([]))
        with_slow.append(once([slow]))
    release.set()
    ratio = min(with_slow) / min(bare)
    assert ratio < 1.05, f"slow subscriber: {with_slow} vs none: {bare} (ratio {ratio:.3f})"


class Talkative(Procedure):
    name = "test-talkative"

    def seeds(self) -> dict[str, int]:
        return {"device": 42}

    def execute(self) -> None:
        self.log("hello", "info")
        self.emit_event({"x": 1.0}, {"trace": np.arange(3.0)})
        self.emit_event({"peak_v": 2.0})

    def describe_data(self) -> list[StreamDeclaration]:
        return [
            StreamDeclaration(
                (
                    DataKey("x", units="V"),
                    DataKey("trace", units="nA", shape=(3,), dims=("sample",)),
                ),
                (PlotHint("x", "lines", ("x",)),),
            ),
            StreamDeclaration((DataKey("peak_v", units="V"),), name="peaks"),
        ]


def test_log_and_start_documents_reach_subscribers(tmp_path: Path) -> None:
    docs: list[Document] = []
    result = run_procedure(Talkative(), runs_dir=tmp_path, subscribers=[docs.append], echo=False)
    kinds = [type(d).__name__ for d in docs]
    assert kinds == [
        "StartDoc",
        "DescriptorDoc",
        "DescriptorDoc",
        "LogDoc",
        "EventDoc",
        "EventDoc",
        "StopDoc",
    ]
    start = docs[0]
    assert isinstance(start, StartDoc) and start.seeds == {"device": 42}
    log = docs[3]
    assert isinstance(log, LogDoc) and log.message == "hello"
    event = docs[4]
    assert isinstance(event, EventDoc) and not event.arrays["trace"].flags.writeable
    assert result.run_uid == start.run_uid
    assert [d.stream for d in docs if isinstance(d, EventDoc)] == ["primary", "peaks"]


def test_the_stream_is_bluesky_documents_that_validate(tmp_path: Path) -> None:
    """What a RunEngine would emit: start, descriptors, events, stop, each valid against
    event-model's schema, descriptors before their events, seq_num from 1 per stream."""
    seen: list[tuple[str, dict]] = []
    run_procedure(
        Talkative(),
        runs_dir=tmp_path,
        subscribers=[BlueskyAdapter(lambda n, d: seen.append((n, d)))],
        echo=False,
    )
    assert [name for name, _ in seen] == [
        "start",
        "descriptor",
        "descriptor",
        "event",
        "event",
        "stop",
    ]
    for name, doc in seen:
        validate_bluesky(name, doc)
    start, trace_desc, peak_desc = seen[0][1], seen[1][1], seen[2][1]
    assert trace_desc["run_start"] == start["uid"] and trace_desc["name"] == "primary"
    assert trace_desc["data_keys"]["trace"]["shape"] == [3]
    assert trace_desc["data_keys"]["trace"]["units"] == "nA"
    assert trace_desc["data_keys"]["trace"]["dims"] == ["sample"]
    assert trace_desc["data_keys"]["x"]["dtype"] == "number"
    events = [doc for name, doc in seen if name == "event"]
    assert [e["descriptor"] for e in events] == [trace_desc["uid"], peak_desc["uid"]]
    assert [e["seq_num"] for e in events] == [1, 1]
    stop = seen[-1][1]
    assert stop["exit_status"] == "success" and stop["num_events"] == {"primary": 1, "peaks": 1}
    # The record holds the same descriptors; a reader rebuilds the declaration from them.
    record = RunRecord.open(next(tmp_path.iterdir()))
    assert record.descriptors["primary"].document["uid"] == trace_desc["uid"]
    assert record.data_key("trace").units == "nA"
    assert record.stop is not None and record.stop.document["uid"] == stop["uid"]
    assert list(record.events.stream) == ["primary", "peaks"]
    assert np.isnan(record.events.scalars["x"][1]) and record.events.scalars["peak_v"][1] == 2.0


def test_an_event_that_breaks_its_declaration_fails_the_run_naming_the_key(
    tmp_path: Path,
) -> None:
    class Liar(Talkative):
        name = "test-liar"

        def execute(self) -> None:
            self.emit_event({"x": 1.0}, {"trace": np.arange(4.0)})

    result = run_procedure(Liar(), runs_dir=tmp_path, echo=False)
    assert result.status == "failed"
    assert "'trace'" in result.reason and "(4,)" in result.reason and "(3,)" in result.reason

    class Stranger(Talkative):
        name = "test-stranger"

        def execute(self) -> None:
            self.emit_event({"y": 1.0})

    result = run_procedure(Stranger(), runs_dir=tmp_path, echo=False)
    assert (
        result.status == "failed"
        and "['y']" in result.reason
        and "no declared stream" in result.reason
    )


def test_a_failure_setting_up_the_run_still_makes_it_safe_and_hands_signals_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labrig.runs.stream import DocumentStream

    def no_threads(*args: object, **kwargs: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(DocumentStream, "subscribe", no_threads)
    dac = ToyInstrument("dac")
    dac.output_v = 0.4
    procedure = SleepyCounter(n_events=3)
    procedure.instruments = {"dac": dac}
    controller = RunController()
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError, match="new thread"):
        run_procedure(
            procedure, runs_dir=tmp_path, subscribers=[print], controller=controller, echo=False
        )
    assert dac.safe_calls == 1 and dac.output_v == 0.0
    assert signal.getsignal(signal.SIGINT) is before
    assert controller.state != "running"
    (run_dir,) = tmp_path.iterdir()
    assert RunRecord.open(run_dir).status == "crashed"  # readable, and not left "running"
