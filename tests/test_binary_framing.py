"""Byte-exact framing of every binary reply the bench's instruments send, over TCP and in process.

Binary replies of the four models (the project's manuals):

- SR860 ``CAPTUREGET? i,j``: ``#<n><len>`` + float32 little-endian, **no terminator** after the
  block (an LF left behind would make every later reply one query late);
- InfiniiVision ``:WAVeform:DATA?``: ``#8`` + eight digits + bytes + **one LF**;
- 33500B and QDAC-II send no binary replies (their blocks are inputs: ``DATA:ARB``,
  ``trac:data``, ``list:volt``); their data queries answer ASCII lines.

Every test reads the block byte for byte and then asks a plain query, which must answer at once
and correctly.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest
import pyvisa
from pyvisa.resources import MessageBasedResource

from labrig.sim import inprocess
from labrig.sim.bench import Bench, FloatArray
from labrig.sim.keysight_infiniivision import InfiniiVisionEmulator
from labrig.sim.srs_sr860 import SR860Emulator
from labrig.sim.tcp import BenchServer


class _Sine:
    name = "src"

    def output(self, port: str, t: FloatArray) -> FloatArray:
        return 0.3 * np.sin(2 * np.pi * 1e3 * np.asarray(t, dtype=float))

    def on_trigger(self, port: str, t: float) -> None:
        pass


def _pattern_lockin(name: str = "lockin") -> tuple[SR860Emulator, np.ndarray]:
    """A stopped SR860 whose capture buffer holds a known pattern full of LF (0x0A) bytes."""
    lockin = SR860Emulator(name, Bench())
    lockin.feed(b"CAPTURELEN 256\n")
    raw = np.arange(256 * 1024, dtype=np.uint32).astype(np.uint8)
    raw[::7] = 0x0A  # line feeds all over the payload
    data = raw.view("<f4").copy()
    lockin._capture.buffer()[:] = data  # test access: a buffer with a known content
    return lockin, raw


def _expected_capture(raw: np.ndarray, offset_kb: int, length_kb: int) -> bytes:
    payload = raw[offset_kb * 1024 : (offset_kb + length_kb) * 1024].tobytes()
    length = str(len(payload)).encode()
    return b"#" + str(len(length)).encode() + length + payload


def _scope() -> InfiniiVisionEmulator:
    bench = Bench()
    bench.add(_Sine())
    bench.connect("scope.ch1", "src.out")
    scope = InfiniiVisionEmulator("scope", bench)
    scope.feed(b":TIM:SCAL 1e-4;:CHAN1:SCAL 0.1;:WAV:POIN:MODE NORM;:WAV:POIN 1000\n")
    scope.feed(b":WAV:SOUR CHAN1;:WAV:FORM BYTE;:DIG CHAN1\n")
    return scope


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"connection closed after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


def _recv_line(sock: socket.socket) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, "connection closed mid-line"
        data += chunk
    return bytes(data)


@pytest.fixture
def rm() -> Iterator[pyvisa.ResourceManager]:
    manager = pyvisa.ResourceManager("@py")
    yield manager
    manager.close()


# ----------------------------------------------------------------------------- SR860


@pytest.mark.parametrize(("offset_kb", "length_kb"), [(0, 2), (3, 1), (0, 64), (250, 8)])
def test_sr860_captureget_is_unterminated_in_process(offset_kb: int, length_kb: int) -> None:
    lockin, raw = _pattern_lockin()
    reply = lockin.feed(f"CAPTUREGET? {offset_kb},{length_kb}\n".encode())
    wrapped = np.concatenate([raw, raw])  # offset + length beyond CAPTURELEN wraps around
    assert reply == _expected_capture(wrapped, offset_kb, length_kb)
    assert lockin.feed(b"FREQ?\n") == b"1000\n"


def test_sr860_captureget_byte_exact_over_tcp_then_plain_queries() -> None:
    lockin, raw = _pattern_lockin()
    with BenchServer({"lockin": lockin}) as server:
        port = server.ports()["lockin"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for offset, length in ((0, 2), (2, 64), (66, 64)):
                sock.sendall(f"CAPTUREGET? {offset},{length}\n".encode())
                expected = _expected_capture(raw, offset, length)
                assert _recv_exact(sock, len(expected)) == expected
            sock.sendall(b"FREQ 1234.5\nFREQ?\n")
            assert _recv_line(sock) == b"1234.5\n"
            sock.sendall(b"HARM?\n")
            assert _recv_line(sock) == b"1\n"


def test_sr860_driver_reads_several_blocks_then_answers_plain_queries(
    rm: pyvisa.ResourceManager,
) -> None:
    """labrig's own driver over TCP: a 200 kB capture in four blocks, then FREQ?/HARM?."""
    from instruments.srs_sr860 import SR860

    lockin, raw = _pattern_lockin()
    with BenchServer({"lockin": lockin}) as server:
        driver = SR860(server.resources()["lockin"], visa_library="@py", timeout=3000)
        try:
            values = driver.read_capture(200)
            assert values.tobytes() == raw[: 200 * 1024].tobytes()
            driver.write("FREQ 1234.5")
            assert driver.ask("FREQ?").strip() == "1234.5"
            assert driver.ask("HARM?").strip() == "1"
        finally:
            driver.adapter.close()


def test_sr860_captureget_in_process_visa_then_plain_query() -> None:
    lockin, raw = _pattern_lockin()
    rm, resources = inprocess.make_resource_manager({"lockin": lockin})
    res = rm.open_resource(resources["lockin"], read_termination="\n", write_termination="\n")
    assert isinstance(res, MessageBasedResource)
    res.write("CAPTUREGET? 0,4")
    expected = _expected_capture(raw, 0, 4)
    assert res.read_bytes(len(expected)) == expected
    assert res.query("FREQ?") == "1000"
    res.close()


# ----------------------------------------------------------------------------- InfiniiVision


def _scope_block(scope: InfiniiVisionEmulator) -> bytes:
    reply = scope.feed(b":WAV:DATA?\n")
    return reply


def test_scope_waveform_block_has_eight_digit_header_and_one_lf() -> None:
    scope = _scope()
    reply = _scope_block(scope)
    assert reply[:2] == b"#8"
    n = int(reply[2:10])
    points = int(scope.feed(b":WAV:POIN?\n"))
    assert n == points  # BYTE: one byte a point
    assert len(reply) == 10 + n + 1
    assert reply.endswith(b"\n")
    assert scope.feed(b"*IDN?\n").startswith(b"KEYSIGHT")


def test_scope_waveform_block_byte_exact_over_tcp_and_in_process(
    rm: pyvisa.ResourceManager,
) -> None:
    expected = _scope_block(_scope())  # a twin bench: same settings, same record
    with BenchServer({"scope": _scope()}) as server:
        port = server.ports()["scope"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b":WAV:DATA?\n")
            assert _recv_exact(sock, len(expected)) == expected
            sock.sendall(b"*IDN?\n")
            assert _recv_line(sock).startswith(b"KEYSIGHT")
    twin = _scope()
    lib_rm, resources = inprocess.make_resource_manager({"scope": twin})
    res = lib_rm.open_resource(resources["scope"], read_termination="\n", write_termination="\n")
    assert isinstance(res, MessageBasedResource)
    res.write(":WAV:DATA?")
    assert res.read_bytes(len(expected)) == expected
    assert res.query("*IDN?").startswith("KEYSIGHT")
    res.close()
