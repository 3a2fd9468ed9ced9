"""Deliver a run's documents to live subscribers without ever holding up the procedure.

Design (measured with ``scripts/bench_stream.py``):

* The **run record is not a subscriber**. The runner writes each event to HDF5 and flushes it
  synchronously in the procedure thread *before* publishing it, then saves the checkpoint. That
  is what makes "a crash loses at most the iteration in flight" true: when ``emit_event``
  returns, the event is in the file. An append + flush costs well under a millisecond, small
  beside one iteration on an instrument.
* Every other subscriber (GUI, console, live plot) gets its own bounded queue and its own
  daemon thread. :meth:`DocumentStream.publish` only appends to those queues under a short
  lock: it never blocks on a subscriber and never raises because of one. A subscriber that
  raises is logged (once per exception type) and keeps receiving documents.
* When a subscriber falls behind and its queue is full, the **oldest queued EventDoc is dropped**
  (then the oldest LogDoc); Start and Stop documents are never dropped. A subscriber sees the
  gap in ``seq_num`` and can read the missing events from the record;
  :attr:`Subscription.dropped` counts them. Dropping the oldest keeps a live view current.
* :meth:`DocumentStream.close` waits for subscribers to drain up to a timeout, then returns;
  a subscriber still behind finishes in the background and still receives the StopDoc.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from labrig.runs.documents import Document, EventDoc, LogDoc

__all__ = ["DocumentStream", "Subscriber", "Subscription"]

Subscriber = Callable[[Document], None]
_logger = logging.getLogger("labrig.runs.stream")


class Subscription:
    """One subscriber's queue and delivery thread. Created by :meth:`DocumentStream.subscribe`."""

    def __init__(self, callback: Subscriber, name: str, queue_size: int) -> None:
        if queue_size < 1:
            raise ValueError(f"subscriber {name!r}: queue_size {queue_size} must be >= 1")
        self.callback = callback
        self.name = name
        self.queue_size = queue_size
        self.dropped = 0
        self.errors = 0
        self._queue: collections.deque[Document] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._logged_errors: set[type[BaseException]] = set()
        self._thread = threading.Thread(
            target=self._deliver, name=f"labrig-sub-{name}", daemon=True
        )
        self._thread.start()

    def put(self, doc: Document) -> None:
        """Queue ``doc``; never blocks beyond a short lock, never raises for the subscriber."""
        with self._cond:
            if self._closing:
                return
            if len(self._queue) >= self.queue_size and not self._make_room():
                # Only Start/Stop documents queued: they are never dropped; the queue may
                # exceed its bound by these few.
                pass
            self._queue.append(doc)
            self._cond.notify()

    def _make_room(self) -> bool:
        """Drop the oldest EventDoc (else the oldest LogDoc); False if neither is queued."""
        for kind in (EventDoc, LogDoc):
            for index, queued in enumerate(self._queue):
                if isinstance(queued, kind):
                    del self._queue[index]
                    self.dropped += 1
                    return True
        return False

    def pending(self) -> int:
        """Documents queued and not yet delivered."""
        with self._cond:
            return len(self._queue)

    def _deliver(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing and drained
                doc = self._queue.popleft()
            try:
                self.callback(doc)
            except Exception as exc:
                self.errors += 1
                if type(exc) not in self._logged_errors:
                    self._logged_errors.add(type(exc))
                    _logger.exception("subscriber %r raised on %s", self.name, type(doc).__name__)

    def close(self) -> None:
        """Accept no more documents; the thread exits once the queue is drained."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    def join(self, timeout_s: float) -> bool:
        """Wait for the delivery thread to finish; True if it did within ``timeout_s``."""
        self._thread.join(max(0.0, timeout_s))
        return not self._thread.is_alive()


class DocumentStream:
    """Fan documents out to subscribers, each on its own thread with a bounded queue.

    ::

        stream = DocumentStream()
        stream.subscribe(print, name="console")
        stream.publish(doc)        # from the procedure thread: never blocks
        stream.close(timeout_s=1)  # at the end of the run
    """

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._subscriptions: list[Subscription] = []
        self._lock = threading.Lock()
        self._closed = False

    def subscribe(
        self, callback: Subscriber, *, name: str = "", queue_size: int | None = None
    ) -> Subscription:
        """Deliver every later document to ``callback`` on a dedicated thread."""
        label = name or getattr(callback, "__qualname__", None) or repr(callback)
        subscription = Subscription(callback, label, queue_size or self.queue_size)
        with self._lock:
            if self._closed:
                subscription.close()
                raise RuntimeError("cannot subscribe to a closed DocumentStream")
            self._subscriptions.append(subscription)
        return subscription

    def publish(self, doc: Document) -> None:
        """Queue ``doc`` for every subscriber. Never blocks on, and never raises for, them."""
        with self._lock:
            subscriptions = list(self._subscriptions) if not self._closed else []
        for subscription in subscriptions:
            try:
                subscription.put(doc)
            except Exception:  # defensive: a queue append should not fail, but never propagate
                _logger.exception("could not queue a document for %r", subscription.name)

    def close(self, timeout_s: float = 1.0) -> bool:
        """Stop accepting documents and wait up to ``timeout_s`` in total for subscribers to
        drain. True if all did; the rest keep delivering in the background."""
        with self._lock:
            self._closed = True
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()
        deadline = time.monotonic() + timeout_s
        drained = True
        for subscription in subscriptions:
            if not subscription.join(deadline - time.monotonic()):
                drained = False
                _logger.warning(
                    "subscriber %r still has %d documents to process; continuing in background",
                    subscription.name,
                    subscription.pending(),
                )
        return drained
