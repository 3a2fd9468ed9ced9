"""Sub-commands of ``labrig`` that run procedures or look at runs.

``measure iv|transfer``, ``train hge|dfa``, ``sweep`` (in :mod:`labrig.sweep.cli`),
``runs [list|show]``, ``report``, ``resume``, ``gui``.

A procedure command's options are generated from the procedure's declared parameters (label,
unit, range, default: one place for each fact); ``--learning-rate`` is parameter
``learning_rate``. Before a run folder exists the command checks, in this order: the station
(file or name) and its rig kind, every parameter, the procedure's plan (task, wiring) and the
plan's voltage extremes against the station's limits. Any refusal is one line naming the flag,
the value, the rule and where it came from, and exit code 2. ``--dry-run`` prints the plan and
stops there.

Exit codes: 0 success, 1 the run failed or was aborted, 2 bad input (nothing was started),
130 interrupted by Ctrl-C (SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labrig.humanize import duration, key_unit, quantity, value_text

if TYPE_CHECKING:
    from labrig.procedures.base import Parameter, Procedure
    from labrig.procedures.plan import RunPlan
    from labrig.procedures.runner import RunResult
    from labrig.station import Station

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143


class UsageError(ValueError):
    """Bad input on the command line: the message is the whole one-line explanation."""


# ------------------------------------------------------------------------------------ output
def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def print_json(obj: dict[str, Any]) -> None:
    """One JSON object on one line of standard output (NaN and inf as null)."""

    def default(value: object) -> object:
        if hasattr(value, "tolist"):
            return value.tolist()
        return str(value)

    print(json.dumps(_clean(obj), default=default), flush=True)


def _say(args: argparse.Namespace, text: str = "") -> None:
    """A line of human output: on stdout, or on stderr when ``--json`` keeps stdout for JSON."""
    print(text, file=sys.stderr if getattr(args, "json", False) else sys.stdout, flush=True)


# ------------------------------------------------------------------------- declared options
def flag(name: str) -> str:
    """The command-line flag of parameter ``name``: ``learning_rate`` -> ``--learning-rate``."""
    return "--" + name.replace("_", "-")


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def option_help(p: Parameter[Any]) -> str:
    """Help text from a parameter's declaration: description, allowed values, unit, default."""
    from labrig.procedures.base import (
        BoolParameter,
        ChoiceParameter,
        FloatParameter,
        IntegerParameter,
    )

    text = p.label + (f": {p.help}" if p.help else "")
    unit = f" {p.units}" if p.units else ""
    if isinstance(p, ChoiceParameter):
        text += "; one of " + ", ".join(str(c) for c in p.choices)
    elif isinstance(p, FloatParameter | IntegerParameter):
        low = "-inf" if p.minimum is None else _number(p.minimum)
        high = "inf" if p.maximum is None else _number(p.maximum)
        text += f"; [{low}, {high}]{unit}"
    elif isinstance(p, BoolParameter):
        text += "; true or false"
    if p.default is not None:
        default = _number(p.default) if not isinstance(p.default, bool) else str(p.default)
        text += f"; default {default}{unit if not isinstance(p.default, str) else ''}"
    return text.replace("%", "%%")


@dataclass(frozen=True)
class ProcedureCommand:
    """One procedure sub-command: where its class is, the station it defaults to, old flag
    spellings kept as aliases, and how its result is told."""

    group: str
    name: str
    help: str
    procedure_class: str  # "module:Class"
    station_default: str
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    metrics: tuple[tuple[str, str, str, str], ...] = ()  # (scalar, label, unit, "min"/"max")
    outputs: str = ""  # "module:function(run_dir) -> {label: path}" for files beside the record

    def cls(self) -> type[Procedure]:
        module, _, qualname = self.procedure_class.partition(":")
        return getattr(importlib.import_module(module), qualname)  # type: ignore[no-any-return]


