"""The station panel: the station's instruments, their identity, connection state, last error.

:class:`StationSession` owns the open rig (``labrig.rig.open_rig``): it connects in a background
thread (a station on real hardware may take seconds to answer) and reports back through Qt
signals. :class:`StationPanel` shows one row per instrument of the station file and offers
Reconnect and Check errors; both are disabled while a run uses the instruments, because the
procedure's thread then owns the connections.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from labrig.station import Station, load_station

__all__ = ["InstrumentStatus", "StationPanel", "StationSession"]

_INSTRUMENT_LOG = re.compile(r"^instrument '([^']+)': (.*)$", re.DOTALL)


@dataclass
class InstrumentStatus:
    """What the panel shows of one instrument."""

    name: str
    model: str
    resource: str
    identity: str = ""
    state: str = "not connected"  # not connected | connecting | connected | error | closed
    last_error: str = ""


class StationSession(QObject):
    """A station file and, once connected, its open rig. Lives in the GUI thread.

    ``changed`` is emitted (in the GUI thread) whenever a status changes; ``message`` carries
    lines for the log pane as (text, level).
    """

    changed = pyqtSignal()
    message = pyqtSignal(str, str)
    # (attempt, rig or None, error or None), from the connect thread
    _opened = pyqtSignal(int, object, object)

    def __init__(self, station: str | Path | None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.station_ref = station
        self.station: Station | None = None
        self.rig: Any | None = None
        self.load_error = ""
        self.statuses: dict[str, InstrumentStatus] = {}
        self.connecting = False
        self._connect_thread: threading.Thread | None = None
        # Each connect is an attempt; one that nobody waits for any more (timed out, or the
        # session closed) closes the rig it opens, in its own thread, so nothing stays live.
        self._attempt = 0
        self._attempt_lock = threading.Lock()
        self._opened.connect(self._on_opened)
        if station is not None:
            try:
                self.station = load_station(station)
            except Exception as exc:
                self.load_error = f"{type(exc).__name__}: {exc}"
        if self.station is not None:
            for name, spec in self.station.instruments.items():
                self.statuses[name] = InstrumentStatus(name, spec.model, spec.resource)

    @property
    def name(self) -> str:
        if self.station is not None:
            return self.station.name
        return str(self.station_ref) if self.station_ref is not None else "(no station)"

    @property
    def station_text(self) -> str:
        return self.station.text if self.station is not None else ""

    # ---- connection ---------------------------------------------------------------------

    def connect_rig(self, block: bool = False, timeout_s: float = 60.0) -> None:
        """(Re)open the rig: closes an open one first (its outputs go to their safe state).

        ``block``: wait (up to ``timeout_s``) in this thread instead of connecting in the
        background; the result still arrives through ``changed``.
        """
        if self.station is None or self.connecting:
            return
        self.close_rig()
        self.connecting = True
        for status in self.statuses.values():
            status.state = "connecting"
        self.changed.emit()
        station = self.station
        with self._attempt_lock:
            self._attempt += 1
            attempt = self._attempt
        result: list[tuple[Any, BaseException | None]] = []

        def deliver(rig: Any | None, error: BaseException | None) -> None:
            if block:
                result.append((rig, error))
            else:
                self._opened.emit(attempt, rig, error)

        self._connect_thread = threading.Thread(
            target=self._connect, args=(attempt, station, deliver), name="labrig-connect"
        )
        self._connect_thread.daemon = True
        self._connect_thread.start()
        if not block:
            return
        self._connect_thread.join(timeout_s)
        if result:
            self._on_opened(attempt, *result[0])
        else:
            self._abandon()  # the late rig closes itself; report the timeout as this attempt's
            self._on_opened(self._attempt, None, TimeoutError(f"no answer within {timeout_s:g} s"))

    def _connect(self, attempt: int, station: Station, deliver: Any) -> None:
        """The connect thread: open the rig; hand it over, or close it if abandoned."""
        rig, error = _open(station)
        with self._attempt_lock:
            current = attempt == self._attempt
        if current:
            deliver(rig, error)
        elif rig is not None:
            rig.close()  # nobody will use it: outputs safe, connections closed

    def _abandon(self) -> None:
        """Whatever connect is under way will close its rig itself when it returns."""
        with self._attempt_lock:
            self._attempt += 1

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait for a background connect to finish (the result is delivered by the event loop);
        False if it is still under way."""
        thread = self._connect_thread
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    def _on_opened(self, attempt: int, rig: Any | None, error: BaseException | None) -> None:
        with self._attempt_lock:
            current = attempt == self._attempt
        if not current:  # abandoned after its thread handed the rig over: not wanted now
            if rig is not None:
                rig.close()
            return
        self.connecting = False
        if rig is None:
            text = f"{type(error).__name__}: {error}"
            for status in self.statuses.values():
                status.state = "error"
                status.last_error = text
            self.message.emit(f"station {self.name!r}: could not connect: {text}", "error")
            self.changed.emit()
            return
        self.rig = rig
        for name, status in self.statuses.items():
            if name not in rig.instruments:  # the bench endpoint: not an instrument of the rig
                status.state = "connected" if rig.bench_client is not None else "not connected"
                status.identity = "virtual bench control" if rig.bench_client else ""
                continue
            try:
                status.identity = str(rig.instruments[name].identity)
                status.state = "connected"
            except Exception as exc:
                status.state = "error"
                status.last_error = f"{type(exc).__name__}: {exc}"
        self.message.emit(f"station {self.name!r}: connected", "info")
        self.changed.emit()

    def check_errors(self) -> int:
        """Drain every instrument's error queue into ``last_error`` and the log; the count."""
        if self.rig is None:
            return 0
        found = 0
        for name, inst in self.rig.instruments.items():
            for _ in range(32):
                try:
                    inst.check_errors()
                    break
                except Exception as exc:
                    found += 1
                    text = f"{type(exc).__name__}: {exc}"
                    if name in self.statuses:
                        self.statuses[name].last_error = text
                    self.message.emit(f"instrument {name!r}: {text}", "warning")
                    if not hasattr(exc, "code"):  # not a queued error: the link itself failed
                        if name in self.statuses:
                            self.statuses[name].state = "error"
                        break
        if not found:
            self.message.emit("no instrument reported an error", "info")
        self.changed.emit()
        return found

    def note_log(self, message: str) -> None:
        """Take an ``instrument 'name': error`` log line of a run as that instrument's error."""
        match = _INSTRUMENT_LOG.match(message)
        if match and match.group(1) in self.statuses:
            self.statuses[match.group(1)].last_error = match.group(2)
            self.changed.emit()

    def close_rig(self) -> list[str]:
        """Bring outputs to their safe state and close the connections; problems met. A
        connect still under way is abandoned: it closes what it opens."""
        if self.connecting:
            self._abandon()
            self.connecting = False
        rig, self.rig = self.rig, None
        if rig is None:
            return []
        problems: list[str] = list(rig.close())
        for status in self.statuses.values():
            status.state = "closed"
        for problem in problems:
            self.message.emit(problem, "warning")
        self.changed.emit()
        return problems


