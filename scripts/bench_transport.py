"""Benchmark the bench transports: query round trip and binary block throughput.

Compares, side by side, the TCP bench server through pyvisa-py, the in-process backend, and
pyvisa-sim (which can only send ASCII, so it gets a 100 kB ASCII reply instead of a block)::

    .venv/bin/python scripts/bench_transport.py            # 1e6 float32 per block
    .venv/bin/python scripts/bench_transport.py --points 200000 --round-trips 500

Targets: a TCP write-then-query round trip <= 2 ms; binary blocks >= 200 MB/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyvisa
from pyvisa.resources import MessageBasedResource

from labrig.sim.emulator import ScpiEmulator
from labrig.sim.inprocess import make_resource_manager
from labrig.sim.scpi import Args, Context, format_block, format_nr3
from labrig.sim.tcp import BenchServer


class BlockSource(ScpiEmulator):
    """A minimal instrument: a settable number and a float32 waveform read as a block."""

    def __init__(self, name: str, points: int) -> None:
        self.level = 0.0
        self.wave = np.random.default_rng(0).standard_normal(points).astype(np.float32)
        self.payload = format_block(self.wave.tobytes())
        super().__init__(name)

    def identity(self) -> str:
        return "labrig,BENCH,0,1"

    def register_commands(self) -> None:
        self.tree.add("LEVel", write=self._w_level, query=self._q_level)
        self.tree.add("WAVeform:DATA", query=self._q_data)

    def _w_level(self, ctx: Context, args: Args) -> None:
        self.level = args.float(0, -10.0, 10.0)

    def _q_level(self, ctx: Context, args: Args) -> str:
        return format_nr3(self.level)

    def _q_data(self, ctx: Context, args: Args) -> bytes:
        return self.payload


def _open(rm: pyvisa.ResourceManager, name: str) -> MessageBasedResource:
    res = rm.open_resource(name, read_termination="\n", write_termination="\n", timeout=10_000)
    assert isinstance(res, MessageBasedResource)
    return res


def _time_round_trips(inst: MessageBasedResource, n: int) -> float:
    """Median seconds of one ``LEV x`` write followed by a ``LEV?`` query."""
    inst.query("*IDN?")
    samples = []
    for i in range(n):
        start = time.perf_counter()
        inst.write(f"LEV {i % 10}")
        inst.query("LEV?")
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _time_transfer(fetch: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Best seconds of ``fetch`` (which returns the bytes moved) over ``repeats``."""
    fetch()
    best, size = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        size = fetch()
        best = min(best, time.perf_counter() - start)
    return best, size


def _pyvisa_sim_profile(directory: Path, reply_bytes: int) -> Path:
    # pyvisa-sim replies from a YAML table; a long ASCII list stands in for a block.
    values = ",".join(["+1.234567E-01"] * (reply_bytes // 14))
    path = directory / "bench.yaml"
    path.write_text(
        'spec: "1.1"\n'
        "devices:\n"
        "  bench:\n"
        "    eom:\n"
        '      TCPIP SOCKET: {q: "\\n", r: "\\n"}\n'
        "    dialogues:\n"
        '      - {q: "*IDN?", r: "labrig,BENCH,0,1"}\n'
        f'      - {{q: "WAV:DATA?", r: "{values}"}}\n'
        "    properties:\n"
        "      level:\n"
        "        default: 0.0\n"
        '        getter: {q: "LEV?", r: "{:+.15E}"}\n'
        '        setter: {q: "LEV {}"}\n'
        "        specs: {type: float, min: -10, max: 10}\n"
        "resources:\n"
        "  TCPIP0::127.0.0.1::5025::SOCKET: {device: bench}\n",
        encoding="utf-8",
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="float32 per block")
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()

    rows: dict[str, tuple[float, float, str]] = {}

    def block_fetch(inst: MessageBasedResource, termchar: bool = True) -> Callable[[], int]:
        """With the read termination on, VISA ends a read at every LF byte inside the block
        (about one per 256 bytes of random data), so PyVISA needs thousands of reads; with it
        off during the block the reads are ``chunk_size`` long and end at the message end (the
        in-process backend signals END; pyvisa-py over TCP cannot, so it is not timed so)."""

        def fetch() -> int:
            saved = inst.read_termination
            if not termchar:
                inst.read_termination = None  # type: ignore[assignment]
            try:
                data = inst.query_binary_values(
                    "WAV:DATA?",
                    datatype="f",
                    container=np.ndarray,
                    expect_termination=termchar,
                    chunk_size=1 << 20,
                )
            finally:
                inst.read_termination = saved
            return int(np.asarray(data).nbytes)

        return fetch

    # TCP through pyvisa-py
    tcp_emu = BlockSource("tcp", opts.points)
    with BenchServer([tcp_emu]) as server:
        rm = pyvisa.ResourceManager("@py")
        inst = _open(rm, server.resources()["tcp"])
        rtt = _time_round_trips(inst, opts.round_trips)
        seconds, size = _time_transfer(block_fetch(inst), opts.repeats)
        rows["TCP (pyvisa-py)"] = (rtt, size / seconds, f"{size / 1e6:.1f} MB block")
        inst.close()
        rm.close()

    # in-process backend
    ip_emu = BlockSource("inproc", opts.points)
    rm, names = make_resource_manager({"inproc": ip_emu})
    inst = _open(rm, names["inproc"])
    rtt = _time_round_trips(inst, opts.round_trips)
    seconds, size = _time_transfer(block_fetch(inst), opts.repeats)
    rows["in-process"] = (rtt, size / seconds, f"{size / 1e6:.1f} MB block")
    seconds, size = _time_transfer(block_fetch(inst, termchar=False), opts.repeats)
    rows["in-proc, no termchar"] = (rtt, size / seconds, f"{size / 1e6:.1f} MB block")
    inst.close()
    rm.close()

    # pyvisa-sim (ASCII only)
    with tempfile.TemporaryDirectory() as tmp:
        profile = _pyvisa_sim_profile(Path(tmp), 100_000)
        rm = pyvisa.ResourceManager(f"{profile}@sim")
        inst = _open(rm, "TCPIP0::127.0.0.1::5025::SOCKET")
        rtt = _time_round_trips(inst, opts.round_trips)

        def ascii_fetch() -> int:
            return len(inst.query("WAV:DATA?"))

        seconds, size = _time_transfer(ascii_fetch, opts.repeats)
        rows["pyvisa-sim"] = (rtt, size / seconds, f"{size / 1e3:.0f} kB ASCII")
        inst.close()
        rm.close()

    base_rtt, base_rate, _ = rows["in-process"]
    header = f"{'transport':<22}{'round trip':>14}{'x':>7}{'throughput':>16}{'x':>8}  payload"
    print(header)
    for name, (rtt, rate, what) in rows.items():
        print(
            f"{name:<22}{rtt * 1e3:>11.3f} ms{rtt / base_rtt:>6.1f}x"
            f"{rate / 1e6:>11.1f} MB/s{rate / base_rate:>7.2f}x  {what}"
        )
    tcp_rtt = rows["TCP (pyvisa-py)"][0]
    print(f"target TCP round trip <= 2 ms: {'met' if tcp_rtt <= 2e-3 else 'MISSED'}")
    for name, (_, rate, _) in rows.items():
        if "block" in rows[name][2]:
            print(f"target binary >= 200 MB/s, {name}: {'met' if rate >= 200e6 else 'MISSED'}")


if __name__ == "__main__":
    main()
