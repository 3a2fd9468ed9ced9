"""``open_rig``: roles, installed safety limits, device time, safe close, connection errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from instruments.errors import InstrumentConnectionError, LimitError
from instruments.keysight_33500b import Keysight33500B
from instruments.keysight_infiniivision import KeysightInfiniiVision
from instruments.qdevil_qdac2 import QDac2
from labrig.rig import Rig, open_rig
from labrig.station import builtin_station_path, load_station


@pytest.fixture
def rig() -> Iterator[Rig]:
    opened = open_rig("sim-reservoir")
    yield opened
    opened.close()


def test_instruments_by_role(rig: Rig) -> None:
    assert rig.simulated and rig.built is not None
    assert isinstance(rig.awg, Keysight33500B)
    assert isinstance(rig.dac, QDac2)
    assert isinstance(rig.digitizer, KeysightInfiniiVision)
    assert rig.lockins == []
    assert set(rig.instruments) == {"awg", "dac", "scope"}
    assert "33522B" in rig.identities()["awg"]
    with pytest.raises(KeyError, match="no instrument 'lockin1'"):
        rig.instrument("lockin1")


def test_station_limits_are_installed_and_refuse_before_writing(rig: Rig) -> None:
    station = rig.station
    assert station.reservoir is not None
    channel = station.reservoir.bias_channel
    limits = station.limits_for("dac", channel)
    assert limits is not None and rig.dac.limits(channel) == limits

    rig.dac.set_voltage(channel, 1.0)
    rig.wait(1.0)  # slew limit 10 V/s: 0.1 s to get there
    assert rig.dac.get_voltage(channel) == pytest.approx(1.0)
    port = f"dac.ch{channel}"
    assert rig.voltage_extremes()[port] == pytest.approx((0.0, 1.0))

    too_high = limits.max_v + 0.5
    with pytest.raises(LimitError) as info:
        rig.dac.set_voltage(channel, too_high)
    message = str(info.value)
    assert "modulator bias" in message and "sim-reservoir" in message
    with pytest.raises(LimitError):
        rig.dac.set_voltage(channel, limits.min_v - 0.5)
    rig.wait(1.0)
    # nothing was written: the output never went beyond what was set before
    assert rig.voltage_extremes()[port] == pytest.approx((0.0, 1.0))
    assert rig.dac.get_voltage(channel) == pytest.approx(1.0)
    rig.dac.check_errors()


def test_wait_advances_device_time(rig: Rig) -> None:
    before = rig.device_time_s()
    rig.wait(0.5)
    assert rig.device_time_s() == pytest.approx(before + 0.5, abs=1e-9)
    rig.wait(0.0)  # nothing to wait for
    assert rig.device_time_s() == pytest.approx(before + 0.5, abs=1e-9)


def test_close_leaves_the_dac_at_its_safe_voltage_and_is_idempotent() -> None:
    rig = open_rig("sim-reservoir")
    station = rig.station
    assert station.reservoir is not None and rig.built is not None
    channel = station.reservoir.bias_channel
    limits = station.limits_for("dac", channel)
    assert limits is not None
    rig.dac.set_voltage(channel, 2.0)
    rig.wait(1.0)
    emulator = rig.built.emulators["dac"]
    bench = rig.built.bench

    assert rig.close() == []
    assert rig.close() == []  # again: nothing to do, nothing raised
    # the channel is back at safe_v (read from the bench itself: the connections are closed)
    bench.clock.advance(1.0)
    reply = emulator.feed(f"sour{channel}:volt?\n".encode())
    assert float(reply) == pytest.approx(limits.safe_v)
    low, high = bench.voltage_extremes[f"dac.ch{channel}"]
    assert limits.min_v <= low and high <= limits.max_v


def test_unreachable_resource_names_instrument_resource_and_station(tmp_path: Path) -> None:
    text = builtin_station_path("sim-reservoir").read_text(encoding="utf-8")
    # a port on this host where nothing listens: the connection is refused at once
    broken = text.replace(
        'resource = "TCPIP0::awg.labrig::5025::SOCKET"\nvisa_library = "@labrig"',
        'resource = "TCPIP0::127.0.0.1::1::SOCKET"\nvisa_library = "@py"',
    )
    assert broken != text
    path = tmp_path / "broken.toml"
    path.write_text(broken, encoding="utf-8")
    station = load_station(path)
    assert station.instruments["awg"].visa_library == "@py"

    with pytest.raises(InstrumentConnectionError) as info:
        open_rig(str(path))
    message = str(info.value)
    assert "awg" in message
    assert "TCPIP0::127.0.0.1::1::SOCKET" in message
    assert str(path) in message


def test_instrument_link_time_is_charged_to_the_bench_clock() -> None:
    # Uploading a waveform takes the AWG's link time on a real rig: device time counts it.
    import numpy as np

    from labrig.sim.keysight_33500b import Keysight33500BEmulator

    with open_rig("sim-reservoir") as rig:
        before = rig.device_time_s()
        rig.awg.load_waveform(1, np.linspace(-1.0, 1.0, 400_000), 25e6, name="IOTIME")
        spent = rig.device_time_s() - before
    payload_s = 400_000 * 4 / Keysight33500BEmulator.link_bytes_per_s
    assert payload_s <= spent < payload_s + 0.1  # the block, plus a few short commands


def test_long_waits_go_to_the_bench_in_bounded_steps() -> None:
    # A real-time bench answers SIM:WAIT only when that much wall time has passed: one long
    # wait would outlast the I/O timeout, so the client splits it.
    with open_rig("sim-reservoir") as rig:
        assert rig.bench_client is not None and rig.built is not None
        counts = rig.built.bench.faults.command_counts
        before = counts.get("bench", 0)
        t0 = rig.device_time_s()
        rig.bench_client.max_wait_step_s = 0.1
        rig.wait(0.35)
        assert rig.device_time_s() - t0 == pytest.approx(0.35)
        # four steps (0.1, 0.1, 0.1, 0.05), each SIM:WAIT + *OPC?, plus the two SIM:TIME? reads
        assert counts["bench"] - before == 4 * 2 + 2
