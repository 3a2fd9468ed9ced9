"""Plots of a run, live or recorded: a data model fed by event documents, and a board of panels.

:class:`RunData` accumulates what the plots need from :class:`~labrig.runs.documents.EventDoc`
documents: every scalar of every event (NaN where an event lacked it), the full history of small
arrays (control voltages: a curve per electrode against the iteration), and only the newest value
of large arrays (traces, images; drawing an older one would be wasted work). A recorded run is
turned into the same documents (:meth:`RunData.from_record`), so the run browser draws with exactly
the code that draws a live run.

:class:`PlotBoard` builds its panels from the run's declaration (the EventDescriptors: data
keys with units, axis names and labels, and the procedure's plot hints): loss and accuracy
curves, the HGE views (control voltages and gradients per electrode by name, case outputs
against the decision threshold, the TIA trace on its time axis), the aug-DFA views (drive and
photodetector traces, node states, test error per class), an I-V curve with error bars. A
declared key no hint mentions gets a panel by its shape; bookkeeping keys the declaration marks
as status (device time, restarts) go to the status bar (:meth:`PlotBoard.status_text`), not
to a panel. Every axis is labelled with the key's description and units; legends sit below
the plot, outside the data. ``refresh()`` redraws only
panels whose inputs changed; the main window calls it from a ~30 Hz frame timer, so a burst of
events costs one redraw. Large traces are drawn with peak downsampling and clipping to the view.
Each panel moves its view only when the data leave it (:class:`AxisFollower`), not on every
frame as pyqtgraph's auto-range would: a new range regenerates the axes' ticks and text, which
was most of a frame's cost (``scripts/bench_gui.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QLabel,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from labrig.runs.documents import DataKey, DescriptorDoc, EventDoc, PlotHint, StreamDeclaration
from labrig.runs.record import RunRecord

__all__ = ["PanelPlan", "PlotBoard", "RunData", "plan_panels"]

SMALL_ARRAY_SIZE = 64  # arrays up to this many elements keep their full history
PEN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")

pg.setConfigOptions(antialias=False, background="w", foreground="k")


# ------------------------------------------------------------------------------------ data


class _Growing:
    """An append-only numpy buffer (amortised O(1) append; ``view()`` without copying)."""

    def __init__(self, row_shape: tuple[int, ...] = (), fill_rows: int = 0) -> None:
        self.row_shape = row_shape
        self._buffer = np.full((max(64, 2 * fill_rows), *row_shape), np.nan)
        self.n = fill_rows

    def append(self, value: Any) -> None:
        if self.n == self._buffer.shape[0]:
            bigger = np.full((2 * self.n, *self.row_shape), np.nan)
            bigger[: self.n] = self._buffer
            self._buffer = bigger
        self._buffer[self.n] = value
        self.n += 1

    def view(self) -> np.ndarray:
        return self._buffer[: self.n]


@dataclass
class _History:
    """The rows of one small array and the index of the event each came from."""

    rows: _Growing
    event_index: list[int] = field(default_factory=list)


class RunData:
    """What the plots show of one run, built event by event.

    ``version`` counts changes; ``versions[name]`` is the ``version`` at which scalar or array
    ``name`` last changed, so a panel redraws only when one of its inputs did.
    """

    def __init__(self) -> None:
        self.seq = _Growing()
        self.scalars: dict[str, _Growing] = {}
        self.history: dict[str, _History] = {}
        self.latest: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.versions: dict[str, int] = {}
        self.version = 0
        self.n_events = 0
        self.streams: dict[str, StreamDeclaration] = {}
        self.keys: dict[str, DataKey] = {}
        self.x_name = ""

    def declare(self, stream: StreamDeclaration) -> None:
        """Take a stream's declaration (its descriptor): keys, units, hints, x axis."""
        self.streams[stream.name] = stream
        for key in stream.keys:
            self.keys[key.name] = key
        if stream.x and (not self.x_name or stream.name == "primary"):
            self.x_name = stream.x
        self.version += 1
        self.versions["__declared__"] = self.version

    # ---- input --------------------------------------------------------------------------

    def add_event(self, doc: EventDoc) -> None:
        """Take one event's scalars and arrays."""
        self.version += 1
        index = self.n_events
        self.seq.append(doc.seq_num)
        for name, value in doc.scalars.items():
            column = self.scalars.get(name)
            if column is None:
                column = self.scalars[name] = _Growing(fill_rows=index)
            column.append(value)
            self.versions[name] = self.version
        for column in self.scalars.values():
            if column.n == index:  # this event lacked the scalar
                column.append(np.nan)
        for name, array in doc.arrays.items():
            array = np.asarray(array)
            self.latest[name] = array
            self.shapes[name] = tuple(array.shape)
            self.versions[name] = self.version
            if array.size <= SMALL_ARRAY_SIZE:
                history = self.history.get(name)
                if history is None or history.rows.row_shape != array.shape:
                    history = self.history[name] = _History(_Growing(tuple(array.shape)))
                history.rows.append(array)
                history.event_index.append(index)
        self.n_events += 1
        self.versions["__x__"] = self.version

    @classmethod
    def from_record(cls, record: RunRecord) -> RunData:
        """The same data a live view of the run would have collected."""
        data = cls()
        for stream in record.streams.values():
            data.declare(stream)
        for doc in record_events(record):
            data.add_event(doc)
        return data

    # ---- output -------------------------------------------------------------------------

    def x_axis(self) -> tuple[str, np.ndarray]:
        """The x axis of per-iteration plots: the scalar the declaration orders events by
        (``iteration``, ``epoch``) while every event has it, else the event number."""
        column = self.scalars.get(self.x_name) if self.x_name else None
        if column is not None:
            values = column.view()
            if np.all(np.isfinite(values)):
                return self.x_name, values
        return "event", self.seq.view()

    def x_label(self) -> str:
        """The x axis's label, with units if the key has any."""
        name, _ = self.x_axis()
        key = self.keys.get(name)
        return key.label() if key is not None else "event number"

    def status_text(self) -> str:
        """The newest value of every status key (device time, restarts), with units."""
        parts = []
        for stream in self.streams.values():
            for name in stream.status:
                column = self.scalars.get(name)
                if column is None or column.n == 0:
                    continue
                values = column.view()
                finite = values[np.isfinite(values)]
                if finite.size == 0:
                    continue
                key = stream.key(name)
                unit = f" {key.units}" if key.units else ""
                parts.append(f"{key.description or name} {finite[-1]:.4g}{unit}")
        return " · ".join(parts)

    def scalar(self, name: str) -> np.ndarray:
        return self.scalars[name].view()

    def history_xy(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, rows) of a small array's history, x from :meth:`x_axis`."""
        history = self.history[name]
        _, x = self.x_axis()
        return x[np.asarray(history.event_index, dtype=int)], history.rows.view()

    def changed_since(self, names: Iterable[str], seen: int) -> bool:
        return any(self.versions.get(name, 0) > seen for name in names)


