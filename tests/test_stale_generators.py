"""A generator this driver did not start (another process's, one left by a SIGKILLed run) is
counted by every limit check: the driver asks the instrument, it never assumes none.

Wire tests show the question and the refusals; bench tests show, from the bench's own voltage
log, that no electrode went past its limit (issue 13, item 2: a stale 0.1 V sine took channel 3
to 0.50 V against a 0.4 V limit).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pymeasure.test import expected_protocol
from served_bench import ServedBench, served_station

from instruments.errors import ChannelLimits, GeneratorStateError, LimitError
from instruments.qdevil_qdac2 import QDac2
from labrig.rig import open_rig
from labrig.station import load_station

ELECTRODE = ChannelLimits(
    min_v=-1.2, max_v=0.6, max_slew_v_per_s=10.0, safe_v=0.0, label="electrode 3", source="test"
)
GENERATORS = ("sine", "squ", "tri", "awg")
STATE_3 = ";:".join(
    ["sour:volt:mode? (@3)"]
    + [f"sour:{g}:ncl? (@3)" for g in GENERATORS]
    + [f"sour:{g}:init:cont? (@3)" for g in GENERATORS]
)


def limited(dialogue):
    class Limited(QDac2):
        def __init__(self, adapter, **kwargs):
            super().__init__(adapter, **kwargs)
            self.set_limits(3, ELECTRODE)

    return expected_protocol(Limited, dialogue)


# ----------------------------------------------------------------------- on the wire
def test_a_foreign_sine_is_read_from_the_instrument_and_refuses_the_dc_move() -> None:
    # The instrument says: a sine plays forever on channel 3, 0.2 V span around 0.
    dialogue = [
        (STATE_3, "FIX;-1;0;0;0;0;0;0;0"),
        ("sour3:sine:span?;:sour3:sine:offs?", "0.2;0"),
    ]
    with limited(dialogue) as dac, pytest.raises(LimitError, match=r"armed sine") as info:
        dac.set_voltage(3, 0.55)  # 0.55 + 0.1 > 0.6; nothing written
    assert info.value.value == pytest.approx(0.65)


def test_a_continuously_armed_square_counts_at_offset_plus_span() -> None:
    # Not playing (no cycles left) but re-armed on every trigger: it counts. A square's
    # excursion is bounded by offset +/- span whatever its type.
    dialogue = [
        (STATE_3, "FIX;0;0;0;0;0;1;0;0"),
        ("sour3:squ:span?;:sour3:squ:offs?", "0.1;0.05"),
    ]
    with limited(dialogue) as dac, pytest.raises(LimitError):
        dac.set_voltage(3, 0.5)  # 0.5 + 0.05 + 0.1 > 0.6


def test_a_foreign_trace_is_bounded_from_its_samples() -> None:
    dialogue = [
        (STATE_3, "FIX;0;0;0;1;0;0;0;0"),
        ("sour3:awg:def?;:sour3:awg:scal?;:sour3:awg:offs?", '"stale";2;0.01'),
        ('trac:data? "stale"', "0,0.05,-0.02"),
    ]
    with limited(dialogue) as dac, pytest.raises(LimitError) as info:
        dac.set_voltage(3, 0.5)  # 0.5 + 2*0.05 + 0.01 = 0.61 > 0.6
    assert info.value.value == pytest.approx(0.61)


def test_a_foreign_sweep_cannot_be_bounded_and_is_refused() -> None:
    dialogue = [(STATE_3, "SWE;0;0;0;0;0;0;0;0")]
    with limited(dialogue) as dac, pytest.raises(GeneratorStateError, match="'swe' mode"):
        dac.set_voltage(3, 0.1)


def test_our_own_sine_is_not_asked_about_twice() -> None:
    # The sine this driver armed is known exactly; only the state query is made.
    dialogue = [(STATE_3, "FIX;-1;0;0;0;0;0;0;0")]
    with limited(dialogue) as dac:
        dac._armed[3] = {"sine": (-0.3, 0.3)}
        with pytest.raises(LimitError):
            dac.set_voltage(3, 0.4)


# ----------------------------------------------------------------------- on a served bench
@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBench]:
    with served_station("sim-dnpu", tmp_path_factory.mktemp("stale")) as served:
        yield served


@pytest.fixture
def stale_sine(bench: ServedBench) -> Iterator[QDac2]:
    """A 10 Hz, 0.1 V sine on channel 3 started by 'a process that was then killed': a second
    driver without limits, on its own connection."""
    other = QDac2(bench.server.resources()["dac"], name="killed process", visa_library="@py")
    other.safe_state()
    bench.reset_evidence()
    other.start_sines({3: (10.0, 0.1)}, trigger="immediate")
    yield other
    other.safe_state()
    other.adapter.close()


def limited_dac(bench: ServedBench) -> QDac2:
    """A driver on the served DAC holding the station's limits, as the rig installs them —
    its limit check alone, without the rig's takeover (which would stop the sine first)."""
    dac = QDac2(bench.server.resources()["dac"], name="dac", visa_library="@py")
    for spec in load_station(bench.station_file).channels:
        dac.set_limits(spec.channel, spec.limits)
    return dac


