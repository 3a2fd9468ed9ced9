"""Wire tests of the Keysight InfiniiVision driver: exact bytes both ways, no hardware."""

from __future__ import annotations

import json

import numpy as np
import pytest
from driver_wire import assert_implements, ieee_block
from pymeasure.test import expected_protocol

from instruments.errors import InstrumentReportedError
from instruments.keysight_infiniivision import KeysightInfiniiVision, WaveformPreamble
from instruments.roles import Digitizer

OK = (":SYST:ERR?", '+0,"No error"')
PREAMBLE = "+1,+0,+4,+1,+1.00000000E-06,-2.00000000E-06,+0,+1.00000000E-03,+5.0E-01,+32768"


def scope_block(payload: bytes) -> bytes:
    """The scope frames blocks with '#8' and ends them with a line feed."""
    return b"#8" + f"{len(payload):08d}".encode() + payload + b"\n"


CHANNEL_PROPERTIES = [
    ("scale", 0.05, ":CHAN3:SCAL 0.05", "+5.00000E-02", 0.05),
    ("range", 0.4, ":CHAN3:RANG 0.4", "+4.00000E-01", 0.4),
    ("offset", -1e-3, ":CHAN3:OFFS -0.001", "-1.00000E-03", -1e-3),
    ("display", True, ":CHAN3:DISP 1", "1", True),
    ("coupling", "AC", ":CHAN3:COUP AC", "AC", "AC"),
    ("probe", 10, ":CHAN3:PROB 10", "+10E+00", 10.0),
    ("impedance", "FIFT", ":CHAN3:IMP FIFT", "FIFT", "FIFT"),
    ("bandwidth_limit", False, ":CHAN3:BWL 0", "0", False),
]


@pytest.mark.parametrize(("name", "value", "command", "reply", "read"), CHANNEL_PROPERTIES)
def test_channel_property_round_trip(name, value, command, reply, read):
    get = command.split(" ")[0] + "?"
    with expected_protocol(KeysightInfiniiVision, [(command, None), OK, (get, reply)]) as scope:
        setattr(scope.ch_3, name, value)
        assert getattr(scope.ch_3, name) == read


INSTRUMENT_PROPERTIES = [
    ("timebase_scale", 1e-7, ":TIM:SCAL 1e-07", "+100.0E-09", 1e-7),
    ("timebase_range", 1e-3, ":TIM:RANG 0.001", "+1.00E-03", 1e-3),
    ("timebase_position", -2e-4, ":TIM:POS -0.0002", "-200.0E-06", -2e-4),
    ("timebase_reference", "LEFT", ":TIM:REF LEFT", "LEFT", "LEFT"),
    ("timebase_mode", "ROLL", ":TIM:MODE ROLL", "ROLL", "ROLL"),
    ("trigger_source", 2, ":TRIG:EDGE:SOUR CHAN2", "CHAN2", "CHAN2"),
    ("trigger_source", "EXT", ":TRIG:EDGE:SOUR EXT", "EXT", "EXT"),
    ("trigger_source", "line", ":TRIG:EDGE:SOUR LINE", "LINE", "LINE"),
    ("trigger_level", 0.125, ":TRIG:EDGE:LEV 0.125", "+125.0E-03", 0.125),
    ("trigger_slope", "NEG", ":TRIG:EDGE:SLOP NEG", "NEG", "NEG"),
    ("trigger_sweep", "NORM", ":TRIG:SWE NORM", "NORM", "NORM"),
    ("acquisition_type", "AVER", ":ACQ:TYPE AVER", "AVER", "AVER"),
    ("acquisition_count", 64, ":ACQ:COUN 64", "+64", 64),
    ("acquisition_mode", "SEGM", ":ACQ:MODE SEGM", "SEGM", "SEGM"),
    ("waveform_source", 4, ":WAV:SOUR CHAN4", "CHAN4", "CHAN4"),
    ("waveform_format", "ASC", ":WAV:FORM ASC", "ASC", "ASC"),
    ("waveform_byte_order", "LSBF", ":WAV:BYT LSBF", "LSBF", "LSBF"),
    ("waveform_unsigned", True, ":WAV:UNS 1", "1", True),
    ("waveform_points_mode", "RAW", ":WAV:POIN:MODE RAW", "RAW", "RAW"),
    ("waveform_points", 10000, ":WAV:POIN 10000", "+10000", 10000),
]


