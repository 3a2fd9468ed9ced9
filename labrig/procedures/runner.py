"""Run a procedure: record it, stream it, and leave every instrument safe on every exit path.

::

    result = run_procedure(MyProcedure(points=11), station_text=toml_text)
    print(result.status, result.reason, result.run_dir)

Sequence: create the run folder and record, publish the start document, ``startup()``,
(``restore_state()`` when resuming), ``execute()``, then — whatever happened — ``shutdown()``,
``safe_state()`` on every instrument in ``procedure.instruments`` (each on its own, so one that
fails does not keep the others from their safe state), drain the instruments' error queues into
log documents, and write the stop document.

Status: ``success`` when ``execute()`` returned with no stop requested; ``aborted`` after a stop
request (Ctrl-C, SIGTERM, GUI, :class:`RunController`), a :class:`RunAborted` from the procedure,
or instrument retries exhausted (:func:`retry`); ``failed`` on any other exception, and also when a
run that would have succeeded could not bring an instrument to its safe state.

Signals (only when running in the main thread with ``handle_signals=True``): the first Ctrl-C
(SIGINT) or SIGTERM requests a stop, which the procedure honours at its next ``should_stop()``;
a second one raises ``KeyboardInterrupt`` inside the procedure to abort at once. Once the shutdown
section has begun, signals never raise: the safe state always runs to the end.

For a GUI, run in a worker thread through :class:`RunController` (``start``, ``request_stop``,
``pause``, ``resume``, ``join``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import platform
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TypeVar

import numpy as np

from instruments.roles import Instrument
from labrig._version import __version__
from labrig.errors import ProcedureError
from labrig.procedures.base import (
    LogLevel,
    ParameterError,
    Procedure,
    RunAborted,
    drain_errors,
    get_procedure_class,
)
from labrig.procedures.retry import RETRYABLE_ERRORS, RetriesExhaustedError, retry
from labrig.runs.checkpoint import resume_point, save_checkpoint
from labrig.runs.documents import (
    DescriptorDoc,
    EventDoc,
    LogDoc,
    StartDoc,
    StopDoc,
    StopStatus,
    StreamDeclaration,
    check_declaration,
    check_name,
    declaration_from_event,
    to_jsonable,
)
from labrig.runs.record import (
    RecordError,
    RecordWriter,
    RunRecord,
    lock_run_dir,
    new_run_dir,
)
from labrig.runs.stream import DocumentStream, Subscriber

__all__ = [
    "RETRYABLE_ERRORS",
    "RetriesExhaustedError",
    "RunController",
    "RunResult",
    "resume_run",
    "retry",
    "run_procedure",
]

T = TypeVar("T")
_logger = logging.getLogger("labrig.runner")

# ------------------------------------------------------------------------------- controller

ControllerState = Literal["idle", "running", "paused", "stopping", "finished"]


class RunController:
    """Stop, pause and resume a run from another thread (a GUI); thread-safe.

    ::

        controller = RunController()
        controller.start(procedure, runs_dir=...)   # runs in a worker thread
        controller.pause(); controller.resume()      # if procedure.supports_pause
        controller.request_stop()
        result = controller.join(timeout_s=30)

    One controller drives one run.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._stop_reason: str | None = None
        self._paused = False
        self._procedure: Procedure | None = None
        self._finished = False
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # ---- requests ----------------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the procedure to stop at its next ``should_stop()``; also ends a pause."""
        with self._cond:
            if self._stop_reason is None:
                self._stop_reason = reason
            self._cond.notify_all()

    def pause(self) -> None:
        """Ask the procedure to pause at its next ``wait_if_paused()``.

        Raises :class:`ProcedureError` if the procedure does not support pausing.
        """
        with self._cond:
            procedure = self._procedure
            if procedure is not None and not procedure.supports_pause:
                raise ProcedureError(f"procedure {procedure.name!r} does not support pause")
            self._paused = True

    def resume(self) -> None:
        """End a pause."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    # ---- state -------------------------------------------------------------------------------

    @property
    def stop_requested(self) -> bool:
        return self._stop_reason is not None

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def state(self) -> ControllerState:
        with self._cond:
            if self._finished:
                return "finished"
            if self._procedure is None:
                return "idle"
            if self._stop_reason is not None:
                return "stopping"
            return "paused" if self._paused else "running"

    @property
    def result(self) -> RunResult | None:
        """The run's result once finished (None before)."""
        return self._result

    def wait_if_paused(self, timeout_s: float | None = None) -> bool:
        """Block while paused (until resumed, stopped or ``timeout_s``); True if it waited."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            if not self._paused or self._stop_reason is not None:
                return False
            while self._paused and self._stop_reason is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(timeout=remaining)
            return True

    # ---- worker thread -----------------------------------------------------------------------

    def start(self, procedure: Procedure, **kwargs: Any) -> threading.Thread:
        """Run ``procedure`` with :func:`run_procedure` in a worker thread (signals untouched)."""
        kwargs.pop("handle_signals", None)

        def work() -> None:
            try:
                self._result = run_procedure(
                    procedure, handle_signals=False, controller=self, **kwargs
                )
            except BaseException as exc:  # surfaced by join()
                self._error = exc
                with self._cond:
                    self._finished = True
                    self._cond.notify_all()

        thread = threading.Thread(target=work, name=f"labrig-run-{procedure.name}", daemon=True)
        self._thread = thread
        thread.start()
        return thread

    def join(self, timeout_s: float | None = None) -> RunResult | None:
        """Wait for a run started with :meth:`start`; its result, or None on timeout.

        Re-raises an error that kept the run from starting at all (e.g. an unwritable folder).
        """
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                return None
        if self._error is not None:
            raise self._error
        return self._result

    def _begin(self, procedure: Procedure) -> None:
        with self._cond:
            if self._procedure is not None:
                raise ProcedureError("a RunController drives one run; make a new one")
            if self._paused and not procedure.supports_pause:
                raise ProcedureError(f"procedure {procedure.name!r} does not support pause")
            self._procedure = procedure

    def _end_if_running(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def _end(self, result: RunResult) -> None:
        with self._cond:
            self._result = result
            self._finished = True
            self._cond.notify_all()


# ----------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class RunResult:
    """How a run ended and where its record is."""

    run_dir: Path
    status: StopStatus
    reason: str
    device_time_s: float
    wall_time_s: float
    summary: dict[str, Any] = field(default_factory=dict)
    n_events: int = 0
    run_uid: str = ""
    safe_state: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- signals


class _Phase:
    """Where the run is; read by the signal handler. A plain attribute store, so setting it
    cannot itself be interrupted by a signal handler (no call, no eval-breaker check)."""

    def __init__(self) -> None:
        self.value = "running"


class _SignalGuard:
    """SIGINT/SIGTERM handling for a run in the main thread (see the module docstring)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, phase: _Phase, controller: RunController, echo: bool) -> None:
        self.phase = phase
        self.controller = controller
        self.echo = echo
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
        self._previous.clear()

    def _say(self, message: str) -> None:
        if self.echo:
            print(f"labrig: {message}", file=sys.stderr, flush=True)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.phase.value != "running":
            self.controller.request_stop(f"{name} received")
            self._say(f"{name} received; bringing instruments to their safe state, please wait")
            return
        if not self.controller.stop_requested:
            self.controller.request_stop(f"{name} received: stop requested")
            self._say(
                f"{name}: stopping after the current step (press Ctrl-C again to abort now; "
                "instruments are brought to their safe state either way)"
            )
            return
        self._say(f"{name} again: aborting now; instruments will still be made safe")
        raise KeyboardInterrupt


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# ------------------------------------------------------------------------------ run context