def record_events(record: RunRecord) -> list[EventDoc]:
    """Rebuild the event documents of a record (arrays attached to the events that carried
    them; a NaN scalar is treated as absent, which is how the record stores absence)."""
    events = record.events
    by_seq: dict[int, dict[str, np.ndarray]] = {}
    for name, seqs in events.array_seq.items():
        rows = events.rows(name)
        for seq, row in zip(seqs.tolist(), rows, strict=False):
            by_seq.setdefault(int(seq), {})[name] = np.asarray(row)
    docs = []
    for i, seq in enumerate(events.seq_num.tolist()):
        scalars = {
            name: float(column[i])
            for name, column in events.scalars.items()
            if not math.isnan(float(column[i]))
        }
        docs.append(
            EventDoc(
                run_uid=record.start.run_uid,
                seq_num=int(seq),
                time=float(events.time[i]),
                scalars=scalars,
                arrays=by_seq.get(int(seq), {}),
                stream=events.stream[i] if i < len(events.stream) else "primary",
            )
        )
    return docs


# ------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PanelPlan:
    """Which panel to show: ``kind`` picks the class, ``names`` its inputs (in its order);
    the labels come from the declaration (description and units of each key)."""

    key: str
    kind: str  # scalars | xy | history | bars | cases | trace | image
    title: str
    names: tuple[str, ...]
    log_option: bool = False
    y_label: str = ""
    x_label: str = ""
    labels: tuple[str, ...] = ()  # the elements' names (electrodes, cases, classes)
    legend: tuple[str, ...] = ()  # one entry per curve


_HINT_KINDS = {
    "lines": "scalars",
    "xy": "xy",
    "history": "history",
    "bars": "bars",
    "cases": "cases",
    "trace": "trace",
    "image": "image",
    "histogram": "bars",
}


def _labels_of(key: DataKey | None) -> tuple[str, ...]:
    return (key.labels(0) or ()) if key is not None else ()


