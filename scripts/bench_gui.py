"""Benchmark the dashboard (offscreen): redraw rate with 1e5-point traces, and what the GUI costs
the procedure.

::

    python scripts/bench_gui.py                 # all figures
    python scripts/bench_gui.py --seconds 5     # longer measurements
    python scripts/bench_gui.py --screenshot /tmp/labrig-gui.png   # a mid-run screenshot

1. **Frames per second**: a plot board showing HGE-like data whose traces have ``--points``
   (1e5) samples; every frame a new event arrives (new traces, new control voltages, …), the board
   redraws and the window is rendered (``processEvents`` + ``grab``, which paints every pixel).
2. **Procedure slow-down**: a toy procedure's iterations per second run by the runner alone, and
   run from the main window with the live plots drawing at 30 Hz. Two toys: one that waits on its
   "instrument" (``time.sleep``, as real procedures do, releasing the GIL) and one that is pure
   numpy work (the worst case: it competes with drawing for the GIL).

Targets: >= 30 frames/s; the instrument-bound procedure slowed by <= 5 %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PyQt6.QtCore import QEventLoop, QTimer
from PyQt6.QtWidgets import QApplication

from labrig.gui.main_window import MainWindow
from labrig.gui.panels.plots import PlotBoard
from labrig.procedures.base import (
    FloatParameter,
    IntegerParameter,
    Procedure,
    register_procedure,
)
from labrig.procedures.runner import run_procedure
from labrig.runs.documents import EventDoc


def hge_like_event(seq: int, points: int, rng: np.random.Generator) -> tuple[dict, dict]:
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

    def execute(self) -> None:
        rng = np.random.default_rng(0)
        buffer = rng.normal(size=1 << 16)
        t0 = time.monotonic()
        for i in range(self.n_iterations):
            if self.should_stop():
                return
            self.wait_if_paused(timeout_s=1.0)
            if self.duration_s and time.monotonic() - t0 > self.duration_s:
                return
            if self.wait_s:
                time.sleep(self.wait_s)
            for _ in range(self.work):
                buffer = np.fft.irfft(np.fft.rfft(buffer), n=buffer.size)
            scalars, arrays = hge_like_event(i, self.points, rng)
            self.emit_event(scalars, arrays)


# ----------------------------------------------------------------------------------- fps


def measure_fps(app: QApplication, points: int, seconds: float) -> dict[str, float]:
    """Frames per second: new event, board refresh, full render (grab) of a 1400x900 board."""
    board = PlotBoard()
    board.resize(1400, 900)
    board.show()
    rng = np.random.default_rng(1)
    events = [hge_like_event(i, points, rng) for i in range(8)]  # precomputed: time the GUI
    frame_times: list[float] = []
    seq = 0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        t0 = time.perf_counter()
        scalars, arrays = events[seq % len(events)]
        scalars = {**scalars, "iteration": float(seq)}
        board.add_event(EventDoc("bench", seq, time.time(), scalars, arrays))
        board.refresh()
        app.processEvents()
        board.grab()
        frame_times.append(time.perf_counter() - t0)
        seq += 1
    board.close()
    board.deleteLater()
    app.processEvents()
    frame_times = frame_times[3:]  # the first frames create the panels
    return {
        "fps": 1.0 / statistics.mean(frame_times),
        "frame_ms_median": 1e3 * statistics.median(frame_times),
        "frame_ms_p95": 1e3 * float(np.percentile(frame_times, 95)),
        "frames": float(len(frame_times)),
    }


# ------------------------------------------------------------------------- procedure rate


def rate_alone(values: dict[str, Any], runs_dir: Path) -> float:
    procedure = BenchGuiToy(**values)
    result = run_procedure(procedure, runs_dir=runs_dir, echo=False, handle_signals=False)
    return result.n_events / result.wall_time_s


def rate_with_gui(app: QApplication, values: dict[str, Any], runs_dir: Path) -> dict[str, float]:
    window = MainWindow(None, runs_dir=runs_dir, auto_confirm_close=True, connect="none")
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
    result = worker.result()
    window.safe_close()
    assert result is not None, "the run did not finish"
    return {
        "rate": result.n_events / result.wall_time_s,
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
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the fps test")
    parser.add_argument("--iterations", type=int, default=300, help="iterations per rate run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind (median)")
    parser.add_argument("--screenshot", type=Path, help="only save a mid-run screenshot")
    args = parser.parse_args(argv)
    app = QApplication.instance() or QApplication(["bench_gui"])
    assert isinstance(app, QApplication)
    runs_dir = Path(tempfile.mkdtemp(prefix="labrig-bench-gui-"))
    if args.screenshot:
        screenshot(app, args.screenshot, runs_dir, after_s=3.0)
        return 0

    fps = measure_fps(app, args.points, args.seconds)
    print(
        f"redraw with {args.points:.0e}-point traces: {fps['fps']:.1f} frames/s "
        f"(median {fps['frame_ms_median']:.1f} ms, p95 {fps['frame_ms_p95']:.1f} ms, "
        f"{fps['frames']:.0f} frames; event + refresh + full render)"
    )
    cases = {
        "instrument-bound (10 ms wait per iteration)": {"wait_s": 0.01, "work": 0},
        "CPU-bound (numpy FFTs, no wait)": {"wait_s": 0.0, "work": 8},
    }
    ok = fps["fps"] >= 30
    for label, extra in cases.items():
        values = {"n_iterations": args.iterations, "points": args.points, **extra}
        # Alternate the two, so that a change in the machine's load hits both alike.
        alone, gui_runs = [], []
        for _ in range(args.repeats):
            alone.append(rate_alone(values, runs_dir))
            gui_runs.append(rate_with_gui(app, values, runs_dir))
        base = statistics.median(alone)
        with_gui = {key: statistics.median(run[key] for run in gui_runs) for key in gui_runs[0]}
        slowdown = 100.0 * (1.0 - with_gui["rate"] / base)
        print(
            f"{label}: alone {base:.1f} it/s, with GUI {with_gui['rate']:.1f} it/s "
            f"(ratio {with_gui['rate'] / base:.3f}, slowed {slowdown:+.1f} %); GUI redrew "
            f"{with_gui['gui_frames_per_s']:.1f} frames/s, coalesced "
            f"{with_gui['coalesced']:.0f} traces, dropped {with_gui['dropped']:.0f} events"
        )
        if "instrument" in label:
            ok = ok and slowdown <= 5.0
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print("targets (>= 30 fps, instrument-bound slow-down <= 5 %):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
