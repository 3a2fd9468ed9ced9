"""The one way the shell runs a procedure on a station: check, open, hand over, run, close.

The CLI, the GUI, the sweep runner and scripts call :func:`run_on_station` (or
:func:`resume_on_station`). It loads the station and checks that it fits the procedure *before*
any run folder exists, opens the :class:`~labrig.rig.Rig`, binds it to the procedure (which from
then on sees typed roles, wiring, limits and a clock, never a simulator), runs it through the
runner (records, checkpoints, the safe state on every exit path), and closes the rig it opened::

    from labrig.procedures.hge import HgeTraining
    from labrig.shell import run_on_station

    result = run_on_station(HgeTraining(task="XOR"), "sim-dnpu")
    print(result.status, result.summary["found"], result.run_dir)

Pass ``rig=`` to lend a rig the caller already holds open (the dashboard does): it is then left
open, in its safe state, for the caller to close.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from labrig.errors import ProcedureError, StationError
from labrig.procedures.base import Procedure
from labrig.procedures.rig_procedure import RigProcedure
from labrig.procedures.runner import RunController, RunResult, resume_run, run_procedure
from labrig.rig import Rig, open_rig
from labrig.runs.record import RecordError, RunRecord
from labrig.runs.stream import Subscriber
from labrig.station import Station, load_station, parse_station

__all__ = ["attached", "resume_on_station", "run_on_station", "start_on_station", "station_for"]

_logger = logging.getLogger("labrig.shell")


def station_for(procedure: type[Procedure] | Procedure, station: Station | str | Path) -> Station:
    """Load ``station`` (a Station, a built-in name or a file) and check it fits ``procedure``
    (an instance: its :meth:`~labrig.procedures.rig_procedure.RigProcedure.check_station`; a
    class: its rig kind).

    Raises :class:`~labrig.errors.StationError` for a station that cannot be read and
    :class:`~labrig.errors.ProcedureError` for a station of the wrong rig kind; nothing is
    connected and no run folder is made.
    """
    loaded = station if isinstance(station, Station) else load_station(station)
    if isinstance(procedure, RigProcedure):
        procedure.check_station(loaded)
    else:
        kind = getattr(procedure, "rig_kind", None)
        if kind is not None and loaded.rig != kind:
            raise ProcedureError(
                f"procedure {procedure.name!r} needs a {kind} station; {loaded.source} is a "
                f"{loaded.rig} station"
            )
    return loaded


def run_on_station(
    procedure: RigProcedure,
    station: Station | str | Path,
    *,
    runs_dir: str | Path | None = None,
    echo: bool = False,
    subscribers: Sequence[Subscriber] = (),
    handle_signals: bool = True,
    pacing: str | None = None,
    rig: Rig | None = None,
    ramp_into_range: bool | None = None,
    **runner_options: Any,
) -> RunResult:
    """Run ``procedure`` on ``station``: check, open the rig (unless ``rig`` is lent), bind, run,
    close. ``ramp_into_range``: at takeover, ramp a channel found outside its limits into range
    instead of refusing to start (None: as the station says; see :mod:`labrig.takeover`).
    ``runner_options`` go to :func:`~labrig.procedures.runner.run_procedure`."""
    loaded = station_for(procedure, station if rig is None else rig.station)
    with _rig_for(loaded, pacing, rig, ramp_into_range) as opened:
        procedure.bind_rig(opened)
        return run_procedure(
            procedure,
            runs_dir=runs_dir,
            echo=echo,
            subscribers=subscribers,
            handle_signals=handle_signals,
            station_text=loaded.text,
            **runner_options,
        )


def start_on_station(
    controller: RunController,
    procedure: RigProcedure,
    rig: Rig,
    **runner_options: Any,
) -> Any:
    """Start ``procedure`` on the lent, open ``rig`` in ``controller``'s worker thread (for a
    GUI); returns the thread. The rig stays open for its owner."""
    station_for(procedure, rig.station)
    procedure.bind_rig(rig)
    return controller.start(procedure, station_text=rig.station.text, **runner_options)


def resume_on_station(
    run_dir: str | Path,
    *,
    station: Station | str | Path | None = None,
    overrides: Mapping[str, object] | None = None,
    subscribers: Sequence[Subscriber] = (),
    handle_signals: bool = True,
    echo: bool = True,
    pacing: str | None = None,
    controller: RunController | None = None,
    ramp_into_range: bool | None = None,
) -> RunResult:
    """Continue a crashed or aborted run in its own record, on the station it ran on.

    The station is the one recorded in the run (its resolved text), unless ``station`` names
    another (a bench served on new ports, say). It is checked, opened and bound like a new run's.
    """
    path = Path(run_dir)
    record = RunRecord.open(path, load_arrays=False)
    if station is None:
        text = record.start.station_text
        source = str(record.start.station.get("source", path / "run.h5"))
        if not text:
            raise RecordError(
                f"{path}: the record holds no station to resume on; pass one with --station"
            )
        try:
            station = parse_station(text, source=f"{source} (as recorded in {path})")
        except StationError as exc:
            raise StationError(
                exc.source, exc.key, f"{exc.problem} (pass the station to resume on: --station)"
            ) from exc
    from labrig.procedures.base import get_procedure_class

    cls = get_procedure_class(record.start.procedure, record.start.procedure_class)
    loaded = station_for(cls, station)
    with _rig_for(loaded, pacing, None, ramp_into_range) as opened:

        def prepare(procedure: Procedure) -> None:
            if not isinstance(procedure, RigProcedure):
                raise ProcedureError(f"{procedure.name!r} does not run on a station")
            procedure.bind_rig(opened)

        return resume_run(
            path,
            overrides=overrides,
            subscribers=subscribers,
            handle_signals=handle_signals,
            prepare=prepare,
            controller=controller,
            echo=echo,
        )


@contextlib.contextmanager
def _rig_for(
    station: Station, pacing: str | None, lent: Rig | None, ramp_into_range: bool | None = None
) -> Iterator[Rig]:
    """Open ``station``'s rig (or take a lent one) and close what was opened. Close problems go
    to the log: the run's record is complete by then, its safe state already recorded."""
    if lent is not None:
        yield lent
        return
    opened = open_rig(station, pacing=pacing, ramp_into_range=ramp_into_range)
    try:
        yield opened
    finally:
        for problem in opened.close():
            _logger.warning("closing %s: %s", station.name, problem)


@contextlib.contextmanager
def attached(
    procedure: RigProcedure, station: Station | str | Path, pacing: str | None = None
) -> Iterator[RigProcedure]:
    """Open ``station``, bind it to ``procedure`` and close it on exit, without the runner: for
    scripts and tests that drive a procedure's steps (``startup()``, a measurement) by hand.
    The rig's safe state runs when it closes."""
    loaded = station_for(procedure, station)
    with _rig_for(loaded, pacing, None) as rig:
        procedure.bind_rig(rig)
        yield procedure