@pytest.mark.parametrize(("name", "value", "command", "reply", "read"), INSTRUMENT_PROPERTIES)
def test_instrument_property_round_trip(name, value, command, reply, read):
    get = command.split(" ")[0] + "?"
    with expected_protocol(KeysightInfiniiVision, [(command, None), OK, (get, reply)]) as scope:
        setattr(scope, name, value)
        assert getattr(scope, name) == read


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("trigger_source", 5),
        ("trigger_source", "BUS"),
        ("timebase_scale", 0.0),
        ("timebase_reference", "TOP"),
        ("acquisition_count", 0),
        ("acquisition_count", 2.5),
        ("waveform_format", "FLOAT"),
        ("waveform_points", 10),
    ],
)
def test_out_of_range_raises_without_writing(name, value):
    with expected_protocol(KeysightInfiniiVision, []) as scope, pytest.raises(ValueError):
        setattr(scope, name, value)


def test_error_reply_raises_with_code_and_message():
    dialogue = [
        (":TIM:SCAL 10", None),
        (":SYST:ERR?", '-222,"Data out of range"'),
        OK,
    ]
    with (
        expected_protocol(KeysightInfiniiVision, dialogue) as scope,
        pytest.raises(InstrumentReportedError) as info,
    ):
        scope.timebase_scale = 10
    assert (info.value.code, info.value.message) == (-222, "Data out of range")
    assert info.value.command == ":TIM:SCAL 10"


def test_run_control_and_sample_rate():
    dialogue = [
        (":RUN", None),
        (":STOP", None),
        (":SING", None),
        (":DIG", None),
        (":DIG CHAN2", None),
        ("*OPC?", "1"),
        (":OPER:COND?", "+8"),
        (":ACQ:SRAT?", "+4.0E+09"),
    ]
    with expected_protocol(KeysightInfiniiVision, dialogue) as scope:
        scope.run()
        scope.stop()
        scope.single()
        scope.digitize()
        scope.digitize(2)
        assert scope.operation_complete() is True
        assert scope.operation_condition == 8
        assert scope.sample_rate == 4e9


def test_preamble_parsing_and_scaling():
    pre = WaveformPreamble.from_reply(PREAMBLE)
    assert (pre.format, pre.type, pre.points, pre.count) == (1, 0, 4, 1)
    np.testing.assert_allclose(pre.times(3), [-2e-6, -1e-6, 0.0])
    np.testing.assert_allclose(pre.volts(np.array([32768, 32769, 32767])), [0.5, 0.501, 0.499])
    with pytest.raises(ValueError):
        WaveformPreamble.from_reply("1,2,3")


def test_read_waveform_word_little_endian_to_volts_and_seconds():
    codes = np.array([32768, 33768, 31768, 65535], dtype="<u2")
    dialogue = [
        (":WAV:SOUR CHAN1", None),
        OK,
        (":WAV:FORM WORD", None),
        (":WAV:BYT LSBF", None),
        (":WAV:UNS 1", None),
        (":WAV:PRE?", PREAMBLE),
        (":WAV:DATA?", scope_block(codes.tobytes())),
        OK,
    ]
    with expected_protocol(KeysightInfiniiVision, dialogue) as scope:
        wave = scope.read_waveform(1)
    np.testing.assert_allclose(wave.volts, [0.5, 1.5, -0.5, 0.5 + 32767e-3])
    np.testing.assert_allclose(wave.times_s, [-2e-6, -1e-6, 0.0, 1e-6])
    assert wave.sample_interval_s == pytest.approx(1e-6)


def test_fetch_waveform_byte_format():
    preamble = "+0,+0,+3,+1,+2.0E-09,+0.0E+00,+0,+4.0E-02,+0.0E+00,+128"
    dialogue = [
        (":WAV:SOUR CHAN2", None),
        OK,
        (":WAV:FORM BYTE", None),
        (":WAV:UNS 1", None),
        (":WAV:PRE?", preamble),
        (":WAV:DATA?", scope_block(bytes([128, 153, 103]))),
        OK,
    ]
    with expected_protocol(KeysightInfiniiVision, dialogue) as scope:
        wave = scope.fetch_waveform(2, "BYTE")
    np.testing.assert_allclose(wave.volts, [0.0, 1.0, -1.0])
    np.testing.assert_allclose(wave.times_s, [0.0, 2e-9, 4e-9])