def test_the_limit_check_refuses_a_level_a_stale_sine_would_push_past_the_limit(
    bench: ServedBench, stale_sine: QDac2
) -> None:
    # The numbers: a 0.1 V sine on channel 3 (limit 0.4 V), set_voltage(3, 0.4).
    dac = limited_dac(bench)
    try:
        limit = dac.limits(3).max_v  # 0.4 V on the built-in station
        with pytest.raises(LimitError, match="armed sine"):
            dac.set_voltage(3, limit)
        dac.set_voltage(3, limit - 0.1)  # with the sine on top: exactly at the limit
        dac.ask("*OPC?")
        bench.built.bench.clock.advance(0.3)  # three periods of the sine
        dac.ask("sour3:volt?")
        low, high = bench.extremes("dac.ch3")
        assert high <= limit + 1e-9, (low, high)
        assert high == pytest.approx(limit, abs=1e-6)  # the sine really did play on top
        with pytest.raises(LimitError):
            dac.ramp_to({3: 0.35, 4: 0.1})
        with pytest.raises(LimitError):
            dac.play_traces({3: np.full(4, 0.35)}, 1e6)
        _, high = bench.extremes("dac.ch3")
        assert high <= limit + 1e-9
    finally:
        dac.safe_state()
        dac.adapter.close()


def test_an_open_rig_counts_a_sine_another_process_starts_while_it_runs(
    bench: ServedBench,
) -> None:
    other = QDac2(bench.server.resources()["dac"], name="another process", visa_library="@py")
    try:
        with open_rig(str(bench.station_file)) as rig:
            bench.reset_evidence()
            other.start_sines({3: (10.0, 0.1)}, trigger="immediate")
            # The other process's commands have run (it waited for them): two clients of one
            # instrument are served in the order each waits for its own replies.
            assert other.ask("*OPC?").strip() == "1"
            with pytest.raises(LimitError, match="armed sine"):
                rig.dac.set_voltage(3, 0.4)
            rig.wait(0.2)
            _, high = bench.extremes("dac.ch3")
            assert high <= 0.4 + 1e-9
        assert bench.running()[3] == []  # the rig's safe state stopped it too
    finally:
        other.adapter.close()


def test_safe_state_stops_a_continuously_armed_generator_that_abort_leaves_armed(
    bench: ServedBench,
) -> None:
    other = QDac2(bench.server.resources()["dac"], name="killed process", visa_library="@py")
    try:
        other.write(
            "sour5:sine:freq 10;:sour5:sine:span 0.2;:sour5:sine:trig:sour bus;"
            ":sour5:sine:init:cont on"
        )
        dac = limited_dac(bench)
        assert dac.generator_state([5])[5] == {"sine": (-0.1, 0.1)}
        dac.safe_state()
        other.trigger()  # would restart a sine still armed
        assert dac.generator_state([5])[5] == {}
        dac.adapter.close()
        assert bench.running()[5] == []
    finally:
        other.adapter.close()


def test_generator_state_reports_every_kind(bench: ServedBench, tmp_path: Path) -> None:
    other = QDac2(bench.server.resources()["dac"], name="killed process", visa_library="@py")
    try:
        other.safe_state()
        other.start_sines({6: (5.0, 0.05)}, trigger="immediate")
        other.play_traces({7: np.array([0.0, 0.02, -0.01])}, 1e6, "bus", marker_output=None)
        other.write("sour7:awg:coun 1000000;:sour7:awg:init")
        other.trigger()
        state = other.generator_state([5, 6, 7])
        assert state[5] == {}
        assert state[6] == {"sine": pytest.approx((-0.05, 0.05))}
        assert state[7]["awg"] == pytest.approx((-0.01, 0.02), abs=1e-6)
    finally:
        other.safe_state()
        other.adapter.close()
