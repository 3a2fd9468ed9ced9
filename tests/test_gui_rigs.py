"""The dashboard on the built-in simulated rigs, end to end: an operator's whole HGE run (start,
watch, finish, reopen) and an aug-DFA run aborted from the GUI (outputs safe, run reopened)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("PyQt6.QtWidgets")
pytest.importorskip("pyqtgraph")

from PyQt6.QtCore import Qt

from labrig.gui.main_window import MainWindow
from labrig.runs.record import RunRecord

pytestmark = pytest.mark.slow


def _window(qtbot: Any, station: str, runs_dir: Path) -> MainWindow:
    win = MainWindow(station, runs_dir=runs_dir, auto_confirm_close=True, connect="block")
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    assert win.session.rig is not None, win.session.statuses
    return win


def _curve(board: Any, panel: str, name: str) -> np.ndarray:
    _, y = board.panel(panel).curves[name].getOriginalDataset()
    return np.asarray(y)


def test_a_whole_hge_run_from_the_gui_then_reopened(qtbot: Any, tmp_path: Path) -> None:
    win = _window(qtbot, "sim-dnpu", tmp_path / "runs")
    # The dashboard opens on the station's training procedure; the form has no station entry:
    # the window's open rig is what the run gets.
    assert win.procedure_panel.form is not None
    assert win.procedure_panel.form.procedure_class.name == "hge"
    assert "station" not in win.procedure_panel.form.editors
    qtbot.mouseClick(win.procedure_panel.start_button, Qt.MouseButton.LeftButton)
    worker = win.worker
    assert worker is not None
    qtbot.waitUntil(lambda: win.events_received >= 1, timeout=180_000)
    rig = worker.procedure.rig  # type: ignore[attr-defined]
    assert rig is win.session.rig  # lent by the window
    qtbot.waitUntil(lambda: win.procedure_panel.state == "finished", timeout=180_000)
    stop = win.stop_doc
    assert stop is not None and stop.status == "success", stop
    assert stop.safe_state and all(v == "ok" for v in stop.safe_state.values())
    # Watched live: the live loss curve is the recorded one, point for point.
    qtbot.waitUntil(lambda: win.run_dir is not None, timeout=30_000)
    assert win.run_dir is not None
    record = RunRecord.open(win.run_dir)
    recorded_loss = record.events.scalars["loss"]
    assert record.stop is not None and record.stop.summary.get("found") is True, record.stop
    assert win.events_received == recorded_loss.size >= 2
    np.testing.assert_array_equal(_curve(win.live_board, "loss", "loss"), recorded_loss)
    # The run left every electrode at 0 V.
    station = rig.station
    dac = rig.built.emulators[station.dnpu.dac]
    for channel in station.dnpu.electrode_channels:
        assert float(dac.feed(f"sour{channel}:volt?\n".encode())) == pytest.approx(0.0, abs=1e-9)
    # Reopened later from the run browser: the same curve.
    win.tabs.setCurrentWidget(win.browser)
    qtbot.waitUntil(lambda: win.browser.table.rowCount() == 1, timeout=10_000)
    win.browser.table.selectRow(0)
    assert win.browser.record is not None
    np.testing.assert_array_equal(_curve(win.browser.board, "loss", "loss"), recorded_loss)
    assert win.safe_close()


def test_an_aug_dfa_run_aborted_from_the_gui_is_safe_and_reopens(
    qtbot: Any, tmp_path: Path
) -> None:
    win = _window(qtbot, "sim-reservoir", tmp_path / "runs")
    form = win.procedure_panel.form
    assert form is not None and form.procedure_class.name == "dfa"
    for name, value in {
        "nodes": "20",
        "epochs": "50",
        "train_samples": "64",
        "test_samples": "64",
    }.items():
        form.set_text(name, value)
    qtbot.mouseClick(win.procedure_panel.start_button, Qt.MouseButton.LeftButton)
    worker = win.worker
    assert worker is not None
    qtbot.waitUntil(lambda: win.events_received >= 2, timeout=180_000)
    rig = worker.procedure.rig  # type: ignore[attr-defined]
    assert rig is win.session.rig  # lent by the window
    qtbot.waitUntil(lambda: "trace" in " ".join(win.live_board.panel_keys()), timeout=10_000)
    assert "image:node_states" in win.live_board.panel_keys()  # the reservoir's node states
    qtbot.mouseClick(win.procedure_panel.abort_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.procedure_panel.state == "finished", timeout=120_000)
    stop = win.stop_doc
    assert stop is not None and stop.status == "aborted", stop
    assert stop.n_events < 50
    assert stop.safe_state and all(v == "ok" for v in stop.safe_state.values())
    station = rig.station
    awg = rig.built.emulators[station.reservoir.awg]
    assert awg.feed(b"outp1?\n").strip() in (b"0", b"OFF")
    # Reopened from the browser: the aborted run's recorded accuracy, as recorded.
    qtbot.waitUntil(lambda: win.run_dir is not None, timeout=30_000)
    assert win.run_dir is not None
    record = RunRecord.open(win.run_dir)
    assert record.stop is not None and record.stop.status == "aborted"
    win.browser.open_run(win.run_dir)
    shown = _curve(win.browser.board, "accuracy", "test_accuracy")
    np.testing.assert_array_equal(shown, record.events.scalars["test_accuracy"])
    assert win.safe_close()
