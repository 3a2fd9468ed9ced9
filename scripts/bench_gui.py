"""Benchmark the dashboard (offscreen): redraw rate with 1e5-point traces, and what the GUI costs
the procedure.

::

    python scripts/bench_gui.py                 # all figures
    python scripts/bench_gui.py --seconds 5     # longer measurements
    python scripts/bench_gui.py --only fps      # just the frame rate (or: --only rate)
    python scripts/bench_gui.py --screenshot /tmp/labrig-gui.png   # a mid-run screenshot
    python scripts/bench_gui.py --smoke         # tiny sizes, every part runs once (CI)

1. **Frames per second** (``fps``): frames actually rendered per second while the data change
   every frame. One frame: a new HGE-like event (new ``--points``-sample TIA trace, new control
   voltages, gradient, case outputs, loss, …) goes into a 1400x900 plot board, ``refresh()``
   updates the panels, and ``processEvents()`` paints them into the window's backing store (the
   offscreen platform's screen). A paint-event counter on every panel checks that each panel
   whose data changed was painted in that frame; a frame in which one was not does not count.
   fps = counted frames / wall time of the loop. ``fps+grab`` also ``grab()``s the whole board
   every frame (a second full render into a pixmap, as a screenshot per frame would).
2. **Procedure slow-down**: a toy procedure's iterations per second (its loop, timed inside the
   procedure) run by the runner alone, and run from the main window with the live plots drawing
   at up to 30 Hz (frames right after events, in slices of the gap between them: see
   ``labrig.gui.main_window``). Alone and with the GUI alternate, and the medians are compared.
   ``--render-fraction`` and ``--switch-interval`` set the window's drawing budget and GIL switch
   interval, to see what each does. Two toys:

   * *instrument-bound*: each iteration waits ``--wait-ms`` on its "instrument"
     (``time.sleep``, which releases the GIL, as a VISA read does) and emits a precomputed
     event (the trace an instrument hands over is a ready array, not something the procedure
     computes). Its iteration is mostly the wait; the rest is the runner's ``emit_event`` (copy,
     HDF5 append). The CPU share of an iteration is printed;
   * *CPU-bound*: numpy FFTs and no wait. On 2 cores it competes with the GUI thread for the
     GIL: numpy releases the GIL only inside large kernels, and every Python step of the
     procedure waits while the GUI thread runs Python (pyqtgraph's paint methods) or holds the
     GIL in Qt calls, so its slow-down is about the GUI thread's busy share, not a defect.

Targets: >= 30 frames/s; the instrument-bound procedure slowed by <= 5 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PyQt6.QtCore import QEvent, QEventLoop, QObject, QTimer
from PyQt6.QtWidgets import QApplication, QWidget

from labrig.gui.main_window import MainWindow
from labrig.gui.panels.plots import PlotBoard
from labrig.procedures.base import (
    FloatParameter,
    IntegerParameter,
    Procedure,
    register_procedure,
)
from labrig.procedures.hge import HGE_PLOTS
from labrig.procedures.runner import run_procedure
from labrig.runs.documents import (
    DataKey,
    DescriptorDoc,
    EventDoc,
    StartDoc,
    StreamDeclaration,
)

Event = tuple[dict[str, float], dict[str, np.ndarray]]

TARGET_FPS = 30  # frames/s rendered with 1e5-point traces (without grab)
MAX_SLOWDOWN_PERCENT = 5.0  # slow-down of the instrument-bound procedure by the GUI


def hge_like_event(seq: int, points: int, rng: np.random.Generator) -> Event:
    """Scalars and arrays shaped like an HGE iteration, with a ``points``-sample TIA trace."""
    t = np.linspace(0.0, 0.3, points)
    scalars = {
        "loss": float(np.exp(-0.02 * seq) + 0.01 * rng.random()),
        "accuracy": float(min(1.0, 0.5 + 0.01 * seq)),
        "iteration": float(seq),
        "threshold_na": 50.0,
        "found": float(seq > 50),
    }
    arrays = {
        "controls_v": rng.uniform(-0.8, 0.3, 5),
        "gradient": rng.normal(size=5),
        "case_outputs_na": rng.uniform(0, 100, 4),
        "targets": np.array([0.0, 1.0, 1.0, 0.0]),
        "trace_t_s": t,
        "trace_na": 60 + 30 * np.sin(2 * np.pi * 200 * t + seq) + rng.normal(size=points),
    }
    return scalars, arrays


ELECTRODES = {"electrode": ["e2", "e3", "e4", "e5", "e6"]}
CASES = {"case": ["00", "01", "10", "11"]}
#: What the HGE procedure declares, in the shape of hge_like_event (its own needs a rig).
HGE_LIKE = StreamDeclaration(
    (
        DataKey("loss", description="corsig loss"),
        DataKey("accuracy", description="accuracy"),
        DataKey("iteration", description="iteration"),
        DataKey("threshold_na", "nA", description="decision threshold"),
        DataKey("found", description="gate found"),
        DataKey("controls_v", "V", (5,), ("electrode",), ELECTRODES, description="control"),
        DataKey("gradient", "1/V", (5,), ("electrode",), ELECTRODES, description="dL/dV"),
        DataKey("case_outputs_na", "nA", (4,), ("case",), CASES, description="output"),
        DataKey("targets", "", (4,), ("case",), CASES, description="target"),
        DataKey("trace_t_s", "s", (None,), ("time",), description="time"),
        DataKey("trace_na", "nA", (None,), ("time",), description="TIA output current"),
    ),
    HGE_PLOTS,  # the real procedure's panels
    x="iteration",
    status=("found",),
)


def event_at(events: list[Event], seq: int) -> Event:
    """The ``seq``-th event from a few precomputed ones, its scalars made to move on."""
    scalars, arrays = events[seq % len(events)]
    return {**scalars, "iteration": float(seq), "loss": float(np.exp(-0.02 * seq))}, arrays


@register_procedure
class BenchGuiToy(Procedure):
    """A toy HGE-like loop for the GUI benchmark: optional 'instrument' wait and numpy work."""

    name = "bench-gui-toy"
    supports_pause = True
    n_iterations = IntegerParameter("Iterations", default=200, minimum=1)
    wait_s = FloatParameter("Instrument wait", units="s", default=0.01, minimum=0.0)
    work = IntegerParameter("Numpy work (FFTs of 2^16)", default=0, minimum=0)
    points = IntegerParameter("Trace points", default=100_000, minimum=2)
    duration_s = FloatParameter("Stop after", units="s", default=0.0, minimum=0.0)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.loop_s = 0.0
        self.cpu_s = 0.0
        self.iterations = 0

    def execute(self) -> None:
        rng = np.random.default_rng(0)
        # What an instrument hands over is a ready array; computing 1e5-point traces here would
        # make the "instrument-bound" toy CPU-bound.
        events = [hge_like_event(i, self.points, rng) for i in range(8)]
        buffer = rng.normal(size=1 << 16)
        t0 = time.perf_counter()
        cpu0 = time.thread_time()
        for i in range(self.n_iterations):
            if self.should_stop():
                break
            self.wait_if_paused(timeout_s=1.0)
            if self.duration_s and time.perf_counter() - t0 > self.duration_s:
                break
            if self.wait_s:
                time.sleep(self.wait_s)
            for _ in range(self.work):
                buffer = np.fft.irfft(np.fft.rfft(buffer), n=buffer.size)
            self.emit_event(*event_at(events, i))
            self.iterations = i + 1
        self.loop_s = time.perf_counter() - t0
        self.cpu_s = time.thread_time() - cpu0

    def describe_data(self) -> list[StreamDeclaration]:
        # The toy knows its trace length: declared, the record stores the traces as fixed rows.
        fixed = {"trace_t_s": (self.points,), "trace_na": (self.points,)}
        keys = tuple(
            dataclasses.replace(k, shape=fixed[k.name]) if k.name in fixed else k
            for k in HGE_LIKE.keys
        )
        return [dataclasses.replace(HGE_LIKE, keys=keys)]

    def rate(self) -> float:
        """Iterations per second of the loop (not counting startup or the record's closing)."""
        return self.iterations / self.loop_s if self.loop_s > 0 else 0.0


# ----------------------------------------------------------------------------------- fps


class PaintCounter(QObject):
    """Counts the paint events of the widgets it watches."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[int, int] = {}

    def watch(self, widget: QWidget) -> None:
        self.counts.setdefault(id(widget), 0)
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        if event is not None and event.type() == QEvent.Type.Paint:
            key = id(watched)
            if key in self.counts:
                self.counts[key] += 1
        return False


def measure_fps(app: QApplication, points: int, seconds: float, grab: bool) -> dict[str, float]:
    """Frames per second as defined in the module docstring (``grab``: the fps+grab variant)."""
    board = PlotBoard()
    board.resize(1400, 900)
    board.show()
    start = StartDoc("bench", "bench", "m:c", {}, {}, "", {}, {}, {}, {}, {}, time.time())
    board.add_descriptor(DescriptorDoc.compose(start, HGE_LIKE, "bench"))
    rng = np.random.default_rng(1)
    events = [hge_like_event(i, points, rng) for i in range(8)]  # precomputed: time the GUI
    seq = 0

    def frame() -> int:
        nonlocal seq
        scalars, arrays = event_at(events, seq)
        board.add_event(EventDoc("bench", seq, time.time(), scalars, arrays))
        seq += 1
        changed = board.refresh()
        app.processEvents()
        if grab:
            board.grab()
        return changed

    for _ in range(5):  # the first frames create the panels and fit their views
        frame()
    counter = PaintCounter()
    viewports = []
    for key in board.panel_keys():
        panel = board.panel(key)
        viewport = panel.plot_widget.viewport() if panel is not None else None
        if viewport is not None:
            counter.watch(viewport)
            viewports.append(viewport)
    frame_times: list[float] = []
    complete = 0
    before = dict(counter.counts)
    t_start = time.perf_counter()
    while time.perf_counter() - t_start < seconds:
        t0 = time.perf_counter()
        changed = frame()
        frame_times.append(time.perf_counter() - t0)
        painted = sum(counter.counts[k] > before[k] for k in counter.counts)
        before = dict(counter.counts)
        # Every panel of this board changes every frame (changed == number of panels).
        complete += painted >= min(changed, len(viewports))
    elapsed = time.perf_counter() - t_start
    board.close()
    board.deleteLater()
    app.processEvents()
    return {
        "fps": complete / elapsed,
        "frame_ms_median": 1e3 * statistics.median(frame_times),
        "frame_ms_p95": 1e3 * float(np.percentile(frame_times, 95)),
        "frames": float(len(frame_times)),
        "incomplete": float(len(frame_times) - complete),
        "panels": float(len(viewports)),
    }


# ------------------------------------------------------------------------- procedure rate


def rate_alone(values: dict[str, Any], runs_dir: Path) -> dict[str, float]:
    procedure = BenchGuiToy(**values)
    run_procedure(procedure, runs_dir=runs_dir, echo=False, handle_signals=False)
    return {"rate": procedure.rate(), "cpu_share": procedure.cpu_s / procedure.loop_s}


def rate_with_gui(
    app: QApplication, values: dict[str, Any], runs_dir: Path, window_options: dict[str, Any]
) -> dict[str, float]:
    window = MainWindow(
        None, runs_dir=runs_dir, auto_confirm_close=True, connect="none", **window_options
    )
    window.resize(1600, 1000)
    window.show()
    window.procedure_panel.select("bench-gui-toy")
    form = window.procedure_panel.form
    assert form is not None
    for name, value in values.items():
        form.set_text(name, str(value))
    worker = window.start_run()
    assert worker is not None
    t0 = time.monotonic()
    # The real event loop (not a processEvents() spin), ended once the run has finished.
    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(50)
    poll.timeout.connect(
        lambda: (
            loop.quit()
            if window.procedure_panel.state == "finished" or time.monotonic() - t0 > 600
            else None
        )
    )
    poll.start()
    loop.exec()
    poll.stop()
    elapsed = time.monotonic() - t0
    # "finished" shows when the stop document arrives; the run's thread may still be closing.
    worker.wait(timeout_s=30.0)
    result = worker.result()
    procedure = worker.procedure
    window.safe_close()
    assert result is not None, "the run did not finish"
    assert isinstance(procedure, BenchGuiToy)
    return {
        "rate": procedure.rate(),
        "cpu_share": procedure.cpu_s / procedure.loop_s,
        "gui_frames_per_s": window.frames_drawn / elapsed,
        "coalesced": float(worker.bridge.coalesced),
        "dropped": float(worker.bridge.dropped),
    }


def screenshot(app: QApplication, path: Path, runs_dir: Path, after_s: float) -> None:
    """The main window mid-run of the toy, saved to ``path``."""
    window = MainWindow(None, runs_dir=runs_dir, auto_confirm_close=True, connect="none")
    window.resize(1600, 1000)
    window.show()
    window.procedure_panel.select("bench-gui-toy")
    form = window.procedure_panel.form
    assert form is not None
    form.set_text("n_iterations", "100000")
    form.set_text("wait_s", "20 ms")
    window.start_run()
    t_end = time.monotonic() + after_s
    while time.monotonic() < t_end:
        app.processEvents()
        time.sleep(0.005)
    window.live_board.refresh()
    app.processEvents()
    window.grab().save(str(path), "PNG")
    window.safe_close()
    print(f"screenshot: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000, help="samples per trace")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one fps test")
    parser.add_argument("--iterations", type=int, default=300, help="iterations per rate run")
    parser.add_argument("--wait-ms", type=float, default=10.0, help="instrument wait")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind (median)")
    parser.add_argument(
        "--render-fraction", type=float, help="the window's max_render_fraction (default: its own)"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="the window's gil_switch_interval_s in s (default: its own; 0: leave Python's)",
    )
    parser.add_argument("--only", choices=("fps", "rate"), help="run one of the two parts")
    parser.add_argument(
        "--cases",
        choices=("both", "instrument", "cpu"),
        default="both",
        help="which toy procedures the rate part runs",
    )
    parser.add_argument("--screenshot", type=Path, help="only save a mid-run screenshot")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes (1e3-point traces, 20 iterations, one repeat): every part runs; "
        "the figures mean nothing and the targets are not judged",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.points, args.seconds, args.iterations, args.repeats = 1000, 0.5, 20, 1
        args.wait_ms = min(args.wait_ms, 2.0)
    app = QApplication.instance() or QApplication(["bench_gui"])
    assert isinstance(app, QApplication)
    # The toy's records hold 1e5-point traces every event (hundreds of MB per run): keep them
    # only while measuring, and never leave them behind.
    with tempfile.TemporaryDirectory(prefix="labrig-bench-gui-") as tmp:
        return _run(app, args, Path(tmp))


def _clear(runs_dir: Path) -> None:
    """Delete the records of the runs just measured."""
    for run in runs_dir.iterdir():
        shutil.rmtree(run, ignore_errors=True)


def _run(app: QApplication, args: argparse.Namespace, runs_dir: Path) -> int:
    if args.screenshot:
        screenshot(app, args.screenshot, runs_dir, after_s=3.0)
        return 0

    ok = True
    if args.only in (None, "fps"):
        for grab in (False, True):
            runs = [measure_fps(app, args.points, args.seconds, grab) for _ in range(args.repeats)]
            fps = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            label = "fps+grab" if grab else "fps"
            each = ", ".join(f"{run['fps']:.1f}" for run in runs)
            print(
                f"{label}: {fps['fps']:.1f} frames/s with {args.points:.0e}-point traces "
                f"(median of {args.repeats}: {each}; "
                f"frame median {fps['frame_ms_median']:.1f} ms, p95 {fps['frame_ms_p95']:.1f} ms; "
                f"{fps['panels']:.0f} panels all changing every frame, "
                f"{fps['incomplete']:.0f} frames with a panel left unpainted)"
            )
            if not grab:
                ok = ok and fps["fps"] >= TARGET_FPS
    if args.only in (None, "rate"):
        window_options: dict[str, Any] = {}
        if args.render_fraction is not None:
            window_options["max_render_fraction"] = args.render_fraction
        if args.switch_interval is not None:
            window_options["gil_switch_interval_s"] = args.switch_interval or None
        cases = {
            f"instrument-bound ({args.wait_ms:g} ms wait per iteration)": {
                "wait_s": args.wait_ms / 1e3,
                "work": 0,
            },
            "CPU-bound (numpy FFTs, no wait)": {"wait_s": 0.0, "work": 8},
        }
        wanted = {"both": ("instrument", "CPU"), "instrument": ("instrument",), "cpu": ("CPU",)}
        cases = {k: v for k, v in cases.items() if k.startswith(wanted[args.cases])}
        for label, extra in cases.items():
            values = {"n_iterations": args.iterations, "points": args.points, **extra}
            # Alternate the two, so that a change in the machine's load hits both alike.
            alone, gui_runs = [], []
            for _ in range(args.repeats):
                alone.append(rate_alone(values, runs_dir))
                _clear(runs_dir)
                gui_runs.append(rate_with_gui(app, values, runs_dir, window_options))
                _clear(runs_dir)
            base = statistics.median(run["rate"] for run in alone)
            cpu_share = statistics.median(run["cpu_share"] for run in alone)
            with_gui = {key: statistics.median(run[key] for run in gui_runs) for key in gui_runs[0]}
            ratios = [g["rate"] / a["rate"] for a, g in zip(alone, gui_runs, strict=True)]
            ratio = statistics.median(ratios)
            slowdown = 100.0 * (1.0 - ratio)
            print(
                f"{label}: alone {base:.1f} it/s (CPU {100 * cpu_share:.0f} % of the "
                f"iteration), with GUI {with_gui['rate']:.1f} it/s; paired ratios "
                f"{', '.join(f'{r:.3f}' for r in ratios)} -> median {ratio:.3f} (slowed "
                f"{slowdown:+.1f} %); GUI redrew {with_gui['gui_frames_per_s']:.1f} frames/s, "
                f"coalesced {with_gui['coalesced']:.0f} traces, dropped "
                f"{with_gui['dropped']:.0f} events"
            )
            if "instrument" in label:
                ok = ok and slowdown <= MAX_SLOWDOWN_PERCENT
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(
        f"targets (>= {TARGET_FPS} fps, instrument-bound slow-down <= {MAX_SLOWDOWN_PERCENT:g} %):",
        "met" if ok else "NOT met",
        "(smoke run: not judged)" if args.smoke else "",
    )
    return 0 if ok or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
