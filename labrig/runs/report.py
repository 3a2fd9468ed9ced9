"""Turn a run record into PNG plots a person can look at: ``make_report(run_dir)``.

What is drawn, each only if the record has it (names are matched case-insensitively):

* ``loss.png``: every scalar whose name contains "loss" against the iteration (seq_num), on a
  log axis when all its finite values are positive;
* ``accuracy.png``: scalars containing "acc";
* ``scalars.png``: every other scalar, one small panel each;
* ``trajectories.png``: arrays named like "controls" or "parameters" (contains "control" or
  "param"), each component against the iteration (at most 24 components per array);
* ``signals.png``: the most recent row of arrays whose name starts with "trace" or "signal";
* ``gradients.png``: arrays whose name contains "grad": the norm (log axis) and the components.

Plots go to ``<run_dir>/report/``. Rendered with matplotlib's Agg canvas (no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Figures are built without pyplot: no global backend switch, no window, no display needed;
# Figure.savefig renders PNG with the Agg canvas.
from matplotlib.figure import Figure

from labrig.runs.record import RecordedEvents, RunRecord

__all__ = ["make_report"]

_MAX_COMPONENTS = 24


def make_report(
    run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Write the run's plots as PNG files and return their paths (see the module docstring).

    Works on finished, crashed and running records. ``out_dir`` defaults to
    ``<run_dir>/report``.
    """
    record = RunRecord.open(run_dir)
    target = Path(out_dir) if out_dir is not None else record.run_dir / "report"
    target.mkdir(parents=True, exist_ok=True)
    title = f"{record.start.procedure} — {record.run_dir.name} ({record.status})"
    events = record.events
    written: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path = target / name
        fig.savefig(path, dpi=100)
        written.append(path)

    losses = {n: v for n, v in events.scalars.items() if "loss" in n.lower()}
    accuracies = {n: v for n, v in events.scalars.items() if "acc" in n.lower()}
    others = {n: v for n, v in events.scalars.items() if n not in losses and n not in accuracies}
    if losses:
        save(_lines(events.seq_num, losses, "loss", log_if_positive=True), "loss.png")
    if accuracies:
        save(_lines(events.seq_num, accuracies, "accuracy", log_if_positive=False), "accuracy.png")
    if others:
        save(_panels(events.seq_num, others), "scalars.png")

    trajectories = [
        n for n in _array_names(events) if "control" in n.lower() or "param" in n.lower()
    ]
    if trajectories:
        save(_trajectories(events, trajectories), "trajectories.png")
    signals = [n for n in _array_names(events) if n.lower().startswith(("trace", "signal"))]
    if signals:
        save(_signals(events, signals), "signals.png")
    gradients = [n for n in _array_names(events) if "grad" in n.lower()]
    if gradients:
        save(_gradients(events, gradients), "gradients.png")
    return written


def _array_names(events: RecordedEvents) -> list[str]:
    return sorted([*events.arrays, *events.ragged_arrays])


def _lines(
    x: np.ndarray, series: dict[str, np.ndarray], ylabel: str, log_if_positive: bool
) -> Figure:
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    all_positive = True
    for name, values in series.items():
        finite = values[np.isfinite(values)]
        all_positive = all_positive and finite.size > 0 and bool(np.all(finite > 0))
        ax.plot(x, values, label=name, lw=1)
    if log_if_positive and all_positive:
        ax.set_yscale("log")
    ax.set_xlabel("iteration (seq_num)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _panels(x: np.ndarray, series: dict[str, np.ndarray]) -> Figure:
    n = len(series)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4 * cols, 2.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, values) in zip(axes.flat, series.items(), strict=False):
        ax.plot(x, values, lw=1)
        ax.set_title(name, fontsize=9)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig


def _stacked(events: RecordedEvents, name: str) -> np.ndarray | None:
    """Rows of ``name`` as (k, components), or None if the shape changed during the run."""
    if name not in events.arrays:
        return None
    values = events.arrays[name]
    if values.shape[0] == 0:
        return None
    flat = values.reshape(values.shape[0], -1)
    return np.real(flat) if np.iscomplexobj(flat) else flat


def _trajectories(events: RecordedEvents, names: list[str]) -> Figure:
    fig = Figure(figsize=(7, 3 * len(names)))
    axes = fig.subplots(len(names), 1, squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        values = _stacked(events, name)
        ax.set_title(name, fontsize=9)
        if values is None:
            ax.text(0.5, 0.5, "shape changed during the run", ha="center", transform=ax.transAxes)
            continue
        x = events.array_seq[name]
        for j in range(min(values.shape[1], _MAX_COMPONENTS)):
            ax.plot(x, values[:, j], lw=1, label=f"[{j}]")
        ax.set_xlabel("iteration (seq_num)")
        ax.grid(True, alpha=0.3)
        if values.shape[1] <= 10:
            ax.legend(fontsize=7, ncol=5)
    return fig


def _signals(events: RecordedEvents, names: list[str]) -> Figure:
    fig = Figure(figsize=(7, 2.8 * len(names)))
    axes = fig.subplots(len(names), 1, squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        last = np.asarray(events.last(name))
        seq = int(events.array_seq[name][-1])
        ax.set_title(f"{name} (event {seq})", fontsize=9)
        rows = np.atleast_2d(np.real(last) if np.iscomplexobj(last) else last)
        rows = rows.reshape(rows.shape[0], -1) if rows.ndim > 2 else rows
        for j, row in enumerate(rows[:_MAX_COMPONENTS]):
            ax.plot(row, lw=1, label=f"[{j}]" if rows.shape[0] > 1 else None)
        ax.set_xlabel("sample")
        ax.grid(True, alpha=0.3)
    return fig


def _gradients(events: RecordedEvents, names: list[str]) -> Figure:
    fig = Figure(figsize=(10, 3 * len(names)))
    axes = fig.subplots(len(names), 2, squeeze=False)
    for (ax_norm, ax_comp), name in zip(axes, names, strict=True):
        values = _stacked(events, name)
        ax_norm.set_title(f"|{name}|", fontsize=9)
        ax_comp.set_title(name, fontsize=9)
        if values is None:
            continue
        x = events.array_seq[name]
        norm = np.linalg.norm(values, axis=1)
        ax_norm.plot(x, norm, lw=1)
        if np.all(norm[np.isfinite(norm)] > 0) and np.isfinite(norm).any():
            ax_norm.set_yscale("log")
        for j in range(min(values.shape[1], _MAX_COMPONENTS)):
            ax_comp.plot(x, values[:, j], lw=1)
        for ax in (ax_norm, ax_comp):
            ax.set_xlabel("iteration (seq_num)")
            ax.grid(True, alpha=0.3)
    return fig