def test_fetch_waveform_ascii_format():
    preamble = "+4,+0,+3,+1,+1.0E-03,+0.0E+00,+0,+0.0E+00,+0.0E+00,+0"
    dialogue = [
        (":WAV:SOUR CHAN1", None),
        OK,
        (":WAV:FORM ASC", None),
        (":WAV:PRE?", preamble),
        (":WAV:DATA?", scope_block(b"1.5e-01,-2.0e-03,3.25e+00")),
        OK,
    ]
    with expected_protocol(KeysightInfiniiVision, dialogue) as scope:
        wave = scope.fetch_waveform(1, "ASC")
    np.testing.assert_allclose(wave.volts, [0.15, -0.002, 3.25])
    np.testing.assert_allclose(wave.times_s, [0.0, 1e-3, 2e-3])


def test_waveform_transfer_error_is_raised():
    dialogue = [
        (":WAV:SOUR CHAN1", None),
        OK,
        (":WAV:FORM WORD", None),
        (":WAV:BYT LSBF", None),
        (":WAV:UNS 1", None),
        (":WAV:PRE?", PREAMBLE),
        (":WAV:DATA?", scope_block(b"")),
        (":SYST:ERR?", '-230,"Data corrupt or stale"'),
        OK,
    ]
    with (
        expected_protocol(KeysightInfiniiVision, dialogue) as scope,
        pytest.raises(InstrumentReportedError) as info,
    ):
        scope.read_waveform(1)
    assert info.value.code == -230


def test_configure_acquisition_external_trigger():
    dialogue = [
        (":CHAN2:DISP 1", None),
        (":CHAN2:RANG 2", None),
        (":CHAN2:OFFS 0.5", None),
        (":TIM:MODE MAIN", None),
        (":TIM:REF LEFT", None),
        (":TIM:RANG 0.001", None),
        (":TIM:POS 0.0001", None),
        (":TRIG:MODE EDGE", None),
        (":TRIG:EDGE:SOUR EXT", None),
        (":TRIG:EDGE:LEV 1.25", None),
        (":TRIG:EDGE:SLOP POS", None),
        (":TRIG:SWE NORM", None),
        OK,
    ]
    with expected_protocol(KeysightInfiniiVision, dialogue) as scope:
        scope.configure_acquisition(2, 2.0, 0.5, 1e-3, "external", 1.25)


def test_configure_acquisition_immediate_triggers_on_the_channel_in_auto_sweep():
    dialogue = [
        (":CHAN1:DISP 1", None),
        (":CHAN1:RANG 0.8", None),
        (":CHAN1:OFFS 0", None),
        (":TIM:MODE MAIN", None),
        (":TIM:REF LEFT", None),
        (":TIM:RANG 2e-05", None),
        (":TIM:POS 2.0000000000000003e-06", None),
        (":TRIG:MODE EDGE", None),
        (":TRIG:EDGE:SOUR CHAN1", None),
        (":TRIG:EDGE:LEV 0", None),
        (":TRIG:EDGE:SLOP POS", None),
        (":TRIG:SWE AUTO", None),
        OK,
    ]
    with expected_protocol(KeysightInfiniiVision, dialogue) as scope:
        scope.configure_acquisition(1, 0.8, 0.0, 2e-5, "immediate")


def test_configure_acquisition_refuses_bus_trigger_and_bad_values():
    with expected_protocol(KeysightInfiniiVision, []) as scope:
        with pytest.raises(ValueError):
            scope.configure_acquisition(1, 1.0, 0.0, 1e-3, "bus")
        with pytest.raises(ValueError):
            scope.configure_acquisition(5, 1.0, 0.0, 1e-3, "external")
        with pytest.raises(ValueError):
            scope.configure_acquisition(1, 0.0, 0.0, 1e-3, "external")


def test_arm_and_wait_complete_polls_run_bit():
    dialogue = [
        (":SING", None),
        (":OPER:COND?", "+40"),  # arm() confirms the arm was processed
        (":OPER:COND?", "+40"),
        (":OPER:COND?", "+32"),
    ]
    with expected_protocol(KeysightInfiniiVision, dialogue) as scope:
        scope.arm()
        scope.wait_complete(timeout_s=5.0)


