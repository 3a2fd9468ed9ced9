"""The document stream: publish never blocks; slow subscribers lose old events, never Start/Stop."""

from __future__ import annotations

import threading
import time

from labrig.runs.documents import Document, EventDoc, LogDoc, StartDoc, StopDoc
from labrig.runs.stream import DocumentStream


def _start() -> StartDoc:
    return StartDoc("u", "p", "m:c", {}, {}, "", {}, {}, {}, {}, {}, 0.0)


def _stop() -> StopDoc:
    return StopDoc("u", 0.0, "success", "", 0, 0.0, 0.0)


def test_publish_does_not_wait_for_a_blocked_subscriber() -> None:
    gate = threading.Event()
    got: list[Document] = []

    def blocked(doc: Document) -> None:
        gate.wait(10)
        got.append(doc)

    stream = DocumentStream(queue_size=8)
    subscription = stream.subscribe(blocked, name="blocked")
    t0 = time.perf_counter()
    stream.publish(_start())
    for i in range(1000):
        stream.publish(EventDoc("u", i, 0.0, {"x": float(i)}))
    stream.publish(LogDoc("u", 0.0, "info", "hi"))
    stream.publish(_stop())
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5  # 1000 publishes while the subscriber is stuck
    gate.set()
    assert stream.close(timeout_s=5)
    assert isinstance(got[0], StartDoc) and isinstance(got[-1], StopDoc)
    events = [d.seq_num for d in got if isinstance(d, EventDoc)]
    assert events == sorted(events) and events[-1] == 999  # the newest survive, in order
    assert len(got) <= 8 + 2
    assert subscription.dropped == 1003 - len(got)  # start + 1000 events + log + stop


def test_subscriber_errors_are_contained_and_others_still_receive() -> None:
    good: list[Document] = []

    def bad(doc: Document) -> None:
        raise RuntimeError("broken subscriber")

    stream = DocumentStream()
    failing = stream.subscribe(bad, name="bad")
    stream.subscribe(good.append, name="good")
    for i in range(5):
        stream.publish(EventDoc("u", i, 0.0, {}))
    assert stream.close(timeout_s=5)
    assert len(good) == 5 and failing.errors == 5


def test_close_returns_after_timeout_and_delivery_finishes_in_background() -> None:
    got: list[Document] = []

    def slow(doc: Document) -> None:
        time.sleep(0.05)
        got.append(doc)

    stream = DocumentStream()
    stream.subscribe(slow)
    for i in range(10):
        stream.publish(EventDoc("u", i, 0.0, {}))
    stream.publish(_stop())
    t0 = time.monotonic()
    assert not stream.close(timeout_s=0.1)
    assert time.monotonic() - t0 < 0.3
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (got and isinstance(got[-1], StopDoc)):
        time.sleep(0.02)
    assert isinstance(got[-1], StopDoc) and len(got) == 11
