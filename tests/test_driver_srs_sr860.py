"""Wire tests of the SR860 driver: exact bytes both ways, no hardware."""

from __future__ import annotations

import json

import numpy as np
import pytest
from driver_wire import assert_implements, ieee_block
from pymeasure.test import expected_protocol

from instruments.errors import InstrumentReportedError
from instruments.roles import LockIn
from instruments.srs_sr860 import SENSITIVITIES_A, SENSITIVITIES_V, SR860, TIME_CONSTANTS_S

OK = ("*ESR?", "0")

PROPERTIES = [
    ("reference_source", "EXT", "RSRC 1", "1", "EXT"),
    ("reference_source", "chop", "RSRC 3", "3", "CHOP"),
    ("frequency", 1e-3, "FREQ 0.001", "0.001", 1e-3),
    ("frequency", 123456.789, "FREQ 123456.789", "123456.789", 123456.789),
    ("sine_amplitude", 2e-9, "SLVL 2e-09", "2e-09", 2e-9),
    ("sine_offset", -5, "SOFF -5", "-5", -5.0),
    ("harmonic", 99, "HARM 99", "99", 99),
    ("phase", -359999.5, "PHAS -359999.5", "-359999.5", -359999.5),
    ("time_constant_index", 21, "OFLT 21", "21", 21),
    ("filter_slope", 24, "OFSL 3", "3", 24),
    ("sync_filter", True, "SYNC 1", "1", True),
    ("sensitivity_index", 27, "SCAL 27", "27", 27),
    ("input_mode", "CURR", "IVMD 1", "1", "CURR"),
    ("current_gain", "100MEG", "ICUR 1", "1", "100MEG"),
    ("input_range", 0.03, "IRNG 3", "3", 0.03),
    ("input_coupling", "AC", "ICPL 0", "0", "AC"),
    ("capture_length_kb", 4096, "CAPTURELEN 4096", "4096", 4096),
    ("capture_config", "XY", "CAPTURECFG 1", "1", "XY"),
]


@pytest.mark.parametrize(("name", "value", "command", "reply", "read"), PROPERTIES)
def test_property_round_trip(name, value, command, reply, read):
    get = command.split(" ")[0] + "?"
    with expected_protocol(SR860, [(command, None), OK, (get, reply)]) as lockin:
        setattr(lockin, name, value)
        assert getattr(lockin, name) == read


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("frequency", 500.1e3),
        ("frequency", 0.0),
        ("sine_amplitude", 2.01),
        ("sine_amplitude", -0.1),
        ("harmonic", 0),
        ("harmonic", 100),
        ("harmonic", 1.5),
        ("phase", 360001),
        ("time_constant_index", 22),
        ("filter_slope", 30),
        ("sensitivity_index", 28),
        ("input_range", 0.5),
        ("input_mode", "POWER"),
        ("capture_length_kb", 3),
        ("capture_length_kb", 4098),
        ("capture_rate_exponent", 21),
        ("time_constant_s", 40e3),
        ("time_constant_s", 0.0),
        ("sensitivity_v", 2.0),
    ],
)
def test_out_of_range_raises_without_writing(name, value):
    with expected_protocol(SR860, []) as lockin, pytest.raises(ValueError):
        setattr(lockin, name, value)


def test_tables():
    assert TIME_CONSTANTS_S[0] == 1e-6 and TIME_CONSTANTS_S[10] == 0.1
    assert TIME_CONSTANTS_S[21] == 30e3 and TIME_CONSTANTS_S[5] == 3e-4
    assert SENSITIVITIES_V[0] == 1.0 and SENSITIVITIES_V[1] == 0.5 and SENSITIVITIES_V[27] == 1e-9
    assert SENSITIVITIES_V[7] == 5e-3
    assert SENSITIVITIES_A[0] == 1e-6 and SENSITIVITIES_A[27] == 1e-15


@pytest.mark.parametrize(
    ("seconds", "index"),
    [(1e-7, 0), (1e-6, 0), (0.1, 10), (0.1000000000001, 10), (0.11, 11), (0.3, 11), (30e3, 21)],
)
def test_time_constant_picks_nearest_at_or_above(seconds, index):
    dialogue = [(f"OFLT {index}", None), OK, ("OFLT?", str(index))]
    with expected_protocol(SR860, dialogue) as lockin:
        lockin.time_constant_s = seconds
        assert lockin.time_constant_s == TIME_CONSTANTS_S[index]


def test_sensitivity_in_volts_and_amperes():
    dialogue = [
        ("SCAL 7", None),
        OK,
        ("SCAL?", "7"),
        ("SCAL 18", None),
        OK,
        ("SCAL?", "18"),
    ]
    with expected_protocol(SR860, dialogue) as lockin:
        lockin.sensitivity_v = 4e-3  # -> 5 mV full scale
        assert lockin.sensitivity_v == 5e-3
        lockin.sensitivity_a = 1e-12
        assert lockin.sensitivity_a == 1e-12


def test_execution_error_bit_raises():
    dialogue = [("FREQ 1000", None), ("*ESR?", "16")]
    with (
        expected_protocol(SR860, dialogue) as lockin,
        pytest.raises(InstrumentReportedError) as info,
    ):
        lockin.frequency = 1000
    assert info.value.code == 16
    assert "execution error" in info.value.message
    assert info.value.command == "FREQ 1000"


def test_command_error_bit_raises_and_harmless_bits_do_not():
    with (
        expected_protocol(SR860, [("*ESR?", "161")]) as lockin,  # PON + CMD + OPC
        pytest.raises(InstrumentReportedError) as info,
    ):
        lockin.check_errors()
    assert info.value.code == 32
    with expected_protocol(SR860, [("*ESR?", "193")]) as lockin:  # PON + URQ + OPC
        lockin.check_errors()


