"""The ``labrig`` command.

Every command that needs instruments takes ``--station NAME|FILE``; without it, it uses the
built-in simulated station for its rig, in process. Every command that produces a result takes
``--json`` and then prints one JSON object as the last line of standard output.

Exit codes: 0 success; 1 the run failed or was aborted; 2 bad input, refused before anything
started (station file, parameters, a plan that would cross the station's limits); 130 interrupted
by Ctrl-C; 143 terminated by SIGTERM; 141 the reader of standard output went away (a pipe into
``head``). ``--debug`` (before the command) shows the traceback of an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from labrig import __version__
from labrig.commands import EXIT_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_USAGE, UsageError
from labrig.errors import LimitError, ProcedureError, StationError
from labrig.runs.record import RecordError

Handler = Callable[[argparse.Namespace], int]
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a tool killed by a closed pipe reports

#: Errors that mean "the request was refused": one line, exit code 2, no traceback.
USER_ERRORS = (UsageError, StationError, LimitError, ValueError, ProcedureError, RecordError)


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, default=_json_default), flush=True)


def _json_default(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()  # numpy scalars and arrays
    if isinstance(value, Path):
        return str(value)
    return str(value)


# ------------------------------------------------------------------------------------ station
def cmd_station_check(args: argparse.Namespace) -> int:
    from labrig.station import load_station

    station = load_station(args.file)
    summary = {
        "station": station.name,
        "rig": station.rig,
        "source": station.source,
        "instruments": {
            n: {"model": s.model, "resource": s.resource, "visa_library": s.visa_library}
            for n, s in station.instruments.items()
        },
        "channels": [
            {
                "instrument": c.instrument,
                "channel": c.channel,
                "label": c.limits.label,
                "min_v": c.limits.min_v,
                "max_v": c.limits.max_v,
                "max_slew_v_per_s": c.limits.max_slew_v_per_s,
            }
            for c in station.channels
        ],
        "status": "ok",
    }
    if args.json:
        _print_json(summary)
    else:
        print(f"{station.source}: ok — station {station.name!r}, rig {station.rig}")
        for n, s in station.instruments.items():
            print(f"  {n:10s} {s.model:24s} {s.resource} [{s.visa_library}]")
        for c in station.channels:
            lim = c.limits
            print(
                f"  limit {c.instrument}:{c.channel:<3d} {lim.label:14s} "
                f"[{lim.min_v:+.3f}, {lim.max_v:+.3f}] V, slew <= {lim.max_slew_v_per_s:g} V/s"
            )
    return 0


# ------------------------------------------------------------------------------------ sim serve
def cmd_sim_serve(args: argparse.Namespace) -> int:
    from labrig.sim.assemble import build_bench
    from labrig.sim.tcp import BenchServer
    from labrig.station import load_station, served_station_text

    station = load_station(args.station)
    built = build_bench(station, pacing=args.pacing)
    stop = threading.Event()
    why: list[str] = []

    def _stop(signum: int, frame: object) -> None:
        why.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    with BenchServer(built.emulators, host=args.host, base_port=args.port) as server:
        resources = server.resources()
        if args.write_station:
            Path(args.write_station).write_text(served_station_text(station, resources))
        if args.json:
            _print_json({"station": station.source, "resources": resources, "status": "ready"})
        else:
            for name, resource in resources.items():
                print(f"{name} {resource}", flush=True)
            print("ready", flush=True)
        print(
            "labrig: serving until Ctrl-C or SIGTERM (clients: read_termination='\\n', "
            "write_termination='\\n')",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.2):
            pass
    print(f"labrig: {why[0] if why else 'stop'} received; bench stopped", file=sys.stderr)
    return EXIT_OK


# ------------------------------------------------------------------------------------ parser
def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``labrig`` parser. With ``argv``, only the procedure command it names gets its
    options (importing a procedure module takes a second or more: ``labrig runs`` need not
    pay it); without, every command is complete (for help and tests)."""
    parser = argparse.ArgumentParser(
        prog="labrig",
        description="Run a physical-neural-network lab: instruments, in-the-loop training, runs.",
    )
    parser.add_argument("--version", action="version", version=f"labrig {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    station = sub.add_parser("station", help="station files").add_subparsers(
        dest="station_command", required=True
    )
    check = station.add_parser("check", help="validate a station file (or a built-in name)")
    check.add_argument("file", help="station TOML file, or sim-dnpu / sim-reservoir")
    check.add_argument("--json", action="store_true", help="print one JSON object last")
    check.set_defaults(handler=cmd_station_check)

    sim = sub.add_parser("sim", help="the virtual bench").add_subparsers(
        dest="sim_command", required=True
    )
    serve = sim.add_parser("serve", help="serve a simulated station over TCP (one port each)")
    serve.add_argument("--station", default="sim-dnpu", help="NAME or FILE (default sim-dnpu)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=int,
        default=0,
        help="port of the first instrument, the others follow (default 0: any free ports)",
    )
    serve.add_argument(
        "--pacing",
        choices=["fast", "realtime"],
        default=None,
        help="fast: simulated time runs as fast as the host can; realtime: instruments take "
        "as long as real ones (default: the station's [bench] pacing)",
    )
    serve.add_argument("--json", action="store_true", help="print the resources as JSON")
    serve.add_argument(
        "--write-station",
        metavar="FILE",
        help="write a station file that reaches the served bench through pyvisa-py",
    )
    serve.set_defaults(handler=cmd_sim_serve)

    _add_optional_commands(sub, argv)
    return parser


def _add_optional_commands(sub: Any, argv: Sequence[str] | None) -> None:
    """Commands whose modules register themselves (procedures, runs, GUI)."""
    from labrig import commands

    commands.register(sub, argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except USER_ERRORS as exc:
        # Bad input or a request that cannot be carried out: say why in one line, no traceback.
        if args.debug:
            traceback.print_exc()
        print(f"labrig: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("labrig: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:
        # The reader went away (`labrig runs show X | head`): stop quietly, as `cat` does.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"labrig: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    finally:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n")).strip() or type(exc).__name__


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def entry_point() -> None:
    """The ``labrig`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
