"""The QDAC-II emulator: commands, ramps in bench time, generators, traces, voltage log."""

from __future__ import annotations

import math

import numpy as np
import pytest
from emulator_wire import ask

from labrig.sim.bench import Bench
from labrig.sim.qdevil_qdac2 import FILTER_CUTOFF_HZ, FilteredRamp, QDac2Emulator
from labrig.sim.scpi import format_block


class TriggerProbe:
    """A bench part that records trigger edges arriving at its input ``ext``."""

    def __init__(self, name: str = "scope") -> None:
        self.name = name
        self.edges: list[tuple[str, float]] = []

    def output(self, port: str, t: np.ndarray) -> np.ndarray:
        return np.zeros_like(t)

    def on_trigger(self, port: str, t: float) -> None:
        self.edges.append((port, t))


@pytest.fixture
def bench() -> Bench:
    return Bench(watch_voltages=[f"dac.ch{n}" for n in range(1, 25)])


@pytest.fixture
def dac(bench: Bench) -> QDac2Emulator:
    return QDac2Emulator("dac", bench)


def errors(dac: QDac2Emulator) -> str:
    return ask(dac, "syst:err:all?")


def test_identity_and_error_formats(dac: QDac2Emulator) -> None:
    assert ask(dac, "*IDN?") == "QDevil, QDAC-II, 101, 13-1.57"
    assert errors(dac) == '0, "No error"'
    assert ask(dac, "sour1:bogus 1") == ""  # a write never replies
    assert ask(dac, "sour1:bogus?") == ""  # an unknown query sends nothing
    assert ask(dac, "syst:err:coun?") == "2"
    assert ask(dac, "syst:err?") == '-113, "Undefined header"'
    assert errors(dac) == '-113, "Undefined header"'
    assert errors(dac) == '0, "No error"'


def test_ranges_refuse_out_of_range_levels(dac: QDac2Emulator) -> None:
    assert ask(dac, "sour3:rang?") == "low"
    ask(dac, "sour3:volt 2.5")
    assert errors(dac) == '-222, "Data out of range"'
    assert ask(dac, "sour3:volt?") == "0.0"  # never clipped: the old value stays
    ask(dac, "sour3:rang high")
    ask(dac, "sour3:volt 9.5")
    assert errors(dac) == '0, "No error"'
    assert float(ask(dac, "sour3:volt?")) == 9.5
    ask(dac, "sour3:volt 11")
    assert errors(dac) == '-222, "Data out of range"'
    assert float(ask(dac, "sour3:volt:last?")) == 9.5
    ask(dac, "sour3:rang low")  # 9.5 V does not fit +/-2 V
    assert errors(dac) == '-221, "Settings conflict"'
    assert ask(dac, "sour3:rang?") == "high"


def test_channel_lists_set_and_query_in_list_order(dac: QDac2Emulator) -> None:
    ask(dac, "sour:volt 0.2,(@2:5)")
    ask(dac, "sour1:volt 0.1")
    assert ask(dac, "sour:volt? (@2,1)") == "0.2,0.1"
    assert ask(dac, "sour:volt:last? (@1:6)") == "0.1,0.2,0.2,0.2,0.2,0.0"
    replies = ask(dac, "sour:volt:last? (@1:24)").split(",")
    assert len(replies) == 24
    ask(dac, "SOURce:VOLTage:MODE FIXed,(@7:8)")
    assert ask(dac, "sour7:volt:mode?;:sour8:volt:mode?") == "fix;fix"
    ask(dac, "sour:volt 3,(@1:2)")  # one channel out of range: none is changed
    assert errors(dac).startswith("-222")
    assert ask(dac, "sour:volt:last? (@1,2)") == "0.1,0.2"