PROCEDURE_COMMANDS = (
    ProcedureCommand(
        "measure",
        "iv",
        "DNPU: sweep one electrode, measure the output current",
        "labrig.procedures.characterise:IvSweep",
        "sim-dnpu",
        aliases={
            "start_v": ("--start",),
            "stop_v": ("--stop",),
            "settle_s": ("--settle",),
            "others_v": ("--others",),
        },
        metrics=(("current_na", "current", "nA", ""),),
        outputs="labrig.procedures.characterise:write_iv_outputs",
    ),
    ProcedureCommand(
        "measure",
        "transfer",
        "reservoir: transfer curves, sin^2 fit, impulse response; the calibration (--save)",
        "labrig.procedures.characterise:TransferCurve",
        "sim-reservoir",
        aliases={"save_calibration": ("--save",)},
        outputs="labrig.procedures.characterise:write_transfer_outputs",
    ),
    ProcedureCommand(
        "train",
        "hge",
        "homodyne gradient extraction on the DNPU rig",
        "labrig.procedures.hge:HgeTraining",
        "sim-dnpu",
        metrics=(("loss", "loss", "", "min"), ("accuracy", "accuracy", "%", "max")),
    ),
    ProcedureCommand(
        "train",
        "dfa",
        "aug-DFA on the deep optoelectronic reservoir",
        "labrig.procedures.dfa:DfaTraining",
        "sim-reservoir",
        metrics=(
            ("loss", "loss", "", "min"),
            ("train_accuracy", "train accuracy", "%", "max"),
            ("test_accuracy", "test accuracy", "%", "max"),
            ("test_nmse", "test NMSE", "", "min"),
        ),
    ),
)


def _add_procedure_command(sub: Any, spec: ProcedureCommand) -> None:
    cls = spec.cls()
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    parser = sub.add_parser(spec.name, help=spec.help, description=doc or spec.help)
    parser.add_argument(
        "--station",
        default=spec.station_default,
        metavar="NAME|FILE",
        help=f"station file, or a built-in name; default {spec.station_default} (in process)",
    )
    declared = parser.add_argument_group(f"{cls.name} parameters (declared by the procedure)")
    for name, p in cls.parameters().items():
        if name == "station":
            continue
        declared.add_argument(
            flag(name),
            *spec.aliases.get(name, ()),
            dest=f"param_{name}",
            metavar=(p.units or "VALUE") if p.kind in ("float", "int") else "VALUE",
            help=option_help(p),
        )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (channels, voltage extremes, device time), check it against the "
        "station's limits and stop: nothing is opened or moved",
    )
    parser.add_argument(
        "--ramp-into-range",
        action="store_true",
        help="at connect, ramp an output found outside the station's limits into range (at "
        "its slew limit) instead of refusing to start",
    )
    _add_output_options(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    parser.set_defaults(
        handler=lambda args: cmd_procedure(spec, args), spec=spec, json=False, out=None
    )


def _add_output_options(parser: argparse.ArgumentParser, runs: bool = True) -> None:
    if runs:
        parser.add_argument(
            "--out",
            metavar="DIR",
            default=argparse.SUPPRESS,
            help="runs directory (default: $LABRIG_RUNS_DIR, else the user data folder)",
        )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON object on standard output (messages go to standard error)",
    )


# ------------------------------------------------------------------------- validate, plan
def _parameter_error(exc: Exception, spec_name: str, raw: dict[str, str]) -> UsageError:
    """A :class:`ParameterError` told with the flag: ``--learning-rate 0 is outside ...``."""
    name = getattr(exc, "parameter", "")
    value = raw.get(name, getattr(exc, "value", ""))
    problem = getattr(exc, "problem", str(exc))
    source = getattr(exc, "source", "") or f"as declared by procedure {spec_name}"
    shown = value if isinstance(value, str) and value and " " not in value else repr(value)
    return UsageError(f"{flag(name)} {shown} {problem} ({source})")


def _station_error(exc: Exception, station_arg: str) -> UsageError:
    problem = getattr(exc, "problem", str(exc))
    source = getattr(exc, "source", "")
    key = getattr(exc, "key", "")
    where = f"{source} [{key}]" if key else source
    if where == station_arg:
        return UsageError(f"--station {station_arg}: {problem}")
    return UsageError(f"--station {station_arg}: {problem} ({where})")


def _sentinel_zero(p: Parameter[Any]) -> bool:
    """A float parameter whose 0 means "the default" (declared help starting with "0:")."""
    return p.kind == "float" and p.help.strip().startswith("0:")


