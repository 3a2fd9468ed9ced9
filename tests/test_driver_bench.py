"""The drivers against the labrig bench emulators, through the in-process PyVISA backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

from instruments.errors import ChannelLimits, InstrumentReportedError, LimitError
from labrig.sim import inprocess
from labrig.sim.keysight_33500b import Keysight33500BEmulator
from labrig.sim.keysight_infiniivision import InfiniiVisionEmulator
from labrig.sim.qdevil_qdac2 import QDac2Emulator
from labrig.sim.srs_sr860 import SR860Emulator


def connect(driver_cls, emu):
    lib = inprocess.make_visa_library({emu.name: emu})
    return driver_cls(inprocess.resource_name(emu.name), visa_library=lib)


@pytest.fixture
def awg():
    from instruments.keysight_33500b import Keysight33500B

    return connect(Keysight33500B, Keysight33500BEmulator("awg"))


@pytest.fixture
def scope():
    from instruments.keysight_infiniivision import KeysightInfiniiVision

    return connect(KeysightInfiniiVision, InfiniiVisionEmulator("scope"))


@pytest.fixture
def dac():
    from instruments.qdevil_qdac2 import QDac2

    return connect(QDac2, QDac2Emulator("dac"))


@pytest.fixture
def lockin():
    from instruments.srs_sr860 import SR860

    return connect(SR860, SR860Emulator("lockin"))


def test_awg_settings_round_trip_and_errors(awg):
    assert "33522B" in awg.identity
    awg.ch_2.frequency = 1234.5
    assert awg.ch_2.frequency == 1234.5
    awg.ch_1.load = math.inf
    assert awg.ch_1.load == math.inf
    awg.ch_1.load = 50
    with pytest.raises(InstrumentReportedError) as info:
        awg.ch_1.offset = 9.9  # beyond 5 V into 50 Ohm: clamped and -222
    assert info.value.code == -222


def test_awg_upload_reproduces_volts(awg):
    volts = 0.3 * np.sin(np.linspace(0, 2 * np.pi, 64, endpoint=False)) + 0.1
    awg.load_waveform(1, volts, 1e6, name="sine64")
    assert awg.ch_1.arb_name == "SINE64"
    assert awg.ch_1.function == "ARB"
    assert awg.ch_1.amplitude == pytest.approx(np.ptp(volts))
    assert awg.ch_1.offset == pytest.approx(0.5 * (volts.max() + volts.min()))
    assert "SINE64" in awg.ch_1.volatile_catalog()
    awg.configure_burst(1, 2, "bus")
    awg.set_output(1, True)
    awg.trigger()
    assert awg.ch_1.burst_ncycles == 2
    awg.safe_state()
    assert awg.ch_1.output_enabled is False


def test_scope_settings_and_acquisition(scope):
    assert "DSO" in scope.identity or "MSO" in scope.identity
    scope.ch_2.scale = 0.05
    assert scope.ch_2.scale == pytest.approx(0.05)
    scope.configure_acquisition(1, 2.0, 0.0, 1e-3, "immediate")
    wave = scope.acquire(1, timeout_s=5.0)
    assert wave.volts.size == wave.times_s.size > 1
    assert np.all(np.isfinite(wave.volts))
    assert wave.sample_interval_s > 0
    with pytest.raises(InstrumentReportedError):
        scope.write(":TIM:SCAL -1")
        scope.check_errors()


def test_dac_limits_ramps_sines_traces(dac):
    assert "QDAC-II" in dac.identity
    dac.set_limits(3, ChannelLimits(-1.2, 0.6, 10.0, 0.0, "electrode", "test"))
    with pytest.raises(LimitError):
        dac.set_voltage(3, 0.7)
    dac.ramp_to({3: 0.5}, timeout_s=5.0)
    assert dac.get_voltage(3) == pytest.approx(0.5, abs=1e-4)
    with pytest.raises(LimitError):
        dac.start_sines({3: (10.0, 0.2)})  # 0.5 + 0.2 > 0.6
    dac.start_sines({3: (10.0, 0.05)}, "immediate")
    dac.stop_generators()
    duration = dac.play_traces({3: np.linspace(0.0, 1e-4, 11), 4: np.zeros(11)}, 1e5)
    assert duration == pytest.approx(110e-6)
    dac.trigger()
    dac.safe_state()
    assert dac.get_voltage(3) == pytest.approx(0.0, abs=1e-4)
    dac.ch_1.filter = "med"
    assert dac.ch_1.filter == "med"
    with pytest.raises(InstrumentReportedError):
        dac.write("sour1:volt:nonsense 1")
        dac.check_errors()


def test_lockin_round_trip(lockin):
    assert "SR860" in lockin.identity
    lockin.configure(920.0, 0.05, current_input=True)
    assert lockin.time_constant_s == 0.1
    assert lockin.frequency == pytest.approx(920.0)
    lockin.sine_amplitude = 0.5
    assert lockin.sine_amplitude == pytest.approx(0.5)
    x, y = lockin.read_xy()
    assert math.isfinite(x) and math.isfinite(y)
    with pytest.raises(InstrumentReportedError):
        lockin.write("NOTACOMMAND 1")
        lockin.check_errors()