def _versions() -> dict[str, str]:
    found = {"labrig": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for dist in ("h5py", "scipy", "pyvisa", "pyvisa-py", "pyvisa-sim", "pymeasure", "matplotlib"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def _host() -> dict[str, Any]:
    return {"hostname": platform.node(), "platform": platform.platform(), "pid": os.getpid()}


def _snapshot(instruments: Mapping[str, Instrument]) -> dict[str, Any]:
    shot: dict[str, Any] = {}
    for label, instrument in instruments.items():
        entry: dict[str, Any] = {}
        try:
            entry["identity"] = instrument.identity
            entry["settings"] = to_jsonable(instrument.snapshot())
        except Exception as exc:  # a snapshot failure must not stop the run from being recorded
            entry["error"] = f"{type(exc).__name__}: {exc}"
        shot[label] = entry
    return shot


class _Record:
    """The run record, created once the procedure has declared its data.

    Until then (``startup()``) log documents wait here; :meth:`declare` composes the
    EventDescriptors, has the record built with every dataset (new or resumed) and publishes
    the descriptors. A procedure that declares nothing gets its declaration from its first
    event (no units, a warning in the log).
    """

    def __init__(
        self,
        run_dir: Path,
        lock: Any,
        start: StartDoc,
        stream: DocumentStream,
        keep_through_seq: int | None,
    ) -> None:
        self.run_dir = run_dir
        self.lock = lock
        self.start = start
        self.stream = stream
        self.keep_through_seq = keep_through_seq  # None: a new record; else resume after it
        self.writer: RecordWriter | None = None
        self.descriptors: dict[str, DescriptorDoc] = {}
        self.pending_logs: list[LogDoc] = []
        self.extras: dict[str, Any] = {}
        self.declared = False
        self.segment_events: dict[str, int] = {}

    @property
    def n_events(self) -> int:
        return self.writer.n_events if self.writer is not None else 0

    def declare(self, streams: Sequence[StreamDeclaration]) -> None:
        """Create the record from ``streams`` (a sequence of :class:`StreamDeclaration`)."""
        if self.writer is not None:
            raise ProcedureError("the run's data were declared already")
        checked = check_declaration(streams)
        source = f"labrig:{self.start.procedure}"
        descriptors = [DescriptorDoc.compose(self.start, s, source) for s in checked]
        self.declared = True
        if self.keep_through_seq is None:
            writer = RecordWriter.create(
                self.lock, self.start, descriptors, logs=self.pending_logs, extras=self.extras
            )
        else:
            writer, removed = RecordWriter.resume(
                self.lock,
                self.start,
                descriptors,
                self.keep_through_seq,
                logs=self.pending_logs,
                extras=self.extras,
            )
            if removed:
                _logger.info("resume: dropped %d event(s) recorded after the checkpoint", removed)
        self.writer = writer
        self.pending_logs = []
        self.descriptors = {d.stream.name: d for d in descriptors}
        for descriptor in descriptors:
            self.stream.publish(descriptor)

    def ensure(self) -> RecordWriter | None:
        """The writer; a record with no streams if none was declared (a run that failed or
        stopped before its first event). None if even that cannot be written."""
        if self.writer is None:
            try:
                self.declare(())
            except Exception as exc:
                _logger.error("could not write the run record: %s", exc)
                print(f"labrig: could not write the run record: {exc}", file=sys.stderr)
        return self.writer

    def descriptor_for(self, names: frozenset[str]) -> DescriptorDoc:
        """The stream an event carrying ``names`` belongs to (its required keys and no
        undeclared one), else a :class:`ProcedureError` listing the declared streams."""
        for descriptor in self.descriptors.values():
            if descriptor.stream.accepts(names):
                return descriptor
        declared = "; ".join(
            f"{name}: {sorted(d.stream.names())}" for name, d in self.descriptors.items()
        )
        raise ProcedureError(
            f"an event with keys {sorted(names)} matches no declared stream "
            f"({declared or 'none declared'}); declare it in describe_data()"
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        else:
            self.lock.release()


class _Context:
    """The runner side of a procedure's ``emit_event``/``log``/``should_stop``."""

    def __init__(
        self,
        procedure: Procedure,
        record: _Record,
        stream: DocumentStream,
        controller: RunController,
        run_uid: str,
        segment: int,
        first_seq: int,
        prior_wall_s: float,
        prior_device_s: float,
        t0: float,
        checkpointing: bool,
    ) -> None:
        self.procedure = procedure
        self.record = record
        self.stream = stream
        self.controller = controller
        self.run_uid = run_uid
        self.segment = segment
        self.next_seq = first_seq
        self.prior_wall_s = prior_wall_s
        self.prior_device_s = prior_device_s
        self.t0 = t0
        self.checkpointing = checkpointing
        self._device_time_failed = False
        self.last_scalars: dict[str, float] = {}
        self._lock = threading.RLock()

    def wall_time_s(self) -> float:
        return self.prior_wall_s + (time.monotonic() - self.t0)

    def device_time_s(self) -> float:
        try:
            return self.prior_device_s + float(self.procedure.device_time_s())
        except Exception as exc:
            if not self._device_time_failed:  # said once, not at every event
                self._device_time_failed = True
                _logger.warning(
                    "device time unknown (%s: %s); counting the earlier segments' only",
                    type(exc).__name__,
                    exc,
                )
            return self.prior_device_s

    def emit_event(self, scalars: Mapping[str, float], arrays: Mapping[str, np.ndarray]) -> int:
        clean_scalars: dict[str, float] = {}
        for name, value in scalars.items():
            check_name(name, "scalar")
            try:
                clean_scalars[name] = float(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"scalar {name!r}: {value!r} is not a number") from exc
        clean_arrays: dict[str, np.ndarray] = {}
        for name, raw in arrays.items():
            check_name(name, "array")
            array = np.array(raw, copy=True)
            if array.dtype.kind not in "biufc":
                raise TypeError(f"array {name!r}: dtype {array.dtype} is not numeric")
            array.setflags(write=False)
            clean_arrays[name] = array
        with self._lock:
            record = self.record
            if not record.declared:
                self.log(
                    f"procedure {self.procedure.name!r} declared no data (describe_data); "
                    "its first event's keys are taken as the declaration, without units",
                    "warning",
                )
                record.declare([declaration_from_event(clean_scalars, clean_arrays)])
            descriptor = record.descriptor_for(frozenset(clean_scalars) | frozenset(clean_arrays))
            writer = record.writer
            assert writer is not None  # declare() made it
            name = descriptor.stream.name
            seq = self.next_seq
            stream_seq = record.segment_events.get(name, 0) + 1
            doc = EventDoc(
                self.run_uid,
                seq,
                time.time(),
                clean_scalars,
                clean_arrays,
                stream=name,
                descriptor=descriptor.uid,
                stream_seq=stream_seq,
            )
            try:
                writer.append_event(doc)
            except ValueError as exc:  # the event does not fit its declaration
                raise ProcedureError(str(exc)) from None
            record.segment_events[name] = stream_seq
            self.next_seq = seq + 1
            self.last_scalars = clean_scalars
            if self.checkpointing:
                state = self.procedure.checkpoint_state()
                if state is not None:
                    save_checkpoint(
                        record.run_dir,
                        state,
                        seq_num=seq,
                        n_events=writer.n_events,
                        segment=self.segment,
                        wall_time_s=self.wall_time_s(),
                        device_time_s=self.device_time_s(),
                        procedure=self.procedure.name,
                    )
            self.stream.publish(doc)
        return seq

    def log(self, message: str, level: LogLevel) -> None:
        doc = LogDoc(self.run_uid, time.time(), level, str(message), self.next_seq)
        _logger.log(logging.getLevelNamesMapping()[level.upper()], "%s", message)
        with self._lock:
            writer = self.record.writer
            if writer is None:
                self.record.pending_logs.append(doc)
            else:
                try:
                    writer.append_log(doc)
                except Exception:  # a lost log line must not end the run; the console has it
                    _logger.exception("could not record a log document")
            self.stream.publish(doc)

    def should_stop(self) -> bool:
        return self.controller.stop_requested

    def wait_if_paused(self, timeout_s: float | None) -> bool:
        if not self.controller.paused or self.controller.stop_requested:
            return False
        self.log("paused", "info")
        waited = self.controller.wait_if_paused(timeout_s)
        self.log("stop requested while paused" if self.should_stop() else "resumed", "info")
        return waited


# ------------------------------------------------------------------------------------- run


def _start_doc(
    procedure: Procedure,
    run_uid: str,
    station_text: str,
    segment: int,
    first_seq: int,
) -> StartDoc:
    declared = type(procedure).parameters()
    try:
        station = to_jsonable(procedure.station_info())
    except Exception as exc:
        station = {"error": f"{type(exc).__name__}: {exc}"}
    return StartDoc(
        run_uid=run_uid,
        procedure=procedure.name,
        procedure_class=type(procedure).import_path(),
        parameters=to_jsonable(procedure.parameter_values()),
        parameter_units={name: p.units for name, p in declared.items()},
        station_text=station_text,
        station=station,
        snapshot=_snapshot(procedure.instruments),
        versions=_versions(),
        seeds=to_jsonable(procedure.seeds()),
        host=_host(),
        time=time.time(),
        segment=segment,
        first_seq_num=first_seq,
    ).with_bluesky()


@dataclass
class _Outcome:
    status: StopStatus = "success"
    reason: str = ""


def _execute(
    procedure: Procedure,
    *,
    run_dir: Path,
    lock: Any,
    keep_through_seq: int | None,
    start: StartDoc,
    controller: RunController,
    subscribers: Sequence[Subscriber],
    handle_signals: bool,
    echo: bool,
    drain_timeout_s: float,
    checkpointing: bool,
    resume_state: dict[str, Any] | None,
    prior_wall_s: float,
    prior_device_s: float,
    t0: float,
) -> RunResult:
    """Everything after the run folder exists: the lifecycle and the shielded shutdown. The
    record is written once the procedure has declared its data (after ``startup()``)."""
    phase = _Phase()
    guard = _SignalGuard(phase, controller, echo)
    main = _in_main_thread()
    if handle_signals and main:
        guard.install()
    try:
        stream = DocumentStream()
        for subscriber in subscribers:
            stream.subscribe(subscriber)
        record = _Record(run_dir, lock, start, stream, keep_through_seq)
        context = _Context(
            procedure,
            record,
            stream,
            controller,
            start.run_uid,
            start.segment,
            start.first_seq_num,
            prior_wall_s,
            prior_device_s,
            t0,
            checkpointing,
        )
        procedure._attach(context)
    except BaseException:
        # Not even the lifecycle could be set up: still safe, recorded (with no data, "crashed"
        # as it has no stop), closed and signals handed back.
        with contextlib.suppress(Exception):
            RecordWriter.create(lock, start, ()).close()
        lock.release()
        _safe_state_only(procedure)
        if handle_signals and main:
            guard.restore()
        controller._end_if_running()
        raise
    outcome = _Outcome()
    reraise: BaseException | None = None
    try:
        try:
            stream.publish(start)
            procedure.startup()
            # The snapshot comes before the restore: reading every setting takes instrument
            # time, and a resumed run must continue from exactly where the checkpoint was.
            record.extras["snapshot_after_startup"] = _snapshot(procedure.instruments)
            # A procedure that opens its station in startup() knows the station (limits,
            # wiring, file text) and the bench's seeds only now: complete the start document.
            takeover = getattr(getattr(procedure, "rig", None), "takeover", None)
            for line in takeover.warnings() if takeover is not None else []:
                context.log(f"takeover: {line}", "warning")
            for name, read in (
                ("station", procedure.station_info),
                ("seeds", procedure.seeds),
                ("takeover", lambda: takeover.as_document() if takeover is not None else {}),
            ):
                try:
                    value = to_jsonable(read())
                    if value and name in ("station", "seeds"):
                        record.start = dataclasses.replace(record.start, **{name: value})
                    elif value:  # beside the start document (start/<name> in the record)
                        record.extras[name] = value
                except Exception as exc:
                    context.log(f"could not store the {name} after startup: {exc}", "warning")
            # Declared before the first event: the record is built with every dataset now.
            streams = procedure.describe_data()
            if streams is not None:
                record.declare(streams)
            if resume_state is not None:
                procedure.resumed = True
                procedure.restore_state(resume_state)
            if not controller.stop_requested:
                procedure.execute()
        finally:
            # First statement on every way out: from here on a signal never raises.
            phase.value = "shutdown"
        if controller.stop_requested:
            outcome = _Outcome("aborted", controller.stop_reason or "stop requested")
    except KeyboardInterrupt:
        outcome = _Outcome("aborted", controller.stop_reason or "interrupted (KeyboardInterrupt)")
        if controller.stop_reason:
            outcome.reason += "; aborted at once by a second signal"
    except RunAborted as exc:
        outcome = _Outcome("aborted", str(exc))
    except Exception as exc:
        outcome = _Outcome("failed", f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            context.log("".join(traceback.format_exception(exc)), "error")
    except BaseException as exc:  # SystemExit and the like: make safe, record, then re-raise
        outcome = _Outcome("failed", f"{type(exc).__name__}: {exc}")
        reraise = exc
    phase.value = "shutdown"
    installed_late = False
    if main and not (handle_signals and guard._previous):
        # The caller keeps its own handlers during the run, but the safe state is shielded.
        with contextlib.suppress(ValueError):
            guard.install()
            installed_late = True
    try:
        result = _shutdown(procedure, context, record, stream, outcome, echo, drain_timeout_s)
        controller._end(result)
    finally:
        if handle_signals or installed_late:
            guard.restore()
        procedure._attach(None)
        controller._end_if_running()
    if reraise is not None:
        raise reraise
    return result


def _shutdown(
    procedure: Procedure,
    context: _Context,
    record: _Record,
    stream: DocumentStream,
    outcome: _Outcome,
    echo: bool,
    drain_timeout_s: float,
) -> RunResult:
    """Shielded: every step is wrapped so the next one runs whatever the previous did."""
    try:
        procedure.shutdown()
    except Exception as exc:
        message = f"procedure shutdown() failed: {type(exc).__name__}: {exc}"
        context.log(message, "error")
        if outcome.status == "success":
            outcome.status = "failed"
        outcome.reason = "; ".join(filter(None, [outcome.reason, message]))
    safe: dict[str, str] = {}
    failures: list[str] = []
    for label, instrument in dict(procedure.instruments).items():
        safe[label] = _make_safe(procedure, label, instrument, context.log)
        if not safe[label].startswith("ok"):
            failures.append(f"{label} ({safe[label]})")
            context.log(f"safe_state() of {label!r} failed: {safe[label]}", "error")
    for label, instrument in dict(procedure.instruments).items():
        try:
            for error in drain_errors(instrument):
                context.log(f"instrument {label!r}: {error}", "warning")
        except Exception as exc:
            context.log(f"could not read the error queue of {label!r}: {exc}", "warning")
    if failures:
        if outcome.status == "success":
            outcome.status = "failed"
        outcome.reason = "; ".join(
            filter(None, [outcome.reason, "safe_state failed for " + ", ".join(failures)])
        )
    summary: dict[str, Any] = {"last_scalars": dict(context.last_scalars)}
    try:
        summary.update(to_jsonable(procedure.summary()))
    except Exception as exc:
        summary["summary_error"] = f"{type(exc).__name__}: {exc}"
    stop = StopDoc(
        run_uid=context.run_uid,
        time=time.time(),
        status=outcome.status,
        reason=outcome.reason,
        n_events=record.n_events,
        device_time_s=context.device_time_s(),
        wall_time_s=context.wall_time_s(),
        summary=to_jsonable(summary),
        safe_state=safe,
    )
    _release(procedure, context.log)
    try:
        writer = record.ensure()
        counts = {name: record.segment_events.get(name, 0) for name in record.descriptors}
        stop = stop.with_bluesky(record.start, counts)
        if writer is not None:
            writer.write_stop(stop)
    except Exception as exc:
        _logger.exception("could not write the stop document")
        print(f"labrig: could not write the stop document: {exc}", file=sys.stderr, flush=True)
    finally:
        record.close()
    stream.publish(stop)
    stream.close(drain_timeout_s)
    if echo and stop.status != "success":
        print(
            f"labrig: run {record.run_dir.name} {stop.status}: {stop.reason}",
            file=sys.stderr,
            flush=True,
        )
    return RunResult(
        run_dir=record.run_dir,
        status=stop.status,
        reason=stop.reason,
        device_time_s=stop.device_time_s,
        wall_time_s=stop.wall_time_s,
        summary=stop.summary,
        n_events=stop.n_events,
        run_uid=stop.run_uid,
        safe_state=safe,
    )


def _safe_state_only(procedure: Procedure) -> dict[str, str]:
    """Used when the record cannot even be created: still make every instrument safe."""
    safe: dict[str, str] = {}

    def log(message: str, level: LogLevel) -> None:
        _logger.warning(message)

    for label, instrument in dict(procedure.instruments).items():
        safe[label] = _make_safe(procedure, label, instrument, log)
    _release(procedure, log)
    return safe


def _make_safe(
    procedure: Procedure, label: str, instrument: Any, log: Callable[[str, LogLevel], None]
) -> str:
    """Bring one instrument to its safe state: "ok", "ok after reconnecting" (the connection
    had dropped and the procedure reopened it), or the error.

    Errors already in the instrument's queue are read (and logged) first: they belong to
    whatever ran before, and must not make the safe state look failed (nor stop it)."""
    _drain_before_safe_state(label, instrument, log)
    try:
        instrument.safe_state()
        return "ok"
    except RETRYABLE_ERRORS as exc:
        first = f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    # A dropped connection must not leave an output live: reopen it and try once more.
    try:
        if not procedure.reconnect_instrument(label):
            return first
        procedure.instruments[label].safe_state()
    except Exception as exc:
        return f"{first}; after reconnecting: {type(exc).__name__}: {exc}"
    log(f"safe_state() of {label!r} needed a reconnect ({first})", "warning")
    return "ok after reconnecting"


def _drain_before_safe_state(
    label: str, instrument: Any, log: Callable[[str, LogLevel], None]
) -> None:
    read = getattr(instrument, "read_error_entries", None)
    if not callable(read):
        return
    try:
        listed = "; ".join(f"{code}, {message!r}" for code, message in read())
    except Exception:  # e.g. a dead connection: the safe state itself will reconnect
        return
    if listed:
        log(f"{label}: error queue held, before its safe state: {listed}", "warning")


def _release(procedure: Procedure, log: Callable[[str, LogLevel], None]) -> None:
    """Let the procedure close its connections; only after every instrument is safe."""
    try:
        procedure.release()
    except Exception as exc:
        log(f"procedure release() failed: {type(exc).__name__}: {exc}", "warning")


def run_procedure(
    procedure: Procedure,
    runs_dir: str | os.PathLike[str] | None = None,
    station_text: str | None = None,
    subscribers: Sequence[Subscriber] = (),
    handle_signals: bool = True,
    *,
    controller: RunController | None = None,
    echo: bool = True,
    drain_timeout_s: float = 1.0,
    checkpointing: bool = True,
) -> RunResult:
    """Run ``procedure`` to the end and return how it ended (see the module docstring).

    ``runs_dir``: where the run folder goes (default: ``$LABRIG_RUNS_DIR`` or the user data
    dir). ``station_text``: the resolved station file, stored with the run. ``subscribers``:
    callables receiving every document on their own threads. ``handle_signals``: install the
    Ctrl-C/SIGTERM handling (main thread only). ``echo``: print signal notices and a non-success
    outcome to stderr. ``drain_timeout_s``: how long to wait at the end for slow subscribers.
    ``checkpointing``: save ``checkpoint_state()`` after every event.

    Raises :class:`RecordError` only if the run folder cannot be created (the instruments are
    made safe first); everything that goes wrong later ends up in the result and stop document.
    """
    t0 = time.monotonic()
    controller = controller or RunController()
    controller._begin(procedure)
    run_uid = uuid.uuid4().hex
    try:
        start = _start_doc(procedure, run_uid, station_text or "", segment=0, first_seq=0)
        run_dir = new_run_dir(runs_dir, procedure.name, run_uid, start.time)
        lock = lock_run_dir(run_dir)
    except BaseException:
        _safe_state_only(procedure)
        controller._end_if_running()
        raise
    return _execute(
        procedure,
        run_dir=run_dir,
        lock=lock,
        keep_through_seq=None,
        start=start,
        controller=controller,
        subscribers=subscribers,
        handle_signals=handle_signals,
        echo=echo,
        drain_timeout_s=drain_timeout_s,
        checkpointing=checkpointing,
        resume_state=None,
        prior_wall_s=0.0,
        prior_device_s=0.0,
        t0=t0,
    )


def resume_run(
    run_dir: Path,
    *,
    overrides: Mapping[str, object] | None = None,
    subscribers: Sequence[Subscriber] = (),
    handle_signals: bool = True,
    prepare: Callable[[Procedure], None] | None = None,
    controller: RunController | None = None,
    echo: bool = True,
    drain_timeout_s: float = 1.0,
) -> RunResult:
    """Continue a crashed, aborted or failed run from its checkpoint, in the same record.

    The procedure class is found by name in the registry (``register_procedure``), or imported
    from the path stored in the record. It is rebuilt from the recorded parameters, updated with
    ``overrides`` (e.g. more iterations), passed to ``prepare`` (give it its instruments), then
    run as a new segment: ``startup()``, ``restore_state(checkpoint)``, ``execute()``. Events
    continue from the checkpoint's seq_num + 1; later events in the record are dropped first.
    A run killed before its first checkpoint starts again from the beginning (no
    ``restore_state``; every event it wrote is dropped), same parameters and seeds.

    Raises :class:`RecordError` if the record is live or its checkpoints unreadable and
    :class:`ProcedureError` if the run already succeeded or its class cannot be found.
    """
    t0 = time.monotonic()
    record = RunRecord.open(run_dir, load_arrays=False)
    if record.status == "running":
        raise RecordError(f"{run_dir}: the run is still being written; cannot resume it")
    if record.status == "success":
        raise ProcedureError(f"{run_dir}: the run finished successfully; nothing to resume")
    # None: killed before its first checkpoint; started again from the beginning (event 0),
    # in the same record, with the same parameters and seeds.
    checkpoint = resume_point(Path(run_dir))
    cls = get_procedure_class(record.start.procedure, record.start.procedure_class)
    # The latest segment's parameters: an override given to an earlier resume still holds.
    latest = record.segments[-1]
    # A parameter an older labrig recorded that the class no longer declares (the station,
    # which the shell now hands over) is not the run's to set any more.
    declared = cls.parameters()
    values: dict[str, object] = {k: v for k, v in latest.parameters.items() if k in declared}
    values.update(overrides or {})
    try:
        procedure = cls(**values)
    except ParameterError as exc:
        where = "override" if exc.parameter in (overrides or {}) else f"recorded in {run_dir}"
        raise ParameterError(exc.parameter, exc.value, exc.problem, where) from None
    procedure.resumed = checkpoint is not None
    if prepare is not None:
        prepare(procedure)
    controller = controller or RunController()
    controller._begin(procedure)
    segment = len(record.segments)
    try:
        start = _start_doc(
            procedure,
            record.start.run_uid,
            latest.station_text,
            segment=segment,
            first_seq=checkpoint.seq_num + 1 if checkpoint is not None else 0,
        )
        keep_through = checkpoint.seq_num if checkpoint is not None else -1
        lock = lock_run_dir(Path(run_dir))
    except BaseException:
        _safe_state_only(procedure)
        controller._end_if_running()
        raise
    if checkpoint is None:
        _logger.info("resume: no checkpoint; starting again from the beginning")
    return _execute(
        procedure,
        run_dir=Path(run_dir),
        lock=lock,
        keep_through_seq=keep_through,
        start=start,
        controller=controller,
        subscribers=subscribers,
        handle_signals=handle_signals,
        echo=echo,
        drain_timeout_s=drain_timeout_s,
        checkpointing=True,
        resume_state=checkpoint.state if checkpoint is not None else None,
        prior_wall_s=checkpoint.wall_time_s if checkpoint is not None else 0.0,
        prior_device_s=checkpoint.device_time_s if checkpoint is not None else 0.0,
        t0=t0,
    )
