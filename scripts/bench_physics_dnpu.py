"""Benchmark and characterise the DNPU model.

Prints
1. milliseconds per 3000-sample smooth trace (0.3 s at 10 kHz, a slow input ramp plus HGE-like
   sines on the controls) for ``current_trace_na`` with the compiled kernel (the default) and
   with the numpy reference path (``method="reference"``, the previous default), measured in the
   same run, with their ratio; the exact per-sample ``current_na`` on the same traces; the
   largest difference of each trace path from it (absolute and relative to the largest |I|);
   the device-time ratio (0.3 s of acquisition over the compute time; > 1 means faster than the
   real rig); and ``current_na`` on 10 000 random points (the brute-force gate searches);
2. for seeds 0..4: the fraction of random control settings that realise each of the six common
   gates (AND, OR, NAND, NOR, XOR, XNOR, 1 nA separation), how many of the 16 functions appear,
   and the fraction of single-electrode sweeps whose current reverses direction by > 1 nA.

Run on one core, as the targets are stated::

    .venv/bin/python scripts/bench_physics_dnpu.py [--controls 4000] [--seeds 5]
    .venv/bin/python scripts/bench_physics_dnpu.py --smoke       # seconds, for CI
"""

from __future__ import annotations

import os

# One BLAS thread: the targets are per core, and threaded BLAS only adds overhead at these sizes.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from labrig.algorithms.boolean import (  # noqa: E402
    COMMON_GATES,
    boolean_outputs,
    function_table,
)
from labrig.algorithms.hge import AUTHORS_PLAN  # noqa: E402
from labrig.physics.dnpu import ACTIVATION_COUNT, DnpuModel  # noqa: E402

FS_HZ = 10e3
TRACE_SAMPLES = 3000
# The authors' HGE plan on the controls (electrodes 2-6); the inputs (0, 1) carry none.
HGE_FREQS_HZ = np.array([0.0, 0.0, *AUTHORS_PLAN.frequencies_hz])
HGE_AMPS_V = np.array([0.0, 0.0, *AUTHORS_PLAN.amplitudes_v])


def _ranges(model: DnpuModel) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(model.activation_ranges_v)
    return r[:, 0], r[:, 1]


def bench_trace(model: DnpuModel, traces: int, seed: int) -> None:
    lo, hi = _ranges(model)
    rng = np.random.default_rng(seed)
    t = np.arange(TRACE_SAMPLES) / FS_HZ
    timings: dict[str, list[float]] = {"kernel": [], "reference": [], "exact": []}
    worst_abs = {"kernel": 0.0, "reference": 0.0}
    worst_rel = {"kernel": 0.0, "reference": 0.0}
    model.current_trace_na(np.zeros((3, ACTIVATION_COUNT)), method="kernel")  # compile / load
    for _ in range(traces):
        base = lo + (hi - lo) * rng.random(ACTIVATION_COUNT)
        v = base + HGE_AMPS_V * np.sin(2 * np.pi * HGE_FREQS_HZ * t[:, None])
        v[:, 0] += np.linspace(0.0, 0.3, TRACE_SAMPLES)  # slow input ramp
        t0 = time.perf_counter()
        exact = model.current_na(v)
        timings["exact"].append((time.perf_counter() - t0) * 1e3)
        for method in ("kernel", "reference"):
            model.current_trace_na(v[:64], method=method)  # warm caches
            best = np.inf
            for _repeat in range(3):
                t0 = time.perf_counter()
                out = model.current_trace_na(v, method=method)
                best = min(best, (time.perf_counter() - t0) * 1e3)
            timings[method].append(best)
            diff = float(np.max(np.abs(out - exact)))
            worst_abs[method] = max(worst_abs[method], diff)
            worst_rel[method] = max(worst_rel[method], diff / float(np.max(np.abs(exact))))
    k, r, e = (float(np.median(timings[m])) for m in ("kernel", "reference", "exact"))
    acquisition_ms = TRACE_SAMPLES / FS_HZ * 1e3
    print(f"3000-sample HGE-like trace, median of {traces} traces (seed {model.seed}):")
    print(f"  current_trace_na (kernel)    : {k:8.1f} ms")
    print(f"  current_trace_na (reference) : {r:8.1f} ms   (kernel {r / k:.1f}x faster)")
    print(f"  current_na (exact, per point): {e:8.1f} ms   (kernel {e / k:.1f}x faster)")
    for m in ("kernel", "reference"):
        print(f"  max |{m} - exact| = {worst_abs[m]:.2e} nA ({worst_rel[m]:.1e} of max |I|)")
    print(f"  device-time ratio (0.3 s acquisition / kernel compute) = {acquisition_ms / k:.1f}")
    points = lo + (hi - lo) * rng.random((10_000, ACTIVATION_COUNT))
    t0 = time.perf_counter()
    model.current_na(points)
    print(f"current_na on 10 000 random points: {(time.perf_counter() - t0) * 1e3:.0f} ms")


def gate_statistics(seeds: int, controls: int) -> None:
    names = list(COMMON_GATES)
    print(f"\nRandom control settings ({controls} per seed), gate found at >= 1 nA separation:")
    print("seed  " + "  ".join(f"{g:>6}" for g in names) + "  funcs  all6  reversing  |I| median")
    for seed in range(seeds):
        model = DnpuModel(seed)
        lo, hi = _ranges(model)
        rng = np.random.default_rng(1000 + seed)
        ctrl = lo[2:] + (hi[2:] - lo[2:]) * rng.random((controls, 5))
        out = boolean_outputs(model, ctrl)
        table = function_table(out)
        frac = [100 * table[:, COMMON_GATES[g]].mean() for g in names]
        all6 = all(table[:, COMMON_GATES[g]].any() for g in names)
        # Single-electrode sweeps over the full range from random points.
        n_sweeps, grid = 200, np.linspace(0, 1, 61)
        base = lo + (hi - lo) * rng.random((n_sweeps, ACTIVATION_COUNT))
        elec = rng.integers(ACTIVATION_COUNT, size=n_sweeps)
        volts = np.repeat(base[:, None, :], grid.size, axis=1)
        for k in range(n_sweeps):
            volts[k, :, elec[k]] = lo[elec[k]] + (hi[elec[k]] - lo[elec[k]]) * grid
        i = model.current_na(volts.reshape(-1, ACTIVATION_COUNT)).reshape(n_sweeps, -1)
        rise = np.max(i - np.minimum.accumulate(i, axis=1), axis=1)
        fall = np.max(np.maximum.accumulate(i, axis=1) - i, axis=1)
        reversing = 100 * np.mean((rise > 1.0) & (fall > 1.0))
        print(
            f"{seed:4d}  "
            + "  ".join(f"{x:5.2f}%" for x in frac)
            + f"  {int(table.any(axis=0).sum()):5d}  {'yes' if all6 else 'no':>4}"
            + f"  {reversing:8.1f}%  {np.median(np.abs(out)):8.1f} nA"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controls", type=int, default=4000, help="control sets per seed")
    parser.add_argument("--seeds", type=int, default=5, help="devices (seeds 0..N-1)")
    parser.add_argument("--traces", type=int, default=5, help="traces to time")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes (1 trace, 1 seed, 300 controls), for CI"
    )
    args = parser.parse_args()
    if args.smoke:
        args.traces, args.seeds, args.controls = 1, 1, 300
    bench_trace(DnpuModel(0), args.traces, seed=7)
    gate_statistics(args.seeds, args.controls)


if __name__ == "__main__":
    main()
