"""``labrig sim serve``: a simulated station served over TCP, reached by plain PyVISA and labrig.

Each test starts the command as a subprocess on 127.0.0.1 with ephemeral ports, reads its
``<name> <resource>`` lines up to ``ready`` (with a timeout) and stops it with SIGTERM. Clients
use pyvisa-py (``@py``) exactly as for a LAN instrument; nothing in process is shared with the
server.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pyvisa
from pyvisa.resources import MessageBasedResource

from instruments.errors import InstrumentReportedError
from instruments.keysight_33500b import Keysight33500B
from instruments.qdevil_qdac2 import QDac2
from labrig.rig import open_rig
from labrig.station import Station, load_station

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 120.0

#: What *IDN? must name for each model.
IDN_MODEL = {
    "keysight_33500b": "33522B",
    "keysight_infiniivision": "DSO-X 3024T",
    "qdevil_qdac2": "QDAC-II",
    "srs_sr860": "SR860",
    "labrig_bench": "virtual-bench",
}


@dataclass
class Served:
    """A running ``labrig sim serve`` process and what it printed."""

    process: subprocess.Popen[str]
    resources: dict[str, str]
    station_file: Path
    station_name: str


def _labrig(*args: str) -> list[str]:
    return [sys.executable, "-m", "labrig.cli", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_server(station: str, station_file: Path) -> Served:
    """Start ``labrig sim serve`` and wait (bounded) for its ``ready`` line."""
    process = subprocess.Popen(
        _labrig("sim", "serve", "--station", station, "--write-station", str(station_file)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(),
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)  # end of output: the process exited

    threading.Thread(target=pump, daemon=True).start()
    resources: dict[str, str] = {}
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(f"labrig sim serve exited early: {process.stderr.read()!r}")  # type: ignore[union-attr]
            if line == "ready":
                break
            name, _, resource = line.partition(" ")
            resources[name] = resource
    except BaseException:
        stop_server(process)
        raise
    return Served(process, resources, station_file, station)


def stop_server(process: subprocess.Popen[str]) -> int:
    """SIGTERM, then (if it hangs) kill; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return int(process.returncode)


