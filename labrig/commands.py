"""Sub-commands of ``labrig`` that run procedures or look at runs.

``measure iv|transfer``, ``train hge|dfa``, ``runs [list|show]``, ``report``, ``resume``, ``gui``.
Each procedure command maps its options onto the procedure's declared parameters, runs it through
the runner (records, checkpoints, safe shutdown on every path), prints a short summary and, with
``--json``, one JSON object as the last line of standard output.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

STATUS_EXIT = {"success": 0, "aborted": 1, "failed": 1}


def _print_json(obj: dict[str, Any]) -> None:
    def default(value: object) -> object:
        if hasattr(value, "tolist"):
            return value.tolist()
        return str(value)

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    print(json.dumps(clean(obj), default=default), flush=True)


def _run(procedure: Any, args: argparse.Namespace) -> Any:
    """Run ``procedure`` on ``--station``: the shell checks the station against the procedure
    before any run folder exists, opens the rig, hands it over and closes it afterwards."""
    from labrig.shell import run_on_station

    return run_on_station(procedure, args.station, runs_dir=args.out, echo=not args.json)


def _result_json(result: Any, extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(result.summary)
    out.update(extra)
    out.update(
        run_dir=str(result.run_dir),
        status=result.status,
        reason=result.reason,
        device_time_s=result.device_time_s,
        wall_time_s=result.wall_time_s,
    )
    return out


def _given(args: argparse.Namespace, options: tuple[str, ...], **renamed: str) -> dict[str, Any]:
    """The procedure parameters given on the command line: each option in ``options`` left
    unset (None) takes the procedure's declared default, which is stated there only.
    ``renamed``: option name -> parameter name where they differ."""
    names = {option: renamed.get(option, option) for option in options}
    return {p: getattr(args, o) for o, p in names.items() if getattr(args, o) is not None}


def _add_common(parser: argparse.ArgumentParser, station_default: str) -> None:
    parser.add_argument(
        "--station",
        default=station_default,
        help=f"station NAME or FILE (default: the built-in {station_default}, in process)",
    )
    parser.add_argument("--out", default=None, help="runs directory (default: LABRIG_RUNS_DIR)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")


# ------------------------------------------------------------------------------------- measure
def cmd_measure_iv(args: argparse.Namespace) -> int:
    from labrig.procedures.characterise import IvSweep, write_iv_outputs

    options = ("electrode", "start", "stop", "points", "settle", "others")
    renamed = {"start": "start_v", "stop": "stop_v", "settle": "settle_s", "others": "others_v"}
    result = _run(IvSweep(**_given(args, options, **renamed)), args)
    files = write_iv_outputs(result.run_dir) if result.n_events else {}
    summary = dict(result.summary)
    if not args.json:
        print(f"iv: {result.status} — {result.n_events} points, record {result.run_dir}")
        for key in ("current_min_na", "current_max_na", "reversals"):
            if key in summary:
                print(f"  {key}: {summary[key]}")
        for label, path in files.items():
            print(f"  {label}: {path}")
    else:
        _print_json(_result_json(result, {k: str(v) for k, v in files.items()}))
    return STATUS_EXIT.get(result.status, 1)


def cmd_measure_transfer(args: argparse.Namespace) -> int:
    from labrig.procedures.characterise import TransferCurve, write_transfer_outputs

    result = _run(TransferCurve(**_given(args, ("points",))), args)
    files = write_transfer_outputs(result.run_dir) if result.n_events else {}
    if not args.json:
        print(f"transfer: {result.status} — record {result.run_dir}")
        for key, value in result.summary.items():
            print(f"  {key}: {value}")
        for label, path in files.items():
            print(f"  {label}: {path}")
    else:
        _print_json(_result_json(result, {k: str(v) for k, v in files.items()}))
    return STATUS_EXIT.get(result.status, 1)


# ------------------------------------------------------------------------------------- train
def cmd_train_hge(args: argparse.Namespace) -> int:
    from labrig.procedures.hge import HgeTraining

    options = ("task", "mode", "seed", "max_iterations", "initializations", "learning_rate")
    procedure = HgeTraining(**_given(args, options))
    result = _run(procedure, args)
    summary = result.summary
    if args.json:
        _print_json(_result_json(result, {"task": summary.get("task", procedure.task)}))
    else:
        found = "FOUND" if summary.get("found") else "not found"
        print(
            f"hge {summary.get('task', procedure.task)} ({procedure.mode}): {found}, accuracy "
            f"{summary.get('accuracy', float('nan')):.2f}, {summary.get('iterations', 0)} "
            f"iterations, loss {summary.get('final_loss', float('nan')):.4g}; "
            f"device time {result.device_time_s:.1f} s, wall time {result.wall_time_s:.1f} s"
        )
        if summary.get("outputs_na"):
            outs = ", ".join(f"{x:.1f}" for x in summary["outputs_na"])
            print(f"  case outputs (nA): {outs}")
            ctrl = ", ".join(f"{x:+.3f}" for x in summary.get("controls_v", []))
            print(f"  control voltages (V): {ctrl}")
        print(f"  record: {result.run_dir}  [{result.status}]")
    if result.status != "success":
        return 1
    return 0


def cmd_train_dfa(args: argparse.Namespace) -> int:
    from labrig.procedures.dfa import DfaTraining

    options = (
        "task",
        "method",
        "layers",
        "nodes",
        "g",
        "seed",
        "epochs",
        "learning_rate",
        "ridge_lambda",
        "sequence_mode",
        "readout",
        "train_samples",
    )
    procedure = DfaTraining(**_given(args, options))
    result = _run(procedure, args)
    summary = result.summary
    if args.json:
        _print_json(_result_json(result, {"task": procedure.task, "method": procedure.method}))
    else:
        score = (
            f"test NMSE {summary['test_nmse']:.4f}"
            if "test_nmse" in summary
            else f"test accuracy {summary.get('test_accuracy', float('nan')) * 100:.2f} %"
        )
        print(
            f"dfa {procedure.task} ({procedure.method}, {procedure.layers} layer(s) x "
            f"{procedure.nodes} nodes): "
            f"{score} after {summary.get('epochs', 0)} epochs; device time "
            f"{result.device_time_s:.2f} s, wall time {result.wall_time_s:.1f} s"
        )
        print(f"  record: {result.run_dir}  [{result.status}]")
    return 0 if result.status == "success" else 1


# ------------------------------------------------------------------------------------- runs
def _runs_dir(args: argparse.Namespace) -> Path:
    from labrig.runs.record import default_runs_dir

    return Path(args.out) if args.out else default_runs_dir()


def cmd_runs(args: argparse.Namespace) -> int:
    from labrig.runs.catalog import list_runs
    from labrig.runs.record import RunRecord

    if args.runs_command == "show":
        record = RunRecord.open(Path(args.run))
        start = record.start
        stop = record.stop
        info = {
            "run_dir": str(Path(args.run)),
            "procedure": start.procedure if start else None,
            "status": record.status,
            "parameters": start.parameters if start else {},
            "n_events": len(record.events),
            "summary": stop.summary if stop else {},
            "reason": stop.reason if stop else "",
        }
        if args.json:
            _print_json(info)
        else:
            for key, value in info.items():
                print(f"{key}: {value}")
        return 0
    runs = list_runs(_runs_dir(args))
    if args.json:
        _print_json({"runs": [_summary_dict(r) for r in runs], "runs_dir": str(_runs_dir(args))})
        return 0
    if not runs:
        print(f"no runs in {_runs_dir(args)}")
    for r in runs:
        d = _summary_dict(r)
        print(
            f"{d['start_time']:<20} {d['procedure']:<10} {d['status']:<8} "
            f"{d['n_events']:>5} ev  {d['path']}"
        )
    return 0


def _summary_dict(summary: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    d = asdict(summary) if is_dataclass(summary) and not isinstance(summary, type) else {}
    d = {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
    d.setdefault("path", d.get("run_dir", ""))
    d.setdefault("start_time", "")
    d.setdefault("procedure", "")
    d.setdefault("status", "")
    d.setdefault("n_events", 0)
    return d


def cmd_report(args: argparse.Namespace) -> int:
    from labrig.runs.report import EmptyRunError, make_report

    try:
        files = make_report(Path(args.run_dir))
    except EmptyRunError as exc:
        print(f"labrig report: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json({"run_dir": args.run_dir, "files": [str(f) for f in files], "status": "ok"})
    else:
        for f in files:
            print(f)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    # The record names its procedure class's import path and holds the station it ran on.
    from labrig.shell import resume_on_station

    result = resume_on_station(Path(args.run_dir), station=args.station, echo=not args.json)
    if args.json:
        _print_json(_result_json(result, {}))
    else:
        print(f"resumed {result.run_dir}: {result.status} ({result.n_events} events)")
        for key, value in result.summary.items():
            print(f"  {key}: {value}")
    return STATUS_EXIT.get(result.status, 1)


def cmd_gui(args: argparse.Namespace) -> int:
    try:
        from labrig.gui.app import run
    except ImportError as exc:  # the gui extra is not installed
        print(
            f"labrig gui needs the 'gui' extra (pip install 'labrig[gui]'): {exc}", file=sys.stderr
        )
        return 2
    return int(run(args))


# ------------------------------------------------------------------------------------- parser
def register(sub: Any) -> None:
    """Add every sub-command of this module to the ``labrig`` parser's sub-parsers ``sub``."""
    measure = sub.add_parser("measure", help="characterisation procedures").add_subparsers(
        dest="measure_command", required=True
    )
    iv = measure.add_parser("iv", help="DNPU: sweep one electrode, measure the output current")
    _add_common(iv, "sim-dnpu")
    iv.add_argument("--electrode", type=int, help="electrode to sweep (0..6)")
    iv.add_argument("--start", help="start voltage (e.g. -1.2 or '-1200 mV')")
    iv.add_argument("--stop", help="stop voltage")
    iv.add_argument("--points", type=int)
    iv.add_argument("--settle", help="settle time per point (s)")
    iv.add_argument("--others", help="DC level of the other electrodes (V)")
    iv.set_defaults(handler=cmd_measure_iv)

    tr = measure.add_parser("transfer", help="reservoir: modulator transfer curve and impulse")
    _add_common(tr, "sim-reservoir")
    tr.add_argument("--points", type=int, help="drive levels")
    tr.set_defaults(handler=cmd_measure_transfer)

    train = sub.add_parser("train", help="in-the-loop training").add_subparsers(
        dest="train_command", required=True
    )
    hge = train.add_parser("hge", help="homodyne gradient extraction on the DNPU rig")
    _add_common(hge, "sim-dnpu")
    # Unset options take the procedure's declared defaults (labrig/procedures/hge.py).
    hge.add_argument("--task", help="AND OR NAND NOR XOR XNOR, 0110, sphere, ring")
    hge.add_argument("--mode", help="gradient read-out: digital, lockin or sequential")
    hge.add_argument("--seed", type=int)
    hge.add_argument("--max-iterations", type=int, help="per random start")
    hge.add_argument("--initializations", type=int, help="random starts")
    hge.add_argument("--learning-rate", type=float)
    hge.set_defaults(handler=cmd_train_hge)

    dfa = train.add_parser("dfa", help="aug-DFA on the deep optoelectronic reservoir")
    _add_common(dfa, "sim-reservoir")
    # Unset options take the procedure's declared defaults (labrig/procedures/dfa.py).
    dfa.add_argument("--task", help="digits, mnist1d, mnist:PATH, fmnist:PATH, narma10")
    dfa.add_argument("--method", help="aug-dfa, dfa, bp-twin or readout")
    dfa.add_argument("--layers", type=int, help="physical layers")
    dfa.add_argument("--nodes", type=int, help="nodes per layer")
    dfa.add_argument("--g", help="aug-DFA g: cos sin tanh_prime triangle abs one")
    dfa.add_argument("--epochs", type=int)
    dfa.add_argument("--seed", type=int)
    dfa.add_argument("--train-samples", type=int, help="limit the training set")
    dfa.add_argument("--learning-rate", type=float, help="default: the task's")
    dfa.add_argument("--ridge-lambda", type=float, help="default: the task's")
    dfa.add_argument("--sequence-mode", help="auto, static or temporal (one step per loop period)")
    dfa.add_argument("--readout", help="auto, gradient or ridge")
    dfa.set_defaults(handler=cmd_train_dfa)

    runs = sub.add_parser("runs", help="past runs")
    runs.add_argument("--out", default=None, help="runs directory")
    runs.add_argument("--json", action="store_true")
    runs_sub = runs.add_subparsers(dest="runs_command")
    listing = runs_sub.add_parser("list", help="list runs (default)")
    show = runs_sub.add_parser("show", help="one run's parameters and result")
    show.add_argument("run", help="run folder")
    for p in (listing, show):  # accepted before or after the sub-command
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        p.add_argument("--out", default=argparse.SUPPRESS, help="runs directory")
    runs.set_defaults(handler=cmd_runs, runs_command="list")

    report = sub.add_parser(
        "report", help="an HTML page of a run (parameters, station, result, figures)"
    )
    report.add_argument("run_dir")
    report.add_argument("--json", action="store_true")
    report.set_defaults(handler=cmd_report)

    resume = sub.add_parser("resume", help="continue a crashed or aborted run in its record")
    resume.add_argument("run_dir")
    resume.add_argument(
        "--station",
        default=None,
        help="station NAME or FILE to resume on (default: the one recorded in the run)",
    )
    resume.add_argument("--json", action="store_true")
    resume.set_defaults(handler=cmd_resume)

    gui = sub.add_parser("gui", help="the operator dashboard")
    from labrig.gui.app import build_parser as build_gui_parser  # Qt is imported only by run()

    build_gui_parser(gui)
    gui.set_defaults(handler=cmd_gui)
