"""Wire tests of the QDAC-II driver, above all its safety checks: a refused value raises
``LimitError`` and writes nothing (the dialogue holds at most the read-only queries)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from driver_wire import assert_implements, ieee_block
from pymeasure.test import expected_protocol

from instruments.errors import ChannelLimits, InstrumentReportedError, LimitError
from instruments.qdevil_qdac2 import QDac2
from instruments.roles import DacBank

OK = ("syst:err:all?", '0, "No error"')
GENERATORS = ("sine", "squ", "tri", "awg")


def state_query(*channels: int) -> str:
    """The one query that asks the QDAC-II what drives ``channels`` besides the DC level."""
    where = f"(@{','.join(map(str, channels))})"
    parts = [f"sour:volt:mode? {where}"]
    parts += [f"sour:{g}:ncl? {where}" for g in GENERATORS]
    parts += [f"sour:{g}:init:cont? {where}" for g in GENERATORS]
    return ";:".join(parts)


def idle(*channels: int) -> tuple[str, str]:
    """That query and the reply 'fixed DC, no generator running or armed'."""
    n = len(channels)
    reply = ";".join([",".join(["FIX"] * n)] + [",".join(["0"] * n)] * 2 * len(GENERATORS))
    return state_query(*channels), reply


ELECTRODE = ChannelLimits(
    min_v=-1.2, max_v=0.6, max_slew_v_per_s=10.0, safe_v=0.0, label="electrode 3", source="test"
)
WIDE = ChannelLimits(min_v=-5.0, max_v=5.0, max_slew_v_per_s=1000.0, safe_v=0.5, source="test")


def qdac(dialogue, limits=None):
    """An expected_protocol context whose driver already holds ``limits`` ({ch: limits})."""

    class Limited(QDac2):
        def __init__(self, adapter, **kwargs):
            super().__init__(adapter, **kwargs)
            for channel, lim in (limits or {}).items():
                self.set_limits(channel, lim)

    return expected_protocol(Limited, dialogue)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# ----------------------------------------------------------------------- plain properties
CONTROLS = [
    ("output_range", "high", "sour5:rang high", "HIGH", "high"),
    ("filter", "med", "sour5:filt med", "med", "med"),
    ("sine_trigger_source", "int3", "sour5:sine:trig:sour int3", "INT3", "int3"),
    ("awg_count", 3, "sour5:awg:coun 3", "3", 3),
    ("awg_trigger_source", "ext2", "sour5:awg:trig:sour ext2", "ext2", "ext2"),
]


@pytest.mark.parametrize(("name", "value", "command", "reply", "read"), CONTROLS)
def test_channel_control_round_trip(name, value, command, reply, read):
    get = command.split(" ")[0] + "?"
    with qdac([(command, None), OK, (get, reply)]) as dac:
        setattr(dac.ch_5, name, value)
        assert getattr(dac.ch_5, name) == read


MEASUREMENTS = [
    ("mode", "sour7:volt:mode?", "LIST", "list"),
    ("sine_continuous", "sour7:sine:init:cont?", "1", True),
    ("last_voltage", "sour7:volt:last?", "0.1234567", 0.1234567),
    ("sine_frequency", "sour7:sine:freq?", "1000", 1000.0),
    ("sine_span", "sour7:sine:span?", "0.2", 0.2),
    ("sine_offset", "sour7:sine:offs?", "0", 0.0),
    ("sine_count", "sour7:sine:coun?", "-1", -1),
    ("awg_trace", "sour7:awg:def?", '"lr7"', "lr7"),
    ("awg_scale", "sour7:awg:scal?", "1", 1.0),
    ("awg_offset", "sour7:awg:offs?", "0", 0.0),
    ("voltage", "sour7:volt?", "-0.25", -0.25),
    ("slew", "sour7:volt:slew?", "10", 10.0),
]


@pytest.mark.parametrize(("name", "query", "reply", "read"), MEASUREMENTS)
def test_channel_readings(name, query, reply, read):
    with qdac([(query, reply)]) as dac:
        assert getattr(dac.ch_7, name) == read


@pytest.mark.parametrize(
    ("name", "value"),
    [("output_range", "mid"), ("filter", "low"), ("awg_count", 0)],
)
def test_bad_settings_raise_without_writing(name, value):
    with qdac([]) as dac, pytest.raises(ValueError):
        setattr(dac.ch_1, name, value)


@pytest.mark.parametrize(
    "name",
    ["sine_frequency", "sine_span", "awg_scale", "awg_offset", "mode", "sine_continuous"],
)
def test_generator_settings_cannot_bypass_limit_checks(name):
    with qdac([]) as dac, pytest.raises(LookupError):
        setattr(dac.ch_1, name, 1.0)
    assert not hasattr(dac.ch_1, "sine_init") and not hasattr(dac.ch_1, "awg_init")


# ----------------------------------------------------------------------- DC and slew
def test_dc_set_on_limited_channel_sets_slew_limit_first():
    dialogue = [idle(3), ("sour3:volt:slew 10", None), ("sour3:volt 0.5", None), OK]
    with qdac(dialogue, {3: ELECTRODE}) as dac:
        dac.ch_3.voltage = 0.5


@pytest.mark.parametrize("value", [0.61, -1.3, math.nan, 11.0])
def test_dc_set_beyond_limits_raises_before_any_byte(value):
    with qdac([], {3: ELECTRODE}) as dac, pytest.raises(LimitError) as info:
        dac.set_voltage(3, value)
    if not math.isnan(value) and abs(value) < 10:
        assert "electrode 3" in str(info.value)
        assert info.value.source == "test"


def test_dc_set_on_unlimited_channel_within_low_range_needs_no_query():
    with qdac([("sour1:volt -1.9", None), OK, ("sour1:volt?", "-1.9")]) as dac:
        dac.ch_1.voltage = -1.9
        assert dac.get_voltage(1) == -1.9


def test_unlimited_channel_is_held_to_its_output_range():
    with qdac([("sour2:rang?", "HIGH"), ("sour2:volt 5", None), OK]) as dac:
        dac.set_voltage(2, 5.0)
    with qdac([("sour2:rang?", "LOW")]) as dac, pytest.raises(LimitError) as info:
        dac.set_voltage(2, 5.0)
    assert info.value.source == "QDAC-II low range"
    with qdac([]) as dac, pytest.raises(LimitError):
        dac.set_voltage(2, -10.5)


def test_slew_checks():
    with qdac([("sour3:volt:slew 5", None), OK], {3: ELECTRODE}) as dac:
        dac.ch_3.slew = 5
    for bad in (10.5, math.inf, 0.0, -1.0):
        with qdac([], {3: ELECTRODE}) as dac, pytest.raises(LimitError):
            dac.ch_3.slew = bad
    with qdac([("sour4:volt:slew inf", None), OK]) as dac:
        dac.set_slew(4, math.inf)
    with qdac([]) as dac, pytest.raises(LimitError):
        dac.set_slew(4, 3e7)


def test_instrument_error_raises_with_all_entries():
    dialogue = [
        ("sour1:volt 0.1", None),
        ("syst:err:all?", '-222, "Data out of range", -113, "Undefined header"'),
    ]
    with qdac(dialogue) as dac, pytest.raises(InstrumentReportedError) as info:
        dac.set_voltage(1, 0.1)
    assert info.value.code == -222
    assert "Data out of range" in info.value.message and "-113" in info.value.message
    assert info.value.command == "sour1:volt 0.1"


# ----------------------------------------------------------------------- ramps
def test_ramp_to_writes_slews_and_levels_then_polls_until_there():
    dialogue = [
        idle(3, 9),
        ("sour9:rang?", "HIGH"),  # 2.5 V is only possible in the high range
        ("sour3:volt:slew 10", None),
        ("sour3:volt -1", None),
        ("sour9:volt:slew 1000", None),
        ("sour9:volt 2.5", None),
        OK,
        ("*OPC?", "1"),
        ("sour3:volt?", "-0.5"),
        ("sour9:volt?", "2.5"),
        ("*OPC?", "1"),
        ("sour3:volt?", "-0.99999"),
    ]
    with qdac(dialogue, {3: ELECTRODE, 9: WIDE}) as dac:
        dac.ramp_to({3: -1.0, 9: 2.5}, timeout_s=5.0)


def test_ramp_slew_is_the_smaller_of_request_and_limit():
    dialogue = [
        idle(3),
        ("sour3:volt:slew 2", None),
        ("sour3:volt 0", None),
        ("sour4:volt:slew 2", None),
        ("sour4:volt 0", None),
        OK,
        ("*OPC?", "1"),
        ("sour3:volt?", "0"),
        ("sour4:volt?", "0"),
    ]
    with qdac(dialogue, {3: ELECTRODE}) as dac:
        dac.ramp_to({3: 0.0, 4: 0.0}, slew_v_per_s=2.0)
    dialogue[1] = ("sour3:volt:slew 10", None)  # the limit wins over a faster request
    dialogue[3] = ("sour4:volt:slew 50", None)
    with qdac(dialogue, {3: ELECTRODE}) as dac:
        dac.ramp_to({3: 0.0, 4: 0.0}, slew_v_per_s=50.0)


def test_ramp_refuses_before_any_byte_if_one_target_is_bad():
    with qdac([], {3: ELECTRODE, 9: WIDE}) as dac, pytest.raises(LimitError):
        dac.ramp_to({9: 1.0, 3: 0.7})


def test_ramp_times_out(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("instruments.common.time", clock)
    dialogue = [idle(3), ("sour3:volt:slew 10", None), ("sour3:volt 0.5", None), OK]
    dialogue += [("*OPC?", "1"), ("sour3:volt?", "0.1")] * 3
    with qdac(dialogue, {3: ELECTRODE}) as dac, pytest.raises(TimeoutError) as info:
        dac.ramp_to({3: 0.5}, timeout_s=0.025)
    assert "[3]" in str(info.value)


# ----------------------------------------------------------------------- sines
def test_start_sines_checks_dc_plus_amplitude_then_arms_and_fires():
    dialogue = [
        idle(3),
        ("sour3:volt?", "0.1"),
        ("sour3:volt:last?", "0.1"),
        ("sour3:sine:abor", None),
        ("sour3:sine:freq 200", None),
        ("sour3:sine:span 0.006", None),
        ("sour3:sine:offs 0", None),
        ("sour3:sine:slew 10", None),
        ("sour3:sine:coun -1", None),
        ("sour3:sine:trig:sour bus", None),
        ("sour3:sine:init", None),
        ("sour5:sine:abor", None),
        ("sour5:sine:freq 360", None),
        ("sour5:sine:span 0.02", None),
        ("sour5:sine:offs 0", None),
        ("sour5:sine:coun -1", None),
        ("sour5:sine:trig:sour bus", None),
        ("sour5:sine:init", None),
        OK,
        ("*trg", None),
    ]
    with qdac(dialogue, {3: ELECTRODE}) as dac:
        dac.start_sines({3: (200.0, 0.003), 5: (360.0, 0.01)}, trigger="immediate")


def _armed_sine(dac, amplitude_v: float) -> None:
    """Arm a 1 Hz sine of ``amplitude_v`` on channel 3 without any I/O (as if checked)."""
    dac._armed[3] = {"sine": (-amplitude_v, amplitude_v)}


def test_a_dc_move_counts_what_a_running_sine_adds():
    # 0.3 V of sine on electrode 3 (max 0.6 V): DC 0.5 V would reach 0.8 V. Refused, no bytes.
    with qdac([idle(3), idle(3)], {3: ELECTRODE}) as dac:
        _armed_sine(dac, 0.3)
        with pytest.raises(LimitError, match="armed sine"):
            dac.set_voltage(3, 0.5)
        with pytest.raises(LimitError, match="armed sine"):
            dac.ramp_to({3: -1.0})  # -1.0 - 0.3 < -1.2
    # within the limits with the sine on top: written as usual
    dialogue = [idle(3), ("sour3:volt:slew 10", None), ("sour3:volt 0.2", None), OK]
    with qdac(dialogue, {3: ELECTRODE}) as dac:
        _armed_sine(dac, 0.3)
        dac.set_voltage(3, 0.2)


def test_a_trace_counts_a_sine_already_armed_on_its_channel():
    # DC 0.1 V + sine 0.3 V + trace up to 0.25 V = 0.65 V > 0.6 V: refused after reading DC.
    dialogue = [idle(3), ("sour3:volt?", "0.1"), ("sour3:volt:last?", "0.1")]
    with qdac(dialogue, {3: ELECTRODE}) as dac:
        _armed_sine(dac, 0.3)
        with pytest.raises(LimitError, match="trace"):
            dac.play_traces({3: np.full(3, 0.25)}, 1e6)


def test_stopping_the_generators_frees_the_dc_range_again():
    dialogue = [("abor", None), OK, idle(3), ("sour3:volt:slew 10", None)]
    dialogue += [("sour3:volt 0.5", None), OK]
    with qdac(dialogue, {3: ELECTRODE}) as dac:
        _armed_sine(dac, 0.3)
        dac.stop_generators()
        dac.set_voltage(3, 0.5)


def test_sine_beyond_limits_with_dc_level_writes_nothing():
    # 0.58 V + 0.03 V > 0.6 V: only the two read-only queries happen.
    dialogue = [idle(3), ("sour3:volt?", "0.58"), ("sour3:volt:last?", "0.58")]
    with qdac(dialogue, {3: ELECTRODE}) as dac, pytest.raises(LimitError):
        dac.start_sines({3: (10.0, 0.03)})


def test_sine_ramping_dc_target_counts_too():
    dialogue = [idle(3), ("sour3:volt?", "0.0"), ("sour3:volt:last?", "0.59")]
    with qdac(dialogue, {3: ELECTRODE}) as dac, pytest.raises(LimitError):
        dac.start_sines({3: (10.0, 0.03)})


@pytest.mark.parametrize(
    "sine",
    [
        (1000.0, 0.01),  # slope 2*pi*1000*0.01 = 62.8 V/s > 10 V/s
        (1.0, 1.0),  # 2 V span cannot fit a 1.8 V window
        (0.0, 0.01),  # no frequency
        (6e5, 0.001),  # beyond what 1 MS/s can play
    ],
)
def test_sine_refusals_need_no_bytes(sine):
    with qdac([], {3: ELECTRODE}) as dac, pytest.raises((LimitError, ValueError)):
        dac.start_sines({3: sine})


def test_configure_sine_with_offset_and_count():
    dialogue = [
        idle(3),
        ("sour3:volt?", "0"),
        ("sour3:volt:last?", "0"),
        ("sour3:sine:abor", None),
        ("sour3:sine:freq 50", None),
        ("sour3:sine:span 0.02", None),
        ("sour3:sine:offs 0.1", None),
        ("sour3:sine:slew 10", None),
        ("sour3:sine:coun 5", None),
        ("sour3:sine:trig:sour int2", None),
        OK,
        ("sour3:sine:abor", None),
        OK,
    ]
    with qdac(dialogue, {3: ELECTRODE}) as dac:
        dac.configure_sine(3, 50.0, 0.01, offset_v=0.1, count=5, trigger="int2")
        assert dac._armed_excursion(3) == pytest.approx((0.09, 0.11))
        dac.ch_3.sine_abort()
        assert dac._armed_excursion(3) == (0.0, 0.0)


# ----------------------------------------------------------------------- traces
def test_play_traces_upsamples_defines_binds_marks_and_arms():
    trace3 = np.array([0.0, 1e-5, 2e-5])
    trace4 = np.array([0.5, 0.5, -0.5])
    fine = np.arange(12) / 4  # 1 us points in units of the 250 kHz samples
    up3 = np.interp(fine, np.arange(3), trace3).astype("<f4").tobytes()
    up4 = np.interp(fine, np.arange(3), trace4).astype("<f4").tobytes()
    dialogue = [
        idle(3),
        ("sour3:volt?", "0"),
        ("sour3:volt:last?", "0"),
        ("sour3:awg:abor", None),
        ("sour4:awg:abor", None),
        ("trac:rem:all", None),
        ('trac:def "lr3",12', None),
        (b'trac:data "lr3",' + ieee_block(up3) + b"\n", None),
        ('sour3:awg:def "lr3"', None),
        ("sour3:awg:scal 1", None),
        ("sour3:awg:offs 0", None),
        ("sour3:awg:slew 10", None),
        ("sour3:awg:coun 1", None),
        ("sour3:awg:trig:sour bus", None),
        ('trac:def "lr4",12', None),
        (b'trac:data "lr4",' + ieee_block(up4) + b"\n", None),
        ('sour4:awg:def "lr4"', None),
        ("sour4:awg:scal 1", None),
        ("sour4:awg:offs 0", None),
        ("sour4:awg:coun 1", None),
        ("sour4:awg:trig:sour bus", None),
        ("sour3:awg:mark:star 1", None),
        ("outp:trig2:sour int1", None),
        ("sour3:awg:init", None),
        ("sour4:awg:init", None),
        OK,
        ("*trg", None),
    ]
    with qdac(dialogue, {3: ELECTRODE}) as dac:
        duration = dac.play_traces({3: trace3, 4: trace4}, 250e3, "bus", marker_output=2)
        dac.trigger()
    assert duration == pytest.approx(12e-6)


def test_play_traces_again_only_rearms_the_uploaded_traces():
    # The same traces a second time are still in the instrument: no upload, only re-arm (the
    # limits are still checked against the present DC level: the two level queries).
    trace = np.array([0.0, 1e-6, 2e-6])
    first = [
        idle(3),
        ("sour3:volt?", "0"),
        ("sour3:volt:last?", "0"),
        ("sour3:awg:abor", None),
        ("trac:rem:all", None),
        ('trac:def "lr3",3', None),
        (b'trac:data "lr3",' + ieee_block(trace.astype("<f4").tobytes()) + b"\n", None),
        ('sour3:awg:def "lr3"', None),
        ("sour3:awg:scal 1", None),
        ("sour3:awg:offs 0", None),
        ("sour3:awg:slew 10", None),
        ("sour3:awg:coun 1", None),
        ("sour3:awg:trig:sour bus", None),
        ("sour3:awg:init", None),
        OK,
    ]
    again = [idle(3), ("sour3:volt?", "0.1"), ("sour3:volt:last?", "0.1")]
    again += [("sour3:awg:init", None), OK]
    with qdac(first + again, {3: ELECTRODE}) as dac:
        dac.play_traces({3: trace}, 1e6, "bus", marker_output=None)
        dac.play_traces({3: trace}, 1e6, "bus", marker_output=None)


def test_play_traces_without_marker_external_trigger():
    trace = np.array([0.1, 0.1])
    dialogue = [
        ("sour1:awg:abor", None),
        ("trac:rem:all", None),
        ('trac:def "lr1",2', None),
        (b'trac:data "lr1",' + ieee_block(trace.astype("<f4").tobytes()) + b"\n", None),
        ('sour1:awg:def "lr1"', None),
        ("sour1:awg:scal 1", None),
        ("sour1:awg:offs 0", None),
        ("sour1:awg:coun 1", None),
        ("sour1:awg:trig:sour ext1", None),
        ("sour1:awg:init", None),
        OK,
    ]
    with qdac(dialogue) as dac:
        assert dac.play_traces({1: trace}, 1e6, "external", marker_output=None) == 2e-6


def test_trace_step_faster_than_slew_limit_is_refused_without_bytes():
    # 10 V/s allows 10 uV per 1 us point; this trace steps 20 uV.
    trace = np.array([0.0, 1e-5, 3e-5])
    with qdac([], {3: ELECTRODE}) as dac, pytest.raises(LimitError):
        dac.play_traces({3: trace}, 1e6)


def test_upsampling_interpolates_so_the_real_slope_is_checked():
    # 30 uV over one 500 kHz sample (2 us) is 15 V/s after interpolation: refused at 10 V/s.
    with qdac([], {3: ELECTRODE}) as dac, pytest.raises(LimitError, match="15"):
        dac.play_traces({3: np.array([0.0, 3e-5])}, 500e3)


def test_trace_sample_beyond_limits_with_dc_writes_nothing():
    dialogue = [idle(3), ("sour3:volt?", "-1.19999"), ("sour3:volt:last?", "-1.19999")]
    trace = np.array([0.0, -5e-6, -1e-5, -1.5e-5])
    with qdac(dialogue, {3: ELECTRODE}) as dac, pytest.raises(LimitError):
        dac.play_traces({3: trace}, 1e6)


@pytest.mark.parametrize(
    ("traces", "rate"),
    [
        ({1: np.zeros(4)}, 300e3),  # 1e6/300e3 is not an integer
        ({1: np.zeros(4)}, 2e6),  # faster than the QDAC plays
        ({1: np.zeros(4), 2: np.zeros(5)}, 1e6),  # unequal lengths
        ({1: np.array([0.0, np.inf])}, 1e6),
        ({25: np.zeros(4)}, 1e6),
        ({}, 1e6),
        ({1: np.full(3, 10.5)}, 1e6),  # beyond the hardware range
    ],
)
def test_trace_refusals_need_no_bytes(traces, rate):
    with qdac([]) as dac, pytest.raises((LimitError, ValueError)):
        dac.play_traces(traces, rate)


# ----------------------------------------------------------------------- generators, triggers
def test_stop_generators_triggers_and_routing():
    dialogue = [
        ("abor", None),
        OK,
        ("sour2:sine:abor", None),
        ("sour2:awg:abor", None),
        ("sour7:sine:abor", None),
        ("sour7:awg:abor", None),
        OK,
        ("*trg", None),
        ("tint 3", None),
        OK,
        ("outp:trig4:sour int1", None),
        OK,
        ("sour2:awg:abor", None),
        OK,
    ]
    with qdac(dialogue) as dac:
        dac.stop_generators()
        dac.stop_generators([2, 7])
        dac.trigger()
        dac.fire_internal_trigger(3)
        dac.route_trigger_output(4, "int1")
        dac.ch_2.awg_abort()
    with qdac([]) as dac:
        with pytest.raises(ValueError):
            dac.fire_internal_trigger(15)
        with pytest.raises(ValueError):
            dac.route_trigger_output(6, "int1")
        with pytest.raises(ValueError):
            dac.stop_generators([1, 30])


# ----------------------------------------------------------------------- limits, safety
def test_set_limits_validation():
    with qdac([]) as dac:
        with pytest.raises(ValueError):
            dac.set_limits(1, ChannelLimits(-11.0, 0.0, 1.0))
        with pytest.raises(ValueError):
            dac.set_limits(1, ChannelLimits(-1.0, 1.0, 0.001))
        with pytest.raises(LimitError):
            dac.set_limits(1, ChannelLimits(-1.0, 1.0, 1.0, safe_v=2.0))
        with pytest.raises(TypeError):
            dac.set_limits(1, (-1.0, 1.0))
        with pytest.raises(ValueError):
            dac.set_limits(0, ELECTRODE)
        dac.set_limits(3, ELECTRODE)
        assert dac.limits(3) is ELECTRODE
        dac.set_limits(3, None)
        assert dac.limits(3) is None
        assert dac.channel_count == 24


DISARM = [
    *((f"sour:{g}:init:cont off,(@1:24)", None) for g in (*GENERATORS, "dc")),
    ("abor", None),
    ("sour:volt:mode fix,(@1:24)", None),
]


def test_safe_state_aborts_and_ramps_limited_channels_to_safe_level():
    dialogue = [
        *DISARM,
        idle(3, 9),
        ("sour3:volt:slew 10", None),
        ("sour3:volt 0", None),
        ("sour9:volt:slew 1000", None),
        ("sour9:volt 0.5", None),
        OK,
        ("*OPC?", "1"),
        ("sour3:volt?", "0"),
        ("sour9:volt?", "0.5"),
    ]
    with qdac(dialogue, {3: ELECTRODE, 9: WIDE}) as dac:
        dac.safe_state()


def test_shutdown_without_limits_aborts_and_closes():
    with qdac([*DISARM, OK]) as dac:
        dac.shutdown()
    assert dac.isShutdown


def test_reset_ramps_limited_channels_to_zero_first():
    dialogue = [
        ("abor", None),
        OK,
        idle(3),
        ("sour3:volt:slew 10", None),
        ("sour3:volt 0", None),
        OK,
        ("*OPC?", "1"),
        ("sour3:volt?", "0"),
        ("*RST", None),
        ("*OPC?", "1"),
    ]
    with qdac(dialogue, {3: ELECTRODE}) as dac:
        dac.reset()
    positive = ChannelLimits(min_v=0.1, max_v=0.5, max_slew_v_per_s=1.0, safe_v=0.2)
    with qdac([], {3: positive}) as dac, pytest.raises(LimitError):
        dac.reset()  # *RST would put 0 V on a channel that must stay within 0.1..0.5 V


def test_reset_waits_for_opc_and_identity():
    dialogue = [("*RST", None), ("*OPC?", "1"), ("*IDN?", "QDevil, QDAC-II, 3, 10-1.4")]
    with qdac(dialogue) as dac:
        dac.reset()
        assert dac.identity == "QDevil, QDAC-II, 3, 10-1.4"


def test_snapshot_has_every_channel_and_limits():
    dialogue = [("*IDN?", "QDevil, QDAC-II, 3, 10-1.4")]
    for n in range(1, 25):
        dialogue += [
            (f"sour{n}:volt?", "0"),
            (f"sour{n}:volt:slew?", "inf" if n != 3 else "10"),
            (f"sour{n}:rang?", "low"),
            (f"sour{n}:filt?", "high"),
        ]
    with qdac(dialogue, {3: ELECTRODE}) as dac:
        snap = dac.snapshot()
    json.dumps(snap, allow_nan=False)
    assert snap["ch1"]["slew"] == "inf"  # type: ignore[index]
    assert snap["ch3"]["limits"]["max_v"] == 0.6  # type: ignore[index]
    assert snap["ch24"]["limits"] is None  # type: ignore[index]


def test_implements_dac_bank_role():
    assert_implements(QDac2, DacBank)
