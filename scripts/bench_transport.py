"""Benchmark the bench transports and the drivers' binary-block path.

Part 1 compares the transports side by side: the TCP bench server through pyvisa-py, the
in-process backend, and pyvisa-sim (which can only send ASCII, so it gets a 100 kB ASCII reply
instead of a block), with PyVISA's own ``query_binary_values``.

Part 2 measures the labrig driver path, before and after the block-reader fix in
``instruments/common.py``, in one run:

- *naive*: the reader as it was, the payload read through ``read_bytes`` with the read
  termination still on, so every line-feed byte inside the block ends a low-level read;
- *labrig*: ``instruments.common`` as it is, the payload read with termination off in large
  pieces.

Both read a generic float32 block (random data: about one LF byte in 256) and a 1,000,000-point
``WORD`` record with the scope driver's ``read_waveform`` (noise over the whole screen, so the
codes hold LF bytes as a real full-scale signal does). Over TCP the server runs either in a thread
of this process (it then competes with the client for the GIL) or in a child process, as
``labrig sim serve`` or a real instrument would::

    .venv/bin/python scripts/bench_transport.py            # 1e6 float32 per block
    .venv/bin/python scripts/bench_transport.py --points 200000 --round-trips 500

Part 3 measures *isolation*: the built-in ``sim-dnpu`` station served by ``labrig sim serve`` in
a child process; an idle instrument (the scope) is asked ``*IDN?`` in a loop, first alone (the
baseline of the same run) and then while another instrument is abused:

- *chain*: the QDAC-II receives 1 MB ``;``-chains of setters, one after another;
- *capture*: an SR860 receives ``*RST;CAPTURESTART ONE,IMM;*OPC?`` (minutes of bench time);
- *chanlist*: the QDAC-II is asked ``sour1:volt? (@1:N)`` with a huge channel list.

It prints p50/p99 of the idle instrument's reply time in each case (target: p99 <= 100 ms)::

    .venv/bin/python scripts/bench_transport.py --isolation-only
    .venv/bin/python scripts/bench_transport.py --smoke      # tiny sizes, a few seconds

Targets: a TCP write-then-query round trip <= 2 ms; binary blocks >= 200 MB/s; an idle
instrument's p99 reply time <= 100 ms while another is flooded.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import numpy.typing as npt
import pyvisa
from pymeasure.instruments import Instrument
from pyvisa.resources import MessageBasedResource

import instruments.keysight_infiniivision as scope_module
from instruments.common import query_binary_block, query_binary_values
from instruments.errors import InstrumentConnectionError
from instruments.keysight_infiniivision import KeysightInfiniiVision
from labrig.sim.bench import Bench
from labrig.sim.emulator import ScpiEmulator
from labrig.sim.inprocess import make_resource_manager, make_visa_library
from labrig.sim.keysight_infiniivision import InfiniiVisionEmulator
from labrig.sim.scpi import Args, Context, format_block, format_nr3
from labrig.sim.tcp import BenchServer

SCOPE_POINTS = 1_000_000
CHILD_START_TIMEOUT_S = 30.0
MAX_TCP_ROUND_TRIP_MS = 2.0  # write-then-query over TCP (pyvisa-py)
MIN_BINARY_MB_PER_S = 200.0  # labrig's binary-block reads, every transport
MAX_IDLE_P99_MS = 100.0  # an idle instrument's reply while another is flooded


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


def _emulators(points: int) -> dict[str, ScpiEmulator]:
    """The block source and a scope whose noise fills the screen (codes of every value)."""
    # Noise of 3 divisions rms over the 8 on screen: every 10-bit code occurs, including the
    # WORD codes whose high byte is 0x0A, so the record holds LF bytes as a full-scale signal.
    scope = InfiniiVisionEmulator("scope", Bench(seed=0), noise_divisions=3.0)
    return {"block": BlockSource("block", points), "scope": scope}


# ------------------------------------------------------------------------------ the naive reader
def _naive_read_exact(instrument: Any, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = instrument.read_bytes(count - len(data))
        if not chunk:
            raise InstrumentConnectionError(f"{instrument.name}: block ended early")
        data += chunk
    return data


def naive_query_binary_block(instrument: Any, command: str, terminated: bool = True) -> bytes:
    """The block reader before the fix: the payload is read with the read termination on."""
    instrument.write(command)
    head = _naive_read_exact(instrument, 2)
    length = int(_naive_read_exact(instrument, int(head[1:2])))
    payload = _naive_read_exact(instrument, length)
    if terminated:
        _naive_read_exact(instrument, 1)
    return payload


@contextlib.contextmanager
def naive_blocks() -> Iterator[None]:
    """Make the scope driver read its blocks with the naive reader (for the comparison)."""
    with mock.patch.object(scope_module, "query_binary_block", naive_query_binary_block):
        yield


# ------------------------------------------------------------------------------ timing
def _open(rm: pyvisa.ResourceManager, name: str) -> MessageBasedResource:
    res = rm.open_resource(name, read_termination="\n", write_termination="\n", timeout=10_000)
    if not isinstance(res, MessageBasedResource):
        raise TypeError(f"{name} is not a message-based resource")
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


def pyvisa_block_fetch(inst: MessageBasedResource, termchar: bool = True) -> Callable[[], int]:
    """PyVISA's own ``query_binary_values``. With the read termination on, VISA ends a read at
    every LF byte inside the block, so PyVISA needs thousands of reads; with it off the reads
    are ``chunk_size`` long and end at the message end (the in-process backend signals END;
    pyvisa-py over TCP cannot, so it is not timed so)."""

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


# ------------------------------------------------------------------------------ driver path
def _block_instrument(resource: str, visa_library: Any) -> Instrument:
    """A bare PyMeasure instrument on the block source, LF-terminated like the labrig drivers."""
    return Instrument(
        resource,
        "block source",
        visa_library=visa_library,
        includeSCPI=False,
        read_termination="\n",
        write_termination="\n",
        timeout=10_000,
    )


def _prepare_scope(scope: KeysightInfiniiVision) -> None:
    """A 1,000,000-point record on channel 1, transferred as WORD."""
    scope.write(":TIM:SCAL 2e-4")  # 10 div x 0.2 ms x 5 GSa/s allows 1e6 points
    scope.write(":CHAN1:SCAL 0.1")
    scope.set_points(SCOPE_POINTS)
    scope.transfer_format = "WORD"
    scope.digitize(1)
    scope.operation_complete()
    scope.check_errors()


def driver_fetches(block: Instrument, scope: KeysightInfiniiVision) -> dict[str, Callable[[], int]]:
    """The driver-path measurements, each naive and fixed: a generic float32 block; the scope's
    ``:WAV:DATA?`` block alone; the scope's whole ``read_waveform`` (format and source set-up,
    preamble, block, error check, conversion to volts and seconds)."""

    def block_naive() -> int:
        return len(naive_query_binary_block(block, "WAV:DATA?"))

    def block_fixed() -> int:
        data: npt.NDArray[Any] = query_binary_values(block, "WAV:DATA?", "<f4")
        return int(data.nbytes)

    def scope_block_naive() -> int:
        return len(naive_query_binary_block(scope, ":WAV:DATA?"))

    def scope_block_fixed() -> int:
        return len(query_binary_block(scope, ":WAV:DATA?"))

    def scope_naive() -> int:
        with naive_blocks():
            wave = scope.read_waveform(1)
        return int(wave.volts.size) * 2  # WORD: two bytes per point on the wire

    def scope_fixed() -> int:
        wave = scope.read_waveform(1)
        if wave.volts.size != SCOPE_POINTS:
            raise RuntimeError(f"scope sent {wave.volts.size} points, not {SCOPE_POINTS}")
        return int(wave.volts.size) * 2

    return {
        "block, naive": block_naive,
        "block, labrig": block_fixed,
        "scope block, naive": scope_block_naive,
        "scope block, labrig": scope_block_fixed,
        "read_waveform, naive": scope_naive,
        "read_waveform, labrig": scope_fixed,
    }


def measure_driver_path(
    resources: dict[str, str], visa_library: Any, repeats: int
) -> dict[str, float]:
    """MB/s of each driver-path measurement against the served or in-process emulators."""
    block = _block_instrument(resources["block"], visa_library)
    scope = KeysightInfiniiVision(resources["scope"], name="scope", visa_library=visa_library)
    try:
        _prepare_scope(scope)
        # The naive and fixed readers must agree byte for byte before either is timed.
        if naive_query_binary_block(block, "WAV:DATA?") != (
            query_binary_values(block, "WAV:DATA?", "<f4").tobytes()
        ):
            raise RuntimeError("the naive and labrig block readers disagree")
        rates: dict[str, float] = {}
        for name, fetch in driver_fetches(block, scope).items():
            seconds, size = _time_transfer(fetch, repeats)
            rates[name] = size / seconds
        return rates
    finally:
        block.adapter.close()
        scope.adapter.close()


# ------------------------------------------------------------------------------ child server
def serve_child(points: int) -> None:
    """Child-process mode: serve the block source and the scope over TCP until stdin closes."""
    with BenchServer(_emulators(points)) as server:
        for name, resource in server.resources().items():
            print(f"{name} {resource}", flush=True)
        print("ready", flush=True)
        sys.stdin.read()  # returns when the parent closes our stdin (or exits)


@contextlib.contextmanager
def child_server(points: int) -> Iterator[dict[str, str]]:
    """Run :func:`serve_child` in a subprocess; yield its resources; stop it on exit."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve-child", "--points", str(points)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    resources: dict[str, str] = {}
    lines: list[str] = []

    def read_banner() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "ready":
                return

    reader = threading.Thread(target=read_banner, daemon=True)
    reader.start()
    reader.join(CHILD_START_TIMEOUT_S)
    try:
        if not lines or lines[-1] != "ready":
            raise RuntimeError(f"child server not ready in {CHILD_START_TIMEOUT_S} s: {lines}")
        for line in lines[:-1]:
            name, _, resource = line.partition(" ")
            resources[name] = resource
        yield resources
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