def _plan_hint(hint: PlotHint, keys: dict[str, DataKey]) -> PanelPlan:
    y0 = keys.get(hint.y[0])
    kind = _HINT_KINDS[hint.kind]
    title = hint.title or (y0.description if y0 is not None and y0.description else hint.y[0])
    y_label = y0.label() if y0 is not None else hint.y[0]
    x_key = keys.get(hint.x) if hint.x else None
    x_label = x_key.label() if x_key is not None else ""
    labels = _labels_of(y0)
    legend: tuple[str, ...] = ()
    names: tuple[str, ...] = hint.y
    if kind == "scalars":
        legend = tuple(keys[n].description or n for n in hint.y) if len(hint.y) > 1 else ()
        units = {keys[n].units for n in hint.y}
        if len(hint.y) > 1:
            y_label = hint.title + (
                f" ({units.pop()})" if len(units) == 1 and "" not in units else ""
            )
    elif kind == "xy":
        names = (hint.x, hint.y[0], *((hint.error,) if hint.error else ()))
    elif kind == "cases":
        names = (hint.y[0], hint.targets, hint.threshold)
        x_label = y0.dims[0] if y0 is not None and y0.dims else "case"
        x_label = f"input {x_label} (green: target high, red: low)"
    elif kind == "trace":
        names = (hint.y[0], hint.x) if hint.x else (hint.y[0],)
        if not x_label:
            x_label = y0.dims[0] if y0 is not None and y0.dims else "sample"
    elif kind in ("bars", "history"):
        legend = labels if kind == "history" else ()
        dim = y0.dims[0] if y0 is not None and y0.dims else "index"
        if kind == "bars":
            x_label = dim
    elif kind == "image" and y0 is not None and len(y0.dims) == 2:
        x_label, y_label = y0.dims[1], y0.dims[0]
        if y0.units:
            title = f"{title} ({y0.units})"
    return PanelPlan(
        hint.panel,
        kind,
        title,
        tuple(n for n in names if n),
        log_option=hint.log_y,
        y_label=y_label,
        x_label=x_label,
        labels=labels,
        legend=legend,
    )


def plan_panels(data: RunData) -> list[PanelPlan]:
    """The panels of a run, from its declaration: one per plot hint, then one per declared key
    that no hint draws and that is not bookkeeping (status) or an x axis, chosen by its shape
    (scalar: curve; small 1-D: history per element; 1-D: trace; 2-D: image)."""
    plans: list[PanelPlan] = []
    used: set[str] = set()
    for stream in data.streams.values():
        used.update(stream.status)
        if stream.x:
            used.add(stream.x)
        for hint in stream.plots:
            plans.append(_plan_hint(hint, data.keys))
            used.update(hint.names())
    for name, key in data.keys.items():
        if name in used:
            continue
        label = key.label()
        labels = _labels_of(key)
        if key.is_scalar:
            plan = PanelPlan(f"scalar:{name}", "scalars", label, (name,), y_label=label)
        elif len(key.shape) == 1 and key.shape[0] is not None and key.shape[0] <= SMALL_ARRAY_SIZE:
            plan = PanelPlan(
                f"history:{name}",
                "history",
                label,
                (name,),
                y_label=label,
                labels=labels,
                legend=labels,
            )
        elif len(key.shape) == 1:
            x = key.dims[0] if key.dims else "sample"
            plan = PanelPlan(f"trace:{name}", "trace", label, (name,), y_label=label, x_label=x)
        elif len(key.shape) == 2:
            x, y = key.dims if key.dims else ("column", "row")
            plan = PanelPlan(f"image:{name}", "image", label, (name,), y_label=y, x_label=x)
        else:
            continue
        plans.append(plan)
    return plans


# --------------------------------------------------------------------------------- panels


def _pen(index: int, width: float = 1.5) -> Any:
    return pg.mkPen(PEN_COLORS[index % len(PEN_COLORS)], width=width)


Span = tuple[float, float]


@dataclass(frozen=True)
class Extent:
    """What a panel drew, in view coordinates (log10 on a log axis); None: nothing on that axis."""

    x: Span | None
    y: Span | None


def finite_span(*arrays: np.ndarray) -> Span | None:
    """(min, max) of the finite values of ``arrays``; None if there are none."""
    lows, highs = [], []
    for array in arrays:
        values = np.asarray(array, dtype=float)
        if values.size == 0:
            continue
        low, high = float(np.min(values)), float(np.max(values))
        if not (math.isfinite(low) and math.isfinite(high)):  # a NaN or inf somewhere
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            low, high = float(values.min()), float(values.max())
        lows.append(low)
        highs.append(high)
    return (min(lows), max(highs)) if lows else None