def prepare(spec: ProcedureCommand, args: argparse.Namespace) -> tuple[Procedure, Station, RunPlan]:
    """Everything before a run folder exists: station, rig kind, parameters, plan, limits.

    Raises :class:`UsageError` (one line, exit 2) for any refusal.
    """
    from labrig.errors import ProcedureError, StationError
    from labrig.preflight import PlanError, check_plan, check_station_for
    from labrig.procedures.base import ParameterError

    cls = spec.cls()
    try:
        station = check_station_for(args.station, cls)
    except StationError as exc:
        raise _station_error(exc, args.station) from exc
    declared = cls.parameters()
    raw: dict[str, str] = {
        name: getattr(args, f"param_{name}")
        for name in declared
        if getattr(args, f"param_{name}", None) is not None
    }
    for name, text in raw.items():
        p = declared[name]
        if _sentinel_zero(p):
            try:
                zero = float(p.validate(text)) == 0.0
            except ParameterError:
                zero = False
            if zero:
                raise UsageError(
                    f"{flag(name)} {text} is not allowed: give a value > 0, or leave "
                    f"{flag(name)} out for {p.help.strip()[2:].strip()} "
                    f"(as declared by procedure {cls.name})"
                )
    values: dict[str, object] = dict(raw)
    if "station" in declared:  # procedures that still open their station themselves
        values["station"] = args.station
    try:
        procedure = cls(**values)
        plan_of = getattr(procedure, "plan", None)
        if plan_of is None:
            raise UsageError(f"procedure {cls.name} declares no plan; it cannot be checked")
        plan: RunPlan = plan_of(station)
    except ParameterError as exc:
        raise _parameter_error(exc, cls.name, raw) from exc
    check = getattr(procedure, "check_station", None)
    if check is not None:  # what else the procedure refuses of this station
        try:
            check(station)
        except ProcedureError as exc:
            raise _station_error(StationError(station.source, "", str(exc)), args.station) from exc
    crossings = check_plan(plan, station)
    if crossings and not getattr(args, "dry_run", False):
        raise UsageError(str(PlanError(plan, crossings)) + "; see --dry-run")
    return procedure, station, plan


def _print_plan(plan: RunPlan, station: Station, args: argparse.Namespace) -> int:
    from labrig.preflight import channel_limits, check_plan

    crossings = check_plan(plan, station)
    crossing_of = {(c.channel.instrument, c.channel.channel): c for c in crossings}
    if args.json:
        print_json(
            {
                **plan.as_dict(),
                "station": station.source,
                "limits": [
                    dict(
                        zip(
                            ("min_v", "max_v", "source"),
                            channel_limits(station, c.instrument, c.channel),
                            strict=True,
                        )
                    )
                    for c in plan.channels
                ],
                "crossings": [c.as_dict() for c in crossings],
                "status": "refused" if crossings else "ok",
            }
        )
    else:
        print(f"plan of {plan.procedure} on {station.source} (nothing is opened or moved):")
        for line in plan.details:
            print(f"  {line}")
        print(
            f"  at most {plan.steps} {plan.step_name}s; device time for playback and settling "
            f"at most {duration(plan.device_time_s)} (instrument transfers come on top)"
        )
        print("  channels driven, with their extremes and the station's limits:")
        for c in plan.channels:
            low, high, _source = channel_limits(station, c.instrument, c.channel)
            mark = "CROSSES" if (c.instrument, c.channel) in crossing_of else "ok"
            print(
                f"    {c.instrument}:{c.channel:<3d} {c.role:24s} "
                f"[{c.min_v:+.4g}, {c.max_v:+.4g}] V  limits [{low:+.4g}, {high:+.4g}] V  {mark}"
            )
            if c.how:
                print(f"{'':35s}{c.how}")
        if crossings:
            print(f"refused: {len(crossings)} channel(s) would cross the station's limits:")
            for crossing in crossings:
                print(f"  {crossing}")
        else:
            print("ok: every extreme is within the station's limits")
    return EXIT_USAGE if crossings else EXIT_OK


# ----------------------------------------------------------------------------------- run
def _run(
    procedure: Procedure,
    station: Station,
    args: argparse.Namespace,
    subscribers: Sequence[Callable[[Any], None]],
) -> RunResult:
    """Run on the station through the shell: it opens the rig, hands it over, runs the
    procedure (records, checkpoints, the safe state on every exit path) and closes the rig."""
    from labrig.procedures.rig_procedure import RigProcedure
    from labrig.shell import run_on_station

    if not isinstance(procedure, RigProcedure):
        raise UsageError(f"procedure {procedure.name!r} does not run on a station")
    return run_on_station(
        procedure,
        station,
        runs_dir=getattr(args, "out", None),
        echo=True,
        subscribers=subscribers,
        ramp_into_range=True if getattr(args, "ramp_into_range", False) else None,
    )


