"""The main window: station and procedure on the left, live plots and the run browser in the
middle, logs below. It owns the open rig and the run in progress.

Threads: the procedure runs in the runner's worker thread (:class:`~labrig.gui.worker.RunWorker`);
its documents reach this window through a :class:`~labrig.gui.worker.DocumentBridge` signal and
are folded into the live plot data at once (cheap). Drawing redraws only the panels whose data
changed, and is scheduled so that it stays out of the procedure's way (``scripts/bench_gui.py``
measures this):

* Qt painting and pyqtgraph hold Python's GIL, and a procedure thread that wakes from an
  instrument read while the GUI draws waits for it. The window therefore draws *right after an
  event arrives*: a procedure emits an event at the end of a step and then usually talks to its
  instruments (GIL released), so the frame falls into that wait instead of across the next
  step. Changes that no later event follows (the last event, a slow run) are drawn by the frame
  timer once the events pause for longer than their usual gap.
* Frames are spaced so that drawing takes at most ``max_render_fraction`` of the time and runs at
  most ``frame_hz`` times a second.
* While the window lives, the interpreter's thread switch interval is ``gil_switch_interval_s``
  (0.5 ms instead of Python's 5 ms), so a waking procedure thread gets the GIL from a drawing GUI
  thread within that time rather than after up to 5 ms; the previous value is restored when the
  window closes.

Closing the window during a run asks for confirmation, requests a stop, waits (at most
``shutdown_timeout_s``) for the runner's safe shutdown, then closes the rig (safe state again,
connections closed).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path

from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QCloseEvent
from PyQt6.QtWidgets import (
    QApplication,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from labrig.errors import ProcedureError
from labrig.gui.panels.log import LogPane
from labrig.gui.panels.plots import PlotBoard
from labrig.gui.panels.procedure import ProcedurePanel
from labrig.gui.panels.run_browser import RunBrowser
from labrig.gui.panels.station import StationPanel, StationSession
from labrig.gui.worker import RunWorker
from labrig.procedures.base import ParameterError
from labrig.procedures.rig_procedure import RigProcedure
from labrig.runs.documents import DescriptorDoc, EventDoc, LogDoc, StartDoc, StopDoc
from labrig.shell import station_for

__all__ = ["MainWindow", "load_procedures"]

_NOT_PROCEDURES = {"base", "runner"}
# A slice of a frame drawn right after an event takes at most this share of the usual gap
# between events (at least one panel is drawn).
SLICE_OF_GAP = 0.4


def load_procedures() -> list[str]:
    """Import every module of :mod:`labrig.procedures` so that they register their procedures;
    returns the problems met (a module that fails to import is reported, not fatal)."""
    import labrig.procedures as package

    problems = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in _NOT_PROCEDURES or info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{package.__name__}.{info.name}")
        except Exception as exc:
            problems.append(f"cannot load procedures from {info.name}: {type(exc).__name__}: {exc}")
    return problems


class MainWindow(QMainWindow):
    """The operator dashboard. ``connect``: "async" (default), "block" or "none" for the rig.

    ``closed`` is emitted once the window has closed (run stopped safely, rig closed).
    """

    closed = pyqtSignal()

    def __init__(
        self,
        station: str | Path | None = "sim-dnpu",
        *,
        runs_dir: str | Path | None = None,
        auto_confirm_close: bool = False,
        connect: str = "async",
        shutdown_timeout_s: float = 60.0,
        frame_hz: float = 30.0,
        max_render_fraction: float = 0.25,
        gil_switch_interval_s: float | None = 0.0005,
    ) -> None:
        super().__init__()
        if frame_hz <= 0:
            raise ValueError(f"frame_hz {frame_hz} must be > 0")
        if not 0.0 < max_render_fraction <= 1.0:
            raise ValueError(f"max_render_fraction {max_render_fraction} must be in (0, 1]")
        self.runs_dir = runs_dir
        self.auto_confirm_close = auto_confirm_close
        self.shutdown_timeout_s = shutdown_timeout_s
        self.worker: RunWorker | None = None
        self.stop_doc: StopDoc | None = None
        self.run_dir: Path | None = None
        self.events_received = 0
        self.shutdown_ok = True
        self.shutdown_problems: list[str] = []
        self._closing = False
        self._closed = False
        self._finished_reported = False
        self._frame_t0 = time.monotonic()
        self.frame_hz = frame_hz
        self.max_render_fraction = max_render_fraction
        self._next_frame_at = 0.0
        self._last_event_at: float | None = None
        self._event_gap_s = 0.0  # running estimate of the time between events
        self._undrawn = False  # events arrived that no frame has drawn yet
        self._frame_pending: set[str] | None = None  # panels the frame under way has to draw
        self._frame_started_at = 0.0
        self._frame_cost_s = 0.0
        self.frames_drawn = 0
        self.frames_after_event = 0  # slices drawn right after an event
        self._saved_switch_interval: float | None = None
        if gil_switch_interval_s is not None:
            if gil_switch_interval_s <= 0:
                raise ValueError(f"gil_switch_interval_s {gil_switch_interval_s} must be > 0")
            self._saved_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(gil_switch_interval_s)
        self.setWindowTitle("labrig — operator dashboard")

        self.log_pane = LogPane()
        self.session = StationSession(station, parent=self)
        self.session.message.connect(self.log_pane.add)
        self.station_panel = StationPanel(self.session)
        self.procedure_panel = ProcedurePanel()
        self.procedure_panel.start_requested.connect(self.start_run)
        self.procedure_panel.pause_requested.connect(self.pause_run)
        self.procedure_panel.resume_requested.connect(self.resume_run)
        self.procedure_panel.abort_requested.connect(lambda: self.abort_run("aborted from the GUI"))
        self.live_board = PlotBoard()
        self.browser = RunBrowser(runs_dir)
        self.browser.message.connect(self.log_pane.add)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(4, 4, 4, 4)
        left_layout.addWidget(self.station_panel)
        left_layout.addWidget(self.procedure_panel)
        left_layout.addStretch(1)
        left_scroll = QScrollArea()
        left_scroll.setWidgetResizable(True)
        left_scroll.setWidget(left)
        left_scroll.setMinimumWidth(430)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.live_board, "Live")
        self.tabs.addTab(self.browser, "Runs")
        self.tabs.currentChanged.connect(self._tab_changed)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.tabs)
        right.addWidget(self.log_pane)
        right.setStretchFactor(0, 4)
        right.setStretchFactor(1, 1)
        main = QSplitter(Qt.Orientation.Horizontal)
        main.addWidget(left_scroll)
        main.addWidget(right)
        main.setStretchFactor(0, 0)
        main.setStretchFactor(1, 1)
        main.setSizes([450, 1150])
        right.setSizes([760, 200])
        self.setCentralWidget(main)
        self.status_label = QLabel("")
        status_bar = self.statusBar()
        if status_bar is not None:
            status_bar.addPermanentWidget(self.status_label)

        self.frame_timer = QTimer(self)
        self.frame_timer.setInterval(max(1, round(1000.0 / frame_hz)))
        self.frame_timer.timeout.connect(self._on_frame)
        self.frame_timer.start()

        for problem in load_procedures():
            self.log_pane.add(problem, "warning")
        self.procedure_panel.reload()
        self._choose_default_procedure()
        if self.session.station is None and station is not None:
            self.log_pane.add(f"station {station}: {self.session.load_error}", "error")
        if connect != "none":
            self.session.connect_rig(block=connect == "block")

    def _choose_default_procedure(self) -> None:
        station = self.session.station
        preferred = []
        if station is not None and station.dnpu is not None:
            preferred = ["hge", "iv"]
        elif station is not None and station.reservoir is not None:
            preferred = ["dfa", "transfer"]
        for name in preferred:
            if name in self.procedure_panel.classes:
                self.procedure_panel.select(name)
                return

    # ---- run control --------------------------------------------------------------------

    def running(self) -> bool:
        return self.worker is not None and self.worker.running()

    def start_run(self) -> RunWorker | None:
        """Start the procedure in the form; None (and a log line) if it cannot start."""
        if self.running():
            self.log_pane.add("a run is already in progress", "warning")
            return None
        if self.session.connecting:
            # The run would open the same instruments while the window is still opening them.
            self.log_pane.add(
                "still connecting to the station: start again once connected", "warning"
            )
            return None
        form = self.procedure_panel.form
        if form is None:
            self.log_pane.add("no procedure is registered", "error")
            return None
        try:
            procedure = form.build()
        except (ParameterError, ValueError, TypeError, KeyError) as exc:
            self.log_pane.add(f"cannot start: {exc}", "error")
            return None
        if isinstance(procedure, RigProcedure):
            # The window's open rig is lent to the run (the shell's job: a procedure never opens
            # a station); the runner leaves it in its safe state, still open, for the window.
            rig = self.session.rig
            if rig is None:
                self.log_pane.add(
                    "cannot start: the station is not connected (press Reconnect)", "error"
                )
                return None
            try:
                station_for(procedure, rig.station)
                procedure.bind_rig(rig)
            except ProcedureError as exc:
                self.log_pane.add(f"cannot start: {exc}", "error")
                return None
        worker = RunWorker(
            procedure,
            runs_dir=self.runs_dir,
            station_text=self.session.station_text,
            parent=self,
        )
        worker.bridge.available.connect(lambda w=worker: self._drain(w))
        self.worker = worker
        self.stop_doc = None
        self.run_dir = None
        self.events_received = 0
        self._finished_reported = False
        self.live_board.reset()
        self._last_event_at = None
        self._event_gap_s = 0.0
        self._undrawn = False
        self._frame_pending = None
        self.tabs.setCurrentWidget(self.live_board)
        values = ", ".join(f"{k}={v}" for k, v in procedure.parameter_values().items())
        self.log_pane.add(f"starting {procedure.name} ({values})")
        self.station_panel.set_busy(True)
        self.procedure_panel.set_state("running")
        worker.start()
        return worker

    def pause_run(self) -> None:
        if self.worker is not None and self.running():
            try:
                self.worker.pause()
            except Exception as exc:
                self.log_pane.add(f"cannot pause: {exc}", "error")
                return
            self.procedure_panel.set_state("paused")

    def resume_run(self) -> None:
        if self.worker is not None and self.running():
            self.worker.resume()
            self.procedure_panel.set_state("running")

    def abort_run(self, reason: str = "aborted from the GUI") -> None:
        """Request a stop; the runner brings the instruments to their safe state."""
        if self.worker is not None and self.running():
            self.worker.request_stop(reason)
            self.procedure_panel.set_state("stopping")
            self.log_pane.add(f"stop requested ({reason}); waiting for the safe shutdown")

    # ---- documents ----------------------------------------------------------------------

    def _drain(self, worker: RunWorker | None = None) -> None:
        worker = worker or self.worker
        if worker is None:
            return
        docs = worker.bridge.take()
        if worker is not self.worker:
            return  # a late document of an earlier run
        events = 0
        for doc in docs:
            if isinstance(doc, EventDoc):
                self.live_board.add_event(doc)
                self.events_received += 1
                events += 1
            elif isinstance(doc, DescriptorDoc):
                self.live_board.add_descriptor(doc)
            elif isinstance(doc, LogDoc):
                self.log_pane.add_doc(doc)
                self.session.note_log(doc.message)
            elif isinstance(doc, StartDoc):
                self.log_pane.add(f"run {doc.run_uid[:8]} of {doc.procedure} started")
            elif isinstance(doc, StopDoc):
                self.stop_doc = doc
                self._report_finished()
        if events:
            self._events_arrived()

    def _events_arrived(self) -> None:
        """New events are in the plot data: draw now, in the procedure's wait, if a frame is due
        (or one is under way), within a slice of the usual gap between events."""
        now = time.monotonic()
        if self._last_event_at is not None:
            gap = now - self._last_event_at
            # A slowly moving estimate of the usual gap, so one long pause does not upset it.
            self._event_gap_s = (
                gap if self._event_gap_s == 0.0 else 0.8 * self._event_gap_s + 0.2 * gap
            )
        self._last_event_at = now
        self._undrawn = True
        if self._frame_pending is not None or now >= self._next_frame_at:
            budget = SLICE_OF_GAP * self._event_gap_s if self._event_gap_s > 0 else None
            if self._draw(now, budget):
                self.frames_after_event += 1

    def _draw(self, now: float, budget_s: float | None = None) -> bool:
        """Draw the changed panels, or (``budget_s``) as many as fit into that time; the rest
        of the frame follows with the next call. True if anything was drawn."""
        if not (self.live_board.isVisible() or self._closing):
            return False
        board = self.live_board
        if self._frame_pending is None:
            self._frame_pending = board.outdated()
            self._frame_started_at = now
            self._frame_cost_s = 0.0
        t0 = time.perf_counter()
        drawn = board.refresh(paint=True, budget_s=budget_s)
        self._frame_cost_s += time.perf_counter() - t0
        self._frame_pending.difference_update(board.last_drawn)
        self._frame_pending.intersection_update(board.panels)  # panels re-planned away
        if not self._frame_pending:  # every panel out of date at the frame's start is drawn
            self._frame_pending = None
            self._undrawn = bool(board.outdated())
            self.frames_drawn += 1
            # Rest long enough that drawing stays within its share of the time and the rate.
            period = max(self._frame_cost_s / self.max_render_fraction, 1.0 / self.frame_hz)
            self._next_frame_at = self._frame_started_at + period
        return bool(drawn)

    def _report_finished(self) -> None:
        if self._finished_reported or self.worker is None:
            return
        stop = self.stop_doc
        if stop is not None:
            detail = stop.status + (f" — {stop.reason}" if stop.reason else "")
            level = "info" if stop.status == "success" else "warning"
            unsafe = {k: v for k, v in stop.safe_state.items() if not v.startswith("ok")}
            self.log_pane.add(
                f"run finished: {detail} ({stop.n_events} events, "
                f"{stop.wall_time_s:.2f} s wall, {stop.device_time_s:.3g} s device); safe state: "
                + (", ".join(f"{k}: {v}" for k, v in unsafe.items()) if unsafe else "all ok"),
                level,
            )
        else:
            if self.worker.running():
                return
            error = self.worker.start_error()
            result = None if error is not None else self.worker.controller.result
            if result is not None:
                detail = result.status + (f" — {result.reason}" if result.reason else "")
            else:
                detail = f"failed — {type(error).__name__}: {error}"
            self.log_pane.add(f"run finished: {detail}", "error")
        result = self.worker.controller.result
        if result is not None:
            self.run_dir = result.run_dir
        self._finished_reported = True
        self.live_board.refresh()
        self.procedure_panel.set_state("finished", detail)
        self.station_panel.set_busy(False)
        if self.browser.isVisible():
            self.browser.refresh()

    def _on_frame(self) -> None:
        now = time.monotonic()
        if (self._frame_pending is not None or now >= self._next_frame_at) and (
            self._timer_frame_due(now)
        ):
            self._draw(now)
        worker = self.worker
        if worker is not None and self.run_dir is None and not worker.running():
            result = worker.controller.result
            self.run_dir = result.run_dir if result is not None else None
        if worker is not None and not self._finished_reported:
            if not worker.running():
                self._drain(worker)
                self._report_finished()
            else:
                state = worker.state
                if state in ("running", "paused", "stopping") and (
                    state != self.procedure_panel.state
                ):
                    self.procedure_panel.set_state(state)
        now = time.monotonic()
        if now - self._frame_t0 >= 1.0:
            bridge = worker.bridge if worker is not None else None
            extra = f" · coalesced {bridge.coalesced} · dropped {bridge.dropped}" if bridge else ""
            status = self.live_board.status_text()
            self.status_label.setText(
                (f"{status} · " if status else "")
                + f"station {self.session.name} · events {self.events_received}{extra} · "
                f"redraws {self.live_board.redraws}"
            )
            self._frame_t0 = now

    def _timer_frame_due(self, now: float) -> bool:
        """Whether the frame timer should draw: not while events keep coming (the next one
        brings a frame at a better moment), but once they pause for longer than usual, and
        always for changes that did not come with an event (a new run, the end of one)."""
        if not self._undrawn or self._last_event_at is None:
            return True
        quiet = now - self._last_event_at
        return quiet > max(1.5 * self._event_gap_s, 1.0 / self.frame_hz)

    def _tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is self.browser:
            self.browser.refresh()

    # ---- closing ------------------------------------------------------------------------

    def wait_for_run(self, timeout_s: float) -> bool:
        """Wait (processing events) up to ``timeout_s`` for the run's safe shutdown."""
        deadline = time.monotonic() + timeout_s
        while self.running() and time.monotonic() < deadline:
            QApplication.processEvents()
            if self.worker is not None:
                self.worker.wait(0.02)
        QApplication.processEvents()
        if self.worker is not None and not self.running():
            self._drain(self.worker)
            self._report_finished()
        return not self.running()

    def closeEvent(self, event: QCloseEvent | None) -> None:
        if event is None:
            return
        if self._closed:
            event.accept()
            return
        if self._closing:
            event.ignore()
            return
        if self.running():
            if not self.auto_confirm_close:
                answer = QMessageBox.question(
                    self,
                    "A run is in progress",
                    "A run is in progress. Stop it (instruments go to their safe state) and close?",
                    QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                    QMessageBox.StandardButton.No,
                )
                if answer != QMessageBox.StandardButton.Yes:
                    event.ignore()
                    return
            self._closing = True
            self.abort_run("window closed during the run")
            if not self.wait_for_run(self.shutdown_timeout_s):
                self.shutdown_ok = False
                problem = (
                    f"the run did not finish its safe shutdown within {self.shutdown_timeout_s:g} s"
                )
                self.shutdown_problems.append(problem)
                self.log_pane.add(problem, "error")
        self._closing = True
        self.frame_timer.stop()
        if self.worker is not None:
            self.worker.bridge.close()
        if not self.session.wait_connected(10.0):
            # close_rig() abandons the attempt: its thread closes whatever it opens.
            self.shutdown_problems.append(
                "the station was still connecting when the window closed; that connection is "
                "closed when it completes"
            )
        QApplication.processEvents()
        problems = self.session.close_rig()
        if problems:
            self.shutdown_ok = False
            self.shutdown_problems.extend(problems)
        self._closed = True
        if self._saved_switch_interval is not None:
            sys.setswitchinterval(self._saved_switch_interval)
            self._saved_switch_interval = None
        event.accept()
        self.closed.emit()

    def safe_close(self) -> bool:
        """Close as the window's close button would, confirming automatically; True if the
        run (if any) finished its safe shutdown."""
        self.auto_confirm_close = True
        self.close()
        return self.shutdown_ok
