"""Benchmark in-the-loop aug-DFA on the simulated deep optoelectronic reservoir.

Runs the ``dfa`` procedure (every forward pass through the virtual bench's AWG, reservoir and
scope) for methods x tasks, a digital reference MLP trained by BP / DFA / aug-DFA, depth 1-4,
the ``g`` ablation, accuracy against projection noise and NARMA10, and prints them beside the
paper's Table 1 (Nakajima et al. 2022). Device time is the bench's clock (AWG playback and scope
records only: instrument I/O is not modelled), wall time is this process's.

Usage::

    .venv/bin/python scripts/bench_dfa.py --quick
    .venv/bin/python scripts/bench_dfa.py --mnist data/mnist --fmnist data/fashion --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import numpy as np

from labrig.algorithms import dfa as dfa_alg
from labrig.algorithms.optim import make_optimizer
from labrig.procedures.dfa import DfaTraining, load_task
from labrig.procedures.runner import run_procedure

PAPER_TABLE_1 = {
    "MNIST": {"simulation": 98.96, "hardware": 97.80},
    "FMNIST": {"simulation": 86.52, "hardware": 85.91},
}
MNIST1D_REFERENCES = {"logistic regression": 32.0, "MLP": 68.0, "GRU": 91.0}


def run(label: str, **values: Any) -> dict[str, Any]:
    """One ``dfa`` run; returns its summary plus device and wall time."""
    t0 = time.perf_counter()
    result = run_procedure(DfaTraining(**values), echo=False, handle_signals=False)
    wall = time.perf_counter() - t0
    s = dict(result.summary)
    s.update(
        label=label,
        status=result.status,
        reason=result.reason,
        device_time_s=result.device_time_s,
        wall_time_s=wall,
        task=values.get("task", "digits"),
    )
    score = (
        f"NMSE {s['test_nmse']:.4f}"
        if "test_nmse" in s
        else f"acc {100 * s.get('test_accuracy', float('nan')):6.2f} %"
    )
    ratio = s["device_time_s"] / wall if wall > 0 else float("nan")
    print(
        f"  {label:<38} {score}  (best {_best(s)})  epochs {s.get('epochs')}  "
        f"device {s['device_time_s']:.3f} s  wall {wall:6.1f} s  device/wall {ratio:.3g}  "
        f"clipped {100 * s.get('clipped_fraction', 0.0):.1f} %  [{result.status}]",
        flush=True,
    )
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced run (a few minutes)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--mnist", default=None, help="MNIST IDX folder or .npz")
    parser.add_argument("--fmnist", default=None, help="Fashion-MNIST IDX folder or .npz")
    parser.add_argument("--json", default=None, help="write every summary to this file")
    args = parser.parse_args()
    os.environ.setdefault("LABRIG_RUNS_DIR", tempfile.mkdtemp(prefix="bench-dfa-"))
    quick = args.quick
    epochs = args.epochs or (6 if quick else 20)
    m1d_samples = 1000 if quick else 0
    results: list[dict[str, Any]] = []

    print(f"== methods x tasks ({epochs} epochs, 2 layers x 100 nodes)")
    tasks = [("digits", 0), ("mnist1d", m1d_samples)]
    if args.mnist:
        tasks.append((f"mnist:{args.mnist}", 0))
    if args.fmnist:
        tasks.append((f"fmnist:{args.fmnist}", 0))
    for task, n in tasks:
        for method in ("aug-dfa", "bp-twin", "dfa", "readout"):
            if quick and method == "dfa" and task != "digits":
                continue
            results.append(
                run(f"{task} {method}", task=task, method=method, epochs=epochs, train_samples=n)
            )

    print("== digital reference MLP (tanh, 2 x 100, Adam 1e-3)")
    for task in ("digits", "mnist1d"):
        for method in ("bp", "dfa", "aug-dfa"):
            acc = digital_mlp(task, method, epochs if quick else 2 * epochs, 0, 100)
            print(f"  {task} MLP {method:<8} acc {100 * acc:6.2f} %", flush=True)
            results.append({"label": f"{task} MLP {method}", "test_accuracy": acc})

    print("== depth (aug-DFA, digits)")
    for layers in (1, 2, 3, 4):
        results.append(
            run(
                f"digits depth {layers}",
                layers=layers,
                epochs=max(3, epochs // 2),
                train_samples=600 if quick else 0,
            )
        )

    print("== g ablation (aug-DFA, digits)")
    for g in ("cos", "sin", "tanh_prime", "triangle", "abs", "one"):
        if quick and g in ("triangle", "abs"):
            continue
        results.append(
            run(f"digits g={g}", g=g, epochs=max(3, epochs // 2), train_samples=600 if quick else 0)
        )

    print("== projection noise (aug-DFA, digits; rms relative to e B^T)")
    for noise in (0.0, 0.5, 1.0, 2.0):
        results.append(
            run(
                f"digits projection noise {noise}",
                projection_noise=noise,
                epochs=max(3, epochs // 2),
                train_samples=600 if quick else 0,
            )
        )
    results.append(
        run(
            "digits physical projection",
            physical_projection=True,
            epochs=max(3, epochs // 2),
            train_samples=600 if quick else 0,
        )
    )

    print("== NARMA10 (static 20-step window, MSE)")
    for method, readout in (("aug-dfa", "gradient"), ("aug-dfa", "ridge"), ("readout", "ridge")):
        results.append(
            run(
                f"narma10 {method} readout={readout}",
                task="narma10",
                method=method,
                readout=readout,
                epochs=epochs,
                learning_rate=3e-3,
            )
        )

    print("== paper, Table 1 (Nakajima et al. 2022), test accuracy %")
    for name, row in PAPER_TABLE_1.items():
        print(f"  {name:<7} simulation {row['simulation']:.2f}   hardware {row['hardware']:.2f}")
    print(
        "  MNIST-1D references: "
        + ", ".join(f"{k} {v:.0f} %" for k, v in MNIST1D_REFERENCES.items())
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
