"""Benchmark HGE training of Boolean functions on simulated DNPUs (Boon et al. 2025).

For every device seed it first asks the noise-free device model which two-input functions the
device *can* realise (random control sets, the same separation gap as the procedure), then
trains each function with the ``hge`` procedure on a bench built for that device and reports
success among the realisable ones, and the iterations and device time to a found gate.
``--modes`` compares the gradient read-outs (digital, sequential, lockin) on the default device.

Functions are named by their truth string over the input cases (0,0), (0,1), (1,0), (1,1):
XOR is ``0110``. The constant functions ``0000`` and ``1111`` are not trained (a correlation
loss has nothing to learn from them); they are counted as realised when the brute force finds
a control set whose four outputs lie within the gap of each other.

Usage::

    .venv/bin/python scripts/bench_hge_gates.py --smoke                 # seconds, for CI
    .venv/bin/python scripts/bench_hge_gates.py --quick                 # gates on 2 seeds
    .venv/bin/python scripts/bench_hge_gates.py --seeds 20 --functions all
    .venv/bin/python scripts/bench_hge_gates.py --seeds 0 --modes --modes-max-iterations 40
    .venv/bin/python scripts/bench_hge_gates.py --model-study --seeds 8   # losses x restarts

``--model-study`` runs the trainer on the noise-free model with its exact gradient (no bench):
the losses (corsig, MSE-with-fit, Fisher) and restart strategies (the authors' 3 starts, random
probes at each start, restart after a stall) compared within the same measurement budget.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labrig.algorithms.boolean import boolean_outputs, boolean_voltages, function_table
from labrig.algorithms.hge_trainer import HgeConfig, HgeTrainer, Measurement
from labrig.algorithms.tasks import boolean_task, truth_string
from labrig.physics.dnpu import DnpuModel
from labrig.procedures.hge import HgeTraining
from labrig.shell import run_on_station
from labrig.sweep import SweepSpec, read_table, run_sweep

GATES = ("AND", "OR", "NAND", "NOR", "XOR", "XNOR")
MODES = ("digital", "sequential", "lockin")
TARGET_MEDIAN_ITERATIONS = 50
TARGET_ALL_FUNCTIONS_FRACTION = 0.9


NON_CONSTANT = tuple(truth_string(t) for t in range(1, 15))


def gate_truth(name: str) -> str:
    return "".join(str(int(v)) for v in boolean_task(name).targets)


def realisable(device_seed: int, samples: int, min_gap_na: float, seed: int = 0) -> set[str]:
    """Truth strings the noise-free device realises at some of ``samples`` random control sets.

    Controls are drawn in the ranges the procedure trains in (activation range less the
    perturbation amplitude), so a realisable function is one the trainer could reach.
    """
    model = DnpuModel(seed=device_seed)
    probe = HgeTraining(task="AND")
    amps = probe._frequency_plan(5).amplitudes_v
    ranges = np.array(model.activation_ranges_v)[2:]
    lo = ranges[:, 0] + np.array(amps)
    hi = ranges[:, 1] - np.array(amps)
    rng = np.random.default_rng(seed)
    found: set[str] = set()
    for start in range(0, samples, 2000):
        n = min(2000, samples - start)
        controls = lo + (hi - lo) * rng.random((n, lo.size))
        table = function_table(boolean_outputs(model, controls), min_gap_na)
        found |= {truth_string(int(t)) for t in np.nonzero(table.any(axis=0))[0]}
    return found


@dataclass(frozen=True)
class Outcome:
    device_seed: int
    truth: str
    mode: str
    found: bool
    iterations: int
    device_time_s: float
    wall_time_s: float
    status: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def train(
    station: str,
    device_seed: int,
    truth: str,
    mode: str,
    max_iterations: int,
    initializations: int,
    runs_dir: Path,
) -> Outcome:
    proc = HgeTraining(
        task=truth,
        mode=mode,
        max_iterations=max_iterations,
        initializations=initializations,
    )
    t0 = time.perf_counter()
    result = run_on_station(proc, station, runs_dir=runs_dir, echo=False, handle_signals=False)
    s = result.summary
    return Outcome(
        device_seed,
        truth,
        mode,
        bool(s.get("found", False)),
        int(s.get("iterations", 0)),
        float(result.device_time_s),
        time.perf_counter() - t0,
        str(result.status),
    )


# ------------------------------------------------------------------ trainer study on the model
STUDY_CLIP_NA = 0.97 * 350.0  # the procedure's saturation test (TIA rails at 350 nA)
#: (label, loss, random probes per start, stall iterations): the strategies compared.
STUDY_CONFIGS = (
    ("corsig, 3 starts (authors)", "corsig", 0, 0),
    ("fisher, 3 starts", "fisher", 0, 0),
    ("mse_with_fit, 3 starts", "mse_with_fit", 0, 0),
    ("corsig, 20 probes/start", "corsig", 20, 0),
    ("fisher, 20 probes/start", "fisher", 20, 0),
    ("mse_with_fit, 20 probes/start", "mse_with_fit", 20, 0),
    ("corsig, restart after 15 stalled", "corsig", 0, 15),
    ("corsig, 20 probes + restart after 15 stalled", "corsig", 20, 15),
    ("corsig, 40 probes/start", "corsig", 40, 0),
)


def model_study(
    seeds: list[int],
    samples: int,
    min_gap: float,
    budget: tuple[int, int],
    configs: tuple[tuple[str, str, int, int], ...] = STUDY_CONFIGS,
) -> None:
    """The trainer on the noise-free model with its exact gradient (what HGE estimates): which
    loss and restart strategy finds the realisable functions, at a fraction of the bench's cost.
    The procedure's settings otherwise (Adam, learning rate, ranges, gap)."""
    probe = HgeTraining(task="AND")
    amps = np.array(probe._frequency_plan(5).amplitudes_v)
    iterations, starts = budget
    rows: dict[str, list[tuple[int, str, bool, int]]] = {c[0]: [] for c in configs}
    for dev in seeds:
        model = DnpuModel(seed=dev)
        ranges = np.array(model.activation_ranges_v)[2:]
        lo, hi = ranges[:, 0] + amps, ranges[:, 1] - amps

        def measure(controls: np.ndarray, model: DnpuModel = model) -> Measurement:
            volts = boolean_voltages(model, controls)[0]
            out = np.asarray(model.current_na(volts))
            jac = np.asarray(model.gradient_na_per_v(volts))[:, 2:]
            return Measurement(out, jac, bool(np.max(np.abs(out)) >= STUDY_CLIP_NA))

        able = sorted(realisable(dev, samples, min_gap) & set(NON_CONSTANT))
        for label, loss, probes, stall in configs:
            for truth in able:
                config = HgeConfig(
                    control_ranges_v=tuple(zip(lo, hi, strict=True)),
                    learning_rate=float(probe.learning_rate),
                    optimizer=str(probe.optimizer),
                    max_iterations=iterations,
                    n_initializations=starts,
                    loss=loss,
                    min_gap=min_gap,
                    probes_per_start=probes,
                    stall_iterations=stall,
                )
                trainer = HgeTrainer(measure, boolean_task(truth).targets, config, seed=dev)
                found = trainer.run().found
                rows[label].append((dev, truth, found, trainer.n_measurements))
        print(f" device {dev}: {len(able)} realisable functions studied", flush=True)
    gates = {gate_truth(g) for g in GATES}
    print(
        f"\nTrainer study on the noise-free model (exact gradients), {len(seeds)} devices, "
        f"{starts} x {iterations} iterations:"
    )
    print(f"  {'strategy':<34} {'found':>9} {'rate':>6} {'gates':>9} {'med it':>7}")
    for label, *_ in configs:
        r = rows[label]
        hits = [x for x in r if x[2]]
        g = [x for x in r if x[1] in gates]
        print(
            f"  {label:<34} {len(hits):>4}/{len(r):<4} {len(hits) / max(1, len(r)):>6.1%} "
            f"{sum(x[2] for x in g):>4}/{len(g):<4} "
            f"{median_or_nan([x[3] for x in hits]):>7.0f}"
        )