def _reporter(args: argparse.Namespace, plan: RunPlan | None) -> Any:
    if getattr(args, "quiet", False):
        return None
    from labrig.progress import ProgressReporter

    return ProgressReporter(plan)


def cmd_procedure(spec: ProcedureCommand, args: argparse.Namespace) -> int:
    procedure, station, plan = prepare(spec, args)
    if args.dry_run:
        return _print_plan(plan, station, args)
    reporter = _reporter(args, plan)
    try:
        result = _run(procedure, station, args, [reporter] if reporter else [])
    finally:
        if reporter is not None:
            reporter.close()
    return tell_result(spec, result, args, plan.step_name)


def _outputs(spec: ProcedureCommand, result: RunResult) -> dict[str, str]:
    if not spec.outputs or not result.n_events:
        return {}
    module, _, name = spec.outputs.partition(":")
    write = getattr(importlib.import_module(module), name)
    return {label: str(path) for label, path in write(result.run_dir).items()}


def last_and_best(
    run_dir: Path, metrics: Sequence[tuple[str, str, str, str]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """From the recorded events: each metric's last value and, where it has a direction, its
    best value with the step it was reached at (1-based). Empty if the record has no events."""
    from labrig.runs.record import RunRecord

    events = RunRecord.open(run_dir, load_arrays=False).events
    last: dict[str, Any] = {}
    best: dict[str, Any] = {}
    n = len(events)
    if not n:
        return last, best
    last["step"] = n
    for name, _label, _unit, better in metrics:
        values = events.scalars.get(name)
        if values is None:
            continue
        finite = [(i, float(v)) for i, v in enumerate(values) if math.isfinite(v)]
        if not finite:
            continue
        last[name] = float(values[-1]) if math.isfinite(values[-1]) else None
        if better:
            pick = min if better == "min" else max
            i, v = pick(finite, key=lambda iv: iv[1])
            best[name] = {"value": v, "step": i + 1}
    return last, best


def exit_code(result: RunResult) -> int:
    """0 success; 130 stopped by Ctrl-C; 143 by SIGTERM; 1 any other failure or abort."""
    if result.status == "success":
        return EXIT_OK
    reason = result.reason
    if reason.startswith("SIGINT") or "KeyboardInterrupt" in reason:
        return EXIT_SIGINT
    if reason.startswith("SIGTERM"):
        return EXIT_SIGTERM
    return EXIT_FAILED


def _resumable(run_dir: Path) -> bool:
    from labrig.runs.catalog import summarize_run

    return summarize_run(run_dir).resumable


def tell_result(
    spec: ProcedureCommand | None, result: RunResult, args: argparse.Namespace, step_name: str
) -> int:
    """Print what a run did: status, last and best (each labelled, from the recorded events),
    the procedure's result, the files written, and what to do next."""
    metrics = spec.metrics if spec is not None else ()
    files = _outputs(spec, result) if spec is not None else {}
    last, best = last_and_best(result.run_dir, metrics)
    summary = dict(result.summary)
    summary.pop("last_scalars", None)
    next_step = ""
    if result.status != "success" and _resumable(result.run_dir):
        next_step = f"labrig resume {result.run_dir}"
    if args.json:
        print_json(
            {
                **summary,
                **files,  # each written file also under its own label ("csv", "png")
                "files": files,
                "last": last,
                "best": best,
                "run": result.run_dir.name,
                "run_dir": str(result.run_dir),
                "status": result.status,
                "reason": result.reason,
                "device_time_s": result.device_time_s,
                "wall_time_s": result.wall_time_s,
                "n_events": result.n_events,
                "next": next_step,
            }
        )
        return exit_code(result)
    name = spec.name if spec is not None else summary.get("procedure", "run")
    steps = last.get("step", 0)
    print(
        f"{name}: {result.status} after {steps} {step_name}{'s' if steps != 1 else ''}; "
        f"device time {duration(result.device_time_s)}, wall time {duration(result.wall_time_s)}"
    )
    if result.status != "success" and result.reason:
        print(f"  reason: {result.reason}")
    labels = {m[0]: (m[1], m[2]) for m in metrics}
    if len(last) > 1:
        shown = [
            f"{labels[k][0]} {quantity(v, labels[k][1])}"
            for k, v in last.items()
            if k in labels and v is not None
        ]
        print(f"  last ({step_name} {steps}): " + ", ".join(shown))
    if best:
        shown = [
            f"{labels[k][0]} {quantity(b['value'], labels[k][1])} ({step_name} {b['step']})"
            for k, b in best.items()
        ]
        print("  best: " + ", ".join(shown))
    for key, label in _RESULT_KEYS:
        value = summary.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if key == "found" and "outputs_na" not in summary:
            continue  # the run ended before its final measurement: nothing was judged
        print(f"  {label}: {value_text(value, key_unit(key))}")
    for label, path in files.items():
        print(f"  {label}: {path}")
    print(f"  record: {result.run_dir}")
    if next_step:
        print(f"  to continue: {next_step}")
    return exit_code(result)


#: Summary entries worth a line after a run, in this order, with their labels (the rest is in
#: ``labrig runs show``).
_RESULT_KEYS = (
    ("task", "task"),
    ("mode", "gradient read-out"),
    ("found", "gate found (best controls, measured again at DC)"),
    ("accuracy", "accuracy (best controls, at DC)"),
    ("threshold_na", "threshold"),
    ("outputs_na", "case outputs at DC"),
    ("controls_v", "best control voltages"),
    ("restarts", "restarts"),
    ("method", "method"),
    ("test_accuracy", "test accuracy (last epoch)"),
    ("best_test_accuracy", "best test accuracy"),
    ("test_nmse", "test NMSE (last epoch)"),
    ("best_test_nmse", "best test NMSE"),
    ("clipped_fraction", "drives limited to the AWG window"),
    ("points", "points"),
    ("current_min_na", "lowest current"),
    ("current_max_na", "highest current"),
    ("reversals", "slope reversals"),
    ("pd_min_v", "lowest photodetector level"),
    ("pd_max_v", "highest photodetector level"),
    ("drive_at_max_v", "drive at the highest level"),
    ("loop_delay_s", "loop delay"),
    ("echo_ratio", "echo ratio"),
)


# ------------------------------------------------------------------------------------- runs
def _runs_dir(args: argparse.Namespace) -> Path:
    from labrig.runs.record import default_runs_dir

    return default_runs_dir(getattr(args, "out", None))


def _resolve(args: argparse.Namespace, ref: str) -> Path:
    from labrig.runs.catalog import RunNotFoundError, resolve_run

    try:
        return resolve_run(ref, getattr(args, "out", None))
    except RunNotFoundError as exc:
        raise UsageError(str(exc)) from exc


def cmd_runs_list(args: argparse.Namespace) -> int:
    from labrig.runs.catalog import list_runs

    runs = list_runs(_runs_dir(args))
    if args.status:
        runs = [r for r in runs if r.status == args.status]
    if args.procedure:
        runs = [r for r in runs if r.procedure == args.procedure]
    if args.task:
        runs = [r for r in runs if r.task.lower() == args.task.lower()]
    if args.resumable:
        runs = [r for r in runs if r.resumable]
    if args.last:
        runs = runs[-args.last :]
    rows = [
        {
            "run": r.name,
            "started": r.start_time.isoformat(timespec="seconds") if r.start_time else None,
            "procedure": r.procedure,
            "task": r.task,
            "status": r.status,
            "result": r.result,
            "resumable": r.resumable,
            "n_events": r.n_events,
            "reason": r.reason,
            "error": r.error,
            "run_dir": str(r.run_dir),
        }
        for r in runs
    ]
    if getattr(args, "json", False):
        print_json({"runs": rows, "runs_dir": str(_runs_dir(args))})
        return EXIT_OK
    if not rows:
        print(f"no runs in {_runs_dir(args)}" + (" match" if _filtered(args) else ""))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("started", "run", "procedure", "task", "status", "result", "resumable"):
        table.add_column(column, no_wrap=column in ("started", "run"))
    for r, row in zip(runs, rows, strict=True):
        started = r.start_time.strftime("%Y-%m-%d %H:%M:%S") if r.start_time else "?"
        result = row["result"] or (r.error[:60] if r.error else "")
        table.add_row(
            started,
            r.name,
            r.procedure or "?",
            r.task,
            r.status,
            str(result),
            "yes" if r.resumable else "",
        )
    Console(soft_wrap=False, width=200 if not sys.stdout.isatty() else None).print(table)
    print(f"{len(rows)} run(s) in {_runs_dir(args)}")
    return EXIT_OK


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.status or args.procedure or args.task or args.resumable)


def cmd_runs_show(args: argparse.Namespace) -> int:
    from labrig.runs.catalog import summarize_run
    from labrig.runs.record import RunRecord

    run_dir = _resolve(args, args.run)
    record = RunRecord.open(run_dir, load_arrays=False)
    start, stop = record.start, record.stop
    units = start.parameter_units
    summary = dict(stop.summary) if stop else {}
    last_scalars = summary.pop("last_scalars", {})
    info = {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "procedure": start.procedure,
        "status": record.status,
        "reason": stop.reason if stop else "",
        "started": start.time,
        "segments": len(record.segments),
        "n_events": len(record.events),
        "parameters": start.parameters,
        "parameter_units": units,
        "station": start.station.get("source", "") if isinstance(start.station, dict) else "",
        "device_time_s": stop.device_time_s if stop else None,
        "wall_time_s": stop.wall_time_s if stop else None,
        "summary": summary,
        "last_scalars": last_scalars,
        "resumable": summarize_run(run_dir).resumable,
    }
    if getattr(args, "json", False):
        print_json(info)
        return EXIT_OK
    import datetime as dt

    when = dt.datetime.fromtimestamp(start.time).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"run        {run_dir.name}")
    print(f"folder     {run_dir}")
    print(f"procedure  {start.procedure}  (started {when}, {len(record.segments)} segment(s))")
    print(f"status     {record.status}" + (f": {stop.reason}" if stop and stop.reason else ""))
    if info["station"]:
        print(f"station    {info['station']}")
    print(f"events     {len(record.events)}")
    if stop:
        print(
            f"time       device {duration(stop.device_time_s)}, wall {duration(stop.wall_time_s)}"
        )
    print("parameters")
    for name, value in start.parameters.items():
        print(f"  {name:28s} {value_text(value, units.get(name, ''))}")
    if summary:
        print("result")
        for key, value in summary.items():
            print(f"  {key:28s} {value_text(value, key_unit(key))}")
    if last_scalars:
        print("last event")
        for key, value in last_scalars.items():
            print(f"  {key:28s} {value_text(value, key_unit(key))}")
    if info["resumable"]:
        print(f"to continue: labrig resume {run_dir.name}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from labrig.runs.record import RunRecord
    from labrig.runs.report import make_report
    from labrig.sweep.record import is_sweep_dir

    if is_sweep_dir(args.run):  # a sweep folder: its figures (labrig/sweep/report.py)
        from labrig.sweep.report import make_sweep_report

        run_dir = Path(args.run)
        files = make_sweep_report(run_dir)
    else:
        run_dir = _resolve(args, args.run)
        n_events = len(RunRecord.open(run_dir, load_arrays=False).events)
        if n_events == 0:
            raise UsageError(f"run {run_dir.name} recorded no events: there is nothing to report")
        files = make_report(run_dir)
    if not files:
        print(f"labrig: error: the report of {run_dir.name} wrote no file", file=sys.stderr)
        return EXIT_FAILED
    if getattr(args, "json", False):
        print_json({"run_dir": str(run_dir), "files": [str(f) for f in files], "status": "ok"})
    else:
        for f in files:
            print(f)
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    # The record names its procedure class's import path and holds the station it ran on.
    from labrig.runs.record import RunRecord
    from labrig.shell import resume_on_station

    run_dir = _resolve(args, args.run)
    record = RunRecord.open(run_dir, load_arrays=False)
    spec = next((s for s in PROCEDURE_COMMANDS if s.name == record.start.procedure), None)
    reporter = _reporter(args, None)
    try:
        result = resume_on_station(
            run_dir,
            station=args.station,
            subscribers=[reporter] if reporter else [],
            echo=not args.json,
        )
    finally:
        if reporter is not None:
            reporter.close()
    step = {"hge": "iteration", "dfa": "epoch"}.get(record.start.procedure, "step")
    return tell_result(spec, result, args, step)


def cmd_gui(args: argparse.Namespace) -> int:
    try:
        from labrig.gui.app import run
    except ImportError as exc:  # the gui extra is not installed
        raise UsageError(
            f"labrig gui needs the 'gui' extra (pip install 'labrig[gui]'): {exc}"
        ) from exc
    if getattr(args, "out", None) is not None:
        args.runs_dir = args.out
    return int(run(args))


# ------------------------------------------------------------------------------------- parser
def register(sub: Any, argv: Sequence[str] | None = None) -> None:
    """Add every sub-command of this module to the ``labrig`` parser's sub-parsers ``sub``.

    With ``argv`` (the command line about to be parsed), a procedure command it does not name
    gets a parser without its options, so its module is not imported."""
    groups: dict[str, Any] = {}
    for title, text in (
        ("measure", "characterisation procedures"),
        ("train", "in-the-loop training"),
    ):
        groups[title] = sub.add_parser(title, help=text).add_subparsers(
            dest=f"{title}_command", required=True
        )
    words = set(argv) if argv is not None else None
    for spec in PROCEDURE_COMMANDS:
        if words is None or {spec.group, spec.name} <= words:
            _add_procedure_command(groups[spec.group], spec)
        else:
            groups[spec.group].add_parser(spec.name, help=spec.help)

    runs = sub.add_parser("runs", help="past runs: list them, show one")
    _add_output_options(runs)
    runs_sub = runs.add_subparsers(dest="runs_command")
    listing = runs_sub.add_parser("list", help="a table of the runs, oldest first (the default)")
    show = runs_sub.add_parser("show", help="one run's parameters and result, with units")
    show.add_argument("run", help="run name, a unique prefix of it, or its folder")
    for p in (listing, show):  # accepted before or after the sub-command
        _add_output_options(p)
    for p in (runs, listing):
        p.add_argument(
            "--status",
            choices=("success", "aborted", "failed", "crashed", "running", "unreadable"),
            default=argparse.SUPPRESS,
            help="only runs with this status",
        )
        p.add_argument("--procedure", default=argparse.SUPPRESS, help="only this procedure")
        p.add_argument("--task", default=argparse.SUPPRESS, help="only this task")
        p.add_argument(
            "--resumable", action="store_true", default=argparse.SUPPRESS, help="only resumable"
        )
        p.add_argument(
            "--last", type=int, metavar="N", default=argparse.SUPPRESS, help="the N newest only"
        )
    runs.set_defaults(
        handler=_runs_handler,
        runs_command="list",
        status=None,
        procedure=None,
        task=None,
        resumable=False,
        last=0,
        json=False,
        out=None,
    )
    show.set_defaults(handler=cmd_runs_show)

    from labrig.sweep.cli import register as register_sweep

    register_sweep(sub)

    report = sub.add_parser("report", help="PNG plots of a run or a sweep, in its folder")
    report.add_argument(
        "run", help="run name, a unique prefix of it, its folder, or a sweep folder"
    )
    _add_output_options(report)
    report.set_defaults(handler=cmd_report, json=False, out=None)

    resume = sub.add_parser("resume", help="continue a crashed or aborted run in its record")
    resume.add_argument("run", help="run name, a unique prefix of it, or its folder")
    resume.add_argument(
        "--station",
        default=None,
        metavar="NAME|FILE",
        help="station to resume on (default: the one recorded in the run)",
    )
    _add_output_options(resume)
    resume.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    resume.set_defaults(handler=cmd_resume, json=False, out=None)

    gui = sub.add_parser("gui", help="the operator dashboard")
    from labrig.gui.app import build_parser as build_gui_parser  # Qt is imported only by run()

    build_gui_parser(gui)
    # The same option as every other command; --runs-dir stays as the GUI's older spelling.
    gui.add_argument("--out", metavar="DIR", help="runs directory (same as --runs-dir)")
    gui.set_defaults(handler=cmd_gui)


def _runs_handler(args: argparse.Namespace) -> int:
    if args.runs_command == "show":
        return cmd_runs_show(args)
    return cmd_runs_list(args)
