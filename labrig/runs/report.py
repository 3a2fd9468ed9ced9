"""Turn a run record into one HTML page a scientist would keep: ``make_report(run_dir)``.

The page (``<run_dir>/report/index.html``) holds the run's parameters (with units), the
station, the result (the stop document's summary), the figures (PNG beside the page) and the
warnings and errors of its log. The figures come from the run's declaration (its
EventDescriptors, :mod:`labrig.runs.documents`), never from guesses at names: one figure per
plot hint of the procedure, every axis labelled with the key's description and units, array
elements by the names the declaration gives them (electrodes, input cases, classes), error bars
where a spread was declared, legends outside the data. Keys no hint draws get a figure by their
shape; bookkeeping keys (the declaration's status) go into the result table instead.

What that gives, with the procedures' own declarations:

* HGE: loss and accuracy per iteration, the control voltages and the loss gradient per electrode
  (newest values and their history), the case outputs against the decision threshold, the TIA
  trace on its time axis;
* aug-DFA: learning curves (loss, train and test score), drive and photodetector traces, node
  states as an image, test error per class, and, where recorded, the confusion matrix and the
  drive histogram of each layer;
* characterisation: the I-V curve with its spread as error bars, the transfer curve and the
  impulse response.

Rendered with matplotlib's Agg canvas (no display needed). :func:`report_figures` returns the
figures without writing them (for tests and notebooks).
"""

from __future__ import annotations

import datetime as dt
import html
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# Figures are built without pyplot: no global backend switch, no window, no display needed;
# Figure.savefig renders PNG with the Agg canvas.
from matplotlib.figure import Figure

from labrig.runs.documents import DataKey, PlotHint, StreamDeclaration
from labrig.runs.record import RecordedEvents, RecordError, RunRecord

__all__ = ["EmptyRunError", "make_report", "report_figures"]

_MAX_COMPONENTS = 24
_HIGH, _LOW = "#2ca02c", "#d62728"


class EmptyRunError(RecordError):
    """The run recorded no event: there is nothing to draw."""


