"""The run browser: past runs of the runs directory, re-plotted from their HDF5 records.

The list comes from :func:`labrig.runs.catalog.list_runs` (newest first here). Opening a run
reads its record (:class:`labrig.runs.record.RunRecord`) and draws it with the same
:class:`~labrig.gui.panels.plots.PlotBoard` the live view uses, so a recorded curve and the live
one are drawn by the same code from the same numbers. Export writes the board as a PNG.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from labrig.gui.panels.plots import PlotBoard, RunData
from labrig.gui.panels.station import table_header
from labrig.runs.catalog import RunSummary, list_runs
from labrig.runs.record import RecordError, RunRecord, default_runs_dir

__all__ = ["RunBrowser"]


class RunBrowser(QWidget):
    """A table of runs and a plot board for the selected one."""

    COLUMNS = ("started", "procedure", "status", "events", "last loss", "reason", "folder")
    message = pyqtSignal(str, str)  # (text, level) for the log pane

    def __init__(self, runs_dir: str | Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs_dir = default_runs_dir(runs_dir)
        self.summaries: list[RunSummary] = []
        self.record: RunRecord | None = None
        self.dir_label = QLabel()
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        table_header(self.table.verticalHeader()).setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        header = table_header(self.table.horizontalHeader())
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._selected)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.export_button = QPushButton("Export PNG…")
        self.export_button.clicked.connect(self._export_clicked)
        self.export_button.setEnabled(False)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.board = PlotBoard()
        self.board.reset("Select a run to plot it.")
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.dir_label, 1)
        row.addWidget(self.refresh_button)
        row.addWidget(self.export_button)
        top_layout.addLayout(row)
        top_layout.addWidget(self.table)
        top_layout.addWidget(self.info)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(self.board)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)

    def refresh(self) -> None:
        """Re-read the runs directory."""
        self.dir_label.setText(f"Runs in {self.runs_dir}")
        self.summaries = list(reversed(list_runs(self.runs_dir)))
        self.table.setRowCount(len(self.summaries))
        for row, summary in enumerate(self.summaries):
            started = summary.start_time.strftime("%Y-%m-%d %H:%M:%S") if summary.start_time else ""
            loss = "" if summary.last_loss is None else f"{summary.last_loss:.4g}"
            cells = (
                started,
                summary.procedure,
                summary.status,
                str(summary.n_events),
                loss,
                summary.reason or summary.error,
                summary.run_dir.name,
            )
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.table.setItem(row, column, item)

    def _selected(self) -> None:
        rows = {index.row() for index in self.table.selectedIndexes()}
        if rows:
            self.open_run(self.summaries[min(rows)].run_dir)

    def open_run(self, run_dir: str | Path) -> RunRecord | None:
        """Read and plot the run in ``run_dir``; None (and a log message) if unreadable."""
        try:
            record = RunRecord.open(run_dir)
        except (RecordError, OSError) as exc:
            self.info.setText(f"cannot open {run_dir}: {exc}")
            self.message.emit(f"run browser: cannot open {run_dir}: {exc}", "error")
            self.export_button.setEnabled(False)
            return None
        self.record = record
        self.board.show_data(RunData.from_record(record))
        parameters = ", ".join(f"{k}={v}" for k, v in record.start.parameters.items())
        stop = record.stop
        ending = f"{record.status}" + (f" ({stop.reason})" if stop and stop.reason else "")
        self.info.setText(
            f"<b>{record.start.procedure}</b> — {len(record.events)} events — {ending}<br>"
            f"<small>{parameters}</small>"
        )
        self.export_button.setEnabled(True)
        return record

    def export_png(self, path: str | Path) -> Path:
        """Write the plots of the open run to ``path`` (PNG)."""
        written = self.board.export_png(path)
        self.message.emit(f"exported plots to {written}", "info")
        return written

    def _export_clicked(self) -> None:
        suggested = str(self.record.run_dir / "plots.png") if self.record else "plots.png"
        path, _ = QFileDialog.getSaveFileName(self, "Export plots", suggested, "PNG (*.png)")
        if path:
            try:
                self.export_png(path)
            except OSError as exc:
                self.message.emit(str(exc), "error")
