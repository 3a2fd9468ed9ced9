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
