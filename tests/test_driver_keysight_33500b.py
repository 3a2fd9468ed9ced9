"""Wire tests of the Keysight 33500B driver: exact bytes both ways, no hardware."""

from __future__ import annotations

import math

import numpy as np
import pytest
from driver_wire import assert_implements, ieee_block
from pymeasure.test import expected_protocol

from instruments.errors import InstrumentReportedError
from instruments.keysight_33500b import Keysight33500B
from instruments.roles import WaveformGenerator

OK = ("SYST:ERR?", '+0,"No error"')


# (attribute, value written, command, query reply, value read back)
CHANNEL_PROPERTIES = [
    ("function", "ARB", "SOUR2:FUNC ARB", "ARB", "ARB"),
    ("function", "sin", "SOUR2:FUNC SIN", "SIN", "SIN"),
    ("frequency", 1.5e-6, "SOUR2:FREQ 1.5e-06", "+1.500000000000000E-06", 1.5e-6),
    ("frequency", 1234.5, "SOUR2:FREQ 1234.5", "+1.234500000000000E+03", 1234.5),
    ("amplitude", 0.001, "SOUR2:VOLT 0.001", "+1.000000000000000E-03", 0.001),
    ("amplitude_unit", "VRMS", "SOUR2:VOLT:UNIT VRMS", "VRMS", "VRMS"),
    ("offset", -0.25, "SOUR2:VOLT:OFFS -0.25", "-2.500000000000000E-01", -0.25),
    ("output_enabled", True, "OUTP2 1", "1", True),
    ("output_enabled", False, "OUTP2 0", "0", False),
    ("load", 50, "OUTP2:LOAD 50", "+5.000000000000000E+01", 50.0),
    ("load", math.inf, "OUTP2:LOAD INF", "9.9E+37", math.inf),
    ("phase", -90, "SOUR2:PHAS -90", "-9.000000000000000E+01", -90.0),
    ("arb_name", "test_1", "SOUR2:FUNC:ARB TEST_1", '"TEST_1"', "TEST_1"),
    ("arb_sample_rate", 250e6, "SOUR2:FUNC:ARB:SRAT 250000000", "+2.5E+08", 250e6),
    ("arb_filter", "STEP", "SOUR2:FUNC:ARB:FILT STEP", "STEP", "STEP"),
    ("burst_enabled", True, "SOUR2:BURS:STAT 1", "1", True),
    ("burst_mode", "GAT", "SOUR2:BURS:MODE GAT", "GAT", "GAT"),
    ("burst_ncycles", 5, "SOUR2:BURS:NCYC 5", "+5.000000000000000E+00", 5),
    ("burst_ncycles", math.inf, "SOUR2:BURS:NCYC INF", "9.9E+37", math.inf),
    ("burst_period", 0.01, "SOUR2:BURS:INT:PER 0.01", "+1.000000000000000E-02", 0.01),
    ("trigger_source", "BUS", "TRIG2:SOUR BUS", "BUS", "BUS"),
    ("trigger_source", "TIM", "TRIG2:SOUR TIM", "TIM", "TIM"),
    ("trigger_timer", 1e-3, "TRIG2:TIM 0.001", "+1.000000000000000E-03", 1e-3),
    ("sync_mode", "MARK", "OUTP2:SYNC:MODE MARK", "MARK", "MARK"),
]


@pytest.mark.parametrize(("name", "value", "command", "reply", "read"), CHANNEL_PROPERTIES)
def test_channel_property_round_trip(name, value, command, reply, read):
    get = command.split(" ")[0] + "?"
    with expected_protocol(Keysight33500B, [(command, None), OK, (get, reply)]) as awg:
        setattr(awg.ch_2, name, value)
        assert getattr(awg.ch_2, name) == read


@pytest.mark.parametrize(
    ("name", "value", "command", "reply", "read"),
    [
        ("byte_order", "SWAP", "FORM:BORD SWAP", "SWAP", "SWAP"),
        ("sync_enabled", False, "OUTP:SYNC 0", "0", False),
        ("sync_source", "CH2", "OUTP:SYNC:SOUR CH2", "CH2", "CH2"),
    ],
)
def test_instrument_property_round_trip(name, value, command, reply, read):
    get = command.split(" ")[0] + "?"
    with expected_protocol(Keysight33500B, [(command, None), OK, (get, reply)]) as awg:
        setattr(awg, name, value)
        assert getattr(awg, name) == read


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("frequency", 31e6),
        ("frequency", 0.0),
        ("amplitude", 1e-4),
        ("offset", 10.5),
        ("phase", 361),
        ("function", "FOO"),
        ("load", 0.5),
        ("burst_ncycles", 0),
        ("burst_ncycles", 2.5),
        ("arb_name", "1bad"),
        ("arb_name", "much_too_long_name"),
        ("trigger_source", "MAN"),
        ("output_enabled", "yes"),
    ],
)
def test_out_of_range_raises_without_writing(name, value):
    with expected_protocol(Keysight33500B, []) as awg, pytest.raises(ValueError):
        setattr(awg.ch_1, name, value)


