"""Bench evaluation speed against the device time it simulates (the physics issue's benchmark).

Prints, for each case, the wall time per evaluation, the device time it stands for, and their
ratio (how many times faster than the real instruments the simulation runs):

1. DNPU model only: a 0.3 s acquisition at 10 kHz with 7 electrodes moving (input ramp and
   five perturbation sines), through ``current_trace_na`` and the TIA chain; the numba kernel
   against the numpy reference path, in the same run.
2. DNPU through the whole bench: the same acquisition as a procedure makes it — trace upload to
   the QDAC-II, marker-triggered scope record, transfer — with device time read off the bench
   clock (instrument I/O included).
3. Reservoir: one 100-node layer over 10^4 node steps through ``DelayReservoir.respond`` at the
   built-in station's internal rate (numba kernel and numpy reference path, same run), and
   through the node-level twin.
4. Reservoir through the whole bench: one DFA physical layer as the procedure plays it — a
   1,000,000-point AWG waveform (40 ms at 25 MSa/s), a 4 M-point scope record, the transfers —
   with device time read off the bench clock.

Usage: ``python scripts/bench_physics.py [--repeats N]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from labrig.algorithms.hge import AUTHORS_PLAN
from labrig.physics.dnpu import DEFAULT_ACTIVATION_RANGES_V
from labrig.rig import open_rig


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (s), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def dnpu_voltages(fs: float = 10e3, duration: float = 0.3) -> np.ndarray:
    t = np.arange(round(fs * duration)) / fs
    v = np.zeros((t.size, 7))
    (lo0, hi0), (lo1, hi1) = DEFAULT_ACTIVATION_RANGES_V[:2]
    v[:, 0] = lo0 + (hi0 - lo0) * t / duration  # input ramps across their ranges
    v[:, 1] = hi1 - (hi1 - lo1) * t / duration
    plan = zip(AUTHORS_PLAN.frequencies_hz, AUTHORS_PLAN.amplitudes_v, strict=True)
    for j, (f, a) in enumerate(plan):
        v[:, 2 + j] = -0.3 + a * np.sin(2 * np.pi * f * t)
    return v


def report(label: str, wall_s: float, device_s: float, target: str = "") -> None:
    ratio = device_s / wall_s if wall_s > 0 else float("inf")
    print(
        f"{label:58s} {wall_s * 1e3:9.2f} ms  device {device_s * 1e3:9.2f} ms  "
        f"x{ratio:8.1f} {target}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threadpool_limits(limits=1, user_api="blas")

    from labrig.physics.dnpu import DnpuModel
    from labrig.physics.noise import ReadoutChain

    print("case" + " " * 55 + "wall/eval     device time      faster than hardware")
    model = DnpuModel(seed=0)
    chain = ReadoutChain()
    v = dnpu_voltages()
    rng = np.random.default_rng(0)
    kernel = best_of(
        lambda: chain.output_v(model.current_trace_na(v, method="kernel"), 10e3, rng), args.repeats
    )
    reference = best_of(
        lambda: chain.output_v(model.current_trace_na(v, method="reference"), 10e3, rng),
        max(1, args.repeats // 2),
    )
    report("DNPU 0.3 s @ 10 kHz, 7 electrodes: numba kernel", kernel, 0.3, "(target <= 15 ms)")
    report("DNPU 0.3 s @ 10 kHz, 7 electrodes: numpy reference", reference, 0.3)
    print(f"{'  kernel speed-up over the reference path':58s} x{reference / kernel:.1f}")

    # -- the same acquisition through drivers, emulators and the bench clock
    from labrig.procedures.hge import HgeTraining

    proc = HgeTraining()
    hge_rig = open_rig("sim-dnpu")
    proc.bind_rig(hge_rig)
    proc.startup()
    try:
        controls = np.array([-0.3, -0.5, -0.2, -0.4, -0.1])
        rig = proc.require_rig()
        timings = []
        devices = []
        for _ in range(args.repeats):
            d0, t0 = rig.device_time_s(), time.perf_counter()
            proc._measure_parallel(controls)
            timings.append(time.perf_counter() - t0)
            devices.append(rig.device_time_s() - d0)
        i = int(np.argmin(timings))
        report(
            "HGE measurement (4 cases, 0.28 s playback) via the bench",
            timings[i],
            devices[i],
            "(incl. trace upload and record transfer)",
        )
    finally:
        hge_rig.close()  # safe state, then close

    # -- reservoir
    from labrig.physics.reservoir import DelayReservoir, ReservoirParams
    from labrig.station import load_station

    res = load_station("sim-reservoir").reservoir
    assert res is not None
    params = ReservoirParams(
        node_count=100,
        node_duration_s=res.node_duration_s,
        internal_rate_hz=max(250e6, 10.0 / res.node_duration_s),
    )
    reservoir = DelayReservoir(params)
    steps = 10_000  # node steps = 100 delay periods of 100 nodes
    fs_awg = 1.0 / params.node_duration_s
    drive = np.repeat(np.random.default_rng(1).uniform(-1, 1, steps), 1)
    for method in ("kernel", "reference"):
        layer = best_of(
            lambda m=method: reservoir.respond(  # type: ignore[misc]
                drive, fs_awg, rng=np.random.default_rng(2), method=m
            ),
            args.repeats,
        )
        report(
            f"reservoir: 100-node layer, 10^4 node steps ({method})",
            layer,
            steps * params.node_duration_s,
            "(target <= 50 ms)" if method == "kernel" else "",
        )
    j = np.random.default_rng(3).uniform(-1, 1, (100, 100))
    twin = best_of(lambda: reservoir.layer_nodes(j, periods=1), args.repeats)
    report(
        "reservoir twin: 100 samples x 100 nodes, 1 period each",
        twin,
        100 * (params.node_count + params.desync_nodes) * params.node_duration_s,
    )

    # -- one DFA layer through drivers, emulators and the bench
    from labrig.procedures.dfa import DfaTraining

    dfa = DfaTraining(nodes=100, train_samples=8)
    dfa_rig = open_rig("sim-reservoir")
    dfa.bind_rig(dfa_rig)
    dfa.startup()
    try:
        rig = dfa.require_rig()
        dfa.physical_layer(0, np.zeros((8, 100)))  # warm-up: compiled kernels, scope set-up
        a = np.random.default_rng(5).uniform(-1.8, 1.8, size=(1600, 100))
        timings, devices = [], []
        for _ in range(max(3, args.repeats // 2)):
            d0, t0 = rig.device_time_s(), time.perf_counter()
            dfa.physical_layer(0, a)
            timings.append(time.perf_counter() - t0)
            devices.append(rig.device_time_s() - d0)
        i = int(np.argmin(timings))
        report(
            "reservoir DFA layer, 1600 samples (1 M AWG pts) via the bench",
            timings[i],
            devices[i],
            "(incl. waveform upload and 4 M-point record transfer)",
        )
    finally:
        dfa_rig.close()  # safe state, then close


if __name__ == "__main__":
    main()
