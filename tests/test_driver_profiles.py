"""The drivers against the pyvisa-sim profiles in ``sim_profiles/`` (static command sets).

Each test opens its own ResourceManager on the profile and sends ``*RST``; pyvisa-sim keeps
property values across managers in one process, so every test sets what it reads back.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from instruments.errors import InstrumentReportedError

PROFILES = Path(__file__).resolve().parent.parent / "sim_profiles"
RESOURCE = "TCPIP0::127.0.0.1::5025::SOCKET"


def open_driver(driver_cls, profile: str):
    path = PROFILES / profile
    assert path.exists(), f"profile sim_profiles/{profile} is missing"
    driver = driver_cls(RESOURCE, visa_library=f"{path}@sim")
    driver.write("*RST")
    driver.write("*CLS")
    return driver


@pytest.fixture
def awg():
    from instruments.keysight_33500b import Keysight33500B

    driver = open_driver(Keysight33500B, "keysight_33500b.yaml")
    yield driver
    driver.adapter.close()


@pytest.fixture
def scope():
    from instruments.keysight_infiniivision import KeysightInfiniiVision

    driver = open_driver(KeysightInfiniiVision, "keysight_infiniivision.yaml")
    yield driver
    driver.adapter.close()


@pytest.fixture
def dac():
    from instruments.qdevil_qdac2 import QDac2

    driver = open_driver(QDac2, "qdevil_qdac2.yaml")
    yield driver
    driver.adapter.close()


@pytest.fixture
def lockin():
    from instruments.srs_sr860 import SR860

    driver = open_driver(SR860, "srs_sr860.yaml")
    yield driver
    driver.adapter.close()


def test_awg_profile_round_trips(awg):
    assert "33522B" in awg.identity
    awg.ch_1.function = "SQU"
    assert awg.ch_1.function == "SQU"
    awg.ch_2.frequency = 2500.0
    assert awg.ch_2.frequency == 2500.0
    awg.ch_1.amplitude = 0.5
    assert awg.ch_1.amplitude == 0.5
    awg.ch_2.output_enabled = True
    assert awg.ch_2.output_enabled is True
    awg.ch_1.trigger_source = "BUS"
    assert awg.ch_1.trigger_source == "BUS"
    awg.ch_1.burst_ncycles = 7
    assert awg.ch_1.burst_ncycles == 7
    awg.byte_order = "SWAP"
    assert awg.byte_order == "SWAP"
    awg.check_errors()


def test_awg_profile_unknown_command_raises(awg):
    awg.write("SOUR1:NOSUCH 1")
    with pytest.raises(InstrumentReportedError) as info:
        awg.check_errors()
    assert info.value.code == -113


def test_scope_profile_round_trips(scope):
    assert "DSO" in scope.identity or "MSO" in scope.identity
    scope.timebase_range = 2e-3
    assert scope.timebase_range == pytest.approx(2e-3)
    scope.timebase_reference = "LEFT"
    assert scope.timebase_reference == "LEFT"
    scope.ch_2.range = 0.8
    assert scope.ch_2.range == pytest.approx(0.8)
    scope.ch_2.display = True
    assert scope.ch_2.display is True
    scope.ch_3.coupling = "AC"
    assert scope.ch_3.coupling == "AC"
    scope.waveform_points = 500
    assert scope.waveform_points == 500
    scope.check_errors()


def test_scope_profile_unknown_command_raises(scope):
    scope.write(":NOSUCH:THING 1")
    with pytest.raises(InstrumentReportedError) as info:
        scope.check_errors()
    assert info.value.code == -113


def test_dac_profile_round_trips(dac):
    assert "QDAC-II" in dac.identity
    dac.set_voltage(1, 0.25)
    assert dac.get_voltage(1) == pytest.approx(0.25)
    dac.ch_2.filter = "med"
    assert dac.ch_2.filter == "med"
    dac.check_errors()


def test_lockin_profile_round_trips(lockin):
    assert "SR860" in lockin.identity
    lockin.frequency = 1234.5
    assert lockin.frequency == pytest.approx(1234.5)
    lockin.time_constant_s = 0.3
    assert lockin.time_constant_s == 0.3
    lockin.harmonic = 3
    assert lockin.harmonic == 3
    assert math.isfinite(lockin.read_xy()[0])
