"""``labrig gui``: open the operator dashboard.

::

    labrig gui                               # the built-in simulated DNPU rig
    labrig gui --station my-lab.toml         # real instruments
    labrig gui --screenshot shot.png --quit-after 5 --procedure hge   # headless check

With ``--screenshot`` the window runs on Qt's offscreen platform (unless ``QT_QPA_PLATFORM`` says
otherwise), starts the procedure (``--procedure``, else the station's usual one), saves a
screenshot of the whole window after ``--quit-after`` seconds, then closes as an operator would:
stop requested, safe shutdown awaited, rig closed. Exit status 0 if the screenshot was written
and the shutdown was safe, 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The GUI's options, added to ``parser`` (the ``labrig gui`` sub-parser) or a new one."""
    parser = parser or argparse.ArgumentParser(
        prog="labrig gui", description="The labrig operator dashboard."
    )
    parser.add_argument(
        "--station", default="sim-dnpu", help="station NAME or FILE (default: sim-dnpu)"
    )
    parser.add_argument("--runs-dir", metavar="DIR", help="runs directory (default: the usual)")
    parser.add_argument("--procedure", metavar="NAME", help="procedure to select (and start)")
    parser.add_argument(
        "--screenshot",
        metavar="FILE.png",
        help="run headless, start the procedure, save a screenshot after --quit-after seconds",
    )
    parser.add_argument(
        "--quit-after",
        metavar="SECONDS",
        type=float,
        help="close the window (stopping any run safely) after this many seconds",
    )
    parser.add_argument(
        "--shutdown-timeout",
        metavar="SECONDS",
        type=float,
        default=60.0,
        help="longest wait for a run's safe shutdown when closing (default 60)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``labrig gui``; returns the exit status."""
    args = build_parser().parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run the GUI for parsed arguments (see :func:`build_parser`)."""
    scripted = args.screenshot is not None or args.quit_after is not None
    if args.quit_after is not None and args.quit_after < 0:
        print("labrig gui: --quit-after must be >= 0", file=sys.stderr)
        return 2
    if args.screenshot is not None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        if args.quit_after is None:
            args.quit_after = 3.0

    from PyQt6.QtCore import QEventLoop, QTimer
    from PyQt6.QtWidgets import QApplication

    from labrig.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(["labrig"])
    assert isinstance(app, QApplication)
    window = MainWindow(
        args.station,
        runs_dir=args.runs_dir,
        auto_confirm_close=scripted,
        connect="block" if (args.procedure or args.screenshot) else "async",
        shutdown_timeout_s=args.shutdown_timeout,
    )
    window.resize(1600, 1000)
    if args.procedure:
        try:
            window.procedure_panel.select(args.procedure)
        except KeyError as exc:
            print(f"labrig gui: {exc.args[0]}", file=sys.stderr)
            window.safe_close()
            return 2
    window.show()
    outcome = {"screenshot": args.screenshot is None}
    startable = window.procedure_panel.procedure_class is not None
    if args.screenshot is not None and startable and window.start_run() is None:
        print("labrig gui: the procedure could not start (see the log pane)", file=sys.stderr)

    def finish() -> None:
        if args.screenshot is not None:
            window.live_board.refresh()
            app.processEvents()
            target = Path(args.screenshot)
            target.parent.mkdir(parents=True, exist_ok=True)
            outcome["screenshot"] = window.grab().save(str(target), "PNG")
            if not outcome["screenshot"]:
                print(f"labrig gui: could not write {target}", file=sys.stderr)
        window.safe_close()

    if args.quit_after is not None:
        QTimer.singleShot(round(args.quit_after * 1000), finish)
    # A local event loop that ends when the window has closed. Not app.exec()/app.quit(): in
    # Qt 6 a quit posts a Quit event that closes every top-level window, also windows of a
    # host application (or a test) that outlive this call.
    loop = QEventLoop()
    window.closed.connect(loop.quit)
    quit_on_close = app.quitOnLastWindowClosed()
    app.setQuitOnLastWindowClosed(False)
    previous_sigint = _close_on_sigint(window)
    try:
        loop.exec()
    finally:
        app.setQuitOnLastWindowClosed(quit_on_close)
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)
    if not window.isHidden():  # the loop ended some other way: still close safely
        window.safe_close()
    for problem in window.shutdown_problems:
        print(f"labrig gui: {problem}", file=sys.stderr)
    return 0 if outcome["screenshot"] and window.shutdown_ok else 1


def _close_on_sigint(window: Any) -> Any:
    """Ctrl-C in the terminal closes the window as the close button would, run stopped safely
    (the frame timer runs Python often enough for the handler to be seen). Returns the previous
    handler, or None if not in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handle(signum: int, frame: object) -> None:
        window.safe_close()

    return signal.signal(signal.SIGINT, handle)


if __name__ == "__main__":
    sys.exit(main())