def test_ramp_takes_slew_limited_bench_time(dac: QDac2Emulator, bench: Bench) -> None:
    ask(dac, "sour1:volt:slew 100")
    ask(dac, "sour1:volt 0.5")  # 5 ms at 100 V/s
    assert bench.clock.now == 0.0
    bench.clock.advance(0.002)
    assert float(ask(dac, "sour1:volt?")) == pytest.approx(0.2)  # the value passed so far
    assert float(ask(dac, "sour1:volt:last?")) == 0.5
    assert ask(dac, "*OPC?") == "1"
    assert bench.clock.now == pytest.approx(0.005)
    assert float(ask(dac, "sour1:volt?")) == 0.5
    # The output trajectory really is the ramp, seen through the 300 kHz output filter.
    t = np.linspace(0.0, 0.005, 11)
    v = dac.output("ch1", t)
    tau = 1 / (2 * math.pi * FILTER_CUTOFF_HZ["high"])
    np.testing.assert_allclose(v[1:-1], 100 * t[1:-1] - 100 * tau, atol=1e-6)


def test_voltage_log_catches_a_ramps_extremes(dac: QDac2Emulator, bench: Bench) -> None:
    ask(dac, "sour1:volt:slew 10")
    ask(dac, "sour1:volt 1.5")
    bench.clock.advance(0.01)  # interrupted at 0.1 V: the log still holds the commanded 1.5 V
    ask(dac, "sour1:volt -0.4")
    ask(dac, "*OPC?")
    low, high = bench.voltage_extremes["dac.ch1"]
    assert high == pytest.approx(1.5)
    assert low == pytest.approx(-0.4)
    # A sine on top adds its amplitude to the bound.
    ask(dac, "sour2:volt 0.5")
    ask(dac, "sour2:sine:span 0.4")
    ask(dac, "sour2:sine:init")
    assert bench.voltage_extremes["dac.ch2"][1] == pytest.approx(0.7, abs=1e-4)


def test_dc_filter_is_a_first_order_low_pass(dac: QDac2Emulator) -> None:
    ask(dac, "sour1:filt dc")
    ask(dac, "sour1:volt 1")
    tau = 1 / (2 * math.pi * FILTER_CUTOFF_HZ["dc"])
    v = dac.output("ch1", np.array([tau, 5 * tau]))
    np.testing.assert_allclose(v, [1 - math.exp(-1), 1 - math.exp(-5)], rtol=1e-9)


def test_filtered_ramp_matches_a_fine_numerical_solution() -> None:
    tau = 1e-3
    path = FilteredRamp(0.0, tau)
    end = path.move_to(0.0, 1.0, 200.0, tau)  # 5 ms ramp
    path.move_to(end + 2e-3, -0.5, math.inf, tau)
    t = np.linspace(0, 0.012, 120_001)
    u = path.evaluate(t, filtered=False)
    y = np.empty_like(u)
    y[0] = 0.0
    dt = t[1] - t[0]
    for k in range(1, t.size):  # explicit Euler on a fine grid
        y[k] = y[k - 1] + dt / tau * (u[k - 1] - y[k - 1])
    np.testing.assert_allclose(path.evaluate(t), y, atol=2e-4)


def test_sine_restarts_at_phase_zero_on_each_trigger(dac: QDac2Emulator, bench: Bench) -> None:
    for cmd in (
        "sour1:sine:freq 1000",
        "sour1:sine:span 0.2",
        "sour1:sine:trig:sour bus",
        "sour1:sine:init:cont on",
    ):
        ask(dac, cmd)
    bench.clock.advance(1.23e-3)
    ask(dac, "*TRG")
    t1 = bench.clock.now
    bench.clock.advance(0.7e-3)
    ask(dac, "*TRG")
    t2 = bench.clock.now
    # The 300 kHz output filter's steady-state gain and lag on a 1 kHz sine.
    ratio = 1000 / FILTER_CUTOFF_HZ["high"]
    gain, lag = 1 / math.sqrt(1 + ratio**2), math.atan(ratio)
    for start in (t1, t2):
        t = start + np.arange(5) * 125e-6  # within 0.5 ms: before the next trigger
        want = 0.1 * gain * np.sin(2 * np.pi * 1000 * (t - start) - lag)
        np.testing.assert_allclose(dac.output("ch1", t), want, atol=1e-9)
    assert dac.output("ch1", np.array([t1 - 1e-4]))[0] == 0.0  # nothing before the first start