# The view follows the data (Panel.follow) with hysteresis, so that data that changes every frame
# rarely moves the view (a new range makes pyqtgraph regenerate both axes' ticks and text):
# a fit pads the data by FIT_PADDING of its span on each side (a growing history, x = iteration,
# gets FIT_HEADROOM more on the right: a run of n iterations re-fits its x axis about
# log(n)/log(1 + FIT_HEADROOM) times); data that leaves the view widens it, keeping what it
# showed; the view narrows again only once the data has filled less than FIT_SHRINK of it for
# FIT_SHRINK_AFTER redraws in a row (a gradient's size varies 5x from one iteration to the next).
FIT_PADDING = 0.1
FIT_HEADROOM = 0.25
FIT_SHRINK = 0.3
FIT_SHRINK_AFTER = 15


class AxisFollower:
    """Where one axis of a view should be, redraw after redraw (see FIT_* above)."""

    def __init__(self, headroom: float = 0.0) -> None:
        self.headroom = headroom
        self.small_for = 0

    def target(self, data: Span) -> Span:
        """The range that fits ``data`` afresh."""
        low, high = data
        span = high - low
        if span > 0.0:
            return (low - FIT_PADDING * span, high + (FIT_PADDING + self.headroom) * span)
        half = 0.05 * abs(low) if low else 0.5  # a flat line: a window of 10 % of its value
        return (low - half, high + half)

    def update(self, data: Span, view: Span | None) -> Span | None:
        """The new range for ``data`` given the current ``view`` (None: fit afresh), or None
        if the view can stay as it is."""
        target = self.target(data)
        if view is None:
            self.small_for = 0
            return target
        low, high = data
        view_low, view_high = view
        small = target[1] - target[0] < FIT_SHRINK * (view_high - view_low)
        if view_low <= low and high <= view_high:
            self.small_for = self.small_for + 1 if small else 0
            if self.small_for < FIT_SHRINK_AFTER:
                return None
            self.small_for = 0
            return target
        self.small_for = 0
        union = (min(view_low, target[0]), max(view_high, target[1]))
        if target[1] - target[0] < FIT_SHRINK * (union[1] - union[0]):
            return target  # far from what was shown: start afresh
        return union