# ------------------------------------------------------------------------------ isolation
@contextlib.contextmanager
def served_station(station: str = "sim-dnpu") -> Iterator[dict[str, tuple[str, int]]]:
    """``labrig sim serve`` in a child process; yield name -> (host, port); stop it on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "labrig.cli", "sim", "serve", "--station", station],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []

    def read_banner() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "ready":
                return

    reader = threading.Thread(target=read_banner, daemon=True)
    reader.start()
    reader.join(CHILD_START_TIMEOUT_S)
    try:
        if not lines or lines[-1] != "ready":
            raise RuntimeError(f"labrig sim serve not ready in {CHILD_START_TIMEOUT_S} s: {lines}")
        addresses: dict[str, tuple[str, int]] = {}
        for line in lines[:-1]:
            name, _, resource = line.partition(" ")
            _, host, port, _ = resource.split("::")
            addresses[name] = (host, int(port))
        yield addresses
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


def _ask(sock: Any, message: bytes, timeout_s: float) -> bytes:
    """Send ``message`` (ending in LF) and read one LF-terminated reply line."""
    sock.settimeout(timeout_s)
    sock.sendall(message)
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return bytes(data)


def _probe(address: tuple[str, int], seconds: float, stop: threading.Event) -> list[float]:
    """Reply times of ``*IDN?`` on ``address`` for ``seconds`` (or until ``stop``)."""
    import socket

    times: list[float] = []
    with socket.create_connection(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end and not stop.is_set():
            t0 = time.perf_counter()
            _ask(sock, b"*IDN?\n", 120.0)
            times.append(time.perf_counter() - t0)
            time.sleep(0.005)
    return times


def _flood(address: tuple[str, int], messages: list[bytes], stop: threading.Event) -> int:
    """Send each of ``messages`` in turn (each ends with a query) until ``stop``; count them."""
    import socket

    count = 0
    with socket.create_connection(address) as sock:
        while not stop.is_set():
            for message in messages:
                if stop.is_set():
                    break
                try:
                    _ask(sock, message, 300.0)
                except (TimeoutError, ConnectionError):
                    return count
                count += 1
    return count


def _flood_into(
    done: list[int], address: tuple[str, int], messages: list[bytes], stop: threading.Event
) -> None:
    done.append(_flood(address, messages, stop))


def flood_messages(kind: str, size: int) -> tuple[str, list[bytes]]:
    """The abuse sent to the flooded instrument: (instrument, messages)."""
    if kind == "chain":
        unit = b"sour1:volt 0.01;"
        return "dac", [unit * (size // len(unit)) + b"*STB?\n"]
    if kind == "capture":
        return "lockin1", [
            b"*RST;CAPTURELEN " + str(size).encode() + b";CAPTURESTART ONE,IMM;*OPC?\n"
        ]
    if kind == "chanlist":
        return "dac", [b"sour1:volt? (@1:" + str(size).encode() + b");*STB?\n", b"*CLS;*STB?\n"]
    raise ValueError(kind)


def isolation(opts: argparse.Namespace) -> dict[str, tuple[float, float, int, int]]:
    """Part 3: p50/p99 of the idle scope's ``*IDN?`` alone and while another is flooded.

    Returns case -> (p50 s, p99 s, probes, flood messages completed)."""
    cases = {
        "chain": opts.chain_bytes,
        "capture": opts.capture_kb,
        "chanlist": opts.chanlist_channels,
    }
    rows: dict[str, tuple[float, float, int, int]] = {}
    with served_station() as addresses:
        _warm_up(addresses)
        idle = addresses["scope"]
        stop = threading.Event()
        times = _probe(idle, opts.isolation_seconds, stop)
        rows["alone (baseline)"] = (*_p50_p99(times), len(times), 0)
        for kind, size in cases.items():
            name, messages = flood_messages(kind, size)
            stop = threading.Event()
            done: list[int] = []
            flooder = threading.Thread(
                target=_flood_into, args=(done, addresses[name], messages, stop), daemon=True
            )
            flooder.start()
            time.sleep(0.3)  # let the flood start
            times = _probe(idle, opts.isolation_seconds, threading.Event())
            stop.set()
            flooder.join(600)
            rows[f"{kind} on {name}"] = (*_p50_p99(times), len(times), done[0] if done else -1)
    return rows


def _warm_up(addresses: dict[str, tuple[str, int]]) -> None:
    """Evaluate the device once before measuring: the first evaluation in the server process
    compiles the model's kernels (about a second, once per process)."""
    import socket

    with socket.create_connection(addresses["bench"]) as sock:
        _ask(sock, b"SIM:WAIT 0.01;*OPC?\n", 60.0)
    with socket.create_connection(addresses["lockin1"]) as sock:
        _ask(sock, b"SNAP? 0,1\n", 60.0)


