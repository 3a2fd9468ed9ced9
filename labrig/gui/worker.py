"""Run a procedure off the GUI thread and hand its documents to the GUI thread.

The run itself goes through :class:`labrig.procedures.runner.RunController` (its own worker
thread, the runner's safe shutdown on every path). The GUI subscribes to the run's document
stream with a :class:`DocumentBridge`:

* the stream calls :meth:`DocumentBridge.put` on its delivery thread; ``put`` only appends to a
  list under a short lock, so the procedure never waits for the GUI;
* the first document after a drain emits the Qt signal ``available``, which Qt queues to the GUI
  thread (the bridge lives there); the GUI calls :meth:`DocumentBridge.take` and gets every
  pending document at once, so a busy GUI sees one signal per batch, not one per event;
* when the GUI lags, large arrays (traces, images: more than ``large_array_size`` elements) are
  *coalesced*: a queued event keeps its scalars and small arrays but loses a large array as soon
  as a newer event carries the same one (only the newest trace would be drawn anyway). If even
  that is not enough and ``max_events`` events are pending, the oldest events are dropped
  (counted in :attr:`DocumentBridge.dropped`; they are all in the run record). Start, stop and
  log documents are never dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

from PyQt6.QtCore import QObject, pyqtSignal

from labrig.procedures.base import Procedure
from labrig.procedures.runner import RunController, RunResult
from labrig.runs.documents import Document, EventDoc

__all__ = ["DocumentBridge", "RunWorker"]

LARGE_ARRAY_SIZE = 4096


class DocumentBridge(QObject):
    """A bounded, coalescing hand-over of run documents from any thread to the GUI thread.

    Create it in the GUI thread; pass :meth:`put` to the run as a subscriber; connect
    ``available`` and call :meth:`take` in the slot.
    """

    available = pyqtSignal()

    def __init__(
        self,
        max_events: int = 20_000,
        large_array_size: int = LARGE_ARRAY_SIZE,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        if max_events < 1:
            raise ValueError(f"max_events {max_events} must be >= 1")
        self.max_events = max_events
        self.large_array_size = large_array_size
        self.dropped = 0
        self.coalesced = 0
        self._lock = threading.Lock()
        self._pending: list[Document] = []
        self._n_events = 0
        self._large_at: dict[str, int] = {}  # array name -> index in _pending of its newest copy
        self._notified = False
        self._closed = False

    def put(self, doc: Document) -> None:
        """Queue ``doc`` (called on the stream's delivery thread); never blocks for long."""
        with self._lock:
            if self._closed:
                return
            if isinstance(doc, EventDoc):
                self._coalesce(doc)
                if self._n_events >= self.max_events:
                    self._drop_oldest_event()
                self._n_events += 1
            self._pending.append(doc)
            notify = not self._notified
            self._notified = True
        if notify:
            # RuntimeError: the Qt object is gone (window closed); nobody to tell.
            with contextlib.suppress(RuntimeError):
                self.available.emit()

    def _coalesce(self, doc: EventDoc) -> None:
        index_new = len(self._pending)
        for name, array in doc.arrays.items():
            if array.size <= self.large_array_size:
                continue
            index_old = self._large_at.get(name)
            if index_old is not None:
                old = self._pending[index_old]
                if isinstance(old, EventDoc) and name in old.arrays:
                    kept = {k: v for k, v in old.arrays.items() if k != name}
                    self._pending[index_old] = dataclasses.replace(old, arrays=kept)
                    self.coalesced += 1
            self._large_at[name] = index_new

    def _drop_oldest_event(self) -> None:
        for index, queued in enumerate(self._pending):
            if isinstance(queued, EventDoc):
                del self._pending[index]
                self._n_events -= 1
                self.dropped += 1
                self._large_at = {
                    name: (i - 1 if i > index else i)
                    for name, i in self._large_at.items()
                    if i != index
                }
                return

    def take(self) -> list[Document]:
        """Every pending document, oldest first; the next ``put`` signals again."""
        with self._lock:
            taken, self._pending = self._pending, []
            self._n_events = 0
            self._large_at = {}
            self._notified = False
        return taken

    def close(self) -> None:
        """Accept no more documents (the window is closing)."""
        with self._lock:
            self._closed = True


class RunWorker(QObject):
    """One run in a worker thread, controlled from the GUI thread.

    ::

        worker = RunWorker(procedure, runs_dir=runs_dir, station_text=text)
        worker.bridge.available.connect(on_documents)
        worker.start()
        worker.request_stop("abort pressed")
        worker.wait(timeout_s=30)       # bounded; True once the safe shutdown is done
    """

    def __init__(
        self,
        procedure: Procedure,
        *,
        runs_dir: str | Path | None = None,
        station_text: str = "",
        bridge: DocumentBridge | None = None,
        extra_subscribers: tuple[Callable[[Document], None], ...] = (),
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.procedure = procedure
        self.runs_dir = runs_dir
        self.station_text = station_text
        self.bridge = bridge or DocumentBridge(parent=self)
        self.controller = RunController()
        self.extra_subscribers = extra_subscribers
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the run in its worker thread (returns at once)."""
        if self._thread is not None:
            raise RuntimeError("a RunWorker runs one procedure once; make a new one")
        self._thread = self.controller.start(
            self.procedure,
            runs_dir=self.runs_dir,
            station_text=self.station_text,
            subscribers=(self.bridge.put, *self.extra_subscribers),
            echo=False,
        )

    def request_stop(self, reason: str = "stop requested from the GUI") -> None:
        """Ask the procedure to stop at its next check; the runner then makes it safe."""
        self.controller.request_stop(reason)

    def pause(self) -> None:
        """Pause at the procedure's next ``wait_if_paused()`` (only if it supports pausing)."""
        self.controller.pause()

    def resume(self) -> None:
        self.controller.resume()

    @property
    def state(self) -> str:
        """idle / running / paused / stopping / finished (the controller's view)."""
        if self._thread is None:
            return "idle"
        if not self._thread.is_alive():
            return "finished"
        return self.controller.state

    def running(self) -> bool:
        """True while the worker thread is alive (including the safe shutdown)."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the run (and its safe shutdown) to end; True if it did."""
        if self._thread is None:
            return True
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def result(self) -> RunResult | None:
        """The run's result once it has finished; None before, or if it never started."""
        return None if self.running() else self.controller.result

    def start_error(self) -> BaseException | None:
        """The error that kept the run from starting at all, if any (after it finished)."""
        if self.running():
            return None
        try:
            self.controller.join(0.0)
        except BaseException as exc:
            return exc
        return None
