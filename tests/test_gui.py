"""GUI tests (pytest-qt, offscreen): the dashboard runs procedures, plots exactly what they emit,
aborts them safely, refuses bad parameters, re-plots recorded runs and takes screenshots."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

pytest.importorskip("PyQt6.QtWidgets")
pytest.importorskip("pyqtgraph")

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QImage
from PyQt6.QtWidgets import QMessageBox

from labrig.gui import app
from labrig.gui.main_window import MainWindow, load_procedures
from labrig.gui.panels.plots import (
    FIT_SHRINK_AFTER,
    AxisFollower,
    PlotBoard,
    RunData,
)
from labrig.gui.panels.run_browser import RunBrowser
from labrig.gui.worker import DocumentBridge
from labrig.procedures.base import (
    FloatParameter,
    IntegerParameter,
    Procedure,
    procedure_registry,
    register_procedure,
)
from labrig.procedures.hge import HGE_PLOTS
from labrig.procedures.runner import run_procedure
from labrig.runs.documents import (
    DataKey,
    DescriptorDoc,
    EventDoc,
    PlotHint,
    StartDoc,
    StopDoc,
    StreamDeclaration,
)
from labrig.runs.record import RunRecord

TRACE_POINTS = 2000
ELECTRODES = {"electrode": ["e2", "e3", "e4", "e5", "e6"]}
CASES = {"case": ["00", "01", "10", "11"]}

#: What an HGE run declares (the procedure's own declaration needs a rig; this is its shape).
HGE_LIKE = StreamDeclaration(
    (
        DataKey("loss", description="corsig loss"),
        DataKey("accuracy", description="accuracy"),
        DataKey("iteration", description="iteration"),
        DataKey("threshold_na", "nA", description="decision threshold"),
        DataKey("device_time_s", "s", description="device time", optional=True),
        DataKey("controls_v", "V", (5,), ("electrode",), ELECTRODES, description="control"),
        DataKey("gradient", "1/V", (5,), ("electrode",), ELECTRODES, description="dL/dV"),
        DataKey("case_outputs_na", "nA", (4,), ("case",), CASES, description="output"),
        DataKey("targets", "", (4,), ("case",), CASES, description="target"),
        DataKey("trace_t_s", "s", (None,), ("time",), description="time"),
        DataKey("trace_na", "nA", (None,), ("time",), description="TIA output current"),
    ),
    HGE_PLOTS,  # the real procedure's panels
    x="iteration",
    status=("device_time_s",),
)


def _declare(board: PlotBoard, stream: StreamDeclaration) -> None:
    start = StartDoc("u", "t", "m:c", {}, {}, "", {}, {}, {}, {}, {}, 0.0)
    board.add_descriptor(DescriptorDoc.compose(start, stream, "test"))


class RecordingInstrument:
    """A fake DAC: an output that the procedure raises, and a record of safe_state() calls."""

    def __init__(self) -> None:
        self.safe_calls = 0
        self.output_v = 0.0

    @property
    def identity(self) -> str:
        return "labrig,GuiTestDac,0,1.0"

    def snapshot(self) -> dict[str, object]:
        return {"output_v": self.output_v}

    def check_errors(self) -> None:
        return None

    def safe_state(self) -> None:
        self.safe_calls += 1
        self.output_v = 0.0

    def shutdown(self) -> None:
        self.safe_state()


@register_procedure
class GuiToy(Procedure):
    """A toy training loop with HGE-like events; keeps every value it emitted."""

    name = "gui-toy"
    supports_pause = True
    instances: ClassVar[list[GuiToy]] = []
    n_iterations = IntegerParameter("Iterations", default=20, minimum=1, maximum=10_000)
    period_s = FloatParameter("Period", units="s", default=0.0, minimum=0.0, maximum=1.0)
    seed = IntegerParameter("Seed", default=3, help="seed of the toy's noise")

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.emitted: list[tuple[dict[str, float], dict[str, np.ndarray]]] = []
        self.dac = RecordingInstrument()
        GuiToy.instances.append(self)

    def startup(self) -> None:
        self.instruments = {"dac": self.dac}

    def execute(self) -> None:
        rng = np.random.default_rng(self.seed)
        t = np.linspace(0.0, 0.2, TRACE_POINTS)
        for i in range(self.n_iterations):
            if self.should_stop():
                return
            self.wait_if_paused(timeout_s=5.0)
            self.dac.output_v = 0.3
            scalars = {
                "loss": float(np.exp(-0.1 * i) + 0.01 * rng.random()),
                "accuracy": float(min(1.0, 0.25 * (1 + i // 5))),
                "iteration": float(i),
                "threshold_na": 50.0,
            }
            arrays = {
                "controls_v": rng.uniform(-0.5, 0.5, 5),
                "gradient": rng.normal(size=5),
                "case_outputs_na": rng.uniform(0, 100, 4),
                "targets": np.array([0.0, 1.0, 1.0, 0.0]),
                "trace_t_s": t,
                "trace_na": np.sin(2 * np.pi * 40 * t + i) * 50 + rng.normal(size=t.size),
            }
            self.emitted.append((scalars, arrays))
            self.emit_event(scalars, arrays)
            if self.period_s:
                time.sleep(self.period_s)

    def describe_data(self) -> list[StreamDeclaration]:
        return [HGE_LIKE]


@register_procedure
class GuiToyNoPause(Procedure):
    """A toy that cannot pause."""

    name = "gui-toy-nopause"
    n_iterations = IntegerParameter("Iterations", default=3, minimum=1)

    def execute(self) -> None:
        for i in range(self.n_iterations):
            self.emit_event({"value": float(i)})


@pytest.fixture
def window(qtbot: Any, tmp_path: Path) -> MainWindow:
    win = MainWindow(None, runs_dir=tmp_path / "runs", auto_confirm_close=True, connect="none")
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    return win


def _start(window: MainWindow, **values: object) -> GuiToy:
    window.procedure_panel.select("gui-toy")
    form = window.procedure_panel.form
    assert form is not None
    for name, value in values.items():
        form.set_text(name, value)
    assert window.procedure_panel.start_button.isEnabled(), form.message.text()
    window.procedure_panel.start_button.click()
    assert window.worker is not None
    procedure = window.worker.procedure
    assert isinstance(procedure, GuiToy)
    return procedure


def _wait_finished(qtbot: Any, window: MainWindow, timeout_ms: int = 15_000) -> None:
    qtbot.waitUntil(lambda: window.procedure_panel.state == "finished", timeout=timeout_ms)


def _png_is_not_blank(path: Path) -> None:
    image = QImage(str(path))
    assert not image.isNull(), f"{path} is not a readable PNG"
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    data = np.frombuffer(image.constBits().asstring(image.sizeInBytes()), dtype=np.uint8)  # type: ignore[union-attr]
    pixels = data.reshape(image.height(), image.bytesPerLine() // 4, 4)[:, : image.width(), :3]
    assert pixels.std() > 0
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10


# --------------------------------------------------------------------------------- live run


def test_live_plots_receive_exactly_the_emitted_points(qtbot: Any, window: MainWindow) -> None:
    procedure = _start(window, n_iterations="25")
    _wait_finished(qtbot, window)
    assert window.stop_doc is not None and window.stop_doc.status == "success"
    assert "success" in window.procedure_panel.state_label.text()
    window.live_board.refresh()
    board = window.live_board
    emitted = procedure.emitted
    assert len(emitted) == 25 and window.events_received == 25
    iterations = np.array([s["iteration"] for s, _ in emitted])

    loss_x, loss_y = board.panel("loss").curves["loss"].getOriginalDataset()  # type: ignore[union-attr]
    np.testing.assert_array_equal(loss_x, iterations)
    np.testing.assert_array_equal(loss_y, [s["loss"] for s, _ in emitted])
    _, acc_y = board.panel("accuracy").curves["accuracy"].getOriginalDataset()  # type: ignore[union-attr]
    np.testing.assert_array_equal(acc_y, [s["accuracy"] for s, _ in emitted])

    controls = np.array([a["controls_v"] for _, a in emitted])
    history = board.panel("history:controls_v")
    assert history is not None and len(history.curves) == 5  # type: ignore[attr-defined]
    for k, curve in enumerate(history.curves):  # type: ignore[attr-defined]
        x, y = curve.getOriginalDataset()
        np.testing.assert_array_equal(x, iterations)
        np.testing.assert_array_equal(y, controls[:, k])

    last = emitted[-1][1]
    np.testing.assert_array_equal(board.panel("bars:gradient").values, last["gradient"])  # type: ignore[union-attr]
    cases = board.panel("cases")
    np.testing.assert_array_equal(cases.values, last["case_outputs_na"])  # type: ignore[union-attr]
    assert cases.threshold.value() == 50.0 and cases.threshold.isVisible()  # type: ignore[union-attr]
    trace_x, trace_y = board.panel("trace:trace_na").curve.getOriginalDataset()  # type: ignore[union-attr]
    np.testing.assert_array_equal(trace_x, last["trace_t_s"])
    np.testing.assert_array_equal(trace_y, last["trace_na"])
    assert procedure.dac.safe_calls >= 1


def test_loss_log_scale_option(qtbot: Any, window: MainWindow) -> None:
    _start(window, n_iterations="5")
    _wait_finished(qtbot, window)
    window.live_board.refresh()
    panel = window.live_board.panel("loss")
    assert panel is not None and panel.log_box is not None  # type: ignore[attr-defined]
    panel.log_box.setChecked(True)  # type: ignore[attr-defined]
    assert panel.plot.ctrl.logYCheck.isChecked()


def test_abort_stops_the_run_and_leaves_the_instrument_safe(qtbot: Any, window: MainWindow) -> None:
    procedure = _start(window, n_iterations="10000", period_s="10 ms")
    qtbot.waitUntil(lambda: window.events_received >= 3, timeout=10_000)
    assert window.procedure_panel.state == "running"
    assert not window.station_panel.reconnect_button.isEnabled() or window.session.station is None
    qtbot.mouseClick(window.procedure_panel.abort_button, Qt.MouseButton.LeftButton)
    _wait_finished(qtbot, window)
    stop = window.stop_doc
    assert stop is not None and stop.status == "aborted"
    assert "aborted from the GUI" in stop.reason
    assert stop.safe_state == {"dac": "ok"}
    assert procedure.dac.safe_calls >= 1 and procedure.dac.output_v == 0.0
    assert len(procedure.emitted) < 10_000
    assert "aborted" in window.procedure_panel.state_label.text()
    assert "aborted from the GUI" in window.log_pane.text()
    window.live_board.refresh()
    _, y = window.live_board.panel("loss").curves["loss"].getOriginalDataset()  # type: ignore[union-attr]
    assert len(y) == stop.n_events == len(procedure.emitted)


def test_pause_and_resume(qtbot: Any, window: MainWindow) -> None:
    procedure = _start(window, n_iterations="10000", period_s="5 ms")
    panel = window.procedure_panel
    assert panel.pause_button.isVisible() and panel.pause_button.isEnabled()
    qtbot.waitUntil(lambda: len(procedure.emitted) >= 2, timeout=10_000)
    panel.pause_button.click()
    assert panel.state == "paused" and panel.pause_button.text() == "Resume"
    qtbot.wait(200)  # let the procedure reach its wait_if_paused()
    held = len(procedure.emitted)
    qtbot.wait(300)
    assert len(procedure.emitted) <= held + 1
    panel.pause_button.click()
    assert panel.state == "running"
    qtbot.waitUntil(lambda: len(procedure.emitted) > held + 3, timeout=10_000)
    window.abort_run()
    _wait_finished(qtbot, window)
    assert procedure.dac.safe_calls >= 1


def test_pause_button_only_for_procedures_that_support_it(window: MainWindow) -> None:
    window.procedure_panel.select("gui-toy-nopause")
    assert not window.procedure_panel.pause_button.isVisible()
    window.procedure_panel.select("gui-toy")
    assert window.procedure_panel.pause_button.isVisible()
    assert not window.procedure_panel.pause_button.isEnabled()  # nothing runs yet


# ------------------------------------------------------------------------------------- form


def test_form_refuses_out_of_range_input_with_value_and_range(window: MainWindow) -> None:
    panel = window.procedure_panel
    panel.select("gui-toy")
    form = panel.form
    assert form is not None
    assert "range [1, 10000]" in form.editors["n_iterations"].toolTip()
    form.set_text("n_iterations", "0")
    assert not panel.start_button.isEnabled()
    message = form.message.text()
    assert "'0'" in message and "[1, 10000]" in message and "n_iterations" in message
    form.set_text("n_iterations", "12")
    form.set_text("period_s", "2 s")
    assert not panel.start_button.isEnabled()
    assert "'2 s'" in form.message.text() and "[0, 1] s" in form.message.text()
    form.set_text("period_s", "abc")
    assert "'abc'" in form.message.text()
    form.set_text("period_s", "20 ms")  # units at the edge: 0.02 s
    assert form.is_valid() and panel.start_button.isEnabled()
    assert form.message.text() == ""
    procedure = form.build()
    assert procedure.parameter_values()["period_s"] == pytest.approx(0.02)
    assert procedure.parameter_values()["n_iterations"] == 12


# --------------------------------------------------------------------------------- browser


def test_run_browser_shows_the_recorded_curve(qtbot: Any, tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    result = run_procedure(GuiToy(n_iterations=12), runs_dir=runs_dir, echo=False)
    assert result.status == "success"
    browser = RunBrowser(runs_dir)
    qtbot.addWidget(browser)
    browser.resize(1200, 800)
    browser.show()
    browser.refresh()
    assert browser.table.rowCount() == 1
    assert browser.table.item(0, 2).text() == "success"  # type: ignore[union-attr]
    browser.table.selectRow(0)
    assert browser.record is not None
    record = RunRecord.open(result.run_dir)
    _, y = browser.board.panel("loss").curves["loss"].getOriginalDataset()  # type: ignore[union-attr]
    np.testing.assert_array_equal(y, record.events.scalars["loss"])
    trace = browser.board.panel("trace:trace_na")
    _, trace_y = trace.curve.getOriginalDataset()  # type: ignore[union-attr]
    np.testing.assert_array_equal(trace_y, record.events.last("trace_na"))
    _, c0 = browser.board.panel("history:controls_v").curves[0].getOriginalDataset()  # type: ignore[union-attr]
    np.testing.assert_array_equal(c0, record.events.arrays["controls_v"][:, 0])
    png = browser.export_png(tmp_path / "plots.png")
    _png_is_not_blank(png)


def test_recorded_and_live_data_agree(qtbot: Any, window: MainWindow) -> None:
    _start(window, n_iterations="8")
    _wait_finished(qtbot, window)
    qtbot.waitUntil(lambda: window.run_dir is not None, timeout=5000)
    assert window.run_dir is not None
    recorded = RunData.from_record(RunRecord.open(window.run_dir))
    live = window.live_board.data
    assert recorded.n_events == live.n_events == 8
    for name in live.scalars:
        np.testing.assert_array_equal(recorded.scalar(name), live.scalar(name))
    np.testing.assert_array_equal(recorded.latest["trace_na"], live.latest["trace_na"])


# ---------------------------------------------------------------------------------- closing


def test_closing_during_a_run_asks_then_stops_safely(
    qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    win = MainWindow(None, runs_dir=tmp_path / "runs", connect="none")
    qtbot.addWidget(win)
    win.show()
    procedure = _start(win, n_iterations="10000", period_s="5 ms")
    qtbot.waitUntil(lambda: win.events_received >= 2, timeout=10_000)
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    asked: list[str] = []

    def answer(*args: Any, **kwargs: Any) -> QMessageBox.StandardButton:
        asked.append(str(args[2]))
        return answers.pop(0)

    monkeypatch.setattr(QMessageBox, "question", answer)
    win.close()
    assert len(asked) == 1 and "in progress" in asked[0]
    assert win.isVisible() and win.running()  # "No": the run goes on
    win.close()
    assert len(asked) == 2
    assert not win.running() and not win.isVisible()
    assert win.shutdown_ok
    assert win.stop_doc is not None and win.stop_doc.status == "aborted"
    assert "window closed" in win.stop_doc.reason
    assert procedure.dac.safe_calls >= 1 and procedure.dac.output_v == 0.0


# ----------------------------------------------------------------------------- screenshots


@pytest.mark.slow
def test_screenshot_mode_writes_a_non_blank_png_and_stops_safely(
    qtbot: Any, tmp_path: Path
) -> None:
    shot = tmp_path / "shot.png"
    GuiToy.instances.clear()
    code = app.main(
        [
            "--screenshot",
            str(shot),
            "--quit-after",
            "1.0",
            "--procedure",
            "gui-toy",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--station",
            str(tmp_path / "no-such-station.toml"),  # no instruments needed by the toy
        ]
    )
    assert code == 0
    _png_is_not_blank(shot)
    assert len(GuiToy.instances) == 1
    assert GuiToy.instances[0].dac.safe_calls >= 1


def test_unknown_procedure_is_refused(tmp_path: Path) -> None:
    code = app.main(
        ["--screenshot", str(tmp_path / "x.png"), "--procedure", "no-such", "--station", "x.toml"]
    )
    assert code == 2


# ----------------------------------------------------------------------- bridge and panels


def _event(seq: int, big: bool) -> EventDoc:
    arrays = {"small": np.full(3, float(seq))}
    if big:
        arrays["trace"] = np.full(10_000, float(seq))
    return EventDoc("uid", seq, 0.0, {"loss": float(seq)}, arrays)


def test_bridge_coalesces_large_arrays_and_never_drops_start_or_stop(qtbot: Any) -> None:
    bridge = DocumentBridge(max_events=5)
    signals: list[int] = []
    bridge.available.connect(lambda: signals.append(1))
    start = StartDoc("uid", "p", "m:P", {}, {}, "", {}, {}, {}, {}, {}, 0.0)
    stop = StopDoc("uid", 1.0, "success", "", 8, 0.0, 0.0)
    bridge.put(start)
    for seq in range(8):
        bridge.put(_event(seq, big=True))
    bridge.put(stop)
    qtbot.waitUntil(lambda: len(signals) >= 1, timeout=2000)
    docs = bridge.take()
    assert docs[0] is start and docs[-1] is stop
    events = [d for d in docs if isinstance(d, EventDoc)]
    assert [e.seq_num for e in events] == [3, 4, 5, 6, 7]  # the oldest three dropped
    assert bridge.dropped == 3
    assert [("trace" in e.arrays) for e in events] == [False] * 4 + [True]
    assert all("small" in e.arrays for e in events)  # small arrays are kept
    assert len(signals) == 1  # one signal per batch, not per document
    bridge.put(_event(9, big=False))
    qtbot.waitUntil(lambda: len(signals) == 2, timeout=2000)


def test_panels_come_from_the_declaration_with_titles_units_and_names(qtbot: Any) -> None:
    """Titles, axis labels with units, electrodes and cases by name, legends below the plot,
    bookkeeping in the status text instead of a panel: all from the declaration."""
    board = PlotBoard()
    qtbot.addWidget(board)
    board.resize(1400, 900)
    board.show()
    _declare(board, HGE_LIKE)
    rng = np.random.default_rng(1)
    t = np.linspace(0.0, 0.2, 500)
    for seq in range(3):
        scalars = {
            "loss": 1.0 / (seq + 1),
            "accuracy": 0.75,
            "iteration": float(seq),
            "threshold_na": 40.0,
            "device_time_s": 0.3 * (seq + 1),
        }
        arrays = {
            "controls_v": rng.normal(size=5),
            "gradient": rng.normal(size=5),
            "case_outputs_na": rng.uniform(0, 100, 4),
            "targets": np.array([0.0, 1.0, 1.0, 0.0]),
            "trace_t_s": t,
            "trace_na": rng.normal(size=t.size),
        }
        board.add_event(EventDoc("u", seq, 0.0, scalars, arrays))
    board.refresh()
    assert board.panel_keys() == [
        "loss",
        "accuracy",
        "history:controls_v",
        "bars:gradient",
        "cases",
        "trace:trace_na",
    ]  # no panel for device_time_s, iteration (the x axis) or trace_t_s (the trace's axis)
    titles = {k: board.panel(k).plot.titleLabel.text for k in board.panel_keys()}  # type: ignore[union-attr]
    assert titles["cases"] == "Case outputs vs decision threshold"
    assert titles["trace:trace_na"] == "TIA trace"

    def label(key: str, side: str) -> str:
        panel = board.panel(key)
        assert panel is not None
        return panel.axis_label(side)

    assert label("history:controls_v", "left") == "control (V)"
    assert label("history:controls_v", "bottom") == "iteration"
    assert label("bars:gradient", "left") == "dL/dV (1/V)"
    assert label("bars:gradient", "bottom") == "electrode"
    assert label("cases", "left") == "output (nA)"
    assert label("trace:trace_na", "left") == "TIA output current (nA)"
    assert label("trace:trace_na", "bottom") == "time (s)"
    assert label("loss", "left") == "corsig loss"
    # Electrodes and cases by name: tick labels and the legend (below the plot, not on it).
    ticks = board.panel("bars:gradient").plot.getAxis("bottom")._tickLevels  # type: ignore[union-attr]
    assert [text for _, text in ticks[0]] == ELECTRODES["electrode"]
    case_ticks = board.panel("cases").plot.getAxis("bottom")._tickLevels  # type: ignore[union-attr]
    assert [text for _, text in case_ticks[0]] == CASES["case"]
    history = board.panel("history:controls_v")
    assert history is not None and history.legend.isVisible()
    for name in ELECTRODES["electrode"]:
        assert name in history.legend.text()
    assert history.plot.legend is None  # nothing drawn over the data
    # The trace is drawn against its declared time axis, not as a signal of its own.
    trace_x, _ = board.panel("trace:trace_na").curve.getOriginalDataset()  # type: ignore[union-attr]
    np.testing.assert_array_equal(trace_x, t)
    assert board.status_text() == "device time 0.9 s"


def test_an_xy_panel_draws_the_declared_spread_as_error_bars(qtbot: Any) -> None:
    board = PlotBoard()
    qtbot.addWidget(board)
    board.show()
    keys = (
        DataKey("voltage_v", "V", description="electrode 3 voltage"),
        DataKey("current_na", "nA", description="output current"),
        DataKey("current_std_na", "nA", description="spread"),
    )
    hint = PlotHint(
        "xy:current_na", "xy", ("current_na",), "I-V", x="voltage_v", error="current_std_na"
    )
    _declare(board, StreamDeclaration(keys, (hint,)))
    for seq, v in enumerate((-0.5, 0.0, 0.5)):
        scalars = {"voltage_v": v, "current_na": 10 * v, "current_std_na": 0.5 + seq}
        board.add_event(EventDoc("u", seq, 0.0, scalars, {}))
    board.refresh()
    panel = board.panel("xy:current_na")
    assert panel is not None
    assert panel.axis_label("bottom") == "electrode 3 voltage (V)"
    assert panel.axis_label("left") == "output current (nA)"
    bars = panel.error_bars  # type: ignore[attr-defined]
    np.testing.assert_array_equal(bars.opts["top"], [0.5, 1.5, 2.5])


def test_board_draws_a_1e5_point_trace_and_an_image(qtbot: Any) -> None:
    board = PlotBoard()
    qtbot.addWidget(board)
    board.resize(1200, 800)
    board.show()
    trace = np.sin(np.linspace(0, 100, 100_000))
    nodes = np.arange(32 * 50, dtype=float).reshape(32, 50)
    _declare(
        board,
        StreamDeclaration(
            (
                DataKey("epoch"),
                DataKey("loss"),
                DataKey("pd_trace_v", "V", (None,), ("sample",)),
                DataKey("node_states", "", (None, None), ("sample", "node")),
            ),
            x="epoch",
        ),
    )
    board.add_event(
        EventDoc(
            "u", 0, 0.0, {"epoch": 0.0, "loss": 1.0}, {"pd_trace_v": trace, "node_states": nodes}
        )
    )
    assert board.refresh() >= 3
    _, y = board.panel("trace:pd_trace_v").curve.getOriginalDataset()  # type: ignore[union-attr]
    np.testing.assert_array_equal(y, trace)
    image = board.panel("image:node_states").image  # type: ignore[union-attr]
    np.testing.assert_array_equal(image.image, nodes)
    assert board.refresh() == 0  # nothing changed: nothing redrawn


def test_board_draws_a_frame_in_slices_taking_the_panels_in_turn(qtbot: Any) -> None:
    board = PlotBoard()
    qtbot.addWidget(board)
    board.resize(1200, 800)
    board.show()
    rng = np.random.default_rng(0)

    def event(seq: int) -> EventDoc:
        scalars = {"iteration": float(seq), "loss": 1.0 / (seq + 1), "accuracy": 0.5}
        arrays = {"controls_v": rng.normal(size=5), "gradient": rng.normal(size=5)}
        arrays["trace_na"] = rng.normal(size=5000)
        return EventDoc("u", seq, 0.0, scalars, arrays)

    _declare(
        board,
        StreamDeclaration(
            (
                DataKey("iteration"),
                DataKey("loss"),
                DataKey("accuracy"),
                DataKey("controls_v", shape=(5,)),
                DataKey("gradient", shape=(5,)),
                DataKey("trace_na", shape=(5000,)),
            ),
            x="iteration",
        ),
    )
    board.add_event(event(0))
    board.refresh()
    keys = board.panel_keys()
    assert len(keys) == 5 and not board.outdated()
    board.add_event(event(1))
    assert board.outdated() == set(keys)
    first = []
    for _ in range(2):  # a zero budget still draws one panel per slice
        assert board.refresh(paint=True, budget_s=0.0) == 1
        first += board.last_drawn
    assert board.outdated() == set(keys) - set(first)
    # A new event makes every panel out of date again; the next slices take the panels not yet
    # drawn first, so a frame in slices cannot starve a panel.
    board.add_event(event(2))
    rest = []
    for _ in range(len(keys) - 2):
        board.refresh(paint=True, budget_s=0.0)
        rest += board.last_drawn
    assert sorted(first + rest) == sorted(keys)
    assert board.refresh() == 2 and not board.outdated()  # no budget: everything left


def test_window_draws_after_events_and_catches_up_when_they_pause(
    qtbot: Any, window: MainWindow
) -> None:
    procedure = _start(window, n_iterations="2000", period_s="15 ms")
    qtbot.waitUntil(lambda: window.events_received >= 15, timeout=10_000)
    window.pause_run()
    qtbot.waitUntil(lambda: window.worker is not None and window.worker.state == "paused")
    qtbot.waitUntil(lambda: window.events_received == len(procedure.emitted), timeout=2_000)
    # No explicit refresh: once the events pause, the window's own frames draw the last one.
    qtbot.waitUntil(lambda: not window.live_board.outdated(), timeout=2_000)
    board = window.live_board
    _, loss_y = board.panel("loss").curves["loss"].getOriginalDataset()  # type: ignore[union-attr]
    np.testing.assert_array_equal(loss_y, [s["loss"] for s, _ in procedure.emitted])
    _, trace_y = board.panel("trace:trace_na").curve.getOriginalDataset()  # type: ignore[union-attr]
    np.testing.assert_array_equal(trace_y, procedure.emitted[-1][1]["trace_na"])
    assert window.frames_drawn >= 2
    assert window.frames_after_event >= 1  # drawn in the procedure's wait, not only on the timer
    assert 0.005 < window._event_gap_s < 0.1
    window.abort_run()
    _wait_finished(qtbot, window)


def test_window_sets_the_switch_interval_while_it_lives(qtbot: Any, tmp_path: Path) -> None:
    import sys

    before = sys.getswitchinterval()
    win = MainWindow(
        None, runs_dir=tmp_path, connect="none", auto_confirm_close=True, gil_switch_interval_s=1e-3
    )
    qtbot.addWidget(win)
    assert sys.getswitchinterval() == pytest.approx(1e-3)
    assert win.safe_close()
    assert sys.getswitchinterval() == pytest.approx(before)
    with pytest.raises(ValueError, match=r"max_render_fraction 1\.5"):
        MainWindow(None, runs_dir=tmp_path, connect="none", max_render_fraction=1.5)


# ------------------------------------------------------------------- the simulated DNPU rig


@pytest.mark.slow
def test_abort_iv_on_the_simulated_rig_returns_outputs_to_zero(qtbot: Any, tmp_path: Path) -> None:
    load_procedures()
    assert "iv" in dict(procedure_registry())
    win = MainWindow(
        "sim-dnpu", runs_dir=tmp_path / "runs", auto_confirm_close=True, connect="block"
    )
    qtbot.addWidget(win)
    win.show()
    assert win.session.rig is not None, win.session.statuses
    assert win.station_panel.state_of("dac") == "connected"
    win.procedure_panel.select("iv")
    lent = win.session.rig
    worker = win.start_run()
    assert worker is not None
    # The window lends its open rig to the run: the procedure opens nothing itself.
    rig = worker.procedure.rig  # type: ignore[attr-defined]
    assert rig is lent and rig.built is not None
    qtbot.waitUntil(lambda: win.events_received >= 2, timeout=60_000)
    qtbot.mouseClick(win.procedure_panel.abort_button, Qt.MouseButton.LeftButton)
    _wait_finished(qtbot, win, timeout_ms=60_000)
    stop = win.stop_doc
    assert stop is not None and stop.status == "aborted", stop
    assert stop.safe_state and all(v == "ok" for v in stop.safe_state.values())
    station = rig.station
    assert station.dnpu is not None
    dac = rig.built.emulators[station.dnpu.dac]
    for channel in station.dnpu.electrode_channels:
        reply = dac.feed(f"sour{channel}:volt?\n".encode())
        assert float(reply) == pytest.approx(0.0, abs=1e-9), channel
    limit = station.dnpu.absolute_max_v
    extremes = rig.built.bench.voltage_extremes
    assert extremes
    for port, (low, high) in extremes.items():
        assert -limit <= low <= high <= limit, port
    assert win.session.rig is lent  # still open for the window, in its safe state
    assert win.station_panel.state_of("dac") == "connected"
    assert win.safe_close()


# ------------------------------------------------------------------------ view following


def test_axis_follower_moves_the_view_only_when_the_data_leave_it() -> None:
    follower = AxisFollower()
    view = follower.update((0.0, 10.0), None)
    assert view is not None and view[0] < 0.0 and view[1] > 10.0  # padded fit
    assert follower.update((1.0, 9.0), view) is None  # inside: the view stays
    wider = follower.update((-5.0, 10.0), view)
    assert wider is not None and wider[0] < -5.0 and wider[1] >= view[1]  # widened, kept
    # Much smaller data narrows the view, but only after FIT_SHRINK_AFTER redraws in a row.
    for _ in range(FIT_SHRINK_AFTER - 1):
        assert follower.update((0.0, 0.1), wider) is None
    narrow = follower.update((0.0, 0.1), wider)
    assert narrow is not None and narrow[0] < 0.0 < 0.1 < narrow[1] < 1.0
    flat = AxisFollower().update((3.0, 3.0), None)
    assert flat is not None and flat[0] < 3.0 < flat[1]


def test_panel_view_follows_new_data_until_the_operator_moves_it(qtbot: Any) -> None:
    board = PlotBoard()
    qtbot.addWidget(board)
    board.resize(1200, 800)
    board.show()
    _declare(
        board,
        StreamDeclaration(
            (DataKey("iteration"), DataKey("loss")),
            (PlotHint("loss", "lines", ("loss",), "Loss"),),
            x="iteration",
        ),
    )
    for seq in range(20):
        board.add_event(EventDoc("u", seq, 0.0, {"iteration": float(seq), "loss": 1.0 + seq}, {}))
        board.refresh()
    panel = board.panel("loss")
    assert panel is not None
    (x_low, x_high), (y_low, y_high) = panel.view_box.viewRange()
    assert x_low <= 0.0 and x_high >= 19.0 and y_low <= 1.0 and y_high >= 20.0
    assert panel.fits < 20  # not re-fitted on every event
    panel.view_box.setRange(xRange=(2.0, 5.0), padding=0.0)
    panel.plot.sigRangeChangedManually.emit(None)  # as a mouse drag or wheel does
    board.add_event(EventDoc("u", 20, 0.0, {"iteration": 20.0, "loss": 100.0}, {}))
    board.refresh()
    assert panel.view_box.viewRange()[0] == pytest.approx([2.0, 5.0])  # the operator's view
    panel.plot.autoBtnClicked()  # "A": follow the data again
    board.add_event(EventDoc("u", 21, 0.0, {"iteration": 21.0, "loss": 101.0}, {}))
    board.refresh()
    (x_low, x_high), (_, y_high) = panel.view_box.viewRange()
    assert x_low <= 0.0 and x_high >= 21.0 and y_high >= 101.0


# ------------------------------------------------------------------------ station session


class _SlowRig:
    """Stands in for a rig whose instruments take a while to answer."""

    def __init__(self) -> None:
        self.instruments: dict[str, Any] = {}
        self.bench_client = None
        self.closed = threading.Event()

    def close(self) -> list[str]:
        self.closed.set()
        return []


@pytest.mark.parametrize("block", [True, False])
def test_a_connect_nobody_waits_for_closes_the_rig_it_opens(
    qtbot: Any, monkeypatch: pytest.MonkeyPatch, block: bool
) -> None:
    from labrig.gui.panels import station as station_module

    release = threading.Event()
    opened: list[_SlowRig] = []

    def slow_open(station: object) -> tuple[_SlowRig, None]:
        release.wait(10.0)
        opened.append(_SlowRig())
        return opened[-1], None

    monkeypatch.setattr(station_module, "_open", slow_open)
    session = station_module.StationSession("sim-dnpu")
    if block:
        session.connect_rig(block=True, timeout_s=0.05)  # gives up: reported as a timeout
        assert not session.connecting and session.rig is None
        assert "no answer" in session.statuses["dac"].last_error
    else:
        session.connect_rig()
        assert session.connecting
        assert session.close_rig() == []  # the window closes while still connecting
    release.set()
    qtbot.waitUntil(lambda: bool(opened) and opened[0].closed.is_set(), timeout=5000)
    qtbot.wait(50)  # a late delivery, if any, would have arrived by now
    assert session.rig is None
