"""33500B ``FUNCtion:PULSe`` (width, duty cycle, period, edges, hold, interlocks) and
``FREQuency:MODE``."""

from __future__ import annotations

import numpy as np
import pytest

from labrig.sim.bench import Bench
from labrig.sim.keysight_33500b import Keysight33500BEmulator


def ask(awg: Keysight33500BEmulator, command: str) -> str:
    return awg.feed(command.encode() + b"\n").decode().strip()


def errors(awg: Keysight33500BEmulator) -> list[int]:
    codes = []
    while True:
        code = int(ask(awg, "SYST:ERR?").split(",")[0])
        if code == 0:
            return codes
        codes.append(code)


@pytest.fixture
def awg() -> Keysight33500BEmulator:
    awg = Keysight33500BEmulator("awg", Bench())
    awg.feed(b"SOUR1:FUNC PULS\n")
    return awg


def test_pulse_defaults_and_round_trips(awg: Keysight33500BEmulator) -> None:
    assert float(ask(awg, "FUNC:PULS:WIDT?")) == 100e-6
    assert float(ask(awg, "FUNC:PULS:PER?")) == pytest.approx(1e-3)
    assert float(ask(awg, "FUNC:PULS:DCYC?")) == pytest.approx(10.0)
    assert ask(awg, "FUNC:PULS:HOLD?") == "WIDT"
    awg.feed(b"SOUR2:FUNCTION:PULSE:WIDTH 2e-5;PERIOD 1e-4\n")
    assert float(ask(awg, "SOUR2:FUNC:PULS:WIDT?")) == 2e-5
    assert float(ask(awg, "SOUR2:FREQ?")) == pytest.approx(1e4)  # the period is 1/frequency
    assert float(ask(awg, "SOUR2:FUNC:PULS:DCYC?")) == pytest.approx(20.0)
    awg.feed(b"FUNC:PULS:DCYC 25\n")
    assert float(ask(awg, "FUNC:PULS:WIDT?")) == pytest.approx(250e-6)
    awg.feed(b"FUNC:PULS:TRAN 20e-9;:FUNC:PULS:TRAN:TRA 50e-9\n")
    assert float(ask(awg, "FUNC:PULS:TRAN:LEAD?")) == 20e-9
    assert float(ask(awg, "FUNC:PULS:TRAN:TRA?")) == 50e-9
    assert errors(awg) == []


def test_width_longer_than_the_period_is_clipped(awg: Keysight33500BEmulator) -> None:
    awg.feed(b"FUNC:PULS:WIDT 2e-3\n")  # period 1 ms
    width = float(ask(awg, "FUNC:PULS:WIDT?"))
    assert width < 1e-3
    assert width == pytest.approx(1e-3 - 16e-9)  # the least gap: the 16 ns minimum width
    assert errors(awg) == [-222]
    awg.feed(b"FUNC:PULS:WIDT 1e-9\n")
    assert float(ask(awg, "FUNC:PULS:WIDT?")) == 16e-9
    assert errors(awg) == [-222]


def test_period_shorter_than_the_width_adjusts_it_or_keeps_the_duty(
    awg: Keysight33500BEmulator,
) -> None:
    awg.feed(b"FUNC:PULS:WIDT 500e-6\n")
    awg.feed(b"FUNC:PULS:PER 100e-6\n")  # HOLD WIDTh: the width no longer fits
    assert float(ask(awg, "FUNC:PULS:WIDT?")) < 100e-6
    assert errors(awg) == [-221]
    awg.feed(b"FUNC:PULS:PER 1e-3;:FUNC:PULS:DCYC 50;:FUNC:PULS:HOLD DCYC\n")
    awg.feed(b"FREQ 1e4\n")  # HOLD DCYCle: the width follows the period
    assert float(ask(awg, "FUNC:PULS:WIDT?")) == pytest.approx(50e-6)
    assert float(ask(awg, "FUNC:PULS:DCYC?")) == pytest.approx(50.0)
    assert errors(awg) == []


def test_edges_need_room_in_the_width(awg: Keysight33500BEmulator) -> None:
    awg.feed(b"FUNC:PULS:WIDT 100e-9;:FUNC:PULS:PER 1e-6\n")
    assert errors(awg) == []
    awg.feed(b"FUNC:PULS:TRAN 300e-9\n")  # 0.625 * 600 ns > 100 ns: the width grows
    assert errors(awg) == [-221]
    assert float(ask(awg, "FUNC:PULS:WIDT?")) == pytest.approx(0.625 * 600e-9)
    awg.feed(b"FUNC:PULS:TRAN 1e-6\n")  # edges longer than a 1 us period allows: shortened
    lead = float(ask(awg, "FUNC:PULS:TRAN:LEAD?"))
    trail = float(ask(awg, "FUNC:PULS:TRAN:TRA?"))
    width = float(ask(awg, "FUNC:PULS:WIDT?"))
    assert lead + trail <= 1e-6 / 1.25 + 1e-15
    assert 0.625 * (lead + trail) <= width + 1e-15 <= 1e-6 - 0.625 * (lead + trail) + 2e-15
    assert -221 in errors(awg)
    awg.feed(b"FUNC:PULS:PER 1e-3;:FUNC:PULS:TRAN 2e-6\n")  # beyond the 1 us maximum: clipped
    assert float(ask(awg, "FUNC:PULS:TRAN?")) == 1e-6
    assert errors(awg) == [-222, -221]  # clipped, and the width grew to make room
    assert float(ask(awg, "FUNC:PULS:WIDT?")) == pytest.approx(1.25e-6)


def test_pulse_output_has_the_width_and_edges(awg: Keysight33500BEmulator) -> None:
    awg.feed(b"FUNC:PULS:PER 1e-3;:FUNC:PULS:WIDT 200e-6;:FUNC:PULS:TRAN 1e-6\n")
    awg.feed(b"VOLT 2;VOLT:OFFS 0;OUTP ON\n")
    t = np.linspace(0.0, 1e-3, 100_001)[:-1]
    v = awg.output("ch1", t)
    high = t[v > 0.0]  # above the 50 % level
    assert high[-1] - high[0] == pytest.approx(200e-6, abs=2e-8)
    assert v.max() == pytest.approx(1.0) and v.min() == pytest.approx(-1.0)
    assert np.count_nonzero((v > -0.99) & (v < 0.99)) == pytest.approx(200, abs=4)  # 2 x 1 us


def test_frequency_mode(awg: Keysight33500BEmulator) -> None:
    assert ask(awg, "FREQ:MODE?") == "CW"
    for sent, reply in (("SWEEP", "SWE"), ("LIST", "LIST"), ("FIXED", "FIX"), ("CW", "CW")):
        awg.feed(f"SOUR2:FREQ:MODE {sent}\n".encode())
        assert ask(awg, "SOUR2:FREQ:MODE?") == reply
    awg.feed(b"FREQ:MODE STEP\n")
    assert errors(awg) == [-224]