class _Run:
    """The record's events with its declaration, for drawing."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.events: RecordedEvents = record.events
        self.keys: dict[str, DataKey] = {}
        for stream in record.streams.values():
            for key in stream.keys:
                self.keys[key.name] = key

    def label(self, name: str) -> str:
        key = self.keys.get(name)
        return key.label() if key is not None else name

    def x_of(self, stream: StreamDeclaration) -> tuple[str, np.ndarray, np.ndarray]:
        """(axis label, x per event of the stream, mask of the stream's events)."""
        events = self.events
        mask = np.array([s == stream.name for s in events.stream], dtype=bool)
        if stream.x and stream.x in events.scalars:
            return self.label(stream.x), events.scalars[stream.x], mask
        return "event number", events.seq_num.astype(float), mask

    def has(self, name: str) -> bool:
        return name in self.events.scalars or self.events.has_array(name)

    def stacked(self, name: str) -> np.ndarray | None:
        """Rows of an array as (k, components), None if absent or of changing shape."""
        rows = self.events.arrays.get(name)
        if rows is None or rows.shape[0] == 0:
            return None
        flat = rows.reshape(rows.shape[0], -1)
        return np.real(flat) if np.iscomplexobj(flat) else flat

    def element_labels(self, name: str, n: int) -> list[str]:
        key = self.keys.get(name)
        labels = key.labels(0) if key is not None else None
        return (
            list(labels) if labels is not None and len(labels) == n else [str(i) for i in range(n)]
        )


def _legend_outside(ax: Any, n: int) -> None:
    if n > 1:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _finish(ax: Any) -> None:
    ax.grid(True, alpha=0.3)


def _fig_lines(run: _Run, stream: StreamDeclaration, hint: PlotHint) -> Figure | None:
    x_label, x, mask = run.x_of(stream)
    series = [(n, run.events.scalars[n]) for n in hint.y if n in run.events.scalars]
    if not series:
        return None
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.subplots()
    positive = True
    for name, values in series:
        key = run.keys.get(name)
        ax.plot(x[mask], values[mask], lw=1.2, label=(key.description if key else "") or name)
        finite = values[mask][np.isfinite(values[mask])]
        positive = positive and finite.size > 0 and bool(np.all(finite > 0))
    if hint.log_y and positive:
        ax.set_yscale("log")
    units = {run.keys[n].units for n, _ in series if n in run.keys}
    unit = units.pop() if len(units) == 1 else ""
    y_label = run.label(series[0][0]) if len(series) == 1 else (hint.title or "value")
    if len(series) > 1 and unit:
        y_label += f" ({unit})"
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    _legend_outside(ax, len(series))
    _finish(ax)
    return fig


def _fig_xy(run: _Run, stream: StreamDeclaration, hint: PlotHint) -> Figure | None:
    scalars = run.events.scalars
    if hint.x not in scalars or hint.y[0] not in scalars:
        return None
    _, _, mask = run.x_of(stream)
    x, y = scalars[hint.x][mask], scalars[hint.y[0]][mask]
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    if hint.error and hint.error in scalars:
        err = scalars[hint.error][mask]
        ax.errorbar(x, y, yerr=err, fmt="o-", ms=3, lw=1, capsize=2, label=run.label(hint.y[0]))
    else:
        ax.plot(x, y, "o-", ms=3, lw=1)
    ax.set_xlabel(run.label(hint.x))
    ax.set_ylabel(run.label(hint.y[0]))
    _finish(ax)
    return fig


def _fig_history(run: _Run, stream: StreamDeclaration, name: str, ax: Any) -> bool:
    values = run.stacked(name)
    if values is None:
        return False
    x_label, x_all, _ = run.x_of(stream)
    seq_index = {int(s): i for i, s in enumerate(run.events.seq_num.tolist())}
    x = np.array([x_all[seq_index[int(s)]] for s in run.events.array_seq[name]], dtype=float)
    labels = run.element_labels(name, values.shape[1])
    for j in range(min(values.shape[1], _MAX_COMPONENTS)):
        ax.plot(x, values[:, j], lw=1.2, label=labels[j])
    ax.set_xlabel(x_label)
    ax.set_ylabel(run.label(name))
    _legend_outside(ax, min(values.shape[1], _MAX_COMPONENTS))
    _finish(ax)
    return True


def _fig_history_only(run: _Run, stream: StreamDeclaration, hint: PlotHint) -> Figure | None:
    fig = Figure(figsize=(7.5, 3.8))
    return fig if _fig_history(run, stream, hint.y[0], fig.subplots()) else None


def _bars(run: _Run, name: str, ax: Any) -> bool:
    if not run.events.has_array(name):
        return False
    values = np.real(np.asarray(run.events.last(name), dtype=complex)).ravel()
    labels = run.element_labels(name, values.size)
    ax.bar(np.arange(values.size), values, width=0.6)
    ax.set_xticks(np.arange(values.size), labels, rotation=30 if values.size > 6 else 0)
    key = run.keys.get(name)
    ax.set_xlabel(key.dims[0] if key is not None and key.dims else "element")
    ax.set_ylabel(run.label(name))
    ax.axhline(0.0, color="k", lw=0.6)
    _finish(ax)
    return True


def _fig_bars(run: _Run, stream: StreamDeclaration, hint: PlotHint) -> Figure | None:
    """The newest values as bars, and (a small array of fixed shape) every element's history."""
    name = hint.y[0]
    history = run.stacked(name) is not None and run.events.arrays[name].ndim == 2
    fig = Figure(figsize=(12, 3.8) if history else (6.5, 3.8))
    axes = fig.subplots(1, 2 if history else 1, squeeze=False)[0]
    if not _bars(run, name, axes[0]):
        return None
    axes[0].set_title(f"last event (seq {int(run.events.array_seq[name][-1])})", fontsize=9)
    if history:
        _fig_history(run, stream, name, axes[1])
        axes[1].set_title("history", fontsize=9)
    return fig


def _fig_cases(run: _Run, stream: StreamDeclaration, hint: PlotHint) -> Figure | None:
    name = hint.y[0]
    if not run.events.has_array(name):
        return None
    outputs = np.asarray(run.events.last(name), dtype=float).ravel()
    labels = run.element_labels(name, outputs.size)
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    targets = (
        np.asarray(run.events.last(hint.targets), dtype=float).ravel()
        if hint.targets and run.events.has_array(hint.targets)
        else None
    )
    x = np.arange(outputs.size)
    if targets is not None and targets.size == outputs.size:
        high = targets > 0.5
        ax.bar(x[high], outputs[high], width=0.6, color=_HIGH, label="target high")
        ax.bar(x[~high], outputs[~high], width=0.6, color=_LOW, label="target low")
    else:
        ax.bar(x, outputs, width=0.6)
    threshold = run.events.scalars.get(hint.threshold) if hint.threshold else None
    if threshold is not None and np.isfinite(threshold).any():
        level = float(threshold[np.isfinite(threshold)][-1])
        ax.axhline(level, color="#444", ls="--", lw=1.2, label=f"threshold {level:.4g}")
    ax.set_xticks(x, labels)
    key = run.keys.get(name)
    ax.set_xlabel("input " + (key.dims[0] if key is not None and key.dims else "case"))
    ax.set_ylabel(run.label(name))
    ax.set_title(f"last event (seq {int(run.events.array_seq[name][-1])})", fontsize=9)
    _legend_outside(ax, 3)
    _finish(ax)
    return fig


def _fig_trace(run: _Run, stream: StreamDeclaration, hint: PlotHint) -> Figure | None:
    name = hint.y[0]
    if not run.events.has_array(name):
        return None
    y = np.asarray(run.events.last(name), dtype=float).ravel()
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    x = None
    if hint.x and run.events.has_array(hint.x):
        x = np.asarray(run.events.last(hint.x), dtype=float).ravel()
    if x is not None and x.size == y.size:
        ax.plot(x, y, lw=0.8)
        ax.set_xlabel(run.label(hint.x))
    else:
        ax.plot(y, lw=0.8)
        key = run.keys.get(name)
        ax.set_xlabel(key.dims[0] if key is not None and key.dims else "sample")
    ax.set_ylabel(run.label(name))
    ax.set_title(f"last event (seq {int(run.events.array_seq[name][-1])})", fontsize=9)
    _finish(ax)
    return fig


def _fig_image(run: _Run, stream: StreamDeclaration, hint: PlotHint) -> Figure | None:
    name = hint.y[0]
    if not run.events.has_array(name):
        return None
    array = np.asarray(run.events.last(name), dtype=float)
    key = run.keys.get(name)
    if array.ndim == 3 and key is not None and len(key.dims) == 3:
        # One image per entry of the first axis (a layer), named by its label.
        labels = run.element_labels(name, array.shape[0])
        fig = Figure(figsize=(4.2 * array.shape[0], 3.8))
        axes = fig.subplots(1, array.shape[0], squeeze=False)[0]
        for ax, plane, label in zip(axes, array, labels, strict=True):
            image = ax.imshow(plane, aspect="auto", interpolation="nearest", cmap="viridis")
            ax.set_title(label, fontsize=9)
            ax.set_ylabel(key.dims[1])
            ax.set_xlabel(key.dims[2])
            fig.colorbar(image, ax=ax).set_label(run.label(name))
        return fig
    array = array.reshape(array.shape[0], -1) if array.ndim > 2 else np.atleast_2d(array)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    image = ax.imshow(array, aspect="auto", interpolation="nearest", cmap="viridis")
    dims = key.dims if key is not None and len(key.dims) == 2 else ("row", "column")
    ax.set_ylabel(dims[0])
    ax.set_xlabel(dims[1])
    for axis, dim, n in ((ax.yaxis, dims[0], array.shape[0]), (ax.xaxis, dims[1], array.shape[1])):
        ticks = key.coords.get(dim) if key is not None else None
        if ticks is not None and len(ticks) == n and n <= 32:
            axis.set_ticks(np.arange(n), [str(v) for v in ticks])
    if array.size <= 400 and np.all(array == np.round(array)):  # counts: write them in
        for (i, j), value in np.ndenumerate(array):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7, color="w")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(run.label(name))
    return fig


