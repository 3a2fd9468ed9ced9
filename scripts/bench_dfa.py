"""Benchmark in-the-loop aug-DFA on the simulated deep optoelectronic reservoir.

Runs the ``dfa`` procedure (every forward pass through the virtual bench's AWG, reservoir and
scope) for methods x tasks, a digital reference MLP trained by BP / DFA / aug-DFA, depth 1-4,
the ``g`` ablation, accuracy against projection noise and NARMA10, then device against wall time
per epoch, and prints the results beside the paper's Table 1 (Nakajima et al. 2022). Device time
is the bench's clock: AWG playback, scope records and every instrument's link time (uploads,
transfers, per-message latency); wall time is this process's.

Usage::

    .venv/bin/python scripts/bench_dfa.py --quick                 # about 20 min on one core
    .venv/bin/python scripts/bench_dfa.py --smoke                 # a few tiny runs (~15 s)
    .venv/bin/python scripts/bench_dfa.py --sections seeds        # digits, CLI default, seeds 0-4
    .venv/bin/python scripts/bench_dfa.py --sections equal,nodes,narma-scan --quick
    .venv/bin/python scripts/bench_dfa.py --mnist data/mnist --fmnist data/fashion --json out.json

Sections beyond the main table (issue 15's ablations): ``seeds`` (digits with the CLI defaults
for seeds 0-4, against the 96.5 % bar), ``equal`` (aug-DFA against readout-only at equal total
node count, digits and MNIST-1D), ``nodes`` (readout-only and aug-DFA against the node count,
50-400, on stations whose loop holds that many nodes) and ``narma-scan`` (NARMA10 NMSE against
the node count and the loop's feedback gain, set on the simulated bench's ``[bench]``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from labrig.algorithms import dfa as dfa_alg
from labrig.algorithms.optim import make_optimizer
from labrig.procedures.dfa import DfaTraining, load_task
from labrig.shell import run_on_station

PAPER_TABLE_1 = {
    "MNIST": {"simulation": 98.96, "hardware": 97.80},
    "FMNIST": {"simulation": 86.52, "hardware": 85.91},
}
MNIST1D_REFERENCES = {"logistic regression": 32.0, "MLP": 68.0, "GRU": 91.0}
# MNIST-1D is presented in time (sequence_mode auto -> temporal: one step per loop period, the
# readout on the last layer's states pooled over 8 windows of periods). Found on the host twin
# (seed 0): the ridge readout on the pooled states is what generalises (gradient-trained
# readouts reach ~64 % in 15 epochs); a small step keeps aug-DFA from pulling the layers away
# from the ridge readout's optimum (3e-3 loses 5 points in 8 epochs, 3e-4 holds).
MNIST1D_SETTINGS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "readout": "ridge",
    "ridge_lambda": 1.0,
}
# The static presentation (the whole sequence held as one input vector): a gentler drive keeps
# the pre-activations on the monotonic flank of sin^2 and a smaller step limits over-fitting.
MNIST1D_STATIC_SETTINGS: dict[str, Any] = {"learning_rate": 3e-3, "volts_per_unit": 0.5}
SECTIONS = (
    "methods",
    "mlp",
    "depth",
    "g",
    "noise",
    "narma",
    "seeds",
    "equal",
    "nodes",
    "narma-scan",
    "timing",
    "table",
)
DEFAULT_SECTIONS = ("methods", "mlp", "depth", "g", "noise", "narma", "timing", "table")
SMOKE_SECTIONS = ("methods", "timing")


def station_variant(folder: str, node_count: int = 100, feedback_gain: float | None = None) -> str:
    """A copy of the built-in simulated reservoir with another loop length or feedback gain
    (bench values: the procedure measures them, as on a real rig)."""
    from labrig.station import builtin_station_path

    text = builtin_station_path("sim-reservoir").read_text()
    text = text.replace("node_count = 100", f"node_count = {node_count}")
    if feedback_gain is not None:
        text = text.replace(
            "device_seed = 0", f"device_seed = 0\nfeedback_gain = {feedback_gain!r}"
        )
    path = os.path.join(folder, f"reservoir-{node_count}-{feedback_gain}.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


@dataclass(frozen=True)
class Plan:
    """How much of each section to run."""

    epochs: int  # main table
    ablation_epochs: int  # depth, g, projection noise
    ablation_samples: int  # 0: whole training set
    mnist1d_samples: int  # 0: all 4000
    mlp_epochs: int
    narma_epochs: int
    test_samples: int  # 0: whole test set


def plan_for(args: argparse.Namespace) -> Plan:
    if args.smoke:
        return Plan(1, 1, 200, 200, 1, 1, 200)
    epochs = args.epochs or (15 if not args.quick else 8)
    if args.quick:
        return Plan(epochs, max(3, epochs // 2), 600, 1000, epochs, epochs, 0)
    return Plan(epochs, max(3, epochs // 2), 0, 0, 2 * epochs, epochs, 0)


def run(label: str, **values: Any) -> dict[str, Any]:
    """One ``dfa`` run; returns its summary plus device and wall time."""
    t0, c0 = time.perf_counter(), time.process_time()
    station = values.pop("station", "sim-reservoir")
    result = run_on_station(DfaTraining(**values), station, echo=False, handle_signals=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = dict(result.summary)
    s.update(
        label=label,
        status=result.status,
        reason=result.reason,
        device_time_s=result.device_time_s,
        wall_time_s=wall,
        cpu_time_s=cpu,
        task=values.get("task", "digits"),
    )
    score = (
        f"NMSE {s['test_nmse']:.4f}"
        if "test_nmse" in s
        else f"acc {100 * s.get('test_accuracy', float('nan')):6.2f} %"
    )
    ratio = s["device_time_s"] / wall if wall > 0 else float("nan")
    print(
        f"  {label:<40} {score}  (best {_best(s)})  epochs {s.get('epochs')}  "
        f"device {s['device_time_s']:7.2f} s  wall {wall:6.1f} s  device/wall {ratio:.2f}  "
        f"device/cpu {s['device_time_s'] / max(cpu, 1e-9):.2f}  "
        f"clipped {100 * s.get('clipped_fraction', 0.0):.1f} %  [{result.status}]",
        flush=True,
    )
    if result.status != "success":
        print(f"    reason: {result.reason}", flush=True)
    return s


def _best(s: dict[str, Any]) -> str:
    if "best_test_nmse" in s:
        return f"{s['best_test_nmse']:.4f}"
    return f"{100 * s.get('best_test_accuracy', float('nan')):.2f} %"


def digital_mlp(task_name: str, method: str, epochs: int, seed: int, hidden: int) -> float:
    """A two-hidden-layer tanh MLP on the host, trained by BP, DFA (g = f') or aug-DFA (cos)."""
    task = load_task(task_name, seed)
    net = dfa_alg.DeepNetwork.create([task.x_train.shape[1], hidden, hidden, task.n_out], seed=seed)
    opt = make_optimizer("adam", 1e-3)
    rng = np.random.default_rng(seed)

    def layer(_l: int, a: np.ndarray) -> np.ndarray:
        return np.tanh(a)

    def fprime(a: np.ndarray) -> np.ndarray:
        return 1.0 - np.tanh(a) ** 2

    for _ in range(epochs):
        order = rng.permutation(len(task.x_train))
        for i in range(0, len(order), 32):
            idx = order[i : i + 32]
            fwd = dfa_alg.forward(net, task.x_train[idx], layer)
            y = task.y_train[idx]
            if method == "bp":
                dfa_alg.bp_step(net, fwd, y, opt, fprime=fprime)
            elif method == "dfa":
                dfa_alg.dfa_step(net, fwd, y, fprime, opt)
            else:
                dfa_alg.aug_dfa_step(net, fwd, y, "cos", opt)
    return dfa_alg.accuracy(dfa_alg.forward(net, task.x_test, layer).y, task.y_test)


def _pct(s: dict[str, Any] | None) -> str:
    if s is None or "test_accuracy" not in s:
        return "   -   "
    return f"{100 * s['test_accuracy']:6.2f}"


def _ref(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(results: list[dict[str, Any]], mlp: dict[str, float], tasks: list[str]) -> None:
    """Our test accuracies (2 layers x 100 nodes, simulated rig) beside the paper's Table 1."""
    by_label = {r["label"]: r for r in results}
    print("== test accuracy %: this bench (simulated rig, in the loop) beside the paper")
    print(
        f"  {'task':<10} {'aug-DFA':>8} {'DFA(twin)':>9} {'BP(twin)':>9} {'readout':>8} "
        f"{'MLP BP':>7} | {'paper sim':>9} {'paper hw':>8}"
    )
    for task in tasks:
        name = task.split(":")[0].upper() if ":" in task else task
        paper = PAPER_TABLE_1.get(name, {})
        cells = [
            _pct(by_label.get(f"{task} {m}")) for m in ("aug-dfa", "dfa", "bp-twin", "readout")
        ]
        mlp_bp = mlp.get(f"{task} bp")
        print(
            f"  {name:<10} {cells[0]:>8} {cells[1]:>9} {cells[2]:>9} {cells[3]:>8} "
            f"{(f'{100 * mlp_bp:6.2f}' if mlp_bp is not None else '   -   '):>7} | "
            f"{_ref(paper.get('simulation')):>9} {_ref(paper.get('hardware')):>8}"
        )
    for name, row in PAPER_TABLE_1.items():
        if not any(t.split(":")[0].upper() == name for t in tasks):
            print(
                f"  {name:<10} {'(no data given)':>46} | "
                f"{row['simulation']:>9.2f} {row['hardware']:>8.2f}"
            )
    print(
        "  MNIST-1D references (digital, Greydanus 2020): "
        + ", ".join(f"{k} {v:.0f} %" for k, v in MNIST1D_REFERENCES.items())
    )


def print_timing(results: list[dict[str, Any]]) -> None:
    """Device time (what the rig would take) against wall time (this simulation), per epoch."""
    print("== device vs wall time per epoch (simulated rig)")
    print(f"  {'run':<40} {'device/epoch':>12} {'wall/epoch':>10} {'device/wall':>11}")
    ratios = []
    for r in results:
        dev, wall = r.get("device_time_per_epoch_s"), r.get("wall_time_per_epoch_s")
        if dev is None or wall is None or wall <= 0:
            continue
        ratios.append(dev / wall)
        print(f"  {r['label']:<40} {dev:11.2f}s {wall:9.2f}s {dev / wall:11.2f}")
    if ratios:
        print(
            f"  median device/wall {float(np.median(ratios)):.2f} "
            f"(target >= 20: the simulation 20x faster than the rig)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced run")
    parser.add_argument("--smoke", action="store_true", help="every section, tiny sizes")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--sections", default=None, help=",".join(SECTIONS))
    parser.add_argument("--mnist", default=None, help="MNIST IDX folder or .npz")
    parser.add_argument("--fmnist", default=None, help="Fashion-MNIST IDX folder or .npz")
    parser.add_argument("--json", default=None, help="write every summary to this file")
    args = parser.parse_args()
    if args.sections is None:
        args.sections = ",".join(SMOKE_SECTIONS if args.smoke else DEFAULT_SECTIONS)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    # Runs go to a temporary folder removed at the end, unless the caller chose a runs dir.
    scratch = None
    if "LABRIG_RUNS_DIR" not in os.environ:
        scratch = tempfile.TemporaryDirectory(prefix="bench-dfa-")
        os.environ["LABRIG_RUNS_DIR"] = scratch.name
    plan = plan_for(args)
    common = {"test_samples": plan.test_samples}
    ablation = {"epochs": plan.ablation_epochs, "train_samples": plan.ablation_samples, **common}
    results: list[dict[str, Any]] = []
    mlp: dict[str, float] = {}
    t_start = time.perf_counter()

    tasks = ["digits"] if args.smoke else ["digits", "mnist1d"]
    if args.mnist:
        tasks.append(f"mnist:{args.mnist}")
    if args.fmnist:
        tasks.append(f"fmnist:{args.fmnist}")
    if "methods" in sections:
        print(f"== methods x tasks ({plan.epochs} epochs, 2 layers x 100 nodes)", flush=True)
        for task in tasks:
            extra: dict[str, Any] = dict(MNIST1D_SETTINGS) if task == "mnist1d" else {}
            n = plan.mnist1d_samples if task == "mnist1d" else (200 if args.smoke else 0)
            methods = (
                ("aug-dfa", "readout") if args.smoke else ("aug-dfa", "bp-twin", "dfa", "readout")
            )
            size: dict[str, Any] = {"nodes": 20} if args.smoke else {}
            for method in methods:
                mode: dict[str, Any] = {}
                label = f"{task} {method}"
                if task == "mnist1d" and method in ("dfa", "bp-twin"):
                    # The twin baselines have no temporal form: run them on the static
                    # presentation (the whole sequence held as one input vector).
                    mode = {"sequence_mode": "static", **MNIST1D_STATIC_SETTINGS}
                    label = f"{task}-static {method}"
                results.append(
                    run(
                        label,
                        task=task,
                        method=method,
                        epochs=plan.epochs,
                        train_samples=n,
                        **{**extra, **mode, **size},
                        **common,
                    )
                )
            if task == "mnist1d":
                results.append(
                    run(
                        "mnist1d-static aug-dfa",
                        task=task,
                        method="aug-dfa",
                        sequence_mode="static",
                        epochs=plan.epochs,
                        train_samples=n,
                        **MNIST1D_STATIC_SETTINGS,
                        **common,
                    )
                )

    if "mlp" in sections:
        print(f"== digital reference MLP (tanh, 2 x 100, Adam 1e-3, {plan.mlp_epochs} epochs)")
        for task in ("digits", "mnist1d"):
            for method in ("bp", "dfa", "aug-dfa"):
                acc = digital_mlp(task, method, plan.mlp_epochs, 0, 100)
                print(f"  {task} MLP {method:<8} acc {100 * acc:6.2f} %", flush=True)
                mlp[f"{task} {method}"] = acc
                results.append({"label": f"{task} MLP {method}", "test_accuracy": acc})

    if "depth" in sections:
        print("== depth (aug-DFA, digits)", flush=True)
        for layers in (1, 2, 3, 4):
            results.append(run(f"digits depth {layers}", layers=layers, **ablation))

    if "g" in sections:
        print("== g ablation (aug-DFA, digits)", flush=True)
        for g in ("cos", "sin", "tanh_prime", "triangle", "abs", "one"):
            results.append(run(f"digits g={g}", g=g, **ablation))

    if "noise" in sections:
        print("== projection noise (aug-DFA, digits; rms relative to e B^T)", flush=True)
        for noise in (0.0, 0.5, 1.0, 2.0, 4.0):
            results.append(
                run(f"digits projection noise {noise}", projection_noise=noise, **ablation)
            )
        results.append(run("digits physical projection", physical_projection=True, **ablation))

    if "narma" in sections:
        print(
            "== NARMA10 (20-step window presented in time, MSE; test NMSE, lower is better)",
            flush=True,
        )
        for method, readout in (
            ("aug-dfa", "gradient"),
            ("aug-dfa", "ridge"),
            ("readout", "ridge"),
        ):
            results.append(
                run(
                    f"narma10 {method} readout={readout}",
                    task="narma10",
                    method=method,
                    readout=readout,
                    epochs=plan.narma_epochs,
                    learning_rate=3e-3,
                    **common,
                )
            )

    folder = scratch.name if scratch is not None else tempfile.mkdtemp(prefix="bench-dfa-")
    if "seeds" in sections:
        print("== digits, CLI defaults (2 x 100 nodes, 15 epochs), seeds 0-4 (bar 96.5 %)")
        for seed in range(5):
            results.append(run(f"digits seed {seed}", seed=seed, **common))

    if "equal" in sections:
        print("== aug-DFA against readout-only at equal total nodes", flush=True)
        for task in ("digits", "mnist1d"):
            extra = dict(MNIST1D_SETTINGS) if task == "mnist1d" else {}
            n = plan.mnist1d_samples if task == "mnist1d" else plan.ablation_samples
            base = {"task": task, "train_samples": n, **extra, **common}
            for layers, nodes in ((1, 100), (2, 50), (2, 100), (4, 50)):
                for method in ("readout", "aug-dfa"):
                    results.append(
                        run(
                            f"{task} {method} {layers}x{nodes}",
                            method=method,
                            layers=layers,
                            nodes=nodes,
                            epochs=plan.ablation_epochs,
                            **base,
                        )
                    )

    if "nodes" in sections:
        print("== node count (one loop of that many nodes; digits)", flush=True)
        for nodes in (50, 100, 200, 400):
            station = station_variant(folder, node_count=max(100, nodes))
            for method in ("readout", "aug-dfa"):
                results.append(
                    run(
                        f"digits {method} 2x{nodes}",
                        station=station,
                        method=method,
                        nodes=nodes,
                        **ablation,
                    )
                )

    if "narma-scan" in sections:
        print("== NARMA10 readout-only: NMSE against nodes and feedback gain", flush=True)
        for nodes in (50, 100, 200, 400):
            station = station_variant(folder, node_count=max(100, nodes))
            results.append(
                run(
                    f"narma10 readout 1x{nodes}",
                    station=station,
                    task="narma10",
                    method="readout",
                    layers=1,
                    nodes=nodes,
                    **common,
                )
            )
        for gain in (0.5, 1.0, 2.0, 2.5):
            station = station_variant(folder, feedback_gain=gain)
            results.append(
                run(
                    f"narma10 readout 1x100 feedback {gain}",
                    station=station,
                    task="narma10",
                    method="readout",
                    layers=1,
                    **common,
                )
            )

    if "timing" in sections:
        print_timing(results)
    if "table" in sections:
        print_table(results, mlp, tasks)
    print(f"== bench done in {time.perf_counter() - t_start:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1, default=str)
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
