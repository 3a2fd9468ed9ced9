"""Figures of a sweep, from its table: ``make_sweep_report(sweep_dir)`` (``labrig report SWEEP``).

* ``status.png``: points per status, and each point's wall time in the sweep's order;
* ``success_heatmap.png`` (two axes or more): the success rate per row axis value (``task`` if
  swept) and column axis value (``device_seed`` if swept), over every other axis. Success is
  the run's ``found`` where it reports one (HGE: a gate was found), else a successful run;
* ``metric_vs_<axis>.png``, one per swept parameter (seeds are spread, not parameters): each key
  result (found, accuracy, final loss, iterations, device time, ...) against the parameter,
  mean and standard deviation over the seeds and every other axis, one line per value of a
  second parameter when there is one with few values.

PNG files go to ``<sweep_dir>/report/``; rendered with matplotlib's Agg canvas (no display).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from labrig.sweep.grid import SEED_AXES
from labrig.sweep.record import FIXED_COLUMNS, META_FILE, read_table

__all__ = ["make_sweep_report"]

_PREFERRED = ("found", "accuracy", "test_accuracy", "test_nmse", "final_loss", "iterations")
_MAX_METRICS = 6
_MAX_HUES = 8
_STATUS_COLOURS = {
    "success": "tab:green",
    "failed": "tab:red",
    "aborted": "tab:orange",
    "crashed": "tab:purple",
    "pending": "tab:gray",
}


def make_sweep_report(
    sweep_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Write the sweep's figures (see the module docstring); their paths."""
    folder = Path(sweep_dir)
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    axes: list[str] = list(meta.get("axes", []))
    frame = read_table(folder)
    target = Path(out_dir) if out_dir is not None else folder / "report"
    target.mkdir(parents=True, exist_ok=True)
    procedure = meta.get("spec", {}).get("procedure", "")
    title = f"sweep {folder.name} ({procedure}, {len(frame)} points)"
    written: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path = target / name
        fig.savefig(path, dpi=100)
        written.append(path)

    save(_status_figure(frame), "status.png")
    success = _success(frame)
    heat = _heatmap_axes(frame, axes)
    if heat is not None:
        save(_heatmap(frame, success, *heat), "success_heatmap.png")
    metrics = _metrics(frame, axes)
    varied = [a for a in axes if frame[a].nunique() > 1]
    params = [a for a in varied if a not in SEED_AXES] or varied
    for axis in params:
        if metrics:
            save(_metric_figure(frame, success, axis, params, metrics), f"metric_vs_{axis}.png")
    return written


def _success(frame: Any) -> np.ndarray:
    ok = (frame["status"] == "success").to_numpy(dtype=bool)
    if "found" in frame.columns:
        found = frame["found"].fillna(False).to_numpy(dtype=bool)
        return ok & found
    return ok


def _status_figure(frame: Any) -> Figure:
    fig = Figure(figsize=(9, 3.5))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
    counts = frame["status"].value_counts()
    names = list(counts.index)
    left.bar(names, counts.to_numpy(), color=[_STATUS_COLOURS.get(n, "tab:blue") for n in names])
    left.set_ylabel("points")
    left.set_title("status", fontsize=9)
    wall = frame["wall_time_s"].to_numpy(dtype=float)
    colours = [_STATUS_COLOURS.get(s, "tab:blue") for s in frame["status"]]
    right.scatter(frame["index"], wall, c=colours, s=12)
    right.set_xlabel("point (sweep order)")
    right.set_ylabel("wall time per point (s)")
    right.set_title("run time", fontsize=9)
    return fig


def _heatmap_axes(frame: Any, axes: list[str]) -> tuple[str, str] | None:
    varied = [a for a in axes if frame[a].nunique() > 1]
    if len(varied) < 2:
        return None
    col = "device_seed" if "device_seed" in varied else varied[-1]
    rest = [a for a in varied if a != col]
    row = "task" if "task" in rest else rest[0]
    return row, col


def _ordered(values: Any) -> list[Any]:
    unique = list(dict.fromkeys(v for v in values if v is not None))
    try:
        return sorted(unique)
    except TypeError:
        return unique