def _fig_histogram(run: _Run, stream: StreamDeclaration, hint: PlotHint) -> Figure | None:
    name = hint.y[0]
    if not run.events.has_array(name):
        return None
    values = np.asarray(run.events.last(name), dtype=float)
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    key = run.keys.get(name)
    centres = key.coords.get(key.dims[1]) if key is not None and len(key.dims) == 2 else None
    if values.ndim == 2 and key is not None and centres is not None:
        # Counts already binned (per layer): the bins' centres are the second axis' labels.
        labels = run.element_labels(name, values.shape[0])
        x = np.asarray(centres, dtype=float)
        for row, label in zip(values, labels, strict=True):
            ax.step(x, row, where="mid", lw=1.2, label=label)
        _legend_outside(ax, len(labels))
        ax.set_xlabel(key.dims[1])
        ax.set_ylabel(run.label(name))
    else:
        ax.hist(values[np.isfinite(values)].ravel(), bins=40)
        ax.set_xlabel(run.label(name))
        ax.set_ylabel("count")
    _finish(ax)
    return fig


_DRAW = {
    "lines": _fig_lines,
    "xy": _fig_xy,
    "history": _fig_history_only,
    "bars": _fig_bars,
    "cases": _fig_cases,
    "trace": _fig_trace,
    "image": _fig_image,
    "histogram": _fig_histogram,
}


def _undrawn(run: _Run, stream: StreamDeclaration, used: set[str]) -> Iterable[PlotHint]:
    """Plot hints for declared keys no hint draws (not status, not the x axis)."""
    for key in stream.keys:
        if key.name in used or not run.has(key.name):
            continue
        if key.is_scalar:
            yield PlotHint(f"scalar:{key.name}", "lines", (key.name,))
        elif len(key.shape) == 1:
            small = key.shape[0] is not None and key.shape[0] <= _MAX_COMPONENTS
            yield PlotHint(f"{key.name}", "history" if small else "trace", (key.name,))
        elif len(key.shape) == 2:
            yield PlotHint(f"image:{key.name}", "image", (key.name,))


