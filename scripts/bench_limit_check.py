"""What asking the QDAC-II about running generators costs each limit check (issue 13).

Every DC move, ramp, sine and trace on a limited channel now first asks the instrument which
generators play on it (one compound query: DC mode, cycles left and continuous arming of every
generator), so that a generator this driver did not start is counted. This measures, in one run
and on the same bench, the driver as it is against the driver as it was (the query replaced by
what the driver armed itself, no I/O), for:

- ``set_voltage`` on one limited channel;
- one HGE-like playback step: ``ramp_to`` of seven electrodes, then ``play_traces`` of seven
  traces already uploaded (the re-arm path every HGE iteration takes).

The bench is a QDAC-II emulator served over TCP in this process (pyvisa-py), and the in-process
backend::

    .venv/bin/python scripts/bench_limit_check.py            # 300 calls per figure
    .venv/bin/python scripts/bench_limit_check.py --smoke    # a few calls, < 20 s
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import numpy as np

from instruments.errors import ChannelLimits
from instruments.qdevil_qdac2 import QDac2
from labrig.sim.bench import Bench
from labrig.sim.inprocess import make_visa_library
from labrig.sim.qdevil_qdac2 import QDac2Emulator
from labrig.sim.tcp import BenchServer

CHANNELS = tuple(range(1, 8))
ROUNDS = 5
LIMITS = ChannelLimits(-1.2, 0.6, 1e4, 0.0, source="bench_limit_check")


def _as_before(self: QDac2, channels: Any) -> dict[int, dict[str, tuple[float, float]]]:
    """The check as it was: only what this driver armed, never the instrument's word."""
    return {c: dict(self._armed.get(c, {})) for c in channels}


@contextlib.contextmanager
def _driver(transport: str) -> Iterator[QDac2]:
    bench = Bench()
    emulator = QDac2Emulator("dac", bench)
    if transport == "tcp":
        with BenchServer({"dac": emulator}) as server:
            dac = QDac2(server.resources()["dac"], name="dac", visa_library="@py")
            try:
                yield dac
            finally:
                dac.adapter.close()
        return
    library = make_visa_library({"dac": emulator})
    dac = QDac2(library.resources()["dac"], name="dac", visa_library=library)
    try:
        yield dac
    finally:
        dac.adapter.close()


def _per_call_ms(call: Callable[[int], None], n: int) -> float:
    call(0)  # warm-up (and the trace upload)
    t0 = time.perf_counter()
    for i in range(n):
        call(i + 1)
    return (time.perf_counter() - t0) / n * 1e3


def measure(transport: str, n: int) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    traces = {ch: np.linspace(0.0, 1e-3, 2000) * (ch % 2 * 2 - 1) for ch in CHANNELS}
    with _driver(transport) as dac:
        for ch in CHANNELS:
            dac.set_limits(ch, LIMITS)

        def dc(i: int) -> None:
            dac.set_voltage(3, 0.01 * (i % 10))

        def step(i: int) -> None:
            dac.ramp_to({ch: 0.001 * (i % 5) for ch in CHANNELS})
            dac.play_traces(traces, 1e6, trigger="bus", marker_output=None)

        for name, call, count in (("set_voltage", dc, n), ("ramp_to + play_traces", step, n // 3)):
            # Alternate the two in rounds and keep each one's best round: the machine is shared,
            # and the order or a busy spell must not decide the ratio.
            nows, befores = [], []
            for _ in range(ROUNDS):
                nows.append(_per_call_ms(call, max(count // ROUNDS, 1)))
                with mock.patch.object(QDac2, "_generators", _as_before):
                    befores.append(_per_call_ms(call, max(count // ROUNDS, 1)))
            out[name] = (min(befores), min(nows))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="a few calls per figure (< 20 s)")
    args = parser.parse_args(argv)
    n = 25 if args.smoke else args.calls
    print(
        f"limit check with the instrument's word on running generators ({n} calls per figure, "
        f"best of {ROUNDS} alternating rounds)"
    )
    print(f"{'transport':<10} {'call':<24} {'as before ms':>13} {'now ms':>9} {'ratio':>7}")
    for transport in ("tcp", "inprocess"):
        for name, (before, now) in measure(transport, n).items():
            print(f"{transport:<10} {name:<24} {before:>13.3f} {now:>9.3f} {now / before:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