def _p50_p99(times: list[float]) -> tuple[float, float]:
    data = np.asarray(times)
    return float(np.percentile(data, 50)), float(np.percentile(data, 99))


# ------------------------------------------------------------------------------ main
def transports(opts: argparse.Namespace) -> dict[str, tuple[float, float, str]]:
    """Part 1: round trip and PyVISA block throughput of each transport."""
    rows: dict[str, tuple[float, float, str]] = {}

    tcp_emu = BlockSource("tcp", opts.points)
    with BenchServer([tcp_emu]) as server:
        rm = pyvisa.ResourceManager("@py")
        inst = _open(rm, server.resources()["tcp"])
        rtt = _time_round_trips(inst, opts.round_trips)
        seconds, size = _time_transfer(pyvisa_block_fetch(inst), opts.repeats)
        rows["TCP (pyvisa-py)"] = (rtt, size / seconds, f"{size / 1e6:.1f} MB block")
        inst.close()
        rm.close()

    ip_emu = BlockSource("inproc", opts.points)
    rm, names = make_resource_manager({"inproc": ip_emu})
    inst = _open(rm, names["inproc"])
    rtt = _time_round_trips(inst, opts.round_trips)
    seconds, size = _time_transfer(pyvisa_block_fetch(inst), opts.repeats)
    rows["in-process"] = (rtt, size / seconds, f"{size / 1e6:.1f} MB block")
    seconds, size = _time_transfer(pyvisa_block_fetch(inst, termchar=False), opts.repeats)
    rows["in-proc, no termchar"] = (rtt, size / seconds, f"{size / 1e6:.1f} MB block")
    inst.close()
    rm.close()

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
    return rows