class FakeClock:
    """Stands in for ``time.monotonic``/``time.sleep``: sleeping advances it exactly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_complete_times_out(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("instruments.common.time", clock)
    dialogue = [(":OPER:COND?", "+8")] * 3
    with (
        expected_protocol(KeysightInfiniiVision, dialogue) as scope,
        pytest.raises(TimeoutError),
    ):
        # polls at 0, 0.01 and 0.025 s (the last sleep is cut to the deadline), then gives up
        scope.wait_complete(timeout_s=0.025)
    assert clock.sleeps == pytest.approx([0.01, 0.015])


def test_acquire_digitizes_waits_and_reads():
    codes = np.array([32768, 32868], dtype="<u2")
    pre = "+1,+0,+2,+1,+1.0E-06,+0.0E+00,+0,+1.0E-03,+0.0E+00,+32768"
    dialogue = [
        (":DIG CHAN1", None),
        ("*OPC?", "1"),
        (":WAV:SOUR CHAN1", None),
        OK,
        (":WAV:FORM WORD", None),
        (":WAV:BYT LSBF", None),
        (":WAV:UNS 1", None),
        (":WAV:PRE?", pre),
        (":WAV:DATA?", scope_block(codes.tobytes())),
        OK,
    ]
    with expected_protocol(KeysightInfiniiVision, dialogue) as scope:
        wave = scope.acquire(1, timeout_s=2.0)
    np.testing.assert_allclose(wave.volts, [0.0, 0.1])


def test_set_points_uses_raw_record():
    dialogue = [(":WAV:POIN:MODE RAW", None), (":WAV:POIN 5000", None), OK]
    with expected_protocol(KeysightInfiniiVision, dialogue) as scope:
        scope.set_points(5000)
    with expected_protocol(KeysightInfiniiVision, []) as scope, pytest.raises(ValueError):
        scope.set_points(10)


def test_ieee_block_helper_matches_scope_framing():
    assert ieee_block(b"abc") == b"#13abc"


def test_implements_digitizer_role():
    assert_implements(KeysightInfiniiVision, Digitizer)


def test_snapshot_identity_safe_state_and_shutdown():
    replies = {
        ":TIM:SCAL?": "+1.0E-04",
        ":TIM:RANG?": "+1.0E-03",
        ":TIM:POS?": "+0.0E+00",
        ":TIM:REF?": "CENT",
        ":TIM:MODE?": "MAIN",
        ":TRIG:EDGE:SOUR?": "CHAN1",
        ":TRIG:EDGE:LEV?": "+0.0E+00",
        ":TRIG:EDGE:SLOP?": "POS",
        ":TRIG:SWE?": "AUTO",
        ":ACQ:TYPE?": "NORM",
        ":ACQ:COUN?": "+8",
        ":ACQ:MODE?": "RTIM",
        ":WAV:SOUR?": "CHAN1",
        ":WAV:FORM?": "BYTE",
        ":WAV:POIN:MODE?": "NORM",
        ":WAV:POIN?": "+1000",
    }
    dialogue = [("*IDN?", "KEYSIGHT TECHNOLOGIES,DSO-X 3024T,MY58493325,07.20.2017102614")]
    dialogue += list(replies.items())
    for n in (1, 2, 3, 4):
        dialogue += [
            (f":CHAN{n}:DISP?", "1" if n == 1 else "0"),
            (f":CHAN{n}:SCAL?", "+5.0E+00"),
            (f":CHAN{n}:RANG?", "+4.0E+01"),
            (f":CHAN{n}:OFFS?", "+0.0E+00"),
            (f":CHAN{n}:COUP?", "DC"),
            (f":CHAN{n}:PROB?", "+10E+00"),
        ]
    dialogue += [(":STOP", None)]
    with expected_protocol(KeysightInfiniiVision, dialogue) as scope:
        snap = scope.snapshot()
        scope.shutdown()
    json.dumps(snap, allow_nan=False)
    assert snap["identity"].startswith("KEYSIGHT")  # type: ignore[union-attr]
    assert snap["waveform_points"] == 1000
    assert snap["ch1"]["display"] is True  # type: ignore[index]
    assert snap["ch2"]["display"] is False  # type: ignore[index]


def test_record_points_for_picks_the_shortest_allowed_record():
    from instruments.keysight_infiniivision import RAW_RECORD_POINTS, record_points_for

    assert record_points_for(0.3, 40e3) == 20_000  # 12 000 needed
    assert record_points_for(1e-3, 1e6) == 1000  # exactly an allowed length
    assert record_points_for(1e-3, 1.0000000001e6) == 1000  # float rounding does not bump it
    with pytest.raises(ValueError, match="4000000"):
        record_points_for(1.0, 5e6)
    assert tuple(sorted(RAW_RECORD_POINTS)) == RAW_RECORD_POINTS