def report_figures(record: RunRecord) -> list[tuple[str, str, Figure]]:
    """The report's figures: (file stem, caption, figure), in the declaration's order."""
    run = _Run(record)
    figures: list[tuple[str, str, Figure]] = []
    for stream in record.streams.values():
        used = set(stream.status) | ({stream.x} if stream.x else set())
        hints = list(stream.plots)
        for hint in hints:
            used.update(hint.names())
        hints += list(_undrawn(run, stream, used))
        for hint in hints:
            fig = _DRAW[hint.kind](run, stream, hint)
            if fig is None:
                continue
            title = hint.title or run.label(hint.y[0])
            fig.suptitle(title, fontsize=10)
            fig.tight_layout()
            stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in hint.panel)
            figures.append((f"{stream.name}-{stem}", title, fig))
    return figures


# --------------------------------------------------------------------------------- the page


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
        return (
            "["
            + ", ".join(_fmt(float(v)) for v in value[:32])
            + (" …" if len(value) > 32 else "")
            + "]"
        )
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def _table(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _page(record: RunRecord, figures: list[tuple[str, str, Path]]) -> str:
    start, stop = record.start, record.stop
    when = dt.datetime.fromtimestamp(start.time).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    units = start.parameter_units
    latest = record.segments[-1]
    params = [
        (name, _fmt(value) + (f" {units[name]}" if units.get(name) else ""))
        for name, value in latest.parameters.items()
    ]
    result: list[tuple[str, str]] = [("status", record.status)]
    if stop is not None:
        result += [
            ("reason", stop.reason or "—"),
            ("events", str(stop.n_events)),
            ("device time", f"{stop.device_time_s:.4g} s"),
            ("wall time", f"{stop.wall_time_s:.4g} s"),
        ]
        result += [(k, _fmt(v)) for k, v in stop.summary.items() if k not in ("last_scalars",)]
    else:
        result.append(("events", str(len(record.events))))
    for stream in record.streams.values():
        for name in stream.status:
            column = record.events.scalars.get(name)
            if column is not None and np.isfinite(column).any():
                key = stream.key(name)
                value = float(column[np.isfinite(column)][-1])
                result.append(
                    (f"last {key.description or name}", f"{value:.6g} {key.units}".strip())
                )
    station = start.station or {}
    station_rows = [(k, _fmt(v)) for k, v in station.items() if k != "text"]
    station_text = latest.station_text or str(station.get("text", ""))
    problems = [log for log in record.logs if log.level in ("warning", "error")]
    figs = "".join(
        f'<figure><img src="{html.escape(path.name)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for _, caption, path in figures
    )
    logs = "".join(
        f"<li class='{log.level}'>[{log.level}] event {log.seq_num}: "
        f"{html.escape(log.message[:2000])}</li>"
        for log in problems[:200]
    )
    version = html.escape(str(start.versions.get("labrig", "?")))
    segments = (
        f"<p>Resumed {len(record.segments) - 1} time(s).</p>" if len(record.segments) > 1 else ""
    )
    title = f"{start.procedure} — {record.run_dir.name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
th, td {{ text-align: left; padding: 2px 10px; border-bottom: 1px solid #ddd;
  vertical-align: top; }}
th {{ font-weight: 600; white-space: nowrap; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
pre {{ background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 85%; }}
li.error {{ color: #b00; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Run {html.escape(start.run_uid)}, started {html.escape(when)}; procedure
<code>{html.escape(start.procedure_class)}</code>, labrig {version}.
</p>{segments}
<h2>Result</h2>{_table(result)}
<h2>Parameters</h2>{_table(params)}
<h2>Station</h2>{_table(station_rows)}
<details><summary>station file</summary><pre>{html.escape(station_text)}</pre></details>
<h2>Figures</h2>{figs}
<h2>Warnings and errors</h2>{f"<ul>{logs}</ul>" if logs else "<p>none</p>"}
</body></html>
"""


def make_report(
    run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Write the run's report page and its figures; return their paths, the page first.

    Works on finished, crashed and running records. ``out_dir`` defaults to
    ``<run_dir>/report``. Raises :class:`EmptyRunError` if the run recorded no event.
    """
    record = RunRecord.open(run_dir)
    if len(record.events) == 0:
        raise EmptyRunError(
            f"{record.run_dir}: the run recorded no events ({record.status}); nothing to report"
        )
    target = Path(out_dir) if out_dir is not None else record.run_dir / "report"
    target.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, str, Path]] = []
    for stem, caption, fig in report_figures(record):
        path = target / f"{stem}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        written.append((stem, caption, path))
    page = target / "index.html"
    page.write_text(_page(record, written), encoding="utf-8")
    return [page, *(path for _, _, path in written)]
