"""The SR860 emulator: demodulation of analytic inputs, filters, status bits, capture buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from emulator_wire import ask

from labrig.sim import inprocess
from labrig.sim.bench import Bench
from labrig.sim.srs_sr860 import SENSITIVITY_V, TIME_CONSTANT_S, SR860Emulator


class SineSource:
    """A bench part with port ``out`` = ``Σ A_k sin(2π f_k t + φ_k)``, switched on at ``start``."""

    def __init__(
        self, tones: list[tuple[float, float, float]], start: float = 0.0, name: str = "src"
    ) -> None:
        self.name = name
        self.tones = tones  # (amplitude V, frequency Hz, phase degrees)
        self.start = start

    def output(self, port: str, t: np.ndarray) -> np.ndarray:
        v = np.zeros_like(t)
        for amp, f, phi in self.tones:
            v += amp * np.sin(2 * np.pi * f * t + math.radians(phi))
        return np.where(t >= self.start, v, 0.0)

    def on_trigger(self, port: str, t: float) -> None:
        pass


def make(tones: list[tuple[float, float, float]], start: float = 0.0):
    bench = Bench()
    lockin = SR860Emulator("lockin", bench)
    bench.add(SineSource(tones, start))
    bench.connect("lockin.in", "src.out")
    return bench, lockin


def floats(reply: str) -> list[float]:
    return [float(x) for x in reply.split(",")]


def test_tables_follow_the_manual_formulas() -> None:
    assert TIME_CONSTANT_S[0] == pytest.approx(1e-6)
    assert TIME_CONSTANT_S[10] == pytest.approx(0.1)
    assert TIME_CONSTANT_S[21] == pytest.approx(30e3)
    assert SENSITIVITY_V[0] == 1.0 and SENSITIVITY_V[27] == pytest.approx(1e-9)


@pytest.mark.parametrize("phase_deg", [30.0, -120.0, 175.0])
def test_amplitude_and_phase_of_a_sine_after_settling(phase_deg: float) -> None:
    amp, f = 0.1, 1000.0
    bench, lockin = make([(amp, f, phase_deg)])
    ask(lockin, "FREQ 1000;OFLT 8;OFSL 3")  # 10 ms, 24 dB/oct
    bench.clock.advance(0.3)  # well over 10 tau
    x, y, r, theta = floats(ask(lockin, "SNAP? X,Y,R") + "," + ask(lockin, "OUTP? THeta"))
    rms = amp / math.sqrt(2)  # X, Y, R are RMS values
    assert r == pytest.approx(rms, rel=0.01)
    assert x == pytest.approx(rms * math.cos(math.radians(phase_deg)), abs=0.01 * rms)
    assert y == pytest.approx(rms * math.sin(math.radians(phase_deg)), abs=0.01 * rms)
    assert theta == pytest.approx(phase_deg, abs=1.0)


def test_reference_phase_offset_subtracts_from_theta() -> None:
    bench, lockin = make([(0.05, 2000.0, 40.0)])
    ask(lockin, "FREQ 2000;OFLT 8;OFSL 2;PHAS 25")
    bench.clock.advance(0.3)
    assert floats(ask(lockin, "OUTP? 3"))[0] == pytest.approx(15.0, abs=1.0)


def test_harmonic_detection_picks_the_second_harmonic() -> None:
    f0 = 500.0
    bench, lockin = make([(0.2, f0, 0.0), (0.02, 2 * f0, 60.0)])
    ask(lockin, "FREQ 500;Harm 2;OFLT 8;OFSL 3")  # mixed case, as PyMeasure writes it
    assert ask(lockin, "HARM?") == "2"
    assert float(ask(lockin, "FREQDET?")) == 1000.0
    bench.clock.advance(0.3)
    r, theta = floats(ask(lockin, "SNAP? 2,3"))
    assert r == pytest.approx(0.02 / math.sqrt(2), rel=0.01)
    assert theta == pytest.approx(60.0, abs=1.0)


@pytest.mark.parametrize(
    ("slope", "fraction_at_tau"),
    [(0, 1 - math.exp(-1)), (1, 1 - 2 * math.exp(-1))],  # 6 and 12 dB/oct step responses
)
def test_time_constant_step_response(slope: int, fraction_at_tau: float) -> None:
    amp, f, t_on = 0.1, 10e3, 0.05
    bench, lockin = make([(amp, f, 0.0)], start=t_on)
    ask(lockin, f"FREQ 10000;OFLT 10;OFSL {slope}")  # tau = 100 ms
    final = amp / math.sqrt(2)
    bench.clock.advance_to(t_on + 0.1)
    x = float(ask(lockin, "OUTP? X"))
    assert x / final == pytest.approx(fraction_at_tau, abs=0.01)
    bench.clock.advance_to(t_on + 1.5)
    assert float(ask(lockin, "OUTP? X")) / final == pytest.approx(1.0, abs=0.01)


def test_input_overload_and_scale_overload_bits() -> None:
    bench, lockin = make([(0.1, 1000.0, 0.0)])
    ask(lockin, "OFLT 6;IRNG 4")  # 10 mV range, 0.1 V input
    bench.clock.advance(0.02)
    assert ask(lockin, "ILVL?") == "4"
    assert int(ask(lockin, "CUROVLDSTAT?")) & 16
    assert ask(lockin, "LIAS? 4") == "1"
    ask(lockin, "IRNG 0")  # 1 V range: the overload clears, the latched bit was read
    bench.clock.advance(0.02)
    assert int(ask(lockin, "ILVL?")) < 4
    assert not int(ask(lockin, "CUROVLDSTAT?")) & 16
    ask(lockin, "SCAL 9")  # 1 mV full scale, X about 70 mV
    bench.clock.advance(0.01)
    status = int(ask(lockin, "CUROVLDSTAT?"))
    assert status & 1  # CH1 (X)
    assert status & (1 << 8) and status & (1 << 10)  # DAT1 = X, DAT3 = R


def test_unknown_command_sets_cmd_bit_and_sends_no_reply() -> None:
    _, lockin = make([])
    assert ask(lockin, "*ESR?") == "0"
    assert ask(lockin, "FOOBAR 3") == ""
    assert ask(lockin, "FOOBAR?") == ""
    assert ask(lockin, "SYST:ERR?") == ""  # no SCPI error queue on this instrument
    assert int(ask(lockin, "*ESR?")) == 32
    ask(lockin, "OFLT 22")  # out of range: EXE bit, setting unchanged
    assert int(ask(lockin, "*ESR?")) == 16
    assert ask(lockin, "OFLT?") == "10"
    assert ask(lockin, "*ESR?") == "0"


def test_enumerations_take_index_or_keyword() -> None:
    _, lockin = make([])
    ask(lockin, "RSRC EXT")
    assert ask(lockin, "RSRC?") == "1"
    ask(lockin, "IVMD CURRent")
    assert ask(lockin, "IVMD?") == "1"
    ask(lockin, "IRNG 300M")
    assert ask(lockin, "IRNG?") == "1"
    ask(lockin, "CDSP 2,TH")
    assert ask(lockin, "CDSP? 2") == "3"
    assert ask(lockin, "*ESR?") == "0"


def test_capture_buffer_round_trip() -> None:
    amp, phase = 0.08, 20.0
    bench, lockin = make([(amp, 1000.0, phase)])
    ask(lockin, "OFLT 8;OFSL 3")
    bench.clock.advance(0.3)  # settle first
    ask(lockin, "CAPTURELEN 2;CAPTURECFG XY;CAPTURERATE 2")
    rate = float(ask(lockin, "CAPTURERATE?"))
    assert rate == pytest.approx(float(ask(lockin, "CAPTURERATEMAX?")) / 4)
    ask(lockin, "CAPTURESTART ONE,IMM")
    assert int(ask(lockin, "CAPTURESTAT?")) & 1
    lockin.feed(b"CAPTUREGET? 0,2\n")  # not allowed while capturing
    assert int(ask(lockin, "*ESR?")) & 16
    t0 = bench.clock.now
    assert ask(lockin, "*OPC?") == "1"  # runs the clock to the end of the one-shot capture
    assert bench.clock.now == pytest.approx(t0 + 255 / rate)
    assert ask(lockin, "CAPTURESTAT?") == "2"
    assert ask(lockin, "CAPTUREBYTES?") == "2048"
    reply = lockin.feed(b"CAPTUREGET? 0,2\n")
    assert reply.startswith(b"#42048")
    data = np.frombuffer(reply[6 : 6 + 2048], dtype="<f4").reshape(-1, 2)
    rms = amp / math.sqrt(2)
    np.testing.assert_allclose(data[:, 0], rms * math.cos(math.radians(phase)), atol=0.01 * rms)
    np.testing.assert_allclose(data[:, 1], rms * math.sin(math.radians(phase)), atol=0.01 * rms)
    for n in (0, 100, 255):
        assert floats(ask(lockin, f"CAPTUREVAL? {n}")) == pytest.approx(data[n].tolist())


def test_sine_out_drives_its_own_input_at_zero_phase() -> None:
    bench = Bench()
    lockin = SR860Emulator("lockin", bench)
    bench.connect("lockin.in", "lockin.sine")
    ask(lockin, "SLVL 0.5;FREQ 321;OFLT 9;OFSL 3")
    bench.clock.advance(1.0)
    r, theta = floats(ask(lockin, "SNAP? R,THeta"))
    assert r == pytest.approx(0.5, rel=0.01)  # SLVL is an RMS amplitude
    assert theta == pytest.approx(0.0, abs=1.0)


def test_pymeasure_driver_works_unchanged() -> None:
    from pymeasure.instruments.srs import SR860

    bench, lockin = make([(0.1, 1234.5, 45.0)])
    lib = inprocess.make_visa_library({"lockin": lockin})
    driver = SR860(inprocess.resource_name("lockin"), visa_library=lib)
    try:
        assert "SR860" in driver.ask("*IDN?")
        driver.frequency = 1234.5  # "FREQ 1.234500e+03"
        driver.harmonic = 1  # "Harm 1"
        driver.time_constant = 0.01  # "OFLT 8"
        driver.filter_slope = 3
        driver.sensitivity = 0.5
        driver.reference_source = "INT"
        driver.input_range = "1V"
        driver.phase = 0.0  # "PHAS 0.0000000"
        assert driver.frequency == pytest.approx(1234.5)
        assert driver.time_constant == 0.01
        assert driver.sensitivity == 0.5
        assert driver.input_range == "1V"
        bench.clock.advance(0.3)
        x, y = driver.snap()  # "SNAP? X, Y"
        assert math.hypot(x, y) == pytest.approx(0.1 / math.sqrt(2), rel=0.01)
        r, theta, f_int = driver.snap("R", "THeta", "FInt")
        assert r == pytest.approx(0.1 / math.sqrt(2), rel=0.01)
        assert theta == pytest.approx(45.0, abs=1.0)
        assert f_int == pytest.approx(1234.5)
        assert len(driver.snap_all()) == 4
        assert driver.get_noise_bandwidth == pytest.approx(5 / 64 / 0.01)
        driver.aux_out_1 = 0.25  # "AUXV 0, 0.250000"
        assert driver.aux_out_1 == 0.25
        assert driver.ask("*ESR?").strip() == "0"  # everything above was understood
    finally:
        driver.adapter.close()


class RestartedSine:
    """``out`` = DC + A sin(2π f (t - t_s)): a DAC sine that starts at ``t_s`` with phase 0;
    ``sig`` = the device's answer to it, ``g`` times the sine delayed by ``lag`` degrees."""

    def __init__(self, f: float, t_s: float, g: float, lag_deg: float) -> None:
        self.name = "dac"
        self.f, self.t_s, self.g, self.lag = f, t_s, g, math.radians(lag_deg)

    def output(self, port: str, t: np.ndarray) -> np.ndarray:
        arg = 2 * np.pi * self.f * (t - self.t_s)
        if port == "ref":
            return 0.3 + 0.01 * np.sin(arg)
        return 1.0 + self.g * 0.01 * np.sin(arg - self.lag)

    def on_trigger(self, port: str, t: float) -> None:
        pass


