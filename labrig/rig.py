"""Open a station: connect its instruments, install its safety limits, and hand out roles.

``open_rig(station)`` returns a :class:`Rig`. Procedures get their instruments from it (by role,
never by simulator), wait through it (:meth:`Rig.wait` advances a simulated bench's clock or
sleeps on real hardware, checking for a stop request), and close it on every exit path
(:meth:`Rig.close` brings every output to its safe state first).

Where the instruments are — real hardware, a bench served over TCP, or the in-process bench — is
decided by the station file alone.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from instruments.errors import InstrumentConnectionError
from instruments.roles import DacBank, Digitizer, Instrument, LockIn, WaveformGenerator
from labrig.station import IN_PROCESS, MODELS, Station, load_station
from labrig.takeover import drain_after_reconnect, take_over

if TYPE_CHECKING:
    from labrig.calibration import ReservoirCalibration, ReservoirTwin


def _load(dotted: str) -> Any:
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class Rig:
    """An open station."""

    station: Station
    instruments: dict[str, Any]
    bench_client: Any | None = None
    built: Any | None = None  # the in-process BuiltBench, if any
    library: Any = "@py"  # the in-process VISA library, if any
    takeover: Any = None  # what labrig.takeover found and did when the rig was opened
    _closed: bool = field(default=False, init=False)

    # ------------------------------------------------------------------ roles
    def instrument(self, name: str) -> Any:
        try:
            return self.instruments[name]
        except KeyError:
            known = ", ".join(sorted(self.instruments))
            raise KeyError(
                f"station {self.station.name!r} has no instrument {name!r} ({known})"
            ) from None

    @property
    def dac(self) -> DacBank:
        if self.station.dnpu is not None:
            return self.instrument(self.station.dnpu.dac)
        if self.station.reservoir is not None:
            return self.instrument(self.station.reservoir.bias_dac)
        raise KeyError("this station has no DAC role")

    @property
    def digitizer(self) -> Digitizer:
        rig = self.station.dnpu or self.station.reservoir
        if rig is None:
            raise KeyError("this station has no digitizer role")
        return self.instrument(rig.digitizer)

    @property
    def lockins(self) -> list[LockIn]:
        if self.station.dnpu is None:
            return []
        return [self.instrument(n) for n in self.station.dnpu.lockins]

    @property
    def awg(self) -> WaveformGenerator:
        if self.station.reservoir is None:
            raise KeyError("this station has no AWG role")
        return self.instrument(self.station.reservoir.awg)

    @property
    def simulated(self) -> bool:
        """True for a virtual bench (for the shell: a procedure never asks)."""
        return self.bench_client is not None

    @property
    def calibration(self) -> ReservoirCalibration | None:
        """The reservoir calibration the station references (``[reservoir] calibration``), as a
        :class:`labrig.calibration.ReservoirCalibration`; None when the station has none (the
        procedure then measures what it needs)."""
        res = self.station.reservoir
        if res is None or res.calibration is None:
            return None
        from labrig.calibration import load_calibration

        return load_calibration(res.calibration)

    @property
    def twin(self) -> ReservoirTwin | None:
        """A noise-free digital twin of the reservoir (node-level model with derivatives), for
        the baselines that need a model of the rig (``dfa``, ``bp-twin``): only an in-process
        simulated station can supply one, built from the very parameters its bench simulates.
        None on real hardware or a served bench."""
        device = getattr(self.built, "device", None)
        model = getattr(device, "model", None)
        res = self.station.reservoir
        if res is None or model is None or not hasattr(model, "layer_vjp"):
            return None
        import dataclasses

        from labrig.physics.reservoir import DelayReservoir

        return DelayReservoir(dataclasses.replace(model.params, bias_v=res.bias_v))

    def reconnect(self, name: str) -> Instrument:
        """Close and reopen instrument ``name`` (after a dropped connection), reinstall its
        channel limits, and return the new driver. The instrument keeps its own settings."""
        old = self.instruments.get(name)
        if old is not None:
            with contextlib.suppress(Exception):
                old.adapter.close()
        inst = _connect(self.station, name, self.library)
        for ch in self.station.channels:
            if ch.instrument == name:
                inst.set_limits(ch.channel, ch.limits)
        drain_after_reconnect(name, inst)  # what the dropped session left is not the next's
        self.instruments[name] = inst
        return inst

    # ------------------------------------------------------------------ time
    def wait(self, seconds: float, should_stop: Callable[[], bool] | None = None) -> None:
        """Let ``seconds`` of device time pass: on a bench its clock advances, else we sleep.

        On hardware the sleep is sliced (50 ms) so a stop request is seen promptly.
        """
        if seconds <= 0:
            return
        if self.bench_client is not None:
            self.bench_client.wait(seconds)
            return
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (should_stop is not None and should_stop()):
                return
            time.sleep(min(left, 0.05))

    def device_time_s(self) -> float:
        """Bench time on a simulated rig (what the hardware would have needed); 0 otherwise."""
        return float(self.bench_client.time_s()) if self.bench_client is not None else 0.0

    def restore_device_clock(self, t: float) -> None:
        """On a simulated rig, move the bench's clock forward to ``t`` (resuming a run on a
        fresh bench, so its noise replays exactly); nothing on hardware."""
        if self.bench_client is not None:
            now = self.device_time_s()
            if t > now:
                self.bench_client.wait(t - now)

    def voltage_extremes(self) -> dict[str, tuple[float, float]]:
        """On a simulated rig, the extreme voltage every watched port ever output."""
        if self.bench_client is None:
            return {}
        return dict(self.bench_client.voltage_extremes())

    # ------------------------------------------------------------------ records
    def identities(self) -> dict[str, str]:
        return {name: str(inst.identity) for name, inst in self.instruments.items()}

    # ------------------------------------------------------------------ safety
    def safe_state(self) -> list[str]:
        """Bring every instrument to its safe state; returns the problems met (never raises)."""
        problems: list[str] = []
        for name, inst in self.safe_state_order().items():
            try:
                inst.safe_state()
            except Exception as exc:
                problems.append(f"{name}: safe state failed: {type(exc).__name__}: {exc}")
        return problems

    def safe_state_order(self) -> dict[str, Instrument]:
        """The instruments in the order to make them safe: DAC banks last, so generators and
        lock-in outputs are quiet before any electrode moves."""
        return dict(
            sorted(
                self.instruments.items(),
                key=lambda kv: self.station.instruments[kv[0]].info.role == "dac",
            )
        )

    def close(self) -> list[str]:
        """Safe state, then close every connection. Idempotent; never raises."""
        if self._closed:
            return []
        self._closed = True
        problems = self.safe_state()
        for name, inst in [*self.instruments.items(), ("bench", self.bench_client)]:
            if inst is None:
                continue
            try:
                inst.adapter.close()
            except Exception as exc:
                problems.append(f"{name}: close failed: {type(exc).__name__}: {exc}")
        return problems

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_rig(
    station: Station | str, pacing: str | None = None, ramp_into_range: bool | None = None
) -> Rig:
    """Connect every instrument of ``station`` (a Station, a built-in name or a file path),
    then take it over (:func:`labrig.takeover.take_over`: error queues cleared and recorded,
    generators stopped, out-of-limit levels refused or, with ``ramp_into_range``, ramped into
    range) before anything else moves."""
    if isinstance(station, str):
        station = load_station(station)
    built = None
    library: Any = "@py"
    if station.simulated_in_process:
        from labrig.sim.assemble import build_bench
        from labrig.sim.inprocess import make_visa_library

        built = build_bench(station, pacing=pacing)
        library = make_visa_library(built.emulators)
    instruments: dict[str, Any] = {}
    bench_client = None
    try:
        for name, spec in station.instruments.items():
            inst = _connect(station, name, library)
            if MODELS[spec.model].role == "bench":
                bench_client = inst
                continue
            instruments[name] = inst
        if built is not None and bench_client is None:
            from labrig.sim.assemble import BENCH_CONTROL_NAME
            from labrig.sim.control import BenchClient

            bench_client = BenchClient(
                _in_process_resource(BENCH_CONTROL_NAME), name="bench", visa_library=library
            )
        for ch in station.channels:
            instruments[ch.instrument].set_limits(ch.channel, ch.limits)
        rig = Rig(station, instruments, bench_client, built, library)
        rig.takeover = take_over(rig, ramp_into_range)
    except Exception:
        for inst in [*instruments.values(), bench_client]:
            if inst is not None:
                with contextlib.suppress(Exception):
                    inst.adapter.close()
        raise
    return rig


def _connect(station: Station, name: str, library: Any) -> Any:
    """Open instrument ``name`` of ``station`` and check it answers (its identity)."""
    spec = station.instruments[name]
    cls = _load(MODELS[spec.model].driver)
    lib = library if spec.in_process else spec.visa_library
    resource = _in_process_resource(name) if spec.in_process else spec.resource
    inst = None
    try:
        inst = cls(resource, name=name, visa_library=lib)
        # pyvisa-py opens a socket resource without connecting: ask for the identity so that
        # an unreachable instrument fails here, by name, not in the middle of a run.
        _ = inst.identity
    except Exception as exc:
        if inst is not None:
            with contextlib.suppress(Exception):
                inst.adapter.close()
        raise InstrumentConnectionError(
            f"cannot open {name} ({spec.model}) at {spec.resource} "
            f"[{spec.visa_library}] from {station.source}: {exc}"
        ) from exc
    return inst


def _in_process_resource(name: str) -> str:
    from labrig.sim.inprocess import resource_name

    return str(resource_name(name))


__all__ = ["IN_PROCESS", "Rig", "open_rig"]
