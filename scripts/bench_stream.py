"""Benchmark the run machinery: events per second, and what each layer costs.

    .venv/bin/python scripts/bench_stream.py [--events 2000] [--work-ms 0]
    .venv/bin/python scripts/bench_stream.py --smoke      # 100 events, 1 repeat (CI)

Cases (the same toy procedure: 4 scalars, a 5-element "controls" and a 64-sample "trace"):

1. bare:            procedure publishing into a DocumentStream with no subscriber, no record
2. record:          the full runner: HDF5 append + flush per event, no checkpoint
3. record+ckpt:     ... plus checkpoint_state() saved every event
4. +slow sub:       ... plus a subscriber that sleeps 50 ms per document

With ``--work-ms`` each iteration also sleeps that long (an instrument's time), which is the
realistic setting for the "< 5 % slower" figure of case 4 against case 3.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labrig.procedures.base import IntegerParameter, Procedure
from labrig.procedures.runner import run_procedure
from labrig.runs.documents import DataKey, Document, EventDoc, StreamDeclaration
from labrig.runs.stream import DocumentStream


class BenchProcedure(Procedure):
    """Emits ``n`` events shaped like one HGE iteration's record."""

    name = "bench-stream"
    n = IntegerParameter("Events", default=2000, minimum=1)
    work_us = IntegerParameter("Work per event", units="us", default=0, minimum=0)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.rng = np.random.default_rng(0)
        self.controls = np.zeros(5)
        self.i = 0

    def execute(self) -> None:
        trace = np.sin(np.linspace(0, 20, 64))
        while self.i < self.n:
            if self.work_us:
                time.sleep(self.work_us * 1e-6)
            self.controls = self.controls - 0.01 * self.rng.normal(size=5)
            self.i += 1
            self.emit_event(
                {"loss": 1.0 / self.i, "accuracy": 0.5, "grad_norm": 1.0, "lr": 0.02},
                {"controls": self.controls, "trace": trace},
            )

    def checkpoint_state(self) -> dict[str, Any] | None:
        return {"controls": self.controls, "i": self.i, "rng": self.rng.bit_generator.state}

    def describe_data(self) -> list[StreamDeclaration]:
        return [
            StreamDeclaration(
                (
                    DataKey("loss"),
                    DataKey("accuracy"),
                    DataKey("grad_norm"),
                    DataKey("lr"),
                    DataKey("controls", "V", (5,), ("electrode",)),
                    DataKey("trace", "nA", (64,), ("time",)),
                )
            )
        ]


class NoCheckpoint(BenchProcedure):
    name = "bench-stream-nockpt"

    def checkpoint_state(self) -> dict[str, Any] | None:
        return None


def bare(n: int, work_us: int) -> float:
    """Publishing into a stream with no subscribers, no record (the floor)."""
    stream = DocumentStream()
    trace = np.sin(np.linspace(0, 20, 64))
    controls = np.zeros(5)
    t0 = time.perf_counter()
    for i in range(n):
        if work_us:
            time.sleep(work_us * 1e-6)
        arrays = {"controls": np.array(controls), "trace": np.array(trace)}
        stream.publish(EventDoc("u", i, time.time(), {"loss": 1.0 / (i + 1)}, arrays))
    stream.close()
    return time.perf_counter() - t0


def run(
    cls: type[BenchProcedure], n: int, work_us: int, subscribers: list[Any], root: Path
) -> float:
    result = run_procedure(
        cls(n=n, work_us=work_us),
        runs_dir=root,
        subscribers=subscribers,
        handle_signals=False,
        echo=False,
        drain_timeout_s=0.0,
    )
    if result.status != "success":
        raise SystemExit(f"bench run {result.status}: {result.reason}")
    return result.wall_time_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--work-ms", type=float, default=0.0, help="simulated instrument time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="100 events, 1 repeat (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.repeats = 100, 1
    n, work_us = args.events, int(args.work_ms * 1000)

    def slow(doc: Document) -> None:
        time.sleep(0.05)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = {
            "bare stream": lambda: bare(n, work_us),
            "record": lambda: run(NoCheckpoint, n, work_us, [], root),
            "record+ckpt": lambda: run(BenchProcedure, n, work_us, [], root),
            "record+ckpt+slow sub": lambda: run(BenchProcedure, n, work_us, [slow], root),
        }
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            for name, case in cases.items():
                elapsed = case()
                best[name] = min(best.get(name, float("inf")), elapsed)
    print(f"{n} events, {args.work_ms:g} ms work per event, best of {args.repeats}")
    print(f"{'case':24s} {'events/s':>10s} {'us/event':>10s} {'ratio':>7s}")
    base = best["bare stream"]
    for name, elapsed in best.items():
        print(f"{name:24s} {n / elapsed:10.0f} {1e6 * elapsed / n:10.1f} {elapsed / base:7.2f}")
    ratio = best["record+ckpt+slow sub"] / best["record+ckpt"]
    print(f"slow subscriber (50 ms/doc) vs none: x{ratio:.3f}")


if __name__ == "__main__":
    main()
