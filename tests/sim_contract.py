"""Test support for the virtual bench: a toy SCPI emulator and the profile contract harness.

:func:`check_profile_against_emulator` holds a pyvisa-sim YAML profile (format 1.1) against an
emulator: every dialogue must get the profile's reply, and every property must have the
profile's reset default, accept the profile's valid values, and refuse out-of-range ones with an
error the profile's error mechanism would report. It collects every mismatch and fails once
with the whole list, so one run shows everything that disagrees.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from labrig.sim.bench import Bench
from labrig.sim.emulator import ScpiEmulator
from labrig.sim.scpi import Args, Context, ScpiError, format_block, format_nr3, quote_string

# --------------------------------------------------------------------------- toy emulator


class ToyEmulator(ScpiEmulator):
    """A two-channel toy function generator exercising every parser feature the models use."""

    FREQ_MIN, FREQ_MAX = 1e-3, 30e6

    def __init__(self, name: str = "toy", bench: Bench | None = None) -> None:
        self.triggers = 0
        self._init_state()
        super().__init__(name, bench)

    def _init_state(self) -> None:
        self.freq = [1e3, 1e3]
        self.volt = [0.1, 0.1]
        self.offset = [0.0, 0.0]
        self.outputs = [False, False]
        self.function = ["SINusoid", "SINusoid"]
        self.arbs: dict[str, bytes] = {}
        self.points: list[float] = []
        self.text = ""
        self.closed: list[int] = []
        self.count = 1

    def identity(self) -> str:
        return "labrig,TOY1,0001,1.0"

    def reset(self) -> None:
        self._init_state()
        super().reset()

    def on_bus_trigger(self) -> None:
        self.triggers += 1

    def register_commands(self) -> None:
        add = self.tree.add
        add("[SOURce#]:FREQuency", write=self._w_freq, query=self._q_freq)
        add("[SOURce#]:VOLTage[:AMPLitude]", write=self._w_volt, query=self._q_volt)
        add("[SOURce#]:VOLTage:OFFSet", write=self._w_offs, query=self._q_offs)
        add("[SOURce#]:FUNCtion[:SHAPe]", write=self._w_func, query=self._q_func)
        add("OUTPut#[:STATe]", write=self._w_outp, query=self._q_outp)
        add("DATA:ARBitrary", write=self._w_arb, query=self._q_arb)
        add("DATA:LIST", write=self._w_list, query=self._q_list)
        add("TEXT", write=self._w_text, query=self._q_text)
        add("ROUTe:CLOSe", write=self._w_close, query=self._q_close)
        add("COUNt", write=self._w_count, query=self._q_count)

    def _ch(self, ctx: Context) -> int:
        return ctx.suffix(0, default=1, lo=1, hi=2) - 1

    def _w_freq(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        ch = self._ch(ctx)
        self.freq[ch] = args.float(
            0,
            self.FREQ_MIN,
            self.FREQ_MAX,
            keywords={"MINimum": self.FREQ_MIN, "MAXimum": self.FREQ_MAX, "DEFault": 1e3},
            units={"HZ": 1.0, "KHZ": 1e3, "MAHZ": 1e6},
        )

    def _q_freq(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return format_nr3(self.freq[self._ch(ctx)])

    def _w_volt(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.volt[self._ch(ctx)] = args.float(0, 1e-3, 10.0, units={"V": 1.0, "MV": 1e-3})

    def _q_volt(self, ctx: Context, args: Args) -> str:
        return format_nr3(self.volt[self._ch(ctx)])

    def _w_offs(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.offset[self._ch(ctx)] = args.float(0, -5.0, 5.0)

    def _q_offs(self, ctx: Context, args: Args) -> str:
        return format_nr3(self.offset[self._ch(ctx)])

    def _w_func(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.function[self._ch(ctx)] = args.enum(0, ["SINusoid", "SQUare", "ARB"])

    def _q_func(self, ctx: Context, args: Args) -> str:
        # replies use the short form in upper case, as Keysight instruments do
        return "".join(c for c in self.function[self._ch(ctx)] if not c.islower())

    def _w_outp(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.outputs[self._ch(ctx)] = args.bool(0)

    def _q_outp(self, ctx: Context, args: Args) -> str:
        return "1" if self.outputs[self._ch(ctx)] else "0"

    def _w_arb(self, ctx: Context, args: Args) -> None:
        args.require(2, 2)
        name = args.string(0)
        if not name:
            raise ScpiError(-151, detail="empty name")
        self.arbs[name.upper()] = args.block(1)

    def _q_arb(self, ctx: Context, args: Args) -> bytes:
        args.require(1, 1)
        name = args.string(0).upper()
        if name not in self.arbs:
            raise ScpiError(-224, detail=f"no arb named {name!r}")
        return format_block(self.arbs[name])

    def _w_list(self, ctx: Context, args: Args) -> None:
        args.require(1)
        self.points = args.numbers(0, lo=-1.0, hi=1.0)

    def _q_list(self, ctx: Context, args: Args) -> str:
        return ",".join(repr(x) for x in self.points)

    def _w_text(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.text = args.string(0)

    def _q_text(self, ctx: Context, args: Args) -> str:
        return quote_string(self.text)

    def _w_close(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.closed = args.channel_list(0, lo=1, hi=24)

    def _q_close(self, ctx: Context, args: Args) -> str:
        return ",".join(str(c) for c in self.closed)

    def _w_count(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.count = args.int(0, 1, 1_000_000, keywords={"INFinity": -1})

    def _q_count(self, ctx: Context, args: Args) -> str:
        return str(self.count)


# --------------------------------------------------------------------------- contract harness


@dataclass
class _ErrorProbe:
    """How a profile reports errors: a queue query, or a status register query."""

    query: str
    kind: str  # "queue" | "status"
    command_code: int | None = None  # queue: the code of the profile's command error
    command_bits: int = 0  # status: the bits of the profile's command error


def _error_probe(device: dict[str, Any]) -> _ErrorProbe | None:
    error = device.get("error")
    if not isinstance(error, dict):
        return None
    queue = error.get("error_queue")
    if queue:
        entry = queue[0]
        code = None
        m = re.match(r"\s*([+-]?\d+)", str(entry.get("command_error", "")))
        if m:
            code = int(m.group(1))
        return _ErrorProbe(str(entry["q"]), "queue", command_code=code)
    status = error.get("status_register")
    if status:
        entry = status[0]
        return _ErrorProbe(
            str(entry["q"]), "status", command_bits=int(entry.get("command_error", 0))
        )
    return None


def _fields(reply: str) -> list[str]:
    return [f.strip().strip("\"'").strip() for f in reply.strip().split(",")]


def replies_match(got: str, expected: str, rel_tol: float = 1e-6) -> bool:
    """Field-wise comparison: numbers numerically, text case-insensitively without quotes."""
    a, b = _fields(got), _fields(expected)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            if x.casefold() != y.casefold():
                return False
            continue
        if not math.isclose(fx, fy, rel_tol=rel_tol, abs_tol=1e-12):
            return False
    return True


def _format(template: str, value: object) -> str:
    """Fill a pyvisa-sim ``{:...}`` template; ``{}`` gets repr-precise numbers."""
    if isinstance(value, float) and "{}" in template:
        return template.replace("{}", repr(value))
    return template.format(value)


def _typed(value: object, type_name: str | None) -> object:
    if type_name == "float":
        return float(value)  # type: ignore[arg-type]
    if type_name == "int":
        return int(value)  # type: ignore[call-overload]
    if type_name == "str":
        if isinstance(value, bool):  # YAML 1.1 reads a bare ON/OFF as a boolean
            return "ON" if value else "OFF"
        return str(value)
    return value


class _Wire:
    def __init__(self, emulator: ScpiEmulator) -> None:
        self.emulator = emulator
        self.term = emulator.terminator

    def send(self, text: str) -> str | None:
        reply = self.emulator.feed(text.encode("latin-1") + self.term)
        if not reply:
            return None
        return reply.decode("latin-1").removesuffix(self.term.decode("latin-1"))

    def clear(self) -> None:
        self.send("*CLS")
        self.emulator.clear_status()  # SR860-style emulators may keep bits *CLS leaves


def _error_codes(wire: _Wire, probe: _ErrorProbe | None) -> tuple[list[int], int]:
    """Drain the error state: (queued codes, status bits)."""
    codes: list[int] = []
    if probe is None:
        while True:
            code, _ = wire.emulator.pop_error()
            if code == 0:
                return codes, 0
            codes.append(code)
    if probe.kind == "status":
        reply = wire.send(probe.query)
        return [], int(float(reply)) if reply else 0
    for _ in range(64):  # bounded: a queue holds at most a few dozen entries
        reply = wire.send(probe.query)
        m = re.match(r"\s*([+-]?\d+)", reply or "")
        if m is None or int(m.group(1)) == 0:
            break
        codes.append(int(m.group(1)))
    return codes, 0


def _out_of_range(specs: dict[str, Any]) -> list[object]:
    values: list[object] = []
    type_name = specs.get("type")
    if "max" in specs:
        hi = float(specs["max"])
        values.append(hi + max(1.0, abs(hi)))
    if "min" in specs:
        lo = float(specs["min"])
        values.append(lo - max(1.0, abs(lo)))
    if "valid" in specs and not values:
        valid = list(specs["valid"])
        if type_name == "str":
            values.append("BOGUSVALUE")
        elif {int(v) for v in valid} != {0, 1}:  # 0/1 are booleans: SCPI takes 2 as ON
            values.append(max(int(v) for v in valid) + 7)
    if type_name == "int":
        values = [int(v) if isinstance(v, float) else v for v in values]  # type: ignore[call-overload]
    return values


def _valid_values(specs: dict[str, Any], default: object) -> list[object]:
    type_name = specs.get("type")
    if "valid" in specs:
        return [_typed(v, type_name) for v in specs["valid"]]
    values: list[object] = []
    if "min" in specs:
        values.append(_typed(specs["min"], type_name))
    if "max" in specs:
        values.append(_typed(specs["max"], type_name))
    if "min" in specs and "max" in specs:
        mid = (float(specs["min"]) + float(specs["max"])) / 2
        values.append(_typed(round(mid) if type_name == "int" else mid, type_name))
    if not values and default is not None:
        values.append(_typed(default, type_name))
    return values


def check_profile_against_emulator(
    profile_path: str | Path,
    emulator_factory: Callable[[], ScpiEmulator],
    *,
    rel_tol: float = 1e-6,
    accepted_range_errors: Sequence[int] = (-222, -224, -141),
    clamping: Collection[str] = (),
) -> list[str]:
    """Hold every dialogue and property of a pyvisa-sim profile against a fresh emulator.

    Returns the list of checks made; raises AssertionError listing every mismatch. An
    out-of-range setter must leave one of ``accepted_range_errors`` (or the profile's own
    command error code) in the queue, or a command-error/execution-error bit in a status
    register profile. Write dialogues must not reply and must not raise a command error (-1xx).

    ``clamping`` names properties (``fnmatch`` patterns) that the real instrument clamps
    silently where pyvisa-sim refuses: for them an out-of-range value must read back inside
    the profile's ``[min, max]`` and must not raise a command error.
    """
    profile = yaml.safe_load(Path(profile_path).read_text(encoding="utf-8"))
    problems: list[str] = []
    checked: list[str] = []
    for device_name, device in (profile.get("devices") or {}).items():
        wire = _Wire(emulator_factory())
        probe = _error_probe(device)
        accepted = set(accepted_range_errors)
        if probe is not None and probe.command_code is not None:
            accepted.add(probe.command_code)

        for dialogue in device.get("dialogues") or []:
            q, r = str(dialogue["q"]), dialogue.get("r")
            wire.clear()
            got = wire.send(q)
            checked.append(f"{device_name}: dialogue {q!r}")
            if r is None:
                if got is not None:
                    problems.append(f"{device_name}: {q!r} is a write but replied {got!r}")
                codes, _ = _error_codes(wire, probe)
                if any(-199 <= c <= -100 for c in codes):
                    problems.append(f"{device_name}: {q!r} raised command error(s) {codes}")
            elif got is None or not replies_match(got, str(r), rel_tol):
                problems.append(f"{device_name}: {q!r} replied {got!r}, profile says {r!r}")

        for prop_name, prop in (device.get("properties") or {}).items():
            where = f"{device_name}.{prop_name}"
            getter, setter = prop.get("getter"), prop.get("setter")
            specs = prop.get("specs") or {}
            default = prop.get("default")
            type_name = specs.get("type")
            if getter is None:
                continue
            get_q, get_r = str(getter["q"]), str(getter.get("r", "{}"))

            wire.send("*RST")
            wire.clear()
            got = wire.send(get_q)
            checked.append(f"{where}: default")
            if default is not None:
                expected = _format(get_r, _typed(default, type_name))
                if got is None or not replies_match(got, expected, rel_tol):
                    problems.append(
                        f"{where}: after *RST {get_q!r} gave {got!r}, default {expected!r}"
                    )
            if setter is None:
                continue
            set_q = str(setter["q"])
            for value in _valid_values(specs, default):
                wire.send("*RST")  # each value from the reset state: settings may be coupled
                wire.clear()
                reply = wire.send(_format(set_q, value))
                got = wire.send(get_q)
                expected = _format(get_r, value)
                checked.append(f"{where}: set {value!r}")
                codes, bits = _error_codes(wire, probe)
                if setter.get("r") is None and reply is not None:
                    problems.append(f"{where}: setter replied {reply!r}")
                if codes or bits:
                    problems.append(f"{where}: setting {value!r} raised {codes or bits}")
                if got is None or not replies_match(got, expected, rel_tol):
                    problems.append(
                        f"{where}: set {value!r}, read back {got!r} (want {expected!r})"
                    )
            clamps = any(fnmatch.fnmatchcase(prop_name, pat) for pat in clamping)
            for value in _out_of_range(specs):
                wire.send("*RST")
                wire.clear()
                wire.send(_format(set_q, value))
                if clamps:
                    checked.append(f"{where}: clamp {value!r}")
                    got = wire.send(get_q)
                    codes, _ = _error_codes(wire, probe)
                    lo, hi = float(specs.get("min", -math.inf)), float(specs.get("max", math.inf))
                    try:
                        inside = got is not None and lo <= float(_fields(got)[0]) <= hi
                    except ValueError:
                        inside = False
                    if not inside or any(-199 <= c <= -100 for c in codes):
                        problems.append(f"{where}: {value!r} read back {got!r}, errors {codes}")
                    continue
                codes, bits = _error_codes(wire, probe)
                checked.append(f"{where}: refuse {value!r}")
                if probe is not None and probe.kind == "status":
                    if not bits & (probe.command_bits | 0x10 | 0x20):
                        problems.append(f"{where}: {value!r} set no error bit ({bits})")
                elif not accepted.intersection(codes):
                    problems.append(
                        f"{where}: {value!r} queued {codes}, want one of {sorted(accepted)}"
                    )
    if problems:
        raise AssertionError(
            f"{len(problems)} contract mismatch(es) in {profile_path}:\n  " + "\n  ".join(problems)
        )
    return checked


def leftover_bench_threads(timeout_s: float = 15.0) -> list[object]:
    """Server threads still alive after a bounded wait (a loaded machine joins slowly)."""
    import threading
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        alive = [t for t in threading.enumerate() if t.name.startswith("labrig-bench")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)
