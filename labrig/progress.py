"""Progress of a run on the terminal: a subscriber to the run's document stream.

::

    reporter = ProgressReporter(plan)                   # plan: what the run will do (steps)
    run_procedure(procedure, subscribers=[reporter])    # or shell.run_on_station(...)
    reporter.close()

On a terminal it draws a `rich` progress bar on standard error — step k of n, loss, accuracy,
device time, elapsed and remaining time (the run's warnings, which Python's logging prints on
standard error, appear above it). Elsewhere (a log file, CI) it prints one plain line per step,
at most one a second (and always the last), so a captured log still shows how a run went.
It writes nothing to standard output: ``--json`` output stays one clean object. It only reads
documents: it never slows the run (the stream delivers them on the subscriber's own thread).
"""

from __future__ import annotations

import math
import threading
import time
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from labrig.humanize import duration, quantity
from labrig.procedures.plan import RunPlan
from labrig.runs.documents import Document, EventDoc, StartDoc, StopDoc

__all__ = ["ProgressReporter", "step_text"]

#: Scalars shown, in this order, when an event has them: (name, label, unit).
SHOWN = (
    ("loss", "loss", ""),
    ("accuracy", "accuracy", "%"),
    ("train_accuracy", "train", "%"),
    ("test_accuracy", "test", "%"),
    ("test_nmse", "test NMSE", ""),
    ("current_na", "I", "nA"),
    ("pd_v", "PD", "V"),
)


def step_text(scalars: dict[str, float]) -> str:
    """The figures of one event as a person reads them: ``loss 0.65  accuracy 75 %  device
    time 3.2 s``."""
    parts = []
    for name, label, unit in SHOWN:
        value = scalars.get(name)
        if value is not None and math.isfinite(value):
            parts.append(f"{label} {quantity(value, unit)}")
    device = scalars.get("device_time_s")
    if device is not None and math.isfinite(device):
        parts.append(f"device time {duration(device)}")
    return "  ".join(parts)


class ProgressReporter:
    """A document-stream subscriber that shows a run's progress on standard error.

    ``plan`` gives the number of steps and their name (``iteration``, ``epoch``, ``point``);
    without it the bar counts events with no total. ``live``: draw a bar (default: when
    ``file`` is a terminal); otherwise plain lines, at most one every ``line_interval_s``.
    """

    def __init__(
        self,
        plan: RunPlan | None = None,
        *,
        file: IO[str] | None = None,
        live: bool | None = None,
        line_interval_s: float = 1.0,
        width: int | None = None,
    ) -> None:
        self.console = Console(
            file=file, stderr=file is None, highlight=False, soft_wrap=True, width=width
        )
        self.live = self.console.is_terminal if live is None else live
        self.step_name = plan.step_name if plan is not None else "step"
        self.total: int | None = plan.steps if plan is not None else None
        self.line_interval_s = line_interval_s
        self.events = 0
        self._first = 0
        self._last_line = -math.inf
        self._pending: str = ""
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    # ------------------------------------------------------------------------ subscriber
    def __call__(self, doc: Document) -> None:
        with self._lock:
            if isinstance(doc, StartDoc):
                self._start(doc)
            elif isinstance(doc, EventDoc):
                self._event(doc)
            elif isinstance(doc, StopDoc):
                self._stop()

    def close(self) -> None:
        """Take the bar off the screen (if the stop document has not already)."""
        with self._lock:
            self._stop()

    # ------------------------------------------------------------------------ internals
    def _start(self, doc: StartDoc) -> None:
        self._first = doc.first_seq_num
        self.events = doc.first_seq_num
        what = f"{doc.procedure} {doc.parameters.get('task', '')}".strip()
        if self.live:
            what = f"{what} {self.step_name}s"
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=16),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[figures]}"),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                what, total=self.total, completed=self.events, figures=""
            )
        else:
            total = f": at most {self.total} {self.step_name}s" if self.total else ""
            resumed = f", resumed after {self._first}" if self._first else ""
            self.console.print(f"labrig: {what} started{total}{resumed}")
        self._t0 = time.monotonic()

    def _event(self, doc: EventDoc) -> None:
        self.events = doc.seq_num + 1
        figures = step_text(dict(doc.scalars))
        if self._progress is not None and self._task is not None:
            total = self.total if self.total is None else max(self.total, self.events)
            self._progress.update(self._task, completed=self.events, total=total, figures=figures)
            return
        of = f"/{self.total}" if self.total else ""
        line = f"labrig: {self.step_name} {self.events}{of}  {figures}".rstrip()
        now = time.monotonic()
        if now - self._last_line >= self.line_interval_s:
            self.console.print(line + self._eta(now))
            self._last_line = now
            self._pending = ""
        else:
            self._pending = line

    def _eta(self, now: float) -> str:
        done = self.events - self._first
        if not self.total or done <= 0 or self.events >= self.total:
            return ""
        remaining = (now - self._t0) / done * (self.total - self.events)
        return f"  ETA {duration(remaining)} (at most)"

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        elif self._pending:
            self.console.print(self._pending)
            self._pending = ""

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "step_name": self.step_name, "total": self.total}
