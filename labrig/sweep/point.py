"""Run one point of a sweep: an ordinary run with its own record, on whatever worker has it.

:func:`run_point` is what a Dask worker executes (and, for a station with real instruments,
what the one in-process worker executes, one point after another). It builds the procedure from
the point's parameters, runs it on the point's own station file through the runner — or resumes
the point's interrupted run — and returns a :class:`PointOutcome`. While the run goes on it
watches the sweep's stop flag (a Dask ``Event``): once set, the run is asked to stop at its next
step, brings its instruments to their safe state and ends 'aborted', resumable from its
checkpoint.

:func:`run_one` is the single place that runs a procedure on a station.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labrig.procedures.base import Procedure, get_procedure_class
from labrig.procedures.rig_procedure import RigProcedure
from labrig.procedures.runner import RunController, RunResult, run_procedure
from labrig.shell import resume_on_station, run_on_station

__all__ = ["PointOutcome", "PointTask", "run_one", "run_point"]

#: Statuses a point can have in the sweep's table.
POINT_STATUSES = ("pending", "success", "failed", "aborted", "crashed")
STOP_POLL_S = 0.25


@dataclass(frozen=True)
class PointTask:
    """Everything a worker needs to run one point (picklable; paths as text)."""

    point_id: str
    procedure: str
    procedure_class: str  # "module:QualName", imported if the name is not registered
    parameters: dict[str, Any]
    station_file: str
    runs_dir: str
    resume_dir: str | None = None
    stop_event: str | None = None  # name of the sweep's Dask Event; None: never stopped


@dataclass(frozen=True)
class PointOutcome:
    """How a point ended: the run's status (or 'failed' if no run could be made), its folder,
    times and the scalar part of its summary."""

    point_id: str
    status: str
    reason: str = ""
    run_dir: str = ""
    device_time_s: float = float("nan")
    wall_time_s: float = float("nan")
    results: dict[str, Any] = field(default_factory=dict)
    worker: str = ""
    started: float = float("nan")
    finished: float = float("nan")
    started_run: bool = True  # False: the point's run never began (sweep stopped, worker died)


def run_one(
    procedure: Procedure,
    station_file: str,
    runs_dir: str,
    controller: RunController,
) -> RunResult:
    """Run ``procedure`` on the station in ``station_file``: the one place a sweep runs a
    procedure, through the shell like every other run (check, open, bind, run, close). A
    procedure that needs no rig runs on the runner alone, with the station stored."""
    if not isinstance(procedure, RigProcedure):
        return run_procedure(
            procedure,
            runs_dir=runs_dir,
            station_text=Path(station_file).read_text(encoding="utf-8"),
            handle_signals=False,
            controller=controller,
            echo=False,
        )
    return run_on_station(
        procedure,
        station_file,
        runs_dir=runs_dir,
        handle_signals=False,
        controller=controller,
        echo=False,
    )


def resume_one(run_dir: str, controller: RunController) -> RunResult:
    """Continue the point's interrupted run in its own record, on the station it recorded."""
    return resume_on_station(run_dir, handle_signals=False, controller=controller, echo=False)


def flat_results(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar entries of a run's summary (numbers, booleans, text), and each of its last
    scalars as ``last_<name>``; lists and tables stay in the run's record."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if key == "last_scalars" and isinstance(value, Mapping):
            for name, v in value.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[f"last_{name}"] = float(v)
        elif isinstance(value, bool | int | float | str):
            out[key] = value
    return out


def _stop_probe(name: str | None) -> Callable[[], bool]:
    if name is None:
        return lambda: False
    from distributed import Event

    event = Event(name)

    def probe() -> bool:
        try:
            return bool(event.is_set())
        except Exception:  # the scheduler went away: the sweep is over, stop
            return True

    return probe


def _worker_name() -> str:
    with contextlib.suppress(Exception):
        from distributed import get_worker

        return str(get_worker().address)
    return f"{socket.gethostname()}:{os.getpid()}"


def run_point(task: PointTask) -> PointOutcome:
    """Run (or resume) one point and return its outcome; never raises for a failing run."""
    started = time.time()
    worker = _worker_name()
    stop_requested = _stop_probe(task.stop_event)
    if stop_requested():
        return PointOutcome(
            task.point_id,
            "pending",
            "sweep stopped before the point began",
            worker=worker,
            started_run=False,
        )
    controller = RunController()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            if task.resume_dir:
                box["result"] = resume_one(task.resume_dir, controller)
            else:
                cls = get_procedure_class(task.procedure, task.procedure_class)
                procedure = cls(**task.parameters)
                box["result"] = run_one(procedure, task.station_file, task.runs_dir, controller)
        except BaseException as exc:
            box["error"] = exc

    # The run goes on in its own thread so that this (the worker's task thread) can watch
    # the stop flag; the runner makes the instruments safe on every exit path of that thread.
    thread = threading.Thread(target=work, name=f"labrig-sweep-{task.point_id}", daemon=True)
    thread.start()
    asked = False
    while thread.is_alive():
        thread.join(STOP_POLL_S)
        if not asked and thread.is_alive() and stop_requested():
            controller.request_stop("sweep stopped (Ctrl-C): resumable")
            asked = True
    finished = time.time()
    if "error" in box:
        exc = box["error"]
        tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return PointOutcome(
            task.point_id,
            "failed",
            f"{tail} (the run could not be made)",
            run_dir=task.resume_dir or "",
            worker=worker,
            started=started,
            finished=finished,
        )
    result: RunResult = box["result"]
    return PointOutcome(
        task.point_id,
        str(result.status),
        result.reason,
        run_dir=str(result.run_dir),
        device_time_s=float(result.device_time_s),
        wall_time_s=float(result.wall_time_s),
        results=flat_results(result.summary),
        worker=worker,
        started=started,
        finished=finished,
    )
