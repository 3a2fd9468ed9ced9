"""Build a virtual bench from a station: emulators for its instruments, the device, the wiring.

The bench gets one more instrument, ``bench`` (model ``labrig_bench``): a SCPI endpoint for what
only a simulator has — its clock, the voltage log, fault injection. Procedures reach it through the
same VISA path as every other instrument, so an in-process bench and a bench served over TCP
behave alike.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from threadpoolctl import threadpool_limits

from labrig.sim.bench import Bench
from labrig.sim.control import BenchControlEmulator
from labrig.sim.emulator import ScpiEmulator
from labrig.station import MODELS, Station

BENCH_CONTROL_NAME = "bench"


def _load(dotted: str) -> type:
    module, _, attr = dotted.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not isinstance(cls, type):
        raise TypeError(f"{dotted} is not a class")
    return cls


@dataclass
class BuiltBench:
    bench: Bench
    emulators: dict[str, ScpiEmulator]
    device: object


def build_bench(station: Station, pacing: str | None = None) -> BuiltBench:
    """Create the bench described by ``station``'s ``[bench]`` table (seeded, deterministic)."""
    spec = station.bench
    if spec is None:
        raise ValueError(f"station {station.name!r} ({station.source}) has no [bench] table")
    # The device models solve many small linear systems, where a multi-threaded BLAS has
    # little to split and adds thread hand-offs (not measured here: a design choice).
    threadpool_limits(limits=1, user_api="blas")
    watch = [f"{c.instrument}.ch{c.channel}" for c in station.channels]
    if station.dnpu is not None:
        watch += [f"dnpu.e{k}" for k in range(len(station.dnpu.electrode_channels))]
    bench = Bench(
        wiring=station.wiring,
        seed=spec.seed,
        pacing=(pacing or spec.pacing),  # type: ignore[arg-type]
        watch_voltages=watch,
        io_time=spec.io_time,
    )
    emulators: dict[str, ScpiEmulator] = {}
    for name, inst in station.instruments.items():
        cls = _load(MODELS[inst.model].emulator)
        emulators[name] = cls(name, bench)
    if not any(inst.model == "labrig_bench" for inst in station.instruments.values()):
        emulators[BENCH_CONTROL_NAME] = BenchControlEmulator(BENCH_CONTROL_NAME, bench)
    device = _build_device(station, bench)
    return BuiltBench(bench, emulators, device)


def _build_device(station: Station, bench: Bench) -> object:
    spec = station.bench
    assert spec is not None  # checked by build_bench
    if spec.device == "dnpu":
        from labrig.physics.noise import (
            ClockedCurrentNoise,
            DacNoiseParams,
            ReadoutChain,
            TiaParams,
        )
        from labrig.sim.devices import DnpuPart

        model: object
        if spec.surrogate:
            from labrig.physics.surrogate import SurrogateModel

            model = SurrogateModel.load(spec.surrogate)
        else:
            from labrig.physics.dnpu import DnpuModel

            model = DnpuModel(seed=spec.device_seed)
        noise = {
            "current_noise_psd_na2_per_hz": spec.current_noise_psd_na2_per_hz,
            "flicker_corner_hz": spec.flicker_corner_hz,
            "drift_na_per_sqrt_s": spec.drift_na_per_sqrt_s,
            "drift_tau_s": spec.drift_tau_s,
        }
        tia = TiaParams(**noise)
        if station.dnpu is not None:
            tia = TiaParams(
                gain_na_per_v=station.dnpu.tia_gain_na_per_v,
                bandwidth_hz=station.dnpu.tia_bandwidth_hz,
                saturation_v=station.dnpu.tia_saturation_v,
                **noise,
            )
        # The current noise is one process on the bench clock, seeded by the bench's seed.
        clocked = ClockedCurrentNoise(tia, seed=[spec.seed, 0xD1])
        dac = DacNoiseParams(lsb_v=spec.dac_lsb_v, noise_v_per_sqrt_hz=spec.dac_noise_v_per_sqrt_hz)
        return DnpuPart(bench, model, ReadoutChain(tia, clocked), dac_noise=dac)
    if spec.device == "reservoir":
        from labrig.physics.reservoir import DelayReservoir, ReservoirParams
        from labrig.sim.devices import ReservoirPart

        params = ReservoirParams()
        if station.reservoir is not None:
            # The bench steps the loop at the AWG's top rate (250 MSa/s), or 10 steps per node
            # if that is finer, rather than the model's 1 GHz default: respond() integrates the
            # PD low-pass exactly over each held step, so the node plateaus agree with a 1 GHz
            # simulation to within the PD noise, at a quarter of the cost (the in-loop DFA
            # training sends every sample of every epoch through here).
            node_s = station.reservoir.node_duration_s
            optics = {
                k: v
                for k in ("v_pi", "pd_gain_v_per_w", "feedback_gain")
                if (v := getattr(spec, k)) is not None
            }
            params = ReservoirParams(
                node_count=station.reservoir.node_count,
                node_duration_s=node_s,
                internal_rate_hz=max(250e6, 10.0 / node_s),
                **optics,
            )
        return ReservoirPart(bench, DelayReservoir(params))
    from labrig.sim.devices import RcPart

    return RcPart(bench, spec.resistance_ohm, spec.capacitance_f)