@pytest.fixture(scope="module", params=["sim-reservoir", "sim-dnpu"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    name = str(request.param)
    server = start_server(name, tmp_path_factory.mktemp(name) / "served.toml")
    yield server
    stop_server(server.process)


@pytest.fixture
def rm() -> Iterator[pyvisa.ResourceManager]:
    manager = pyvisa.ResourceManager("@py")
    yield manager
    manager.close()


def open_plain(rm: pyvisa.ResourceManager, resource: str) -> MessageBasedResource:
    res = rm.open_resource(resource, read_termination="\n", write_termination="\n", timeout=5000)
    assert isinstance(res, MessageBasedResource)
    return res


def models(served: Served) -> dict[str, str]:
    """Instrument name -> model, from the built-in station (plus the bench endpoint)."""
    station = load_station(served.station_name)
    out = {name: spec.model for name, spec in station.instruments.items()}
    out["bench"] = "labrig_bench"
    return out


def first_of(served: Served, model: str) -> str | None:
    return next((n for n, m in models(served).items() if m == model), None)


# ------------------------------------------------------------------------------ tests
def test_every_instrument_is_served_and_identifies(
    served: Served, rm: pyvisa.ResourceManager
) -> None:
    assert set(served.resources) == set(models(served))
    for name, model in models(served).items():
        resource = served.resources[name]
        assert resource.startswith("TCPIP0::127.0.0.1::") and resource.endswith("::SOCKET")
        res = open_plain(rm, resource)
        try:
            assert IDN_MODEL[model] in res.query("*IDN?"), name
        finally:
            res.close()
    ports = {r.split("::")[2] for r in served.resources.values()}
    assert len(ports) == len(served.resources)  # one port per instrument


def test_settings_round_trip_on_each_instrument(served: Served, rm: pyvisa.ResourceManager) -> None:
    dialogues = {
        "keysight_33500b": ("SOUR1:FREQ 1234.5", "SOUR1:FREQ?", 1234.5),
        "keysight_infiniivision": (":TIM:SCAL 0.002", ":TIM:SCAL?", 0.002),
        "qdevil_qdac2": ("sour3:volt 0.1", "sour3:volt?", 0.1),
        "srs_sr860": ("FREQ 777", "FREQ?", 777.0),
    }
    checked = 0
    for name, model in models(served).items():
        if model not in dialogues:
            continue
        set_cmd, query, expected = dialogues[model]
        res = open_plain(rm, served.resources[name])
        try:
            res.write(set_cmd)
            assert float(res.query(query)) == pytest.approx(expected, rel=1e-12), name
            if model == "srs_sr860":
                assert int(res.query("*ESR?")) & 0b110100 == 0
            else:
                assert res.query("SYST:ERR?").startswith(("+0", "0")), name
        finally:
            res.close()
        checked += 1
    assert checked >= 3


def test_out_of_range_values_give_222_to_plain_pyvisa_and_to_the_driver(
    served: Served, rm: pyvisa.ResourceManager
) -> None:
    dac = first_of(served, "qdevil_qdac2")
    assert dac is not None
    res = open_plain(rm, served.resources[dac])
    try:
        res.write("sour1:volt 11")
        assert "-222" in res.query("syst:err:all?")
        assert float(res.query("sour1:volt?")) != 11.0
    finally:
        res.close()

    # the labrig driver, through the same served resource (its validator bypassed by a raw write)
    driver = QDac2(served.resources[dac], name=dac, visa_library="@py")
    try:
        driver.write("sour1:volt 11")
        with pytest.raises(InstrumentReportedError) as info:
            driver.check_errors()
        assert info.value.code == -222
        assert info.value.instrument == dac
        with pytest.raises(ValueError):
            driver.channel(1).voltage = 11.0  # refused before anything is written
        driver.check_errors()  # ... so the queue is empty
    finally:
        driver.adapter.close()

    awg = first_of(served, "keysight_33500b")
    if awg is None:
        return
    res = open_plain(rm, served.resources[awg])
    try:
        res.write("SOUR1:FREQ 1e12")
        assert res.query("SYST:ERR?").startswith("-222")
        assert res.query("SYST:ERR?").startswith(("+0", "0"))
    finally:
        res.close()
    gen = Keysight33500B(served.resources[awg], name=awg, visa_library="@py")
    try:
        gen.write("SOUR1:FREQ 1e12")
        with pytest.raises(InstrumentReportedError) as info:
            gen.check_errors()
        assert info.value.code == -222
        assert "SOUR1:FREQ 1e12" in str(info.value)
    finally:
        gen.adapter.close()


def test_written_station_passes_check_and_opens_over_tcp(served: Served) -> None:
    check = subprocess.run(
        _labrig("station", "check", str(served.station_file), "--json"),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=COMMAND_TIMEOUT_S,
    )
    assert check.returncode == 0, check.stderr
    summary = json.loads(check.stdout.strip().splitlines()[-1])
    assert summary["status"] == "ok"
    for name, entry in summary["instruments"].items():
        assert entry["visa_library"] == "@py"
        assert entry["resource"] == served.resources[name]

    station = load_station(served.station_file)
    assert not station.simulated_in_process and station.bench is None
    builtin = load_station(served.station_name)

    def limits(st: Station) -> list[tuple[object, ...]]:
        return [(c.instrument, c.channel, *dataclasses.astuple(c.limits)[:5]) for c in st.channels]

    assert limits(station) == limits(builtin)  # the same safety limits reach the TCP client

    with open_rig(str(served.station_file)) as rig:
        assert rig.simulated and rig.built is None  # a bench endpoint, but nothing in process
        identities = rig.identities()
        for name, model in models(served).items():
            if name != "bench":
                assert IDN_MODEL[model] in identities[name]
        before = rig.device_time_s()
        rig.wait(0.25)
        assert rig.device_time_s() == pytest.approx(before + 0.25, abs=1e-9)
        channel = station.channels[0]
        rig.instruments[channel.instrument].set_voltage(channel.channel, channel.limits.safe_v)


def _run_json(*args: str) -> dict[str, object]:
    done = subprocess.run(
        _labrig(*args, "--json"),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=COMMAND_TIMEOUT_S,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_procedures_run_over_tcp(served: Served) -> None:
    station = str(served.station_file)
    if served.station_name == "sim-reservoir":
        result = _run_json("measure", "transfer", "--station", station, "--points", "11")
        assert result["status"] == "success"
        assert float(result["pd_max_v"]) > float(result["pd_min_v"])  # type: ignore[arg-type]
        # a 2-layer deep reservoir trained by aug-DFA, every layer through pyvisa-py and TCP
        dfa = _run_json(
            "train",
            "dfa",
            "--station",
            station,
            "--layers",
            "2",
            "--nodes",
            "20",
            "--epochs",
            "1",
            "--train-samples",
            "64",
        )
        assert dfa["status"] == "success"
        assert dfa["method"] == "aug-dfa" and int(dfa["epochs"]) == 1  # type: ignore[call-overload]
        assert 0.0 <= float(dfa["test_accuracy"]) <= 1.0  # type: ignore[arg-type]
        assert float(dfa["device_time_s"]) > 0  # type: ignore[arg-type]
        return
    iv = _run_json("measure", "iv", "--station", station, "--points", "11")
    assert iv["status"] == "success"
    assert iv["points"] == 11
    assert float(iv["current_max_na"]) > float(iv["current_min_na"])  # type: ignore[arg-type]
    hge = _run_json(
        "train", "hge", "--station", station, "--max-iterations", "2", "--initializations", "1"
    )
    assert hge["status"] == "success"
    assert int(hge["iterations"]) >= 1  # type: ignore[call-overload]


def test_sigterm_stops_the_server_promptly(tmp_path: Path) -> None:
    server = start_server("sim-reservoir", tmp_path / "served.toml")
    # a connected client must not keep the server alive
    client = socket.create_connection(
        ("127.0.0.1", int(server.resources["dac"].split("::")[2])), timeout=5
    )
    try:
        started = time.monotonic()
        code = stop_server(server.process)
        assert time.monotonic() - started < STOP_TIMEOUT_S
        assert code == 0
    finally:
        client.close()
    for resource in server.resources.values():
        port = int(resource.split("::")[2])
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