def _heatmap(frame: Any, success: np.ndarray, row: str, col: str) -> Figure:
    rows = _ordered(frame[row])
    cols = _ordered(frame[col])
    rate = np.full((len(rows), len(cols)), np.nan)
    n = np.zeros((len(rows), len(cols)), dtype=int)
    row_of = {v: i for i, v in enumerate(rows)}
    col_of = {v: j for j, v in enumerate(cols)}
    hits = np.zeros_like(rate)
    for r, c, s in zip(frame[row], frame[col], success, strict=True):
        if r is None or c is None:
            continue
        i, j = row_of[r], col_of[c]
        n[i, j] += 1
        hits[i, j] += bool(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n > 0, hits / np.maximum(n, 1), np.nan)
    fig = Figure(figsize=(max(5.0, 0.45 * len(cols) + 2.5), max(3.0, 0.4 * len(rows) + 1.8)))
    ax = fig.subplots()
    image = ax.imshow(rate, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), [_label(v) for v in cols], rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), [_label(v) for v in rows], fontsize=8)
    ax.set_xlabel(col)
    ax.set_ylabel(row)
    what = "found" if "found" in frame.columns else "successful run"
    per_cell = int(n.max()) if n.size else 0
    ax.set_title(f"success rate ({what}), up to {per_cell} point(s) per cell", fontsize=9)
    if rate.size <= 400:
        for i in range(len(rows)):
            for j in range(len(cols)):
                if n[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{int(hits[i, j])}/{n[i, j]}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if rate[i, j] < 0.6 else "black",
                    )
    fig.colorbar(image, ax=ax, fraction=0.05)
    return fig


def _metrics(frame: Any, axes: list[str]) -> list[str]:
    excluded = set(axes) | (set(FIXED_COLUMNS) - {"device_time_s"}) | {"points"}
    numeric: list[str] = []
    for name in frame.columns:
        if name in excluded or name.startswith("last_"):
            continue
        values = _as_float(frame[name])
        if values is None:
            continue
        finite = values[np.isfinite(values)]
        if finite.size and np.ptp(finite) > 0:
            numeric.append(name)
    first = [m for m in _PREFERRED if m in numeric]
    rest = sorted(m for m in numeric if m not in first and m != "device_time_s")
    chosen = (first + rest)[: _MAX_METRICS - 1]
    if "device_time_s" in numeric:
        chosen.append("device_time_s")
    return chosen


def _as_float(column: Any) -> np.ndarray | None:
    kind = str(column.dtype).lower()
    if kind.startswith(("int", "float", "boolean", "bool")):
        return np.asarray(column.astype("float64").fillna(np.nan), dtype=float)
    return None


def _metric_figure(
    frame: Any, success: np.ndarray, axis: str, params: list[str], metrics: list[str]
) -> Figure:
    hue_axes = [a for a in params if a != axis and 1 < frame[a].nunique() <= _MAX_HUES]
    hue = hue_axes[0] if hue_axes else None
    xs = _ordered(frame[axis])
    numeric_x = all(isinstance(v, int | float) and not isinstance(v, bool) for v in xs)
    positions = np.asarray(xs, dtype=float) if numeric_x else np.arange(len(xs), dtype=float)
    spread_over = [a for a in frame.columns if a in SEED_AXES and a != axis and a != hue]
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    panels = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    groups = _ordered(frame[hue]) if hue else [None]
    ok = (frame["status"] == "success").to_numpy(dtype=bool)
    for panel, metric in zip(panels, metrics, strict=False):
        values = _as_float(frame[metric])
        assert values is not None  # chosen by _metrics
        for group in groups:
            in_group = np.ones(len(frame), dtype=bool) if hue is None else (frame[hue] == group)
            mean = np.full(len(xs), np.nan)
            std = np.full(len(xs), np.nan)
            for k, x in enumerate(xs):
                chosen = np.asarray(in_group & (frame[axis] == x), dtype=bool) & ok
                sample = values[chosen]
                sample = sample[np.isfinite(sample)]
                if sample.size:
                    mean[k] = sample.mean()
                    std[k] = sample.std()
            label = None if hue is None else f"{hue}={_label(group)}"
            panel.errorbar(positions, mean, yerr=std, marker="o", ms=3, capsize=3, label=label)
        panel.set_title(metric, fontsize=9)
        panel.set_xlabel(axis)
        if not numeric_x:
            panel.set_xticks(positions, [_label(v) for v in xs], fontsize=7)
        elif len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) > 50:
            panel.set_xscale("log")
        if hue is not None and len(groups) > 1:
            panel.legend(fontsize=6)
    for panel in panels[len(metrics) :]:
        panel.set_visible(False)
    over = ", ".join(spread_over) or "repeats"
    fig.text(0.01, 0.01, f"mean ± sd over {over} (successful runs)", fontsize=7)
    return fig


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