def test_error_queue_entry_raises_with_code_message_and_command():
    with (
        expected_protocol(
            Keysight33500B,
            [
                ("SOUR1:VOLT:OFFS 4", None),
                ("SYST:ERR?", '-222,"Data out of range"'),
                ("SYST:ERR?", '-221,"Settings conflict"'),
                ("SYST:ERR?", '+0,"No error"'),
            ],
        ) as awg,
        pytest.raises(InstrumentReportedError) as info,
    ):
        awg.ch_1.offset = 4
    assert info.value.code == -222
    assert "Data out of range" in info.value.message
    assert "Settings conflict" in info.value.message
    assert info.value.command == "SOUR1:VOLT:OFFS 4"


def test_check_errors_passes_on_empty_queue():
    with expected_protocol(Keysight33500B, [OK]) as awg:
        awg.check_errors()


def test_load_waveform_uploads_float32_block_and_scales_to_volts():
    volts = np.array([-0.5, 0.0, 0.5, 1.0, 1.5, 1.0, 0.5, 0.0])
    normalised = ((volts - 0.5) / 1.0).astype("<f4").tobytes()
    assert len(normalised) == 32
    block = ieee_block(normalised)
    assert block.startswith(b"#232")
    dialogue = [
        ("SOUR1:DATA:VOL:CLE", None),
        ("FORM:BORD SWAP", None),
        (b"SOUR1:DATA:ARB PULSE," + block + b"\n", None),
        ("SOUR1:FUNC:ARB PULSE", None),
        ("SOUR1:FUNC ARB", None),
        ("SOUR1:FUNC:ARB:SRAT 1000000", None),
        ("SOUR1:VOLT:UNIT VPP", None),
        ("SOUR1:VOLT:OFFS 0", None),
        ("SOUR1:VOLT 2", None),
        ("SOUR1:VOLT:OFFS 0.5", None),
        OK,
    ]
    with expected_protocol(Keysight33500B, dialogue) as awg:
        awg.load_waveform(1, volts, 1e6, name="pulse")


def test_load_waveform_reports_instrument_error():
    volts = np.linspace(0.0, 1.0, 8)
    block = ieee_block(((volts - 0.5) / 0.5).astype("<f4").tobytes())
    dialogue = [
        ("SOUR2:DATA:VOL:CLE", None),
        ("FORM:BORD SWAP", None),
        (b"SOUR2:DATA:ARB LABRIG," + block + b"\n", None),
        ("SOUR2:FUNC:ARB LABRIG", None),
        ("SOUR2:FUNC ARB", None),
        ("SOUR2:FUNC:ARB:SRAT 1000", None),
        ("SOUR2:VOLT:UNIT VPP", None),
        ("SOUR2:VOLT:OFFS 0", None),
        ("SOUR2:VOLT 1", None),
        ("SOUR2:VOLT:OFFS 0.5", None),
        ("SYST:ERR?", '+786,"Arb waveform name already exists"'),
        OK,
    ]
    with (
        expected_protocol(Keysight33500B, dialogue) as awg,
        pytest.raises(InstrumentReportedError) as info,
    ):
        awg.load_waveform(2, volts, 1e3)
    assert info.value.code == 786
    assert "load_waveform" in info.value.command


@pytest.mark.parametrize(
    "volts",
    [np.zeros(7), np.array([0.0] * 7 + [np.nan]), np.zeros((2, 8)), np.full(8, 11.0)],
)
def test_load_waveform_refuses_bad_samples_without_writing(volts):
    with expected_protocol(Keysight33500B, []) as awg, pytest.raises(ValueError):
        awg.load_waveform(1, volts, 1e6)


def test_load_waveform_refuses_bad_channel_rate_and_name():
    volts = np.linspace(0, 1, 16)
    with expected_protocol(Keysight33500B, []) as awg:
        with pytest.raises(ValueError):
            awg.load_waveform(3, volts, 1e6)
        with pytest.raises(ValueError):
            awg.load_waveform(1, volts, 300e6)
        with pytest.raises(ValueError):
            awg.load_waveform(1, volts, 1e6, name="no spaces")


def test_upload_arb_dac_sends_int16_little_endian_block():
    codes = np.array([-32767, -1, 0, 1, 2, 3, 256, 32767], dtype=np.int16)
    block = ieee_block(codes.astype("<i2").tobytes())
    dialogue = [
        ("FORM:BORD SWAP", None),
        (b"SOUR1:DATA:ARB:DAC RAMP," + block + b"\n", None),
        OK,
    ]
    with expected_protocol(Keysight33500B, dialogue) as awg:
        awg.ch_1.upload_arb_dac("ramp", codes)


