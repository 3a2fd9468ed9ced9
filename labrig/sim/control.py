"""The bench's own SCPI endpoint, and the driver procedures use to reach it.

A real lab has no such instrument; the virtual bench does, because a simulator has things to offer
that hardware does not: a clock that can be advanced instead of slept on, a log of the extreme
voltage each electrode ever saw, and faults on demand. Serving them as SCPI means a procedure
reaches an in-process bench and a bench served over TCP by the same code path.

Commands (``SIMulation`` subsystem)::

    SIM:TIME?                      bench time in seconds
    SIM:WAIT <s>                   let <s> seconds of bench time pass
    SIM:PACing FAST|REALtime       pacing; query returns FAST or REAL
    SIM:SEED?                      the bench's seed
    SIM:VLOG:CATalog?              watched ports, quoted, comma-separated
    SIM:VLOG? "<port>"             min,max ever output by <port> (9.9E+37 if never driven)
    SIM:FAULt:ADD <kind>,"<instrument>",COMMand|TIME,<when>[,<value>]
                                   kind: DROP DELay GARBle SILence ERRor DRIFt; value: seconds
                                   (DELay), error code (ERRor) or drift step (DRIFt)
    SIM:FAULt:COUNt?               faults still to fire
    SIM:FAULt:CLEar                forget every fault not yet fired
"""

from __future__ import annotations

import math
import time
from typing import Any

from pymeasure.instruments import Instrument

from labrig.sim.bench import Fault, Pacing
from labrig.sim.emulator import ScpiEmulator
from labrig.sim.scpi import Args, Context, ScpiError, format_nr3, quote_string

NEVER = 9.9e37
_KINDS = {
    "DROP": "drop",
    "DELay": "delay",
    "GARBle": "garble",
    "SILence": "silence",
    "ERRor": "error",
    "DRIFt": "drift",
}


