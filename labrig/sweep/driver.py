"""Run a sweep on Dask distributed: ``run_sweep(spec)``.

Where the points run:

* a station simulated in process (every instrument ``@labrig``): the points fan out over a Dask
  cluster, each on its own in-process bench built from its own station file. By default a
  ``LocalCluster`` of one single-threaded worker *process* per core (the bench is CPU-bound
  Python: threads would share one interpreter lock); ``workers=N`` sets the count;
  ``scheduler="tcp://HOST:PORT"`` uses a running cluster instead (see the README: dask-jobqueue
  on SLURM, or Kubernetes). Workers must see the sweep folder (a shared file system).
* a station with real instruments (or a bench served over TCP, which is one bench too): the
  points run one after another on its one rig, through the same code, on one in-process
  worker thread.

Re-running the same sweep skips finished points and resumes interrupted ones from their
checkpoints; failed points are retried only with ``retry_failed=True``. The first Ctrl-C (or
SIGTERM) stops scheduling and asks every running point to stop at its next step, which brings
its instruments to their safe state and leaves its run resumable; a second one abandons
simulated points at once (their records stay resumable from the last checkpoint). Instruments
of a real rig are always brought to their safe state before the sweep returns.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from distributed.diagnostics.plugin import WorkerPlugin

from labrig._version import __version__
from labrig.shell import station_for
from labrig.station import Station
from labrig.sweep.grid import Point, SweepError, SweepSpec, procedure_class
from labrig.sweep.point import PointOutcome, PointTask, run_point
from labrig.sweep.record import SweepFolder

__all__ = ["SweepResult", "local_cluster", "plan_sweep", "run_sweep", "sweep_folder_for"]

#: Tasks kept queued beyond the workers' threads, so a worker never waits for the driver.
LOOKAHEAD = 2
TABLE_WRITE_INTERVAL_S = 0.5
PROGRESS_INTERVAL_S = 2.0
#: How often a point is sent again after its worker died before the point's run began.
MAX_REQUEUES = 3


@dataclass(frozen=True)
class SweepResult:
    """How a sweep ended."""

    sweep_dir: Path
    table_path: Path
    counts: dict[str, int]  # status -> number of points
    n_points: int
    ran: int  # points run (or resumed) by this call
    interrupted: bool
    wall_time_s: float
    outcomes: dict[str, PointOutcome] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.counts.get("success", 0) == self.n_points


def sweep_folder_for(spec: SweepSpec, runs_dir: str | os.PathLike[str] | None) -> Path:
    from labrig.runs.record import default_runs_dir

    return default_runs_dir(runs_dir) / "sweeps" / (spec.name or spec.default_name())


@dataclass
class _Plan:
    spec: SweepSpec
    station: Station
    points: list[Point]
    folder: SweepFolder
    parallel: bool


def plan_sweep(
    spec: SweepSpec,
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    sweep_dir: str | os.PathLike[str] | None = None,
) -> _Plan:
    """Validate ``spec`` (procedure, station, every point) before anything runs."""
    cls = procedure_class(spec.procedure)
    spec = spec.canonical()
    station = station_for(cls, spec.station_name())  # the shell's check: the rig kind fits
    points = spec.points(station.text)
    if any(p.station_settings for p in points) and station.bench is None:
        raise SweepError(
            f"{station.source} has no [bench] table (it is not simulated by labrig): "
            "device_seed and bench_seed cannot be swept on it"
        )
    folder = Path(sweep_dir) if sweep_dir is not None else sweep_folder_for(spec, runs_dir)
    parallel = bool(station.instruments) and all(s.in_process for s in station.instruments.values())
    return _Plan(spec, station, points, SweepFolder(folder), parallel)


# ---------------------------------------------------------------------------------- signals


class _Interrupts:
    """First SIGINT/SIGTERM: stop scheduling; second: abandon. Main thread only."""

    def __init__(self, say: Callable[[str], None], may_abandon: bool) -> None:
        self.count = 0
        self.say = say
        self.may_abandon = may_abandon
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            then = "again to abandon them" if self.may_abandon else "please wait"
            self.say(
                f"{name}: no new points; running points stop at their next step and reach their "
                f"safe state ({then})"
            )
        elif self.may_abandon:
            self.say(f"{name} again: abandoning running points")
        else:
            self.say(f"{name} again: the rig's instruments are being made safe; please wait")


@contextlib.contextmanager
def _sigint_ignored() -> Any:
    """Worker processes started meanwhile inherit SIGINT ignored: a Ctrl-C at the terminal
    goes to the whole process group, and must reach the driver only (which then stops the
    points in order) rather than kill the workers mid-step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _IgnoreSigint(WorkerPlugin):
    """Worker plugin: a (re)started local worker process ignores SIGINT (see above)."""

    name = "labrig-ignore-sigint"

    def setup(self, worker: Any) -> None:
        with contextlib.suppress(ValueError):  # not the main thread: nothing to do
            signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---------------------------------------------------------------------------------- progress