def test_upload_arb_refuses_samples_beyond_unity():
    with expected_protocol(Keysight33500B, []) as awg, pytest.raises(ValueError):
        awg.ch_1.upload_arb("x", np.full(8, 1.5))


def test_volatile_catalog_and_clear():
    dialogue = [
        ("SOUR1:DATA:VOL:CAT?", '"INT:\\BUILTIN\\EXP_RISE.ARB","LABRIG"'),
        ("SOUR1:DATA:VOL:CLE", None),
        OK,
    ]
    with expected_protocol(Keysight33500B, dialogue) as awg:
        assert awg.ch_1.volatile_catalog() == ["INT:\\BUILTIN\\EXP_RISE.ARB", "LABRIG"]
        awg.ch_1.clear_volatile()


def test_configure_burst_bus_trigger_and_fire():
    dialogue = [
        ("SOUR2:BURS:MODE TRIG", None),
        ("SOUR2:BURS:NCYC 3", None),
        ("TRIG2:SOUR BUS", None),
        ("SOUR2:BURS:STAT 1", None),
        OK,
        ("*TRG", None),
        ("*OPC?", "1"),
    ]
    with expected_protocol(Keysight33500B, dialogue) as awg:
        awg.configure_burst(2, 3, "bus")
        awg.trigger()
        awg.wait_complete()


def test_configure_burst_refuses_zero_cycles_and_unknown_trigger():
    with expected_protocol(Keysight33500B, []) as awg:
        with pytest.raises(ValueError):
            awg.configure_burst(1, 0, "bus")
        with pytest.raises(ValueError):
            awg.configure_burst(1, 1, "timer")  # type: ignore[arg-type]


def test_set_output_safe_state_identity_and_role():
    dialogue = [
        ("OUTP1 1", None),
        OK,
        ("OUTP1 0", None),
        ("OUTP2 0", None),
        OK,
        ("*IDN?", "Agilent Technologies,33522B,MY52201807,3.05-1.19-2.00-52-00"),
    ]
    with expected_protocol(Keysight33500B, dialogue) as awg:
        awg.set_output(1, True)
        awg.safe_state()
        assert awg.identity.startswith("Agilent Technologies,33522B")


def test_implements_waveform_generator_role():
    assert_implements(Keysight33500B, WaveformGenerator)


def test_snapshot_reads_every_setting():
    per_channel = [
        ("FUNC?", "ARB", "function", "ARB"),
        ("FREQ?", "+1.0E+03", "frequency", 1000.0),
        ("VOLT?", "+2.0E+00", "amplitude", 2.0),
        ("VOLT:UNIT?", "VPP", "amplitude_unit", "VPP"),
        ("VOLT:OFFS?", "+5.0E-01", "offset", 0.5),
        ("OUTP?", "1", "output_enabled", True),
        ("OUTP:LOAD?", "9.9E+37", "load", "inf"),
        ("PHAS?", "+0.0E+00", "phase", 0.0),
        ("FUNC:ARB?", '"LABRIG"', "arb_name", "LABRIG"),
        ("FUNC:ARB:SRAT?", "+1.0E+06", "arb_sample_rate", 1e6),
        ("FUNC:ARB:FILT?", "NORM", "arb_filter", "NORM"),
        ("BURS:STAT?", "1", "burst_enabled", True),
        ("BURS:MODE?", "TRIG", "burst_mode", "TRIG"),
        ("BURS:NCYC?", "+1.0E+00", "burst_ncycles", 1),
        ("BURS:INT:PER?", "+1.0E-02", "burst_period", 0.01),
        ("TRIG:SOUR?", "BUS", "trigger_source", "BUS"),
    ]
    dialogue = [
        ("*IDN?", "Keysight Technologies,33522B,MY1,1"),
        ("FORM:BORD?", "SWAP"),
        ("OUTP:SYNC?", "1"),
        ("OUTP:SYNC:SOUR?", "CH1"),
    ]
    for n in (1, 2):
        for query, reply, _, _ in per_channel:
            if query.startswith("OUTP"):
                command = query.replace("OUTP", f"OUTP{n}", 1)
            elif query.startswith("TRIG"):
                command = query.replace("TRIG", f"TRIG{n}", 1)
            else:
                command = f"SOUR{n}:{query}"
            dialogue.append((command, reply))
    with expected_protocol(Keysight33500B, dialogue) as awg:
        snap = awg.snapshot()
    assert snap["byte_order"] == "SWAP"
    for _, _, name, value in per_channel:
        assert snap["ch2"][name] == value  # type: ignore[index]
    import json

    json.dumps(snap, allow_nan=False)


def test_shutdown_switches_outputs_off():
    dialogue = [("OUTP1 0", None), ("OUTP2 0", None), OK]
    with expected_protocol(Keysight33500B, dialogue) as awg:
        awg.shutdown()
    assert awg.isShutdown
