"""Benchmark ``labrig sweep``: Dask workers against the same points run serially, on this machine.

Runs one HGE sweep (tasks x device seeds, a few iterations per point) three ways:

1. serially in this process, one ``run_on_station`` after another (the baseline; one warm-up
   point first so that the JIT compilation is not charged to it);
2. with ``run_sweep`` on a LocalCluster of N single-threaded worker processes, started and
   warmed up beforehand (steady state: what a long sweep sees);
3. the same sweep end to end from a cold start (cluster start, worker imports, JIT), as the
   ``labrig sweep`` command pays it.

It prints the speed-up of (2) over (1), the scheduling overhead per point — the worker time not
spent inside a run, ``(N x wall - sum of run wall times) / points``, which counts Dask, the driver,
station files, the table and the idle tail — and Dask's bare round trip for an empty task, then a
paper estimate of a 1000-device study on a 64-core cluster from the measured per-point cost.

Usage::

    .venv/bin/python scripts/bench_sweep.py --smoke     # CI: 2 small points, cold cluster only
    .venv/bin/python scripts/bench_sweep.py             # 12 points x 5 iterations, 2 workers
    .venv/bin/python scripts/bench_sweep.py --points 24 --iterations 10 --workers 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from labrig.procedures.hge import HgeTraining
from labrig.runs.record import RunRecord
from labrig.shell import run_on_station
from labrig.station import builtin_station_path
from labrig.sweep import SweepSpec, read_table, run_sweep
from labrig.sweep.driver import local_cluster

TASKS = ("AND", "OR", "NAND", "NOR", "XOR", "XNOR")
TARGET_SPEEDUP_2 = 1.7
STUDY_DEVICES = 1000
STUDY_FUNCTIONS = 6
STUDY_CORES = 64
STUDY_ITERATIONS = 100  # per start, the authors' budget (3 starts at most; one assumed here)


def station_with_device(device_seed: int, folder: Path) -> str:
    text = builtin_station_path("sim-dnpu").read_text(encoding="utf-8")
    path = folder / f"device{device_seed}.toml"
    path.write_text(text.replace("device_seed = 0", f"device_seed = {device_seed}"), "utf-8")
    return str(path)


def grid(points: int) -> tuple[list[str], list[int]]:
    tasks = list(TASKS[: min(len(TASKS), max(1, points // 2))])
    devices = max(1, -(-points // len(tasks)))
    return tasks, list(range(devices))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--points", type=int, default=12, help="sweep points (tasks x devices)")
    parser.add_argument("--iterations", type=int, default=5, help="HGE iterations per point")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.smoke:
        args.points, args.iterations = 2, 2
    tasks, devices = grid(args.points)
    fixed = {"max_iterations": args.iterations, "initializations": 1}
    spec = SweepSpec("hge", fixed=fixed, grid={"task": tasks, "device_seed": devices})
    n = len(tasks) * len(devices)
    print(
        f"HGE sweep: {len(tasks)} tasks x {len(devices)} devices = {n} points, "
        f"{args.iterations} iteration(s) each; {args.workers} workers; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # 1. serial baseline
        run_on_station(
            HgeTraining(task="AND", **fixed), "sim-dnpu", runs_dir=folder / "warm",
            handle_signals=False,
        )  # fmt: skip
        t0 = time.perf_counter()
        serial_runs: list[float] = []
        per_iteration: list[float] = []
        fixed_cost: list[float] = []
        for task in tasks:
            for dev in devices:
                result = run_on_station(
                    HgeTraining(task=task, **fixed),
                    station_with_device(dev, folder),
                    runs_dir=folder / "serial",
                    handle_signals=False,
                )
                serial_runs.append(result.wall_time_s)
                # Per-iteration cost from the record's event times; the rest is start-up.
                times = RunRecord.open(result.run_dir, load_arrays=False).events.time
                if len(times) >= 2:
                    step = float(np.median(np.diff(times)))
                    per_iteration.append(step)
                    fixed_cost.append(result.wall_time_s - step * len(times))
        serial_s = time.perf_counter() - t0
        per_point_s = serial_s / n
        print(f"serial:            {serial_s:7.2f} s  ({per_point_s:.3f} s per point)", flush=True)

        # 2. steady state on a warmed-up LocalCluster (the smoke run goes straight to 3)
        from distributed import Client

        if args.smoke:
            return _cold(spec, folder, args, serial_s, per_iteration, fixed_cost, per_point_s)
        t_cluster = time.perf_counter()
        cluster = local_cluster(args.workers)  # as labrig sweep starts one
        client = Client(cluster)
        try:
            warm = SweepSpec(
                "hge", fixed=fixed, grid={"task": ["AND"], "seed": list(range(args.workers))}
            )
            run_sweep(warm, runs_dir=folder / "warm", scheduler=client, progress=None)
            warm_s = time.perf_counter() - t_cluster
            empty = [client.submit(int, k, pure=False) for k in range(200)]
            t0 = time.perf_counter()
            client.gather([client.submit(int, k, pure=False) for k in range(200)])
            dask_rt_s = (time.perf_counter() - t0) / 200
            del empty
            t0 = time.perf_counter()
            swept = run_sweep(spec, runs_dir=folder / "par", scheduler=client, progress=None)
            parallel_s = time.perf_counter() - t0
        finally:
            client.close()
            cluster.close()
        assert swept.complete, swept.counts
        table = read_table(swept.sweep_dir)
        run_sum = float(table["wall_time_s"].sum())
        overhead_s = (args.workers * parallel_s - run_sum) / n
        speedup = serial_s / parallel_s
        print(
            f"{args.workers} workers (warm): {parallel_s:7.2f} s  speed-up {speedup:.2f}x "
            f"(target >= {TARGET_SPEEDUP_2}x with 2 workers; ideal {args.workers}x)",
            flush=True,
        )
        print(
            f"  overhead per point: {overhead_s * 1e3:.0f} ms of worker time outside runs "
            f"(run wall time per point: {run_sum / n:.3f} s in the sweep, "
            f"{statistics.fmean(serial_runs):.3f} s serially); "
            f"Dask's round trip for an empty task: {dask_rt_s * 1e3:.1f} ms",
            flush=True,
        )
        print(f"  cluster start and warm-up: {warm_s:.1f} s (paid once per sweep)", flush=True)

        # 3. end to end from cold, as the command pays it
        _cold(spec, folder, args, serial_s, per_iteration, fixed_cost, per_point_s, estimate=False)

    return _estimate(per_iteration, fixed_cost, per_point_s, args, overhead_s, speedup)


def _cold(
    spec: SweepSpec,
    folder: Path,
    args: argparse.Namespace,
    serial_s: float,
    per_iteration: list[float],
    fixed_cost: list[float],
    per_point_s: float,
    estimate: bool = True,
) -> int:
    """The sweep end to end from a cold start (cluster, worker imports, JIT), as
    ``labrig sweep`` pays it; with ``estimate``, the study estimate from these figures."""
    t0 = time.perf_counter()
    cold = run_sweep(spec, runs_dir=folder / "cold", workers=args.workers, progress=None)
    cold_s = time.perf_counter() - t0
    assert cold.complete, cold.counts
    table = read_table(cold.sweep_dir)
    n = len(table)
    overhead_s = (args.workers * cold_s - float(table["wall_time_s"].sum())) / n
    print(
        f"{args.workers} workers (cold, end to end): {cold_s:7.2f} s  speed-up "
        f"{serial_s / cold_s:.2f}x; worker time outside runs {overhead_s:.2f} s per point "
        "(cluster start included)",
        flush=True,
    )
    if not estimate:
        return 0
    print("(smoke: the cold start is charged to each point below; run without --smoke)")
    return _estimate(per_iteration, fixed_cost, per_point_s, args, overhead_s, serial_s / cold_s)


def _estimate(
    per_iteration: list[float],
    fixed_cost: list[float],
    per_point_s: float,
    args: argparse.Namespace,
    overhead_s: float,
    speedup: float,
) -> int:
    """Paper estimate: a study point costs the start-up and per-iteration cost measured here
    (medians over the serial runs) for the authors' iteration budget, plus the overhead."""
    if per_iteration:
        per_iteration_s = float(np.median(per_iteration))
        start_s = max(0.0, float(np.median(fixed_cost)))
    else:  # one-iteration points: no spacing to measure; charge the whole point per iteration
        per_iteration_s, start_s = per_point_s / max(args.iterations, 1), 0.0
    efficiency = speedup / args.workers
    study_points = STUDY_DEVICES * STUDY_FUNCTIONS
    point_s = start_s + per_iteration_s * STUDY_ITERATIONS + max(overhead_s, 0.0)
    hours = study_points * point_s / (STUDY_CORES * min(efficiency, 1.0)) / 3600
    serial_h = study_points * point_s / 3600
    print(
        f"\nPaper estimate: {STUDY_DEVICES} devices x {STUDY_FUNCTIONS} functions = "
        f"{study_points} points of {STUDY_ITERATIONS} iterations (measured here: "
        f"{per_iteration_s:.3f} s per iteration, {start_s:.2f} s start-up and "
        f"{max(overhead_s, 0.0) * 1e3:.0f} ms overhead per point): "
        f"{serial_h:.0f} h on one core; {hours:.1f} h on {STUDY_CORES} cores at the "
        f"{efficiency:.0%} parallel efficiency measured here",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
