"""A served bench runs a client's commands in the order it sent them, as the in-process bench does.

A client that writes to one instrument and then to another (``*trg`` to the DAC, then
``SIM:WAIT 0.3`` to the bench) sent them in that order; the server's threads must not swap them,
or bench time (and the seeded run's numbers) changes. Issue 13 item 6: the seeded HGE job gave
loss 0.5573, then 0.5924 over TCP and 0.4157 in process.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from pathlib import Path

import pytest

from labrig.sim.bench import Bench
from labrig.sim.control import BenchControlEmulator
from labrig.sim.emulator import ScpiEmulator
from labrig.sim.scpi import Args, Context
from labrig.sim.tcp import BenchServer


class Marker(ScpiEmulator):
    """``MARK`` records the bench time it ran at; ``MARKs?`` lists them."""

    def __init__(self, name: str, bench: Bench) -> None:
        self.times: list[float] = []
        super().__init__(name, bench)

    def register_commands(self) -> None:
        self.tree.add("MARK", write=self._mark)

    def _mark(self, ctx: Context, args: Args) -> None:
        self.times.append(self.bench.clock.now)


def _busy(stop: threading.Event) -> None:
    """Keep the server's interpreter busy, so thread wake-ups come late and in any order."""
    x = 0
    while not stop.is_set():
        x = (x + 1) % 1000


def test_writes_to_different_instruments_run_in_the_order_sent() -> None:
    bench = Bench()
    marker = Marker("marker", bench)
    control = BenchControlEmulator("bench", bench)
    rounds = 300
    stop = threading.Event()
    hogs = [threading.Thread(target=_busy, args=(stop,), daemon=True) for _ in range(2)]
    for hog in hogs:
        hog.start()
    try:
        with BenchServer({"marker": marker, "bench": control}) as server:
            ports = server.ports()
            a = socket.create_connection(("127.0.0.1", ports["marker"]))
            b = socket.create_connection(("127.0.0.1", ports["bench"]))
            for sock in (a, b):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(rounds):
                a.sendall(b"MARK\n")  # a write: no reply to wait for
                b.sendall(b"SIM:WAIT 1\n")
                b.sendall(b"*OPC?\n")
                assert b.recv(100) == b"1\n"
            a.sendall(b"*OPC?\n")
            assert a.recv(100) == b"1\n"
            a.close()
            b.close()
    finally:
        stop.set()
    # in process every MARK runs at k seconds; a swapped pair runs one second late
    late = [(k, t) for k, t in enumerate(marker.times) if t != float(k)]
    assert len(marker.times) == rounds
    assert not late, f"{len(late)} of {rounds} writes ran after a later wait: {late[:5]}"


REPO = Path(__file__).resolve().parents[1]


def _hge_json(*extra: str, runs_dir: Path) -> dict[str, object]:
    import subprocess

    env = dict(os.environ, LABRIG_RUNS_DIR=str(runs_dir))
    command = [sys.executable, "-m", "labrig.cli", "train", "hge", "--max-iterations", "3"]
    out = subprocess.run(
        [*command, "--json", *extra],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600, check=True,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_seeded_hge_job_gives_the_same_loss_over_tcp_and_in_process(tmp_path: Path) -> None:
    """The README's seeded job, shortened: the same loss and device time over a freshly served
    bench (twice) as in process."""
    from test_sim_serve import start_server, stop_server

    in_process = _hge_json(runs_dir=tmp_path / "a")
    for trial in range(2):
        served = start_server("sim-dnpu", tmp_path / f"served{trial}.toml")
        try:
            over_tcp = _hge_json("--station", str(served.station_file), runs_dir=tmp_path / "b")
        finally:
            stop_server(served.process)
        assert over_tcp["status"] == in_process["status"] == "success"
        assert over_tcp["final_loss"] == in_process["final_loss"]
        assert over_tcp["device_time_s"] == in_process["device_time_s"]
