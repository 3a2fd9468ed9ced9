"""The TCP bench server, driven by real PyVISA through pyvisa-py."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import pyvisa
from pyvisa.errors import VisaIOError
from pyvisa.resources import MessageBasedResource
from sim_contract import ToyEmulator, leftover_bench_threads

from labrig.sim.bench import Bench, Fault
from labrig.sim.tcp import BenchServer, serve_forever

IDN = "labrig,TOY1,0001,1.0"


@pytest.fixture
def bench() -> Bench:
    return Bench()


@pytest.fixture
def server(bench: Bench) -> Iterator[BenchServer]:
    toys = [ToyEmulator("toy", bench), ToyEmulator("toy2", bench)]
    with BenchServer(toys) as srv:
        yield srv
    leftover = leftover_bench_threads()
    assert not leftover, leftover


@pytest.fixture
def rm() -> Iterator[pyvisa.ResourceManager]:
    manager = pyvisa.ResourceManager("@py")
    yield manager
    manager.close()


def open_toy(
    rm: pyvisa.ResourceManager, server: BenchServer, name: str = "toy", timeout_ms: int = 2000
) -> MessageBasedResource:
    res = rm.open_resource(
        server.resources()[name],
        read_termination="\n",
        write_termination="\n",
        timeout=timeout_ms,
    )
    assert isinstance(res, MessageBasedResource)
    return res


def test_resources_name_socket_ports(server: BenchServer) -> None:
    res = server.resources()
    assert set(res) == {"toy", "toy2"}
    port = server.ports()["toy"]
    assert res["toy"] == f"TCPIP0::127.0.0.1::{port}::SOCKET"
    assert server.ports()["toy"] != server.ports()["toy2"]


def test_identify_and_write_then_query(rm: pyvisa.ResourceManager, server: BenchServer) -> None:
    inst = open_toy(rm, server)
    assert inst.query("*IDN?") == IDN
    inst.write("SOUR2:FREQ 12.5 KHZ")
    assert float(inst.query("SOUR2:FREQ?")) == 12500.0
    assert inst.query("SYST:ERR?") == '+0,"No error"'
    inst.close()


def test_round_trip_is_fast(rm: pyvisa.ResourceManager, server: BenchServer) -> None:
    """TCP_NODELAY + TCP_QUICKACK: a write followed by a query takes far less than the ~40 ms
    that Nagle and delayed ACKs would cost."""
    inst = open_toy(rm, server)
    inst.query("*IDN?")
    n = 50
    start = time.perf_counter()
    for i in range(n):
        inst.write(f"FREQ {i + 1}")
        assert float(inst.query("FREQ?")) == i + 1
    per_round_trip = (time.perf_counter() - start) / n
    assert per_round_trip < 0.010
    inst.close()


def test_binary_block_round_trip(rm: pyvisa.ResourceManager, server: BenchServer) -> None:
    inst = open_toy(rm, server)
    values = np.random.default_rng(1).standard_normal(100_000).astype(np.float32)
    inst.write_binary_values("DATA:ARB wave,", values, datatype="f")  # type: ignore[arg-type]
    got = inst.query_binary_values("DATA:ARB? wave", datatype="f", container=np.ndarray)
    np.testing.assert_array_equal(got, values)
    assert inst.query("SYST:ERR?") == '+0,"No error"'
    inst.close()


def test_two_clients_one_instrument(rm: pyvisa.ResourceManager, server: BenchServer) -> None:
    a, b = open_toy(rm, server), open_toy(rm, server)
    # Writes on two connections are not ordered with respect to each other: a query on the
    # writing connection (*OPC?) proves the write was processed before the other client asks.
    a.write("SOUR1:FREQ 111")
    assert a.query("*OPC?").strip() == "1"
    b.write("SOUR2:FREQ 222")
    assert b.query("*OPC?").strip() == "1"
    assert float(b.query("SOUR1:FREQ?")) == 111.0  # one instrument, shared state
    assert float(a.query("SOUR2:FREQ?")) == 222.0
    failures: list[str] = []

    def hammer(inst: MessageBasedResource, ch: int) -> None:
        try:
            for i in range(40):
                inst.write(f"SOUR{ch}:VOLT:OFFS {i / 100}")
                got = float(inst.query(f"SOUR{ch}:VOLT:OFFS?"))
                if got != i / 100:
                    failures.append(f"ch{ch}: wrote {i / 100}, read {got}")
        except Exception as exc:  # a thread's exception would otherwise vanish
            failures.append(f"ch{ch}: {exc!r}")

    threads = [threading.Thread(target=hammer, args=(c, ch)) for c, ch in ((a, 1), (b, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a client thread is still running after 10 s"
    assert not failures
    a.close()
    b.close()


def test_clients_partial_messages_do_not_mix(server: BenchServer) -> None:
    port = server.ports()["toy"]
    with (
        socket.create_connection(("127.0.0.1", port), timeout=2) as a,
        socket.create_connection(("127.0.0.1", port), timeout=2) as b,
    ):
        a.sendall(b"SOUR1:FR")
        b.sendall(b"*ID")
        a.sendall(b"EQ 77;FREQ?\n")
        b.sendall(b"N?\n")
        assert a.recv(100) == b"+7.700000000000000E+01\n"
        assert b.recv(100) == (IDN + "\n").encode()


def test_close_disconnects_clients_and_joins_threads(bench: Bench) -> None:
    srv = BenchServer([ToyEmulator("toy", bench)]).start()
    port = srv.ports()["toy"]
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    sock.sendall(b"*IDN?\n")
    assert sock.recv(100).startswith(b"labrig")
    srv.close()
    assert sock.recv(100) == b""  # the server closed the connection
    sock.close()
    assert not leftover_bench_threads()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


def test_serve_forever_stops_on_event(bench: Bench) -> None:
    stop = threading.Event()
    ready: dict[str, str] = {}
    thread = threading.Thread(
        target=serve_forever,
        args=([ToyEmulator("toy", bench)], stop),
        kwargs={"on_ready": ready.update},
    )
    thread.start()
    deadline = time.monotonic() + 5
    while not ready and time.monotonic() < deadline:
        time.sleep(0.01)
    port = int(ready["toy"].split("::")[2])
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"*IDN?\n")
        assert sock.recv(100) == (IDN + "\n").encode()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


# --------------------------------------------------------------------------- faults


def test_drop_closes_the_connection(
    rm: pyvisa.ResourceManager, server: BenchServer, bench: Bench
) -> None:
    inst = open_toy(rm, server, timeout_ms=300)
    assert inst.query("*IDN?") == IDN
    bench.faults.add(Fault("drop", "toy", at_command=2))
    with pytest.raises((VisaIOError, OSError)):
        inst.query("*IDN?")
    deadline = time.monotonic() + 2
    while server.client_count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.client_count == 0
    inst.close()
    # the instrument itself is fine: a new connection works
    again = open_toy(rm, server)
    assert again.query("*IDN?") == IDN
    again.close()


def test_delay_holds_the_reply_back(
    rm: pyvisa.ResourceManager, server: BenchServer, bench: Bench
) -> None:
    inst = open_toy(rm, server)
    inst.query("*IDN?")
    bench.faults.add(Fault("delay", "toy", at_command=2, seconds=0.3))
    start = time.perf_counter()
    assert inst.query("*IDN?") == IDN
    assert time.perf_counter() - start >= 0.3
    start = time.perf_counter()
    assert inst.query("*IDN?") == IDN
    assert time.perf_counter() - start < 0.1  # it fired once
    inst.close()


def test_garble_corrupts_the_reply(
    rm: pyvisa.ResourceManager, server: BenchServer, bench: Bench
) -> None:
    inst = open_toy(rm, server)
    bench.faults.add(Fault("garble", "toy", at_command=1))
    inst.write("*IDN?")
    raw = inst.read_raw()
    assert raw.endswith(b"\n") and raw != (IDN + "\n").encode()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("ascii")
    assert inst.query("*IDN?") == IDN
    inst.close()


def test_silence_times_out(rm: pyvisa.ResourceManager, server: BenchServer, bench: Bench) -> None:
    inst = open_toy(rm, server, timeout_ms=200)
    bench.faults.add(Fault("silence", "toy", at_command=1))
    with pytest.raises(VisaIOError) as err:
        inst.query("*IDN?")
    assert err.value.error_code == pyvisa.constants.StatusCode.error_timeout
    assert inst.query("*IDN?") == IDN
    inst.close()


def test_error_fault_reaches_the_queue(
    rm: pyvisa.ResourceManager, server: BenchServer, bench: Bench
) -> None:
    inst = open_toy(rm, server)
    bench.faults.add(Fault("error", "toy", at_command=1, code=-240, message="Hardware error"))
    inst.write("FREQ 5")
    assert inst.query("SYST:ERR?") == '-240,"Hardware error"'
    inst.close()