class Panel(QWidget):
    """One plot with a title; subclasses draw their inputs from a :class:`RunData`.

    The view follows the data (see :meth:`follow`) until the operator pans or zooms; pyqtgraph's
    "A" (auto-range) button hands it back to the data.
    """

    # Extra room on the right of the x axis: histories grow to the right every iteration.
    x_headroom = 0.0

    def __init__(self, plan: PanelPlan, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plan = plan
        self.seen = -1
        self.fits = 0
        self.following = True
        self._fitted = False
        self.x_follower = AxisFollower(headroom=self.x_headroom)
        self.y_follower = AxisFollower()
        self._labels: dict[str, str] = {}
        self.plot_widget = pg.PlotWidget()
        self.plot = self.plot_widget.getPlotItem()
        self.view_box = self.plot.getViewBox()
        self.plot.setTitle(plan.title, size="9pt")
        # No grid: pyqtgraph draws grid lines with alpha across the whole view on every
        # repaint, which doubled the cost of a frame (scripts/bench_gui.py).
        self.plot.setDownsampling(auto=True, mode="peak")
        self.plot.setClipToView(True)
        # pyqtgraph's auto-range re-fits the view before every paint that follows a setData, and
        # a new range regenerates both axes (ticks, text): that was most of a frame's cost. The
        # panel fits the view itself, and only when the data leaves it (follow()).
        self.view_box.disableAutoRange()
        self.plot.sigRangeChangedManually.connect(self._moved_by_operator)
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.setSpacing(0)
        self.layout_.addWidget(self.plot_widget)
        # The legend sits under the plot, never over the data.
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setVisible(False)
        self.layout_.addWidget(self.legend)
        self.setMinimumHeight(210)
        # The labels carry the declared units; pyqtgraph's SI rescaling ("x0.001") would
        # contradict them.
        for side in ("left", "bottom"):
            self.plot.getAxis(side).enableAutoSIPrefix(False)
        if plan.y_label:
            self.set_axis_label("left", plan.y_label)
        if plan.x_label:
            self.set_axis_label("bottom", plan.x_label)
        if plan.legend:
            self.set_legend(plan.legend)

    def set_legend(self, entries: Iterable[str]) -> None:
        """Name each curve, in its pen's colour, below the plot."""
        html = "&nbsp;&nbsp;".join(
            f'<span style="color:{PEN_COLORS[i % len(PEN_COLORS)]}">&#9632;</span>&nbsp;{name}'
            for i, name in enumerate(entries)
        )
        self.legend.setText(f'<span style="font-size:8pt">{html}</span>')
        self.legend.setVisible(bool(html))

    def axis_label(self, side: str) -> str:
        """The text of an axis's label ("" if none)."""
        return self._labels.get(side, "")

    def inputs(self) -> tuple[str, ...]:
        return self.plan.names

    def set_axis_label(self, side: str, text: str) -> None:
        """Set an axis label only when it changes (a new label re-lays out the plot)."""
        if self._labels.get(side) != text:
            self._labels[side] = text
            self.plot.setLabel(side, text)

    def refresh(self, data: RunData, force: bool = False) -> bool:
        """Redraw if an input changed since the last redraw (or ``force``); True if it did."""
        if not force and not data.changed_since(self.inputs(), self.seen):
            return False
        extent = self.draw(data)
        self.seen = data.version
        if extent is not None:
            self.follow(extent)
        return True

    def draw(self, data: RunData) -> Extent | None:
        """Update the items from ``data``; returns the extent of what is drawn."""
        raise NotImplementedError

    def follow(self, extent: Extent, refit: bool = False) -> None:
        """Move the view to the data if the data left it (or ``refit``), unless the operator has
        taken the view over."""
        if any(self.view_box.autoRangeEnabled()):
            # The operator pressed "A" (or pyqtgraph re-enabled auto-range after a change of
            # log mode): follow the data again, with the cheaper fitting.
            self.view_box.disableAutoRange()
            self.following = True
            refit = True
        if not self.following:
            return
        refit = refit or not self._fitted
        (x_low, x_high), (y_low, y_high) = self.view_box.viewRange()
        x_new = y_new = None
        if extent.x is not None:
            x_new = self.x_follower.update(extent.x, None if refit else (x_low, x_high))
        if extent.y is not None:
            y_new = self.y_follower.update(extent.y, None if refit else (y_low, y_high))
        self._fitted = True
        if x_new is None and y_new is None:
            return
        self.fits += 1
        self.view_box.setRange(xRange=x_new, yRange=y_new, padding=0.0, update=True)

    def _moved_by_operator(self, _mask: object) -> None:
        self.following = False


class ScalarsPanel(Panel):
    """Scalars against the iteration; optional log scale for y."""

    x_headroom = FIT_HEADROOM

    def __init__(self, plan: PanelPlan, parent: QWidget | None = None) -> None:
        super().__init__(plan, parent)
        self.curves: dict[str, Any] = {}
        for i, name in enumerate(plan.names):
            curve = self.plot.plot(pen=_pen(i), name=name, connect="finite")
            self.curves[name] = curve
        self.log_y = False
        self.log_box: QCheckBox | None = None
        if plan.log_option:
            # Floats over the plot's top-left corner, so every panel keeps the same size.
            self.log_box = QCheckBox("log y", self.plot_widget)
            self.log_box.move(6, 4)
            self.log_box.toggled.connect(self.set_log_scale)

    def inputs(self) -> tuple[str, ...]:
        return (*self.plan.names, "__x__")

    def set_log_scale(self, on: bool) -> None:
        self.log_y = on
        self.plot.setLogMode(x=False, y=on)

    def draw(self, data: RunData) -> Extent:
        _, x = data.x_axis()
        self.set_axis_label("bottom", data.x_label())
        drawn = []
        for name, curve in self.curves.items():
            if name in data.scalars:
                y = data.scalar(name)
                curve.setData(x, y)
                drawn.append(y)
        y_span = finite_span(*drawn)
        if self.log_y:
            # The view of a log axis is in decades; non-positive values are not drawn.
            positive = [y[y > 0] for y in drawn]
            y_span = finite_span(*(np.log10(p) for p in positive))
        return Extent(finite_span(x), y_span)


class XYPanel(Panel):
    """One scalar against another (an I–V sweep, a transfer curve), every event a point."""

    def __init__(self, plan: PanelPlan, parent: QWidget | None = None) -> None:
        super().__init__(plan, parent)
        # A sweep's x is not sorted (up and back down): clipping to the view and peak
        # downsampling both assume sorted x, and a sweep has few points anyway.
        self.plot.setClipToView(False)
        self.plot.setDownsampling(auto=False)
        self.curve = self.plot.plot(
            pen=_pen(0), symbol="o", symbolSize=4, symbolBrush=PEN_COLORS[0], connect="finite"
        )
        self.error_bars: Any = None
        if len(plan.names) > 2:  # the declared spread of y: error bars (1 sigma each way)
            self.error_bars = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), pen=_pen(0, 1.0))
            self.plot.addItem(self.error_bars)

    def draw(self, data: RunData) -> Extent | None:
        x_name, y_name = self.plan.names[:2]
        if x_name not in data.scalars or y_name not in data.scalars:
            return None
        x, y = data.scalar(x_name), data.scalar(y_name)
        self.curve.setData(x, y)
        if self.error_bars is not None and self.plan.names[2] in data.scalars:
            err = np.nan_to_num(data.scalar(self.plan.names[2]))
            self.error_bars.setData(x=x, y=y, top=err, bottom=err)
            return Extent(finite_span(x), finite_span(y - err, y + err))
        return Extent(finite_span(x), finite_span(y))