@pytest.mark.parametrize("t_start", [0.0123, 0.4567])
@pytest.mark.parametrize("g", [2.0, -3.0])
def test_external_reference_locks_to_the_sine_on_ref(t_start: float, g: float) -> None:
    # The phase must be read relative to the wired sine, whenever that sine started, so the
    # sign of a gradient survives (a negative g reads theta near 180 degrees).
    bench = Bench()
    lockin = SR860Emulator("lockin", bench)
    bench.add(RestartedSine(360.0, t_start, g, lag_deg=10.0))
    bench.connect("lockin.in", "dac.sig")
    bench.connect("lockin.ref", "dac.ref")
    ask(lockin, "FREQ 360;RSRC EXT;OFLT 9;OFSL 3")
    bench.clock.advance_to(t_start + 0.5)
    r, theta = floats(ask(lockin, "SNAP? R,THETA"))
    assert r == pytest.approx(abs(g) * 0.01 / math.sqrt(2), rel=0.01)
    expected = -10.0 if g > 0 else 170.0
    assert abs((theta - expected + 180) % 360 - 180) < 1.0
    assert int(ask(lockin, "CUROVLDSTAT?")) & 8 == 0  # locked: no UNLK


def test_external_reference_without_a_reference_signal_is_unlocked() -> None:
    bench, lockin = make([(0.1, 1000.0, 0.0)])
    ask(lockin, "RSRC EXT")
    bench.clock.advance(0.5)
    ask(lockin, "SNAP? X,Y")
    assert int(ask(lockin, "CUROVLDSTAT?")) & 8 == 8