class _Progress:
    def __init__(self, total: int, stream: IO[str] | None, label: str) -> None:
        self.total = total
        self.stream = stream
        self.label = label
        self.t0 = time.monotonic()
        self.finished_here = 0
        self.last_print = -math.inf

    def say(self, message: str) -> None:
        if self.stream is not None:
            print(f"labrig sweep: {message}", file=self.stream, flush=True)

    def update(self, counts: Mapping[str, int], running: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.stream is None or (not force and now - self.last_print < PROGRESS_INTERVAL_S):
            return
        self.last_print = now
        done = counts.get("success", 0)
        failed = counts.get("failed", 0)
        left = counts.get("pending", 0) + counts.get("aborted", 0) + counts.get("crashed", 0)
        elapsed = now - self.t0
        if self.finished_here and left:
            eta = _duration(elapsed / self.finished_here * left)
        else:
            eta = "-" if left else "0 s"
        self.say(
            f"{self.label}: {done}/{self.total} done, {failed} failed, {running} running, "
            f"{left} to go; {_duration(elapsed)} elapsed, ETA {eta}"
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------------------- cluster


def _connect(
    parallel: bool, workers: int | None, scheduler: Any, source: str
) -> tuple[Any, Any, bool, bool]:
    """(client, cluster or None, whether abandoning points is allowed, whether we own the
    client and must close it)."""
    import dask
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        if not parallel:
            raise SweepError(
                f"{source} drives real instruments (or a served bench): its points run one "
                "after another on its one rig, here, not on a given Dask client"
            )
        return scheduler, None, True, False
    if scheduler is not None:
        if not parallel:
            raise SweepError(
                f"{source} drives real instruments (or a served bench): its points run one "
                f"after another on its one rig, here; --scheduler {scheduler} cannot be used"
            )
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise SweepError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        return client, None, True, True
    if not parallel:
        with dask.config.set(_cluster_settings()):
            cluster = LocalCluster(
                n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
            )
        return Client(cluster), cluster, False, True
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n < 1:
        raise SweepError(f"--workers {n}: needs at least 1 worker")
    cluster = local_cluster(n)
    client = Client(cluster)
    return client, cluster, True, True


def _cluster_settings() -> dict[str, Any]:
    import dask

    # A point whose worker dies is recorded as failed, not silently re-run elsewhere. And the
    # worker processes keep glibc's own malloc trim threshold: the nanny's default of 64 KiB
    # (MALLOC_TRIM_THRESHOLD_) returns memory so eagerly that the bench, which allocates many
    # small numpy arrays, needed 1.6-1.9x the CPU time per HGE point (measured here: 1.9 s vs
    # 1.1 s for a 5-iteration point; 1.0 s in a worker without it).
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.nanny.pre-spawn-environ": environ,
    }


def local_cluster(n_workers: int) -> Any:
    """A ``LocalCluster`` as ``labrig sweep`` starts one: ``n_workers`` single-threaded worker
    processes that ignore Ctrl-C (the driver stops the points in order), record a point whose
    worker died as failed, and allocate memory as fast as a plain process."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set(_cluster_settings()), _sigint_ignored():
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,  # logging.ERROR: a killed worker is reported by the sweep
        )
    # Workers that the nanny restarts later start with SIGINT at its default: the plugin
    # ignores it in every worker, old and new.
    client = Client(cluster)
    try:
        client.register_plugin(_IgnoreSigint(), name=_IgnoreSigint.name)
    finally:
        client.close()
    return cluster


# ---------------------------------------------------------------------------------- the sweep


def run_sweep(
    spec: SweepSpec,
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    sweep_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    scheduler: str | Any | None = None,
    retry_failed: bool = False,
    progress: IO[str] | None = sys.stderr,
    handle_signals: bool = True,
) -> SweepResult:
    """Run every point of ``spec`` that has not finished yet; see the module docstring.

    ``runs_dir``: the sweep folder goes to ``<runs_dir>/sweeps/<name>`` (default: the runs
    directory, ``LABRIG_RUNS_DIR``); ``sweep_dir`` names the folder itself. ``workers``: local
    worker processes (default: one per core). ``scheduler``: address of a running Dask
    scheduler (``"tcp://HOST:PORT"``), or a ``distributed.Client`` to reuse (left open: a script
    that runs several sweeps starts its cluster once). ``progress``: where progress lines go
    (None: silent).

    Raises :class:`SweepError` (or the station's :class:`StationError`) for a sweep that
    cannot run, before any point does.
    """
    t0 = time.monotonic()
    plan = plan_sweep(spec, runs_dir=runs_dir, sweep_dir=sweep_dir)
    spec = plan.spec
    folder = plan.folder
    cls = procedure_class(spec.procedure)
    meta = {
        "sweep_uid": uuid.uuid4().hex,
        "created": time.time(),
        "labrig": __version__,
        "procedure_class": cls.import_path(),
        "station_source": plan.station.source,
        "axes": spec.axes(),
        "n_points": len(plan.points),
    }
    stored = folder.prepare(spec, meta)
    folder.lock()
    try:
        return _drive(
            plan,
            cls.import_path(),
            stored,
            workers,
            scheduler,
            retry_failed,
            progress,
            handle_signals,
            t0,
        )
    finally:
        folder.unlock()


def _row(point: Point, axes: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"index": point.index, "point": point.point_id, "status": "pending"}
    for axis in axes:
        row[axis] = point.coordinates.get(axis)
    return row


def _drive(
    plan: _Plan,
    import_path: str,
    stored: Mapping[str, Any],
    workers: int | None,
    scheduler: Any,
    retry_failed: bool,
    stream: IO[str] | None,
    handle_signals: bool,
    t0: float,
) -> SweepResult:
    folder = plan.folder
    axes = plan.spec.axes()
    label = folder.path.name
    progress = _Progress(len(plan.points), stream, label)
    old = folder.read_rows()
    rows: dict[str, dict[str, Any]] = {}
    for point in plan.points:
        row = _row(point, axes)
        previous = old.get(point.point_id)
        if previous:
            row.update({k: v for k, v in previous.items() if k not in ("index", *axes)})
        rows[point.point_id] = row
    # Runs the table does not know yet (the driver died before it wrote their row).
    unsettled = [p for p, r in rows.items() if r["status"] != "success"]
    known = [r["run_dir"] for r in rows.values() if r.get("run_dir")]
    for point_id, run_dir in folder.find_runs(unsettled, known).items():
        rows[point_id]["run_dir"] = folder.relative(run_dir)
    todo: list[tuple[Point, str | None]] = []
    for point in plan.points:
        row = rows[point.point_id]
        job = _reconcile(folder, row, retry_failed)
        if job is not None:
            todo.append((point, job or None))
    ran = len(todo)
    counts = _counts(rows)
    skipped = counts.get("success", 0)
    failed_kept = counts.get("failed", 0) if not retry_failed else 0
    where = (
        "here, one after another (real instruments)"
        if not plan.parallel
        else (
            f"on {scheduler}"
            if isinstance(scheduler, str)
            else (
                "on the given Dask client" if scheduler is not None else "on a local Dask cluster"
            )
        )
    )
    progress.say(
        f"{label}: {len(plan.points)} points of {plan.spec.procedure} on "
        f"{plan.station.source}; {skipped} done already, {failed_kept} failed before"
        f"{' (kept; --retry-failed runs them again)' if failed_kept else ''}, "
        f"{sum(1 for _, r in todo if r)} to resume, {sum(1 for _, r in todo if not r)} to run "
        f"{where}; folder {folder.path}"
    )
    folder.write_table([rows[p.point_id] for p in plan.points], axes)
    outcomes: dict[str, PointOutcome] = {}
    interrupted = False
    if todo:
        interrupted = _run_points(
            plan,
            import_path,
            todo,
            rows,
            outcomes,
            workers,
            scheduler,
            progress,
            handle_signals,
            stored,
        )
    folder.write_table([rows[p.point_id] for p in plan.points], axes)
    counts = _counts(rows)
    result = SweepResult(
        sweep_dir=folder.path,
        table_path=folder.table_path,
        counts=counts,
        n_points=len(plan.points),
        ran=ran,
        interrupted=interrupted,
        wall_time_s=time.monotonic() - t0,
        outcomes=outcomes,
    )
    _summary(result, rows, progress)
    return result


def _reconcile(folder: SweepFolder, row: dict[str, Any], retry_failed: bool) -> str | None:
    """What to do with a point: None (nothing), "" (a fresh run) or its run folder (resume).
    Brings ``row`` up to date with the point's record."""
    from labrig.runs.checkpoint import checkpoint_paths
    from labrig.runs.record import RunRecord

    if row["status"] == "success" and row.get("run_dir"):
        return None
    run_dir = row.get("run_dir")
    if not run_dir:
        if row["status"] == "failed" and not retry_failed:
            return None
        row["status"] = "pending"
        return ""
    path = folder.absolute(run_dir)
    try:
        record = RunRecord.open(path, load_arrays=False, wait_s=0.5)
    except Exception as exc:
        row.update(status="pending", reason=f"previous record unreadable ({exc}); run again")
        return ""
    if record.status == "success" and record.stop is not None:
        _apply_record(row, record)
        return None
    if record.status == "running":
        raise SweepError(f"{path} is being written by another process: is the sweep running?")
    if record.stop is not None:
        _apply_record(row, record)
    else:
        row.update(status="crashed", reason="interrupted (no stop document)")
    if row["status"] == "failed" and not retry_failed:
        return None
    if checkpoint_paths(path):
        return str(path)
    row.update(status="pending", reason="interrupted before its first checkpoint; run again")
    return ""


def _apply_record(row: dict[str, Any], record: Any) -> None:
    from labrig.sweep.point import flat_results

    stop = record.stop
    row.update(
        status=str(stop.status),
        reason=stop.reason,
        device_time_s=float(stop.device_time_s),
        wall_time_s=float(stop.wall_time_s),
        finished=float(stop.time),
    )
    row.update(flat_results(stop.summary))


def _counts(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows.values():
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def _run_points(
    plan: _Plan,
    import_path: str,
    todo: list[tuple[Point, str | None]],
    rows: dict[str, dict[str, Any]],
    outcomes: dict[str, PointOutcome],
    workers: int | None,
    scheduler: Any,
    progress: _Progress,
    handle_signals: bool,
    stored: Mapping[str, Any],
) -> bool:
    """Submit the points, gather outcomes into ``rows``; True if interrupted."""
    from distributed import Event, wait

    folder = plan.folder
    axes = plan.spec.axes()
    client, cluster, may_abandon, owned = _connect(
        plan.parallel, workers, scheduler, plan.station.source
    )
    interrupts = _Interrupts(progress.say, may_abandon)
    if handle_signals:
        interrupts.install()
    stop_name = f"labrig-sweep-stop-{stored.get('sweep_uid', '')}-{uuid.uuid4().hex[:8]}"
    stop_event = Event(stop_name, client=client)
    queue = list(todo)
    queue.reverse()  # pop() from the end: the sweep's order
    in_flight: dict[Any, tuple[Point, str | None]] = {}
    requeued: dict[str, int] = {}
    last_write = time.monotonic()
    dirty = False
    stopping = False
    abandoned = False
    try:
        while queue or in_flight:
            if interrupts.count >= 1 and not stopping:
                stopping = True
                stop_event.set()
            if interrupts.count >= 2 and may_abandon:
                abandoned = True
                client.cancel(list(in_flight))
                for point, _ in in_flight.values():
                    rows[point.point_id].update(
                        status="crashed", reason="abandoned by a second Ctrl-C"
                    )
                in_flight.clear()
                break
            if not stopping:
                slots = max(1, sum(client.nthreads().values())) + LOOKAHEAD
                while queue and len(in_flight) < slots:
                    point, resume_dir = queue.pop()
                    station_file = folder.station_file(plan.station, point)
                    task = PointTask(
                        point_id=point.point_id,
                        procedure=plan.spec.procedure,
                        procedure_class=import_path,
                        parameters=point.parameters,
                        station_file=str(station_file),
                        runs_dir=str(folder.runs_dir),
                        resume_dir=resume_dir,
                        stop_event=stop_name,
                    )
                    future = client.submit(
                        run_point, task, key=f"labrig-point-{point.point_id}-{uuid.uuid4().hex[:8]}"
                    )
                    in_flight[future] = (point, resume_dir)
            elif not in_flight:
                break
            if not in_flight:
                continue
            with contextlib.suppress(TimeoutError):
                wait(list(in_flight), timeout=0.5, return_when="FIRST_COMPLETED")
            for future in [f for f in in_flight if f.done()]:
                point, resume_dir = in_flight.pop(future)
                outcome = _outcome_of(future, point, folder)
                if outcome.status == "failed" and not outcome.started_run:
                    # The worker died before this point's run began (it was queued there):
                    # not the point's fault; send it again, a few times at most.
                    requeued[point.point_id] = requeued.get(point.point_id, 0) + 1
                    if requeued[point.point_id] <= MAX_REQUEUES and not stopping:
                        queue.append((point, resume_dir))
                        continue
                outcomes[point.point_id] = outcome
                _record_outcome(rows[point.point_id], outcome, folder)
                if outcome.status != "pending":
                    progress.finished_here += 1
                if outcome.status == "failed":
                    progress.say(
                        f"point {point.index} {point.coordinates} failed: {outcome.reason}"
                    )
                dirty = True
            running = min(len(in_flight), max(1, sum(client.nthreads().values())))
            progress.update(_counts(rows), running)
            if dirty and time.monotonic() - last_write >= TABLE_WRITE_INTERVAL_S:
                folder.write_table([rows[p.point_id] for p in plan.points], axes)
                last_write = time.monotonic()
                dirty = False
    finally:
        interrupts.restore()
        if owned:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=20)
    progress.update(_counts(rows), 0, force=True)
    return stopping or abandoned or interrupts.count > 0


def _outcome_of(future: Any, point: Point, folder: SweepFolder) -> PointOutcome:
    if future.status == "finished":
        outcome: PointOutcome = future.result()
        return outcome
    try:
        exc = future.exception()
    except BaseException as err:  # cancelled
        exc = err
    name = type(exc).__name__
    if name == "KilledWorker":
        reason = f"its worker died while running it ({exc})"
    else:
        reason = f"{name}: {exc}"
    found = folder.find_runs([point.point_id])
    run_dir = str(found[point.point_id]) if point.point_id in found else ""
    return PointOutcome(
        point.point_id,
        "failed",
        reason if run_dir else f"{reason}; its run had not begun",
        run_dir=run_dir,
        finished=time.time(),
        started_run=bool(run_dir),
    )


def _record_outcome(row: dict[str, Any], outcome: PointOutcome, folder: SweepFolder) -> None:
    if outcome.status == "pending":
        return  # the sweep stopped before the point began: still to run
    row.update(
        status=outcome.status,
        reason=outcome.reason,
        run_dir=folder.relative(outcome.run_dir) if outcome.run_dir else row.get("run_dir"),
        device_time_s=outcome.device_time_s,
        wall_time_s=outcome.wall_time_s,
        worker=outcome.worker,
        started=outcome.started,
        finished=outcome.finished,
    )
    row.update(outcome.results)


def _summary(
    result: SweepResult, rows: Mapping[str, Mapping[str, Any]], progress: _Progress
) -> None:
    counts = result.counts
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    device = sum(
        float(r["device_time_s"])
        for r in rows.values()
        if isinstance(r.get("device_time_s"), int | float) and math.isfinite(r["device_time_s"])
    )
    progress.say(
        f"{result.sweep_dir.name}: {result.n_points} points: {text}; {result.ran} run by this "
        f"call in {_duration(result.wall_time_s)} (device time of all points "
        f"{_duration(device)}); table {result.table_path}"
    )
    if not result.complete:
        left = result.n_points - counts.get("success", 0)
        how = f"labrig sweep resume {result.sweep_dir}"
        if counts.get("failed"):
            how += " (add --retry-failed to run the failed points again)"
        progress.say(f"{left} point(s) not finished; to continue: {how}")
    progress.say(f"figures: labrig report {result.sweep_dir}")