def name_of(truth: str) -> str:
    return boolean_task(truth).name


def median_or_nan(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def print_outcome(o: Outcome) -> None:
    print(
        f"  seed {o.device_seed:>2} {name_of(o.truth):<12} {o.truth} {o.mode:<10} "
        f"{'found' if o.found else 'NOT found':<9} {o.iterations:>4} it  "
        f"device {o.device_time_s:7.1f} s  wall {o.wall_time_s:6.1f} s  [{o.status}]",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the six gates on devices 0 and 1")
    parser.add_argument(
        "--smoke", action="store_true", help="AND and XOR on device 0, a short budget (for CI)"
    )
    parser.add_argument("--seeds", type=int, default=None, help="device seeds 0..N-1 (20)")
    parser.add_argument("--seed-list", default=None, help="explicit device seeds, e.g. 0,3,7")
    parser.add_argument("--functions", choices=["gates", "all"], default=None)
    parser.add_argument("--mode", choices=MODES, default="digital")
    parser.add_argument("--max-iterations", type=int, default=100)
    parser.add_argument("--initializations", type=int, default=3)
    parser.add_argument("--brute-force", type=int, default=None, help="random control sets (20000)")
    parser.add_argument("--modes", action="store_true", help="compare modes on device 0")
    parser.add_argument("--modes-only", action="store_true", help="only the mode comparison")
    parser.add_argument(
        "--modes-max-iterations", type=int, default=30, help="per start, in the mode comparison"
    )
    parser.add_argument("--json", default=None, help="write every outcome to this file")
    parser.add_argument(
        "--workers", type=int, default=None, help="sweep workers (default: one per core)"
    )
    parser.add_argument(
        "--model-study",
        action="store_true",
        help="compare losses and restart strategies on the noise-free model (no bench)",
    )
    parser.add_argument(
        "--study-configs", default=None, help="indices into STUDY_CONFIGS, e.g. 0,3 (all)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.seed_list = "0"
        args.max_iterations = min(args.max_iterations, 8)
        args.initializations = 1
        args.brute_force = args.brute_force or 500
    if args.seed_list:
        seeds = [int(s) for s in args.seed_list.split(",")]
    else:
        seeds = list(range(args.seeds if args.seeds is not None else (2 if args.quick else 20)))
    functions = args.functions or ("gates" if args.quick else "all")
    samples = args.brute_force or (5000 if args.quick else 20000)
    min_gap = float(HgeTraining(task="AND").min_gap_na)
    wanted = [gate_truth(g) for g in GATES] if functions == "gates" else list(NON_CONSTANT)
    if args.smoke:
        wanted = [gate_truth("AND"), gate_truth("XOR")]

    started = time.perf_counter()
    if args.model_study:
        chosen = STUDY_CONFIGS
        if args.study_configs:
            picked = [int(k) for k in args.study_configs.split(",")]
            chosen = tuple(STUDY_CONFIGS[k] for k in picked)
        model_study(seeds, samples, min_gap, (args.max_iterations, args.initializations), chosen)
        print(f"\nwall time {time.perf_counter() - started:.0f} s")
        return 0
    outcomes: list[Outcome] = []
    reach: dict[int, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs_dir = folder / "runs"
        if not args.modes_only:
            print(
                f"{functions} on device seeds {seeds}, mode {args.mode}, "
                f"{args.max_iterations} iterations x {args.initializations} starts; "
                f"brute force {samples} control sets, gap {min_gap:g} nA",
                flush=True,
            )
            for dev in seeds:
                reach[dev] = realisable(dev, samples, min_gap)
                print(
                    f" device {dev}: realisable by brute force: "
                    f"{sorted(name_of(t) for t in reach[dev] if t in NON_CONSTANT)} "
                    f"(+ constant: {'0000' in reach[dev]})",
                    flush=True,
                )
            # Every (device, function) training is one point of a labrig sweep: each point an
            # ordinary run with its own in-process bench, fanned out over a Dask LocalCluster.
            spec = SweepSpec(
                "hge",
                name="bench-hge-gates",
                fixed={
                    "mode": args.mode,
                    "max_iterations": args.max_iterations,
                    "initializations": args.initializations,
                },
                grid={"device_seed": list(seeds), "task": list(wanted)},
            )
            swept = run_sweep(
                spec, runs_dir=folder, workers=args.workers, progress=None, handle_signals=False
            )
            table = read_table(swept.sweep_dir)
            for row in table.itertuples(index=False):
                o = Outcome(
                    int(row.device_seed),
                    gate_truth(str(row.task)),  # the record names a gate where it has one
                    args.mode,
                    bool(getattr(row, "found", False)) and row.status == "success",
                    int(getattr(row, "iterations", 0) or 0),
                    float(row.device_time_s),
                    float(row.wall_time_s),
                    str(row.status),
                )
                outcomes.append(o)
                print_outcome(o)
            print(
                f" {len(outcomes)} trainings on {args.workers or 'one per core'} worker(s) in "
                f"{swept.wall_time_s:.0f} s",
                flush=True,
            )
            report(outcomes, reach, wanted, seeds)
        mode_outcomes: list[Outcome] = []
        if args.modes or args.modes_only:
            print(
                f"\nMode comparison on device 0: six gates, "
                f"{args.modes_max_iterations} iterations x {args.initializations} starts",
                flush=True,
            )
            for mode in MODES:
                for gate in GATES:
                    o = train(
                        "sim-dnpu",
                        0,
                        gate_truth(gate),
                        mode,
                        args.modes_max_iterations,
                        args.initializations,
                        runs_dir,
                    )
                    mode_outcomes.append(o)
                    print_outcome(o)
            report_modes(mode_outcomes)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "outcomes": [o.as_dict() for o in outcomes],
                    "modes": [o.as_dict() for o in mode_outcomes],
                    "realisable": {str(k): sorted(v) for k, v in reach.items()},
                },
                fh,
                indent=2,
            )
    return 0


def report(
    outcomes: list[Outcome], reach: dict[int, set[str]], wanted: list[str], seeds: list[int]
) -> None:
    print("\nPer function (success among devices that realise it by brute force):")
    print(
        f"  {'function':<17} {'realisable':>10} {'found':>6} {'rate':>6} {'med it':>7} "
        f"{'med device s':>13}  found where not realisable"
    )
    for truth in wanted:
        rows = [o for o in outcomes if o.truth == truth]
        able = [o for o in rows if truth in reach[o.device_seed]]
        hits = [o for o in able if o.found]
        extra = [o.device_seed for o in rows if o.found and truth not in reach[o.device_seed]]
        rate = len(hits) / len(able) if able else float("nan")
        print(
            f"  {name_of(truth):<12} {truth} {len(able):>7} {len(hits):>6} {rate:>6.0%} "
            f"{median_or_nan([o.iterations for o in hits]):>7.0f} "
            f"{median_or_nan([o.device_time_s for o in hits]):>13.1f}  {extra or ''}"
        )
    found_all = [o for o in outcomes if o.found]
    med_it = median_or_nan([o.iterations for o in found_all])
    print(
        f"  all found: median {med_it:.0f} iterations "
        f"(target <= {TARGET_MEDIAN_ITERATIONS}), median device time "
        f"{median_or_nan([o.device_time_s for o in found_all]):.1f} s"
    )
    print("\nPer device:")
    complete = 0
    for dev in seeds:
        rows = [o for o in outcomes if o.device_seed == dev]
        able = [o for o in rows if o.truth in reach[dev]]
        hits = [o for o in able if o.found]
        gates_ok = sum(o.found for o in rows if o.truth in {gate_truth(g) for g in GATES})
        all_ok = len(hits) == len(able)
        complete += all_ok
        print(
            f"  device {dev:>2}: {len(hits)}/{len(able)} realisable trained "
            f"({len(able)}/{len(wanted)} realisable), six gates {gates_ok}/6"
            + ("" if all_ok else f"  missed {[name_of(o.truth) for o in able if not o.found]}")
        )
    frac = complete / len(seeds) if seeds else float("nan")
    print(
        f"  devices where every realisable function was trained: {complete}/{len(seeds)} "
        f"({frac:.0%}; target >= {TARGET_ALL_FUNCTIONS_FRACTION:.0%})"
    )
    if 0 in reach:
        gates0 = sum(
            o.found
            for o in outcomes
            if o.device_seed == 0 and o.truth in {gate_truth(g) for g in GATES}
        )
        print(f"  six gates on the default device (seed 0): {gates0}/6 (target 6/6)")


def report_modes(outcomes: list[Outcome]) -> None:
    print("\nModes on device 0:")
    print(
        f"  {'mode':<11} {'found':>6} {'med it':>7} {'med device s':>13} {'med wall s':>11} "
        f"{'device s / it':>14}"
    )
    for mode in MODES:
        rows = [o for o in outcomes if o.mode == mode]
        hits = [o for o in rows if o.found]
        per_it = sum(o.device_time_s for o in rows) / max(1, sum(o.iterations for o in rows))
        print(
            f"  {mode:<11} {len(hits):>4}/{len(rows)} "
            f"{median_or_nan([o.iterations for o in hits]):>7.0f} "
            f"{median_or_nan([o.device_time_s for o in hits]):>13.1f} "
            f"{median_or_nan([o.wall_time_s for o in hits]):>11.1f} {per_it:>14.2f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
