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
5. One aug-DFA training epoch on digits (CLI defaults: 2 layers x 100 nodes, mini-batches of
   32; ``--epoch-samples`` training samples, 0 = all 1347) with its test pass: device and wall
   time per epoch, as the procedure reports them.

Usage: ``python scripts/bench_physics.py [--repeats N] [--smoke]`` (``--smoke``: one repeat,
a 200-sample layer and a 64-sample epoch, ~15 s).
"""

from __future__ import annotations

import argparse
import tempfile
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
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (CI)")
    parser.add_argument(
        "--epoch-samples", type=int, default=640, help="training samples of the epoch case"
    )
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.epoch_samples = 1, 64
    layer_samples = 200 if args.smoke else 1600
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
        a = np.random.default_rng(5).uniform(-1.8, 1.8, size=(layer_samples, 100))
        timings, devices = [], []
        for _ in range(max(3, args.repeats // 2)):
            d0, t0 = rig.device_time_s(), time.perf_counter()
            dfa.physical_layer(0, a)
            timings.append(time.perf_counter() - t0)
            devices.append(rig.device_time_s() - d0)
        i = int(np.argmin(timings))
        report(
            f"reservoir DFA layer, {layer_samples} samples via the bench",
            timings[i],
            devices[i],
            "(incl. waveform upload and 4 M-point record transfer)",
        )
        # Where that wall time goes: the host's encode and decode, and the loop simulation
        # of the same waveform (with and without its PD noise) at the bench's internal rate.
        from labrig.algorithms import reservoir_io as rio

        layer = dfa._layer
        drive = dfa._drive(a)
        full = np.full((drive.shape[0], layer.spec.node_count), layer.spec.guard_drive_v)
        full[:, : dfa.nodes] = drive
        enc = best_of(lambda: rio.encode(full, layer.spec, layer.fs_awg), args.repeats)
        wave, layout = rio.encode(full, layer.spec, layer.fs_awg)
        assert layer.last_trace is not None
        dec = best_of(
            lambda: rio.decode_detailed(
                layer.last_trace, layer.last_fs_trace, layout, cal_states=layer.cal_states
            ),
            args.repeats,
        )
        model = rig.built.device.model  # type: ignore[attr-defined]
        quiet = best_of(lambda: model.respond_internal(wave, layer.fs_awg, 0.0), args.repeats)
        noisy = best_of(
            lambda: model.respond_internal(wave, layer.fs_awg, 0.0, np.random.default_rng(0)),
            args.repeats,
        )
        steps = wave.size * round(model.params.internal_rate_hz / layer.fs_awg)
        print(
            f"  of which: encode {enc * 1e3:.1f} ms, decode {dec * 1e3:.1f} ms, loop "
            f"{quiet * 1e3:.1f} ms + PD noise {(noisy - quiet) * 1e3:.1f} ms "
            f"({steps / 1e6:.2f} M internal steps, {noisy / steps * 1e9:.1f} ns/step); the rest "
            f"is SCPI, the emulators' waveform shaping and capture, and transfers"
        )
    finally:
        dfa_rig.close()  # safe state, then close

    # -- one aug-DFA epoch as the procedure runs it (device and wall per epoch, its own figures)
    from labrig.shell import run_on_station

    n = args.epoch_samples
    with tempfile.TemporaryDirectory(prefix="bench-physics-") as runs:
        result = run_on_station(
            DfaTraining(epochs=2, train_samples=n, test_samples=max(32, n // 3)),
            "sim-reservoir",
            runs_dir=runs,
            echo=False,
            handle_signals=False,
        )
    s = result.summary
    report(
        f"aug-DFA epoch, digits, {n or 1347} train + {max(32, n // 3)} test samples",
        float(s["wall_time_per_epoch_s"]),
        float(s["device_time_per_epoch_s"]),
        "(per epoch; target: 10x, goal 20x)",
    )


if __name__ == "__main__":
    main()