def driver_path(opts: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Part 2: the labrig driver path, naive and fixed, over each transport."""
    columns: dict[str, dict[str, float]] = {}
    with BenchServer(_emulators(opts.points)) as server:
        columns["TCP, server thread"] = measure_driver_path(server.resources(), "@py", opts.repeats)
    with child_server(opts.points) as resources:
        columns["TCP, server process"] = measure_driver_path(resources, "@py", opts.repeats)
    library = make_visa_library(_emulators(opts.points))
    rm = pyvisa.ResourceManager(library)  # owns the library; closing it releases the bench
    try:
        columns["in-process"] = measure_driver_path(library.resources(), library, opts.repeats)
    finally:
        rm.close()
    return columns


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="float32 per block")
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI): a few seconds")
    parser.add_argument("--isolation-only", action="store_true", help="only part 3")
    parser.add_argument("--isolation-seconds", type=float, default=5.0)
    parser.add_argument("--chain-bytes", type=int, default=1_000_000)
    parser.add_argument("--capture-kb", type=int, default=256)
    parser.add_argument("--chanlist-channels", type=int, default=30_000_000)
    opts = parser.parse_args()
    if opts.serve_child:
        serve_child(opts.points)
        return 0
    if opts.smoke:
        opts.points, opts.round_trips, opts.repeats = 20_000, 20, 1
        opts.isolation_seconds, opts.chain_bytes = 1.0, 100_000
        opts.capture_kb, opts.chanlist_channels = 16, 30_000_000

    ok = True
    if not opts.isolation_only:
        ok = transport_report(opts)
    rows = isolation(opts)
    _, base_p99, _, _ = rows["alone (baseline)"]
    print()
    print(f"Isolation: idle scope *IDN? reply time ({opts.isolation_seconds:g} s per case)")
    print(f"{'case':<22}{'p50':>11}{'p99':>11}{'p99/base':>10}{'probes':>8}{'flood msgs':>12}")
    for name, (p50, p99, probes, floods) in rows.items():
        print(
            f"{name:<22}{p50 * 1e3:>8.2f} ms{p99 * 1e3:>8.2f} ms{p99 / base_p99:>9.1f}x"
            f"{probes:>8}{floods:>12}"
        )
    worst = max(p99 for _, p99, _, _ in rows.values())
    met = worst * 1e3 <= MAX_IDLE_P99_MS
    print(f"target idle p99 <= {MAX_IDLE_P99_MS:g} ms while flooded: {'met' if met else 'MISSED'}")
    if opts.smoke:
        print("(--smoke: tiny sizes, the figures are not the targets' measure; exit 0)")
        return 0
    return 0 if ok and met else 1


def transport_report(opts: argparse.Namespace) -> bool:
    """Parts 1 and 2: print the tables; True when their targets are met."""

    rows = transports(opts)
    base_rtt, base_rate, _ = rows["in-process"]
    print("Transports (PyVISA query_binary_values; best of", opts.repeats, "transfers)")
    print(f"{'transport':<22}{'round trip':>14}{'x':>7}{'throughput':>16}{'x':>8}  payload")
    for name, (rtt, rate, what) in rows.items():
        print(
            f"{name:<22}{rtt * 1e3:>11.3f} ms{rtt / base_rtt:>6.1f}x"
            f"{rate / 1e6:>11.1f} MB/s{rate / base_rate:>7.2f}x  {what}"
        )

    columns = driver_path(opts)
    names = list(next(iter(columns.values())))
    print()
    print(
        f"labrig driver path, MB/s (block: {opts.points * 4 / 1e6:.1f} MB float32; "
        f"scope: {SCOPE_POINTS * 2 / 1e6:.1f} MB WORD record)"
    )
    print(f"{'':<24}" + "".join(f"{c:>22}" for c in columns))
    for name in names:
        print(f"{name:<24}" + "".join(f"{col[name] / 1e6:>22.1f}" for col in columns.values()))
    for what in ("block", "scope block", "read_waveform"):
        print(
            f"{what + ' labrig/naive':<24}"
            + "".join(
                f"{col[what + ', labrig'] / col[what + ', naive']:>21.1f}x"
                for col in columns.values()
            )
        )

    print()
    tcp_rtt = rows["TCP (pyvisa-py)"][0]
    ok = tcp_rtt * 1e3 <= MAX_TCP_ROUND_TRIP_MS
    print(f"target TCP round trip <= {MAX_TCP_ROUND_TRIP_MS:g} ms: {'met' if ok else 'MISSED'}")
    for column, rates in columns.items():
        for name in ("block, labrig", "scope block, labrig", "read_waveform, labrig"):
            met = rates[name] / 1e6 >= MIN_BINARY_MB_PER_S
            ok = ok and met
            print(
                f"target binary >= {MIN_BINARY_MB_PER_S:g} MB/s, {column}, {name}: "
                f"{'met' if met else 'MISSED'}"
            )
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