class HistoryPanel(Panel):
    """Each element of a small array against the iteration (control voltages)."""

    x_headroom = FIT_HEADROOM

    def __init__(self, plan: PanelPlan, parent: QWidget | None = None) -> None:
        super().__init__(plan, parent)
        self.curves: list[Any] = []

    def inputs(self) -> tuple[str, ...]:
        return (*self.plan.names, "__x__")

    def draw(self, data: RunData) -> Extent | None:
        name = self.plan.names[0]
        if name not in data.history:
            return None
        x, rows = data.history_xy(name)
        self.set_axis_label("bottom", data.x_label())
        flat = rows.reshape(rows.shape[0], -1)
        while len(self.curves) < flat.shape[1]:
            i = len(self.curves)
            self.curves.append(self.plot.plot(pen=_pen(i)))
            if not self.plan.legend:
                self.set_legend(f"{name}[{k}]" for k in range(len(self.curves)))
        for i, curve in enumerate(self.curves):
            if i < flat.shape[1]:
                curve.setData(x, flat[:, i])
            else:
                curve.setData([], [])
        return Extent(finite_span(x), finite_span(flat))


class BarsPanel(Panel):
    """The newest value of an array as bars (gradient per electrode, readout error)."""

    def __init__(self, plan: PanelPlan, parent: QWidget | None = None) -> None:
        super().__init__(plan, parent)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.6, brush=PEN_COLORS[0])
        self.plot.addItem(self.bars)
        if not plan.x_label:
            self.set_axis_label("bottom", "index")
        self.values = np.empty(0)
        self.ticks_for = -1

    def draw(self, data: RunData) -> Extent | None:
        if self.plan.names[0] not in data.latest:
            return None
        values = np.asarray(data.latest[self.plan.names[0]], dtype=float).ravel()
        self.values = values
        self.bars.setOpts(x=np.arange(values.size), height=values, width=0.6)
        self.ticks_for = _integer_ticks(self.plot, values.size, self.ticks_for, self.plan.labels)
        return _bars_extent(values)


class CasesPanel(Panel):
    """The newest output per input case, coloured by target, and the decision threshold."""

    HIGH = "#2ca02c"
    LOW = "#d62728"

    def __init__(self, plan: PanelPlan, parent: QWidget | None = None) -> None:
        super().__init__(plan, parent)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.6)
        self.points = self.plot.plot(pen=None, symbol="o", symbolSize=8, symbolBrush="k")
        self.threshold = pg.InfiniteLine(
            angle=0, movable=False, pen=pg.mkPen("#444", width=1.5, style=Qt.PenStyle.DashLine)
        )
        self.plot.addItem(self.bars)
        self.plot.addItem(self.threshold)
        self.threshold.hide()
        self.values = np.empty(0)
        self.ticks_for = -1

    def draw(self, data: RunData) -> Extent | None:
        outputs_name, targets_name, threshold_name = self.plan.names
        if outputs_name not in data.latest:
            return None
        outputs = np.asarray(data.latest[outputs_name], dtype=float).ravel()
        self.values = outputs
        x = np.arange(outputs.size)
        targets = data.latest.get(targets_name)
        if targets is not None and np.asarray(targets).size == outputs.size:
            high = np.asarray(targets, dtype=float).ravel() > 0.5
            brushes = [self.HIGH if h else self.LOW for h in high]
        else:
            brushes = [PEN_COLORS[0]] * outputs.size
        self.bars.setOpts(x=x, height=outputs, width=0.6, brushes=brushes)
        self.ticks_for = _integer_ticks(self.plot, outputs.size, self.ticks_for, self.plan.labels)
        self.points.setData(x, outputs)
        extent = _bars_extent(outputs)
        threshold = data.scalars.get(threshold_name)
        if threshold is not None and np.isfinite(threshold.view()[-1]):
            level = float(threshold.view()[-1])
            self.threshold.setPos(level)
            self.threshold.show()
            if extent.y is not None:  # the threshold stays in view
                extent = Extent(extent.x, (min(extent.y[0], level), max(extent.y[1], level)))
        else:
            self.threshold.hide()
        return extent


