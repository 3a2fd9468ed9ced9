"""``labrig sweep``: run a procedure over a grid of points, resume a sweep, show its table.

::

    labrig sweep hge --task AND,OR,XOR --device-seed 0:20 --seed 0:3 --max-iterations 40
    labrig sweep dfa --from study.toml --workers 2
    labrig sweep hge --from gates.toml --scheduler tcp://10.0.0.5:8786
    labrig sweep resume SWEEP_DIR          # what Ctrl-C tells you; the same command also resumes
    labrig sweep show SWEEP_DIR

After the procedure's name, every ``--PARAMETER VALUES`` (any parameter of the procedure, dashes
or underscores) and ``--device-seed`` / ``--bench-seed`` is an axis: a comma-separated list with
ranges ``A:B[:STEP]``, ``lin:A:B:N``, ``log:A:B:N`` (see :mod:`labrig.sweep.grid`). An axis of
one value is a fixed parameter.

Exit codes: 0 every point succeeded; 1 some point failed or is not finished; 2 bad input;
130 interrupted (the sweep is resumable).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SWEEP_PROCEDURES = {
    "hge": "homodyne gradient extraction on the DNPU rig (labrig train hge)",
    "dfa": "aug-DFA on the deep optoelectronic reservoir (labrig train dfa)",
    "iv": "DNPU I-V sweeps (labrig measure iv)",
    "transfer": "reservoir transfer curves (labrig measure transfer)",
}
_AXES_DEST = "sweep_axes"


class _AxesParser(argparse.ArgumentParser):
    """A sub-parser that keeps every ``--NAME VALUE`` it does not know as a sweep axis (the
    procedure's parameters are checked against its declaration when the sweep is planned, so
    that building the ``labrig`` parser needs no procedure module)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = super().parse_known_args(args, namespace)
        assert parsed is not None  # argparse always returns the namespace it filled
        namespace = parsed
        axes: list[tuple[str, str]] = list(getattr(namespace, _AXES_DEST, []) or [])
        k = 0
        while k < len(rest):
            token = rest[k]
            if not token.startswith("--") or token == "--":
                self.error(f"unexpected argument {token!r}: axes are written --NAME VALUES")
            name, eq, value = token[2:].partition("=")
            if not eq:
                if k + 1 >= len(rest):
                    self.error(f"{token} needs a value (a list like A,B,C or a range 0:20)")
                value = rest[k + 1]
                k += 1
            axes.append((name.replace("-", "_"), value))
            k += 1
        setattr(namespace, _AXES_DEST, axes)
        return namespace, []


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local Dask worker processes (default: one per core)",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="tcp://HOST:PORT",
        help="run on this Dask cluster instead of a local one (see the README)",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="run the points that failed before again"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object last")


def register(sub: Any) -> None:
    """Add ``labrig sweep`` to the ``labrig`` parser's sub-parsers ``sub``."""
    sweep = sub.add_parser(
        "sweep",
        help="run a procedure over a grid of points on Dask (resumable)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    kinds = sweep.add_subparsers(dest="sweep_command", required=True, parser_class=_AxesParser)
    for name, what in SWEEP_PROCEDURES.items():
        p = kinds.add_parser(
            name,
            allow_abbrev=False,  # an axis must never be taken for an abbreviated option
            help=f"sweep {what}",
            epilog=(
                f"Axes: --PARAMETER VALUES for any parameter of {name} (see its own --help), "
                "and --device-seed / --bench-seed (the simulated station's device and noise). "
                "VALUES: A,B,C; ranges A:B[:STEP] (B excluded), lin:A:B:N, log:A:B:N."
            ),
        )
        p.add_argument("--from", dest="sweep_file", metavar="FILE", help="a TOML sweep file")
        p.add_argument("--station", default=None, help="station NAME or FILE for every point")
        p.add_argument("--name", default=None, help="sweep folder name (default: from a hash)")
        p.add_argument(
            "--out", default=None, help="runs directory; the sweep goes to OUT/sweeps/NAME"
        )
        p.add_argument("--sweep-dir", default=None, help="the sweep folder itself")
        _add_run_options(p)
        p.set_defaults(handler=cmd_sweep_run, sweep_procedure=name)
    resume = kinds.add_parser("resume", help="finish an interrupted sweep in its folder")
    resume.add_argument("sweep_dir")
    _add_run_options(resume)
    resume.set_defaults(handler=cmd_sweep_resume)
    show = kinds.add_parser("show", help="a sweep's points: status and results")
    show.add_argument("sweep_dir")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_sweep_show)