def test_outputs_and_snap():
    dialogue = [
        ("OUTP? 0", "2.7102961653e-08"),
        ("OUTP? 1", "-0.00049118528841"),
        ("OUTP? 2", "0.50329655409"),
        ("OUTP? 3", "89.942050958"),
        ("SNAP? 0,1", "1.5e-09,-2.5e-10"),
        ("SNAP? 2,3", "2.4805799637e-09,19.749698639"),
        ("SNAP? 0,1,15", "1,2,1000"),
        ("ILVL?", "4"),
        ("LIAS?", "16"),
        ("CUROVLDSTAT?", "0"),
    ]
    with expected_protocol(SR860, dialogue) as lockin:
        assert lockin.x == 2.7102961653e-08
        assert lockin.y == -0.00049118528841
        assert lockin.magnitude == 0.50329655409
        assert lockin.theta == 89.942050958
        assert lockin.read_xy() == (1.5e-09, -2.5e-10)
        assert lockin.read_r_theta() == (2.4805799637e-09, 19.749698639)
        assert lockin.snap("x", "Y", "FINT") == [1.0, 2.0, 1000.0]
        assert lockin.input_level == 4
        assert lockin.lockin_status == 16
        assert lockin.overload_status == 0
    with expected_protocol(SR860, []) as lockin:
        with pytest.raises(ValueError):
            lockin.snap("X")
        with pytest.raises(ValueError):
            lockin.snap("X", "Y", "R", "THETA")
        with pytest.raises(ValueError):
            lockin.snap("X", "Q")


def test_capture_buffer():
    values = np.array([1.0, -2.5e-9, 3.25, 0.0], dtype="<f4")
    dialogue = [
        ("CAPTURERATE 3", None),
        OK,
        ("CAPTURERATE?", "78125"),
        ("CAPTURERATEMAX?", "625000"),
        ("CAPTURESTART 0,1", None),
        OK,
        ("CAPTURESTAT?", "3"),
        ("CAPTUREBYTES?", "16"),
        ("CAPTURESTOP", None),
        OK,
        ("CAPTUREGET? 0,1", ieee_block(values.tobytes())),
    ]
    with expected_protocol(SR860, dialogue) as lockin:
        lockin.capture_rate_exponent = 3
        assert lockin.capture_rate == 78125.0
        assert lockin.capture_rate_max == 625000.0
        lockin.start_capture(continuous=False, trigger="TRIG")
        assert lockin.capture_status == 3
        assert lockin.capture_bytes == 16
        lockin.stop_capture()
        data = lockin.get_capture(0, 1)
    np.testing.assert_array_equal(data, values)
    assert data.dtype == np.float32


def test_read_capture_asks_in_64_kb_chunks():
    first = np.arange(4, dtype="<f4")
    second = np.arange(4, 6, dtype="<f4")
    dialogue = [
        ("CAPTUREGET? 0,64", ieee_block(first.tobytes())),
        ("CAPTUREGET? 64,6", ieee_block(second.tobytes())),
    ]
    with expected_protocol(SR860, dialogue) as lockin:
        data = lockin.read_capture(70)
    np.testing.assert_array_equal(data, np.arange(6))
    with expected_protocol(SR860, []) as lockin, pytest.raises(ValueError):
        lockin.get_capture(0, 65)


def test_configure_validates_first_then_writes_and_checks():
    dialogue = [
        ("RSRC 0", None),
        ("FREQ 920", None),
        ("HARM 1", None),
        ("PHAS 0", None),
        ("IVMD 1", None),
        ("OFLT 10", None),
        OK,
    ]
    with expected_protocol(SR860, dialogue) as lockin:
        lockin.configure(920.0, 0.05, current_input=True)
    with expected_protocol(SR860, []) as lockin:
        with pytest.raises(ValueError):
            lockin.configure(920.0, 1e5)
        with pytest.raises(ValueError):
            lockin.configure(1e6, 0.1)
        with pytest.raises(ValueError):
            lockin.configure(920.0, 0.1, reference="dual")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            lockin.configure(920.0, 0.1, harmonic=100)


def test_common_commands_safe_state_and_shutdown():
    dialogue = [
        ("*IDN?", "Stanford_Research_Systems,SR860,002819,v1.51"),
        ("*RST", None),
        ("*CLS", None),
        ("SLVL 0", None),
        OK,
        ("SOFF 0", None),
        OK,
    ]
    with expected_protocol(SR860, dialogue) as lockin:
        assert lockin.identity == "Stanford_Research_Systems,SR860,002819,v1.51"
        lockin.reset()
        lockin.clear()
        lockin.shutdown()
    assert lockin.isShutdown


def test_snapshot():
    dialogue = [
        ("*IDN?", "Stanford_Research_Systems,SR860,002819,v1.51"),
        ("RSRC?", "0"),
        ("FREQ?", "1000"),
        ("SLVL?", "0"),
        ("SOFF?", "0"),
        ("HARM?", "1"),
        ("PHAS?", "0"),
        ("OFLT?", "10"),
        ("OFSL?", "0"),
        ("SYNC?", "0"),
        ("SCAL?", "0"),
        ("IVMD?", "0"),
        ("ICUR?", "0"),
        ("IRNG?", "0"),
        ("ICPL?", "0"),
    ]
    with expected_protocol(SR860, dialogue) as lockin:
        snap = lockin.snapshot()
    json.dumps(snap, allow_nan=False)
    assert snap["time_constant_s"] == 0.1
    assert snap["filter_slope"] == 6
    assert snap["input_range"] == 1.0


def test_implements_lock_in_role():
    assert_implements(SR860, LockIn)