class StationPanel(QGroupBox):
    """A table of the station's instruments and the Reconnect / Check errors buttons."""

    COLUMNS = ("instrument", "model", "state", "identity", "last error", "resource")

    def __init__(self, session: StationSession, parent: QWidget | None = None) -> None:
        super().__init__("Station", parent)
        self.session = session
        self.title_label = QLabel()
        self.title_label.setWordWrap(True)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        table_header(self.table.verticalHeader()).setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        header = table_header(self.table.horizontalHeader())
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.reconnect_button = QPushButton("Reconnect")
        self.check_button = QPushButton("Check errors")
        self.reconnect_button.clicked.connect(lambda: self.session.connect_rig())
        self.check_button.clicked.connect(self.session.check_errors)
        buttons = QHBoxLayout()
        buttons.addWidget(self.reconnect_button)
        buttons.addWidget(self.check_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title_label)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        self._busy = False
        session.changed.connect(self.refresh)
        self.refresh()

    def set_busy(self, busy: bool) -> None:
        """A run owns the instruments: no reconnect or error polling from the GUI thread."""
        self._busy = busy
        self.refresh()

    def refresh(self) -> None:
        session = self.session
        if session.station is None:
            self.title_label.setText(f"<b>{session.name}</b>: {session.load_error}")
        else:
            kind = "simulated" if session.station.bench is not None else "hardware"
            self.title_label.setText(
                f"<b>{session.station.name}</b> ({session.station.rig}, {kind}) — "
                f"{session.station.source}"
            )
        statuses = list(session.statuses.values())
        self.table.setRowCount(len(statuses))
        colours = {
            "connected": "#2c8a2c",
            "error": "#b00000",
            "connecting": "#b07800",
            "in use by the run": "#1f6fb4",
        }
        for row, status in enumerate(statuses):
            cells = (
                status.name,
                status.model,
                status.state,
                status.identity,
                status.last_error,
                status.resource,
            )
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if column == 2:
                    item.setForeground(_brush(colours.get(status.state, "#555")))
                self.table.setItem(row, column, item)
        self.table.resizeRowsToContents()
        idle = not self._busy and not session.connecting and session.station is not None
        self.reconnect_button.setEnabled(idle)
        self.check_button.setEnabled(idle and session.rig is not None)

    def state_of(self, name: str) -> str:
        return self.session.statuses[name].state


def _open(station: Station) -> tuple[Any | None, BaseException | None]:
    """(rig, None) or (None, the error): for the connect thread, which must not raise."""
    from labrig.rig import open_rig

    try:
        return open_rig(station), None
    except Exception as exc:
        return None, exc


def _brush(colour: str) -> Any:
    from PyQt6.QtGui import QBrush, QColor

    return QBrush(QColor(colour))


def table_header(header: QHeaderView | None) -> QHeaderView:
    """A table's header (Qt's getter is typed optional; a QTableWidget always has both)."""
    if header is None:
        raise RuntimeError("table without a header")
    return header