class BenchControlEmulator(ScpiEmulator):
    """The ``labrig_bench`` endpoint of a virtual bench."""

    def identity(self) -> str:
        return "labrig,virtual-bench,0,1.0"

    def register_commands(self) -> None:
        t = self.tree
        t.add("SIMulation:TIME", query=lambda c, a: format_nr3(self.bench.clock.now))
        t.add("SIMulation:WAIT", write=self._wait)
        t.add("SIMulation:PACing", write=self._set_pacing, query=self._get_pacing)
        t.add("SIMulation:SEED", query=lambda c, a: str(self.bench.seed))
        t.add("SIMulation:VLOG:CATalog", query=self._vlog_catalog)
        t.add("SIMulation:VLOG", query=self._vlog)
        t.add("SIMulation:FAULt:ADD", write=self._add_fault)
        t.add("SIMulation:FAULt:COUNt", query=self._fault_count)
        t.add("SIMulation:FAULt:CLEar", write=lambda c, a: self.bench.faults.faults.clear())

    def _wait(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.bench.clock.advance(args.float(0, 0.0, 1e6))

    def _set_pacing(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        choice = args.enum(0, ["FAST", "REALtime"])
        clock = self.bench.clock
        pacing: Pacing = "fast" if choice.upper() == "FAST" else "realtime"
        if pacing == "realtime" and clock.pacing != "realtime":
            # Real time runs from now: re-anchor the wall clock to the bench clock, or the bench
            # time that lagged behind wall time while unpaced would pass without any sleep.
            clock._wall_origin = time.monotonic() - clock.now
        clock.pacing = pacing

    def _get_pacing(self, ctx: Context, args: Args) -> str:
        return "FAST" if self.bench.clock.pacing == "fast" else "REAL"

    def _vlog_catalog(self, ctx: Context, args: Args) -> str:
        ports = sorted(self.bench.watched_ports())
        return ",".join(quote_string(p) for p in ports) if ports else '""'

    def _vlog(self, ctx: Context, args: Args) -> str:
        args.require(1, 1)
        port = args.string(0)
        if port not in self.bench.watched_ports():
            raise ScpiError(-224, f"Illegal parameter value; port {port!r} is not watched")
        low, high = self.bench.voltage_extremes.get(port, (NEVER, -NEVER))
        return f"{format_nr3(low)},{format_nr3(high)}"

    def _add_fault(self, ctx: Context, args: Args) -> None:
        args.require(4, 5)
        kind = _KINDS[args.enum(0, list(_KINDS))]
        instrument = args.string(1)
        if instrument not in self.bench.parts:
            raise ScpiError(-224, f"Illegal parameter value; no instrument {instrument!r}")
        when = args.enum(2, ["COMMand", "TIME"]).upper()
        value = args.float(4) if len(args) > 4 else 0.0
        fault = Fault(kind=kind, instrument=instrument)  # type: ignore[arg-type]
        if when == "COMMAND":
            fault.at_command = args.int(3, 1, None)
        else:
            fault.at_time_s = args.float(3, 0.0, None)
        if kind == "delay":
            fault.seconds = value
        elif kind == "error":
            fault.code = int(value) if value else -300
        elif kind == "drift":
            fault.amount = value
        self.bench.faults.add(fault)

    def _fault_count(self, ctx: Context, args: Args) -> str:
        return str(sum(1 for f in self.bench.faults.faults if not f.fired))


class BenchClient(Instrument):
    """Driver for the virtual bench's ``labrig_bench`` endpoint (simulated rigs only)."""

    def __init__(self, adapter: Any, name: str = "labrig virtual bench", **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        kwargs.setdefault("timeout", 10_000)
        super().__init__(adapter, name, includeSCPI=False, **kwargs)

    @property
    def identity(self) -> str:
        return str(self.ask("*IDN?")).strip()

    def time_s(self) -> float:
        """Get the bench time in seconds."""
        return float(self.ask("SIM:TIME?"))

    #: Longest single wait asked of the bench: with real-time pacing the bench answers only
    #: when that much wall time has passed, which must stay well inside the I/O timeout.
    max_wait_step_s = 1.0

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` of bench time pass (and wait for the bench to confirm), in steps of
        at most :attr:`max_wait_step_s` so that a real-time bench never outlasts the timeout."""
        left = float(seconds)
        if not (math.isfinite(left) and left >= 0):
            raise ValueError(f"bench wait of {seconds!r} s: must be a finite number >= 0")
        while left > 0:
            step = min(left, self.max_wait_step_s)
            self.write(f"SIM:WAIT {step!r}")
            self.ask("*OPC?")
            left -= step

    def voltage_extremes(self) -> dict[str, tuple[float, float]]:
        """Get ``{port: (min_v, max_v)}`` for every watched port that has been driven."""
        reply = str(self.ask("SIM:VLOG:CAT?")).strip()
        ports = [p.strip().strip('"') for p in reply.split(",") if p.strip().strip('"')]
        out: dict[str, tuple[float, float]] = {}
        for port in ports:
            low, high = (float(x) for x in str(self.ask(f'SIM:VLOG? "{port}"')).split(","))
            if low < NEVER / 10:  # 9.9E+37 means "never driven"
                out[port] = (low, high)
        return out

    def add_fault(
        self,
        kind: str,
        instrument: str,
        *,
        at_command: int | None = None,
        at_time_s: float | None = None,
        value: float = 0.0,
    ) -> None:
        """Schedule a fault (see the module docstring for the kinds)."""
        if (at_command is None) == (at_time_s is None):
            raise ValueError("give exactly one of at_command or at_time_s")
        when = f"COMM,{at_command}" if at_command is not None else f"TIME,{at_time_s!r}"
        self.write(f'SIM:FAUL:ADD {kind},"{instrument}",{when},{value!r}')
        self.check_errors()

    def check_errors(self) -> list[tuple[int, str]]:
        """Raise ``InstrumentReportedError`` if the bench endpoint queued an error."""
        from instruments.errors import InstrumentReportedError

        code_text = str(self.ask("SYST:ERR?")).strip()
        code_str, _, message = code_text.partition(",")
        code = int(code_str)
        if code != 0:
            raise InstrumentReportedError(self.name, code, message.strip().strip('"'))
        return []

    def snapshot(self) -> dict[str, object]:
        return {"time_s": self.time_s()}

    def safe_state(self) -> None:
        """The bench endpoint has no outputs."""

    def shutdown(self) -> None:
        self.adapter.close()