def test_finite_sine_count_and_ncl(dac: QDac2Emulator, bench: Bench) -> None:
    ask(dac, "sour5:sine:freq 100;:sour5:sine:coun 3")
    ask(dac, "sour5:sine:init")
    assert ask(dac, "sour5:sine:ncl?") == "3"
    bench.clock.advance(0.015)
    assert ask(dac, "sour5:sine:ncl?") == "2"
    t = np.array([0.0299, 0.0301])
    v = dac.output("ch5", t)
    assert v[0] != 0.0 and v[1] == 0.0  # three periods, then the sine ends
    ask(dac, "sour5:sine:coun inf")
    assert ask(dac, "sour5:sine:coun?") == "-1"


def test_traces_on_two_channels_start_in_sync_and_fire_the_marker(
    dac: QDac2Emulator, bench: Bench
) -> None:
    probe = TriggerProbe()
    bench.add(probe)
    bench.connect("scope.ext", "dac.trig1")
    n = 1000
    ramp = np.linspace(-1.0, 1.0, n).astype("<f4")
    ask(dac, f'trac:def "up",{n}')
    dac.feed(b'trac:data "up",' + format_block(ramp.tobytes()) + b"\n")
    ask(dac, 'trac:def "steps",4')
    ask(dac, 'trac:data "steps",0.1,0.2,0.3,0.4')
    assert errors(dac) == '0, "No error"'
    assert ask(dac, "trac:cat?") == "up,steps"
    for ch, name, scale in ((2, "up", 0.5), (3, "up", -1.0)):
        ask(dac, f'sour{ch}:awg:def "{name}"')
        ask(dac, f"sour{ch}:awg:scal {scale}")
        ask(dac, f"sour{ch}:awg:trig:sour bus")
        ask(dac, f"sour{ch}:awg:init")
    assert ask(dac, "sour2:awg:def?") == '"up"'
    ask(dac, "sour2:awg:mark:star 4")
    ask(dac, "outp:trig1:sour int4")
    bench.clock.advance(0.01)
    ask(dac, "*TRG")
    start = bench.clock.now
    assert probe.edges == [("ext", pytest.approx(start))]
    t = start + (np.arange(n) + 0.5) * 1e-6
    v2, v3 = dac.output("ch2", t), dac.output("ch3", t)
    # Same samples at the same times (the 300 kHz filter smooths both alike).
    np.testing.assert_allclose(v2, -0.5 * v3, atol=1e-12)
    np.testing.assert_allclose(v2[10:], 0.5 * ramp[10:], atol=2e-3)
    assert dac.output("ch2", np.array([start + n * 1e-6 + 1e-7]))[0] == 0.0  # played once
    assert bench.voltage_extremes["dac.ch3"][0] == pytest.approx(-1.0, abs=1e-3)


def test_trace_length_must_match_definition(dac: QDac2Emulator) -> None:
    ask(dac, "trac:def seq,3")  # bare names work too (our driver sends them unquoted)
    ask(dac, "trac:data seq,1,2")
    assert errors(dac).startswith("-109")
    dac.feed(b"trac:data seq," + format_block(np.zeros(5, "<f4").tobytes()) + b"\n")
    assert errors(dac).startswith("-223")
    ask(dac, "trac:rem:all")
    assert ask(dac, "trac:cat?") == ""


def test_internal_trigger_starts_generators_and_outputs(dac: QDac2Emulator, bench: Bench) -> None:
    probe = TriggerProbe()
    bench.add(probe)
    bench.connect("scope.ext", "dac.trig2")
    ask(dac, "outp:trig2:sour int7")
    ask(dac, "outp:trig2:del 1e-3")
    ask(dac, "sour9:sine:trig:sour int7")
    ask(dac, "sour9:sine:init")
    bench.clock.advance(0.5)
    ask(dac, "tint 7")
    assert probe.edges == [("ext", pytest.approx(0.501))]
    assert ask(dac, "sour9:sine:ncl?") == "-1"


