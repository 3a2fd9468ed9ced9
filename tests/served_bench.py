"""A simulated station served over TCP in this process, for tests that open rigs on it.

The bench (and its device model) is built once and served by a :class:`BenchServer`; a test
opens a rig through the station file a client of ``labrig sim serve`` would get, and may reach
into the bench object itself for evidence (the voltage log, the emulators' state).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from labrig.sim.assemble import BuiltBench, build_bench
from labrig.sim.tcp import BenchServer
from labrig.station import load_station, served_station_text


@dataclass
class ServedBench:
    built: BuiltBench
    server: BenchServer
    station_file: Path

    def reset_evidence(self) -> None:
        """Forget the voltage log (each test reads only what it caused)."""
        self.built.bench.voltage_extremes.clear()

    def extremes(self, port: str) -> tuple[float, float]:
        return self.built.bench.voltage_extremes[port]

    def dac_levels(self) -> dict[int, float]:
        """Every DAC channel's present output, from the emulator itself."""
        snap = self.built.emulators["dac"].snapshot()
        return {int(n): float(c["volt"]) for n, c in snap["channels"].items()}  # type: ignore[index,union-attr]

    def running(self) -> dict[int, list[str]]:
        """Every DAC channel's running generators, from the emulator itself."""
        snap = self.built.emulators["dac"].snapshot()
        return {int(n): list(c["running"]) for n, c in snap["channels"].items()}  # type: ignore[index,union-attr]


@contextmanager
def served_station(name: str, directory: Path) -> Iterator[ServedBench]:
    station = load_station(name)
    built = build_bench(station)
    with BenchServer(built.emulators) as server:
        path = directory / f"served-{name}.toml"
        path.write_text(served_station_text(station, server.resources()))
        yield ServedBench(built, server, path)


def safety_problems(served: ServedBench) -> list[str]:
    """What is not safe on the bench now: a limited DAC channel away from its ``safe_v``, a
    generator still running, or a voltage ever logged outside a channel's limits."""
    station = load_station(served.station_file)
    problems: list[str] = []
    levels = served.dac_levels()
    running = served.running()
    for spec in station.channels:
        lim, ch = spec.limits, spec.channel
        if abs(levels[ch] - lim.safe_v) > 1e-6:
            problems.append(f"{spec.instrument} ch{ch} at {levels[ch]:.6g} V, safe {lim.safe_v}")
        if running[ch]:
            problems.append(f"{spec.instrument} ch{ch} still runs {running[ch]}")
        logged = served.built.bench.voltage_extremes.get(f"{spec.instrument}.ch{ch}")
        if logged is not None and not (
            lim.min_v - 1e-9 <= logged[0] and logged[1] <= lim.max_v + 1e-9
        ):
            problems.append(
                f"{spec.instrument} ch{ch} reached {logged} outside [{lim.min_v}, {lim.max_v}]"
            )
    return problems


def inject(served: ServedBench, kind: str, instrument: str, after_s: float, value: float = 0.0):
    """Schedule one fault ``after_s`` of bench time from now through the bench's own endpoint
    (``SIM:FAULt:ADD``, as an outside harness does); faults left unfired before are dropped.
    Returns the bench's record of the fault (``.fired`` says whether it hit)."""
    from labrig.sim.control import BenchClient

    plan = served.built.bench.faults
    plan.faults.clear()
    client = BenchClient(served.server.resources()["bench"], visa_library="@py")
    try:
        client.add_fault(kind, instrument, at_time_s=client.time_s() + after_s, value=value)
    finally:
        client.adapter.close()
    return plan.faults[-1]