class TracePanel(Panel):
    """The newest trace (up to 1e5+ points), peak-downsampled and clipped to the view."""

    def __init__(self, plan: PanelPlan, parent: QWidget | None = None) -> None:
        super().__init__(plan, parent)
        self.curve = self.plot.plot(pen=_pen(0, width=1.0))
        self.curve.setSkipFiniteCheck(True)

    def draw(self, data: RunData) -> Extent | None:
        if self.plan.names[0] not in data.latest:
            return None
        y = np.asarray(data.latest[self.plan.names[0]], dtype=float).ravel()
        x_name = self.plan.names[1] if len(self.plan.names) > 1 else ""
        x = data.latest.get(x_name) if x_name else None
        if x is None or np.asarray(x).size != y.size:
            self.curve.setData(y)
            return Extent((0.0, float(max(y.size - 1, 0))), finite_span(y))
        x = np.asarray(x, dtype=float).ravel()
        self.curve.setData(x, y)
        return Extent(finite_span(x), finite_span(y))


class ImagePanel(Panel):
    """The newest 2-D array as an image (node states; dI/dV per case and electrode)."""

    def __init__(self, plan: PanelPlan, parent: QWidget | None = None) -> None:
        super().__init__(plan, parent)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(pg.colormap.get("viridis"))
        self.plot.addItem(self.image)
        self.plot.setAspectLocked(False)
        self.plot.invertY(True)
        self._title = ""

    def draw(self, data: RunData) -> Extent | None:
        if self.plan.names[0] not in data.latest:
            return None
        array = np.asarray(data.latest[self.plan.names[0]], dtype=float)
        if array.ndim == 1:
            array = array[None, :]
        elif array.ndim > 2:
            array = array.reshape(array.shape[0], -1)
        finite = array[np.isfinite(array)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if high <= low:
            high = low + 1.0
        self.image.setImage(array, levels=(low, high))
        title = f"{self.plan.title}  [{low:.2g} … {high:.2g}]"
        if title != self._title:
            self._title = title
            self.plot.setTitle(title, size="9pt")
        rows, columns = array.shape
        return Extent((0.0, float(columns)), (0.0, float(rows)))


def _integer_ticks(plot: Any, n: int, ticks_for: int, labels: tuple[str, ...] = ()) -> int:
    """Label bars 0 … n-1 by ``labels`` (electrode names, cases) or their index (no
    fractional ticks); for many bars let the axis choose. Returns n.

    ``ticks_for``: the n of the ticks already set; the same n sets nothing, since new ticks
    throw away the axis's cached picture.
    """
    if n == ticks_for:
        return n
    axis = plot.getAxis("bottom")
    if len(labels) == n and n <= 32:
        axis.setTicks([[(i, labels[i]) for i in range(n)]])
    elif n <= 24:
        axis.setTicks([[(i, str(i)) for i in range(n)]])
    else:
        axis.setTicks(None)
    return n


def _bars_extent(heights: np.ndarray) -> Extent:
    """Bars 0.6 wide at 0 … n-1, from 0 up (or down) to ``heights``."""
    span = finite_span(heights)
    y = None if span is None else (min(span[0], 0.0), max(span[1], 0.0))
    return Extent((-0.5, heights.size - 0.5), y)


PANEL_KINDS: dict[str, type[Panel]] = {
    "scalars": ScalarsPanel,
    "xy": XYPanel,
    "history": HistoryPanel,
    "bars": BarsPanel,
    "cases": CasesPanel,
    "trace": TracePanel,
    "image": ImagePanel,
}


# ---------------------------------------------------------------------------------- board


class PlotBoard(QWidget):
    """A scrollable grid of panels chosen from the data; the same widget for live and recorded
    runs. Feed it with :meth:`add_event` (or :meth:`show_data`), redraw with :meth:`refresh`."""

    def __init__(self, columns: int = 3, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.columns = columns
        self.data = RunData()
        self.panels: dict[str, Panel] = {}
        self.redraws = 0
        self._next_panel = 0
        self._draw_cost_s: dict[str, float] = {}  # panel key -> what drawing it took lately
        self.last_drawn: list[str] = []  # the keys of the panels the last refresh() drew
        self._planned_for: frozenset[str] | None = None
        self._placeholder = QLabel("No run yet: choose a procedure and press Start.")
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._grid_host = QWidget()
        self._grid = QGridLayout(self._grid_host)
        self._grid.setContentsMargins(4, 4, 4, 4)
        self._grid.setSpacing(6)
        self._grid.addWidget(self._placeholder, 0, 0)
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._scroll.setWidget(self._grid_host)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._scroll)

    # ---- data ---------------------------------------------------------------------------

    def reset(self, message: str = "Waiting for the first event…") -> None:
        """Forget the data and the panels (a new run starts)."""
        self.data = RunData()
        for panel in self.panels.values():
            self._drop(panel)
        self.panels = {}
        self._planned_for = None
        self._placeholder.setText(message)
        self._placeholder.show()

    def add_event(self, doc: EventDoc) -> None:
        """Take an event; nothing is drawn until :meth:`refresh`."""
        self.data.add_event(doc)

    def add_descriptor(self, doc: DescriptorDoc) -> None:
        """Take a stream's declaration: the panels are planned from it."""
        self.data.declare(doc.stream)

    def status_text(self) -> str:
        """Bookkeeping for the status bar: the newest status values, with units."""
        return self.data.status_text()

    def show_data(self, data: RunData) -> None:
        """Replace the data (a recorded run) and draw it now."""
        self.reset()
        self.data = data
        self.refresh()

    # ---- drawing ------------------------------------------------------------------------

    def refresh(self, paint: bool = False, budget_s: float | None = None) -> int:
        """Add panels for new names, redraw panels whose inputs changed; returns how many.

        ``paint``: also paint the changed panels now (synchronously) instead of leaving it to
        the event loop, so that the caller can time a whole frame.

        ``budget_s``: draw only the panels that fit into this time, judged by what each panel
        took to draw before (at least one panel is drawn). The panels left out stay out of
        date, and the next call starts with them, so a frame can be drawn in slices that each
        fit into a gap; :meth:`outdated` names them.
        """
        self._plan()
        t0 = time.perf_counter()
        drawn = 0
        self.last_drawn = []
        panels = list(self.panels.values())
        # Start after the panel drawn last, so that slices take the panels in turn.
        start = self._next_panel % len(panels) if panels else 0
        for offset in range(len(panels)):
            index = (start + offset) % len(panels)
            panel = panels[index]
            key = panel.plan.key
            if budget_s is not None and drawn:
                expected = self._draw_cost_s.get(key, 0.0)
                if time.perf_counter() - t0 + expected > budget_s:
                    break
            t_panel = time.perf_counter()
            if panel.refresh(self.data):
                drawn += 1
                self._next_panel = index + 1
                self.last_drawn.append(key)
                if paint:
                    viewport = panel.plot_widget.viewport()
                    if viewport is not None and panel.isVisible():
                        viewport.repaint()
                    cost = time.perf_counter() - t_panel
                    previous = self._draw_cost_s.get(key)
                    # Follows a slower panel at once, a faster one gradually.
                    self._draw_cost_s[key] = (
                        cost if previous is None or cost > previous else 0.8 * previous + 0.2 * cost
                    )
        self.redraws += drawn
        return drawn

    def outdated(self) -> set[str]:
        """The keys of the panels that show older data than the board holds."""
        return {
            key
            for key, panel in self.panels.items()
            if self.data.changed_since(panel.inputs(), panel.seen)
        }

    def _plan(self) -> None:
        data = self.data
        if not data.streams:
            return
        key = frozenset(data.streams)
        if key == self._planned_for:
            return
        self._planned_for = key
        plans = plan_panels(data)
        wanted = {plan.key for plan in plans}
        for stale in [k for k in self.panels if k not in wanted]:
            self._drop(self.panels.pop(stale))
        for plan in plans:
            if plan.key not in self.panels or self.panels[plan.key].plan != plan:
                if plan.key in self.panels:
                    self._drop(self.panels.pop(plan.key))
                self.panels[plan.key] = PANEL_KINDS[plan.kind](plan)
        self._placeholder.hide()
        self._grid.removeWidget(self._placeholder)
        ordered = {plan.key: self.panels[plan.key] for plan in plans}
        self.panels = ordered
        for i, panel in enumerate(ordered.values()):
            self._grid.addWidget(panel, i // self.columns, i % self.columns)
            panel.show()

    def _drop(self, panel: Panel) -> None:
        """Take ``panel`` off the grid and let Qt delete it."""
        self._grid.removeWidget(panel)
        panel.setParent(None)
        panel.deleteLater()

    def panel(self, key: str) -> Panel | None:
        """The panel shown under ``key`` ("loss", "history:controls_v", "trace:trace_na", …)."""
        return self.panels.get(key)

    def panel_keys(self) -> list[str]:
        return list(self.panels)

    def export_png(self, path: str | Path) -> Path:
        """Save the whole board (every panel, also those scrolled out of view) as a PNG."""
        target = Path(path)
        if target.suffix.lower() != ".png":
            target = target.with_suffix(".png")
        pixmap = self._grid_host.grab()
        if not pixmap.save(str(target), "PNG"):
            raise OSError(f"could not write {target}")
        return target