def _spec_from_args(args: argparse.Namespace) -> Any:
    from labrig.sweep.grid import load_sweep_file, merge_specs, parse_axis

    base = load_sweep_file(args.sweep_file, args.sweep_procedure) if args.sweep_file else None
    axes = [
        (name, parse_axis(name, text, f"--{name.replace('_', '-')}"))
        for name, text in getattr(args, _AXES_DEST, [])
    ]
    return merge_specs(base, args.sweep_procedure, station=args.station, name=args.name, axes=axes)


def cmd_sweep_run(args: argparse.Namespace) -> int:
    from labrig.sweep.driver import run_sweep

    spec = _spec_from_args(args)
    result = run_sweep(
        spec,
        runs_dir=args.out,
        sweep_dir=args.sweep_dir,
        workers=args.workers,
        scheduler=args.scheduler,
        retry_failed=args.retry_failed,
    )
    return _finish(result, args.json)


def cmd_sweep_resume(args: argparse.Namespace) -> int:
    from labrig.sweep.driver import run_sweep
    from labrig.sweep.grid import SweepError, SweepSpec
    from labrig.sweep.record import META_FILE, is_sweep_dir

    folder = Path(args.sweep_dir)
    if not is_sweep_dir(folder):
        raise SweepError(f"{folder}: not a sweep folder (no {META_FILE})")
    stored = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    spec = SweepSpec.from_document(stored["spec"], str(folder / META_FILE))
    result = run_sweep(
        spec,
        sweep_dir=folder,
        workers=args.workers,
        scheduler=args.scheduler,
        retry_failed=args.retry_failed,
    )
    return _finish(result, args.json)


def _finish(result: Any, as_json: bool) -> int:
    if as_json:
        _print_json(
            {
                "sweep_dir": str(result.sweep_dir),
                "table": str(result.table_path),
                "n_points": result.n_points,
                "counts": result.counts,
                "ran": result.ran,
                "complete": result.complete,
                "interrupted": result.interrupted,
                "wall_time_s": result.wall_time_s,
            }
        )
    if result.interrupted:
        return 130
    return 0 if result.complete else 1


def cmd_sweep_show(args: argparse.Namespace) -> int:
    from labrig.sweep.record import read_table

    frame = read_table(args.sweep_dir)
    counts = {str(k): int(v) for k, v in frame["status"].value_counts().items()}
    if args.json:
        rows = json.loads(frame.to_json(orient="records"))
        _print_json({"sweep_dir": args.sweep_dir, "counts": counts, "points": rows})
        return 0
    print(
        f"{args.sweep_dir}: {len(frame)} points: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
    )
    hidden = {"point", "worker", "started", "finished", "reason"}
    shown = [c for c in frame.columns if c not in hidden and not c.startswith("last_")]
    with_reason = frame["reason"].fillna("") != ""
    print(frame[shown].to_string(index=False, max_colwidth=40))
    for _, row in frame[with_reason & (frame["status"] != "success")].iterrows():
        print(f"  point {row['index']}: {row['status']}: {row['reason']}")
    return 0


def _print_json(obj: dict[str, Any]) -> None:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    print(json.dumps(clean(obj), default=str), flush=True)
    sys.stdout.flush()