def test_end_marker_fires_when_time_has_passed(dac: QDac2Emulator, bench: Bench) -> None:
    probe = TriggerProbe()
    bench.add(probe)
    bench.connect("scope.ext", "dac.trig1")
    ask(dac, "outp:trig1:sour int2")
    ask(dac, "sour1:sine:freq 1000;:sour1:sine:coun 2;:sour1:sine:mark:end 2")
    ask(dac, "sour1:sine:init")
    assert probe.edges == []
    bench.clock.advance(0.01)
    ask(dac, "*OPC?")
    assert probe.edges == [("ext", pytest.approx(0.002))]


def test_reset_steps_to_zero_and_restores_defaults(dac: QDac2Emulator, bench: Bench) -> None:
    ask(dac, "sour4:rang high;:sour4:volt 5;:sour4:filt med;:sour4:volt:slew 10")
    ask(dac, "*RST")
    assert ask(dac, "sour4:volt?;:sour4:rang?;:sour4:filt?;:sour4:volt:slew?") == "0.0;low;high;inf"
    assert bench.voltage_extremes["dac.ch4"] == (0.0, 5.0)


def test_square_triangle_and_triggered_dc_level(dac: QDac2Emulator, bench: Bench) -> None:
    ask(dac, "sour1:squ:typ pos;:sour1:squ:freq 1000;:sour1:squ:span 1;:sour1:squ:init")
    np.testing.assert_allclose(dac.output("ch1", np.array([1e-4, 6e-4])), [1.0, 0.0])
    ask(dac, "sour2:tri:freq 1000;:sour2:tri:span 1;:sour2:tri:init")
    np.testing.assert_allclose(dac.output("ch2", np.array([2.5e-4, 5e-4, 7.5e-4])), [0.5, 0, -0.5])
    ask(dac, "sour3:volt:trig 0.3")
    ask(dac, "sour3:dc:trig:sour bus")
    ask(dac, "sour3:dc:init")
    assert ask(dac, "sour3:volt?") == "0.0"  # armed, waiting for the bus trigger
    ask(dac, "*TRG")
    assert ask(dac, "sour3:volt?") == "0.3"
    assert errors(dac) == '0, "No error"'


def test_a_rearmed_trace_plays_exactly_as_the_first_time(dac: QDac2Emulator, bench: Bench) -> None:
    # The second start of an unchanged trace reuses its filtered samples: same output, shifted
    # to the new start time; a new upload under the same name plays the new data.
    data = np.linspace(-0.2, 0.3, 200).astype("<f4")
    dac.feed(
        b'trac:def "t",200\ntrac:data "t",' + format_block(data.tobytes()) + b"\n"
        b'sour2:awg:def "t";:sour2:awg:trig:sour bus;:sour2:awg:init\n*trg\n'
    )
    t0 = bench.clock.now
    first = dac.output("ch2", t0 + np.arange(200) * 1e-6 + 0.5e-6)
    bench.clock.advance(0.01)
    dac.feed(b"sour2:awg:init\n*trg\n")
    t1 = bench.clock.now
    again = dac.output("ch2", t1 + np.arange(200) * 1e-6 + 0.5e-6)
    assert np.array_equal(first, again)
    assert errors(dac) == '0, "No error"'
    dac.feed(
        b'trac:rem:all\ntrac:def "t",200\ntrac:data "t",'
        + format_block((-data).tobytes())
        + b'\nsour2:awg:def "t";:sour2:awg:init\n*trg\n'
    )
    t2 = bench.clock.now
    flipped = dac.output("ch2", t2 + np.arange(200) * 1e-6 + 0.5e-6)
    assert np.allclose(flipped, -first, atol=1e-6)
