"""The InfiniiVision DSOX3024T emulator: settings, triggering, record encoding, AWG coupling."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from emulator_wire import ask, error_codes, profile_device, profile_reply, send

from labrig.sim import inprocess
from labrig.sim.bench import Bench, FloatArray
from labrig.sim.keysight_33500b import Keysight33500BEmulator
from labrig.sim.keysight_infiniivision import IDN, InfiniiVisionEmulator

PROFILE = Path(__file__).resolve().parents[1] / "sim_profiles" / "keysight_infiniivision.yaml"


class SinePart:
    """A known input: ``amplitude·sin(2π f t) + offset`` on port ``out``."""

    def __init__(self, amplitude: float, frequency: float, offset: float = 0.0) -> None:
        self.name = "src"
        self.amplitude, self.frequency, self.offset = amplitude, frequency, offset

    def output(self, port: str, t: FloatArray) -> FloatArray:
        t = np.asarray(t, dtype=float)
        return self.offset + self.amplitude * np.sin(2 * np.pi * self.frequency * t)

    def on_trigger(self, port: str, t: float) -> None:
        pass


class StepPart:
    """A step from ``low`` to ``high`` at ``at_s`` on port ``out``."""

    def __init__(self, at_s: float, low: float = 0.0, high: float = 1.0) -> None:
        self.name = "step"
        self.at_s, self.low, self.high = at_s, low, high

    def output(self, port: str, t: FloatArray) -> FloatArray:
        return np.where(np.asarray(t, dtype=float) >= self.at_s, self.high, self.low)

    def on_trigger(self, port: str, t: float) -> None:
        pass


def preamble(scope: InfiniiVisionEmulator) -> list[float]:
    return [float(x) for x in ask(scope, ":WAV:PRE?").split(",")]


def read_block(scope: InfiniiVisionEmulator) -> bytes:
    raw = scope.feed(b":WAV:DATA?\n")
    assert raw[:2] == b"#8" and raw.endswith(b"\n")
    n = int(raw[2:10])
    assert len(raw) == 10 + n + 1
    return raw[10 : 10 + n]


def read_volts(scope: InfiniiVisionEmulator) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(times relative to trigger, volts, raw codes) of the current source, by the preamble."""
    pre = preamble(scope)
    fmt, points, xinc, xorig, yinc, yorig, yref = (
        int(pre[0]),
        int(pre[2]),
        pre[4],
        pre[5],
        pre[7],
        pre[8],
        pre[9],
    )
    payload = read_block(scope)
    if fmt == 4:
        codes = np.array([float(x) for x in payload.decode().split(",")])
        volts = codes
    else:
        order = ">" if ask(scope, ":WAV:BYT?") == "MSBF" else "<"
        unsigned = ask(scope, ":WAV:UNS?") == "1"
        dtype = {0: "u1" if unsigned else "i1", 1: ("u2" if unsigned else "i2")}[fmt]
        codes = np.frombuffer(payload, dtype=(order + dtype) if fmt == 1 else dtype).astype(float)
        volts = (codes - yref) * yinc + yorig
    assert codes.size == points
    times = xorig + xinc * np.arange(points, dtype=np.float64)
    return times, np.asarray(volts, dtype=np.float64), np.asarray(codes, dtype=np.float64)


@pytest.fixture
def sine_bench() -> tuple[Bench, InfiniiVisionEmulator, SinePart]:
    bench = Bench(seed=5)
    src = SinePart(amplitude=1.5, frequency=2e3, offset=0.2)
    bench.add(src)
    scope = InfiniiVisionEmulator("scope", bench)
    bench.connect("scope.ch1", "src.out")
    return bench, scope, src


# --------------------------------------------------------------------------- profile, reset


def test_profile_loads_in_pyvisa_sim_and_matches_identity() -> None:
    pyvisa = pytest.importorskip("pyvisa")
    rm = pyvisa.ResourceManager(f"{PROFILE}@sim")
    try:
        res = rm.open_resource(
            "TCPIP0::127.0.0.1::5025::SOCKET", read_termination="\n", write_termination="\n"
        )
        assert res.query("*IDN?") == IDN
    finally:
        rm.close()


def test_every_profile_default_is_the_emulator_reset_state() -> None:
    scope = InfiniiVisionEmulator("scope", Bench())
    device = profile_device(PROFILE, "keysight_dsox3024t")
    send(scope, ":TIM:SCAL 1e-3;:CHAN3:DISP 1;:WAV:FORM WORD;:TRIG:SWE NORM")
    send(scope, "*RST")
    for name, prop in device["properties"].items():
        assert ask(scope, prop["getter"]["q"]) == profile_reply(prop, prop["default"]), name
    for dialogue in device["dialogues"]:
        assert ask(scope, dialogue["q"]) == dialogue.get("r", ""), dialogue["q"]
    assert error_codes(scope) == []


def test_profile_limits_round_trip_on_the_emulator() -> None:
    scope = InfiniiVisionEmulator("scope", Bench())
    for name, prop in profile_device(PROFILE, "keysight_dsox3024t")["properties"].items():
        specs = prop["specs"]
        values = list(specs.get("valid", [])) or [specs["min"], specs["max"]]
        for value in values:
            send(scope, "*RST")
            setter = prop["setter"]["q"].replace("{:d}", "{}").replace("{:s}", "{}")
            send(scope, setter.format(value))
            assert ask(scope, prop["getter"]["q"]) == profile_reply(prop, value), (name, value)
            assert error_codes(scope) == [], (name, value)


def test_coupled_settings_and_lowercase_long_forms() -> None:
    scope = InfiniiVisionEmulator("scope", Bench())
    send(scope, ":channel1:scale 0.5;:timebase:range 2e-3")
    assert ask(scope, ":CHANNEL1:RANGE?;:TIM:SCAL?") == "+4.00000000E+00;+2.00000000E-04"
    send(scope, ":CHAN2:SCAL 0.1;:CHAN2:OFFS 10")  # clamped silently to +-2 V at 100 mV/div
    assert ask(scope, ":CHAN2:OFFS?") == "+2.00000000E+00"
    send(scope, ":CHAN2:PROB 10")  # same volts at the BNC: the displayed scale follows
    assert ask(scope, ":CHAN2:SCAL?") == "+1.00000000E+00"
    send(scope, ":TIM:SCAL 1e3")
    assert error_codes(scope) == [-222]
    assert ask(scope, ":timebase?").startswith(":TIM:MODE MAIN;REF CENT;MAIN:RANG +2.0")


def test_points_are_rounded_to_allowed_record_lengths() -> None:
    scope = InfiniiVisionEmulator("scope", Bench())
    send(scope, ":WAV:POIN 62500")
    assert ask(scope, ":WAV:POIN?;:ACQ:SRAT?") == "1000;+1.00000000E+06"
    send(scope, ":WAV:POIN:MODE RAW;:WAV:POIN 30000")
    assert ask(scope, ":WAV:POIN?;:ACQ:POIN?") == "20000;20000"
    send(scope, ":TIM:SCAL 2e-9")  # 5 GSa/s caps a 20 ns screen at 100 points
    assert ask(scope, ":ACQ:POIN?") == "100"


# --------------------------------------------------------------------------- encoding


def test_preamble_scaling_recovers_a_sine_within_one_code_step(sine_bench) -> None:
    _bench, scope, src = sine_bench
    scope.noise_divisions = 0.0  # quantisation alone; the noise is tested below
    send(scope, ":TIM:SCAL 1e-4;:CHAN1:SCAL 0.5;:CHAN1:OFFS 0.2;:TRIG:SWE AUTO;:TRIG:LEV 0.2")
    send(scope, ":DIG CHAN1")
    t_trig = scope.record.trigger_time_s  # type: ignore[union-attr]
    for fmt, lsb in (("BYTE", 8 * 0.5 / 250), ("WORD", 8 * 0.5 / 1000)):
        send(scope, f":WAV:FORM {fmt}")
        t, volts, _ = read_volts(scope)
        truth = src.output("out", t_trig + t)
        assert np.max(np.abs(volts - truth)) <= lsb, fmt
    assert abs(src.output("out", np.array([t_trig]))[0] - 0.2) < 0.01  # rising edge at 0.2 V
    assert ask(scope, ":TER?") == "+1"


def test_input_noise_has_the_configured_rms(sine_bench) -> None:
    _bench, scope, src = sine_bench
    scope.noise_divisions = 0.05
    send(scope, ":CHAN1:SCAL 0.5;:WAV:FORM WORD;:WAV:POIN:MODE RAW;:WAV:POIN 100000;:DIG")
    t, volts, _ = read_volts(scope)
    residual = volts - src.output("out", scope.record.trigger_time_s + t)  # type: ignore[union-attr]
    assert np.std(residual) == pytest.approx(0.05 * 0.5, rel=0.05)


def test_byte_word_and_ascii_agree(sine_bench) -> None:
    _bench, scope, _src = sine_bench
    send(scope, ":CHAN1:SCAL 0.5;:WAV:POIN 500;:DIG")
    send(scope, ":WAV:FORM WORD")
    _, word, _ = read_volts(scope)
    send(scope, ":WAV:FORM ASC")
    _, asc, _ = read_volts(scope)
    send(scope, ":WAV:FORM BYTE")
    _, byte, _ = read_volts(scope)
    np.testing.assert_allclose(asc, word, rtol=0, atol=1e-9)
    assert np.max(np.abs(byte - word)) <= 0.5 * 8 * 0.5 / 250 + 1e-9  # half a BYTE step
    send(scope, ":WAV:FORM WORD;:WAV:UNS 0;:WAV:BYT LSBF")
    _, signed, codes = read_volts(scope)
    np.testing.assert_allclose(signed, word, atol=1e-12)
    assert codes.min() < 0 < codes.max()


@pytest.mark.parametrize("fmt", ["BYTE", "WORD"])
def test_every_byte_order_and_sign_carries_the_same_record(sine_bench, fmt: str) -> None:
    _bench, scope, src = sine_bench
    send(scope, f":CHAN1:SCAL 0.1;:CHAN1:OFFS 0.2;:TIM:SCAL 2e-4;:DIG;:WAV:FORM {fmt}")
    t = read_volts(scope)[0]
    truth = src.output("out", scope.record.trigger_time_s + t)  # type: ignore[union-attr]
    over, under = truth > 0.2 + 0.41, truth < 0.2 - 0.41
    inside = np.abs(truth - 0.2) < 0.39
    assert over.any() and under.any() and inside.any()
    top = 0xFF if fmt == "BYTE" else 0xFFFF
    reference = None
    for unsigned, order in itertools.product((1, 0), ("LSBF", "MSBF")):
        send(scope, f":WAV:UNS {unsigned};:WAV:BYT {order}")
        _, volts, codes = read_volts(scope)
        if not unsigned:  # the clip codes keep their place, shifted by yref
            codes = codes + (top + 1) // 2
        assert np.all(codes[over] == top) and np.all(codes[under] == 1)
        if reference is None:
            reference = volts
            lsb = 0.8 / (250 if fmt == "BYTE" else 1000)
            assert np.max(np.abs(volts[inside] - truth[inside])) < 0.05 + lsb  # noise + LSB
        np.testing.assert_allclose(volts, reference, rtol=0, atol=1e-12)


def test_clipped_points_get_the_clipping_codes(sine_bench) -> None:
    _bench, scope, src = sine_bench
    send(scope, ":CHAN1:SCAL 0.1;:CHAN1:OFFS 0.2;:TIM:SCAL 2e-4;:DIG")  # +-0.4 V screen
    truth = src.output("out", scope.record.trigger_time_s + read_volts(scope)[0])  # type: ignore[union-attr]
    over, under = truth > 0.2 + 0.41, truth < 0.2 - 0.41
    inside = np.abs(truth - 0.2) < 0.39
    assert over.any() and under.any()
    _, _, byte = read_volts(scope)
    assert np.all(byte[over] == 0xFF) and np.all(byte[under] == 0x01)
    assert np.all((byte[inside] > 1) & (byte[inside] < 255))
    send(scope, ":WAV:FORM WORD")
    _, _, word = read_volts(scope)
    assert np.all(word[over] == 0xFFFF) and np.all(word[under] == 0x0001)
    send(scope, ":WAV:FORM ASC")
    _, asc, _ = read_volts(scope)
    assert np.all(asc[over] == 9.9e37) and np.all(asc[under] == -9.9e37)


def test_record_is_frozen_at_trigger_time(sine_bench) -> None:
    _bench, scope, src = sine_bench
    send(scope, ":WAV:FORM WORD;:DIG")
    before = read_volts(scope)
    send(scope, ":CHAN1:SCAL 2;:CHAN1:OFFS 1;:TIM:SCAL 1e-3")
    src.amplitude = 0.0
    after = read_volts(scope)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- triggering, time


def test_channel_edge_trigger_finds_a_later_step_and_waiting_advances_time() -> None:
    bench = Bench()
    bench.add(StepPart(at_s=0.0123))
    scope = InfiniiVisionEmulator("scope", bench, noise_divisions=0.0)
    bench.connect("scope.ch1", "step.out")
    send(scope, ":TIM:SCAL 1e-4;:TIM:REF CENT;:TRIG:SWE NORM;:TRIG:EDGE:SOUR CHAN1")
    send(scope, ":TRIG:EDGE:LEV 0.5;:TRIG:EDGE:SLOP POS;:WAV:FORM WORD;:SING")
    assert ask(scope, "*OPC?") == "1"
    rec = scope.record
    assert rec is not None and rec.triggered
    assert rec.trigger_time_s == pytest.approx(0.0123, abs=rec.x_increment_s)
    assert bench.clock.now == pytest.approx(0.0123 + 5e-4, abs=2e-6)  # end of the record
    t, volts, _ = read_volts(scope)
    assert np.all(volts[t < -rec.x_increment_s] == 0.0) and np.all(volts[t > 0] == 1.0)
    assert ask(scope, ":TER?;:TER?") == "+1;+0"


def test_normal_sweep_without_trigger_never_answers_auto_does() -> None:
    bench = Bench()
    scope = InfiniiVisionEmulator("scope", bench)  # nothing wired: flat 0 V
    send(scope, ":TRIG:SWE NORM;:TRIG:EDGE:LEV 0.5;:SING")
    assert ask(scope, "*OPC?") == ""
    assert error_codes(scope) == [-200]
    assert ask(scope, ":OPER:COND?") == "+40"  # running + waiting for trigger
    send(scope, ":TRIG:SWE AUTO")
    assert ask(scope, "*OPC?") == "1"
    assert ask(scope, ":TER?;:OPER:COND?") == "+0;+0"


def test_awg_burst_on_sync_is_captured_time_aligned() -> None:
    """Burst + *TRG on the AWG fires its sync; the scope, armed on EXT, captures exactly the
    uploaded waveform, aligned within one sample."""
    bench = Bench(seed=11)
    awg = Keysight33500BEmulator("awg", bench)
    scope = InfiniiVisionEmulator("scope", bench, noise_divisions=0.0)
    bench.connect("scope.ch1", "awg.ch1")
    bench.connect("scope.ext", "awg.sync")
    rng = np.random.default_rng(2)
    codes = np.round(rng.uniform(-1, 1, 200) * 32767).astype(np.int16)
    payload = codes.astype("<i2").tobytes()
    send(awg, "FORM:BORD SWAP")
    send(awg, b"SOUR1:DATA:ARB:DAC MASK,#3" + str(len(payload)).encode() + payload)
    send(awg, "SOUR1:FUNC:ARB MASK;:SOUR1:FUNC ARB;:SOUR1:FUNC:ARB:SRAT 2e5")
    send(awg, "SOUR1:VOLT 2;:SOUR1:VOLT:OFFS 0;:OUTP1 ON")
    send(awg, "SOUR1:BURS:MODE TRIG;:SOUR1:BURS:NCYC 1;:TRIG1:SOUR BUS;:SOUR1:BURS:STAT ON")
    bench.clock.advance(0.003)
    # 1 ms record starting at the trigger: 1000 points at 1 MSa/s, 5 per AWG sample
    send(scope, ":TIM:SCAL 1e-4;:TIM:REF LEFT;:TIM:POS 1e-4;:CHAN1:SCAL 0.25;:CHAN1:OFFS 0")
    send(scope, ":TRIG:EDGE:SOUR EXT;:TRIG:SWE NORM;:WAV:FORM WORD;:SING")
    t_fire = bench.clock.now
    assert ask(awg, "*TRG;*OPC?") == "1"
    assert ask(scope, "*OPC?") == "1"
    assert error_codes(awg) == [] and error_codes(scope) == []
    t, volts, _ = read_volts(scope)
    assert scope.record is not None and scope.record.trigger_time_s == t_fire
    assert t[0] == 0.0
    # sample k of the arb is on the output during [k, k+1) / 200 kHz after the trigger
    k = np.floor(t * 2e5 + 1e-6).astype(int)
    expected = codes[k] / 32767.0
    lsb = 8 * 0.25 / 1000
    assert np.max(np.abs(volts - expected)) <= lsb / 2 + 1e-12
    # a one-sample shift of the expectation would not fit: the alignment is tight
    shifted = codes[np.minimum(k + 1, codes.size - 1)] / 32767.0
    assert np.max(np.abs(volts - shifted)) > 10 * lsb


# --------------------------------------------------------------------------- third-party driver


@pytest.mark.filterwarnings("ignore:It is not known whether this device support SCPI:FutureWarning")
def test_pymeasure_dsox1102g_driver_against_the_emulator(sine_bench) -> None:
    from pymeasure.instruments.keysight import KeysightDSOX1102G

    _bench, scope, src = sine_bench
    lib = inprocess.make_visa_library({"scope": scope})
    dso = KeysightDSOX1102G(
        inprocess.resource_name("scope"),
        visa_library=lib,
        read_termination="\n",
        write_termination="\n",
    )
    try:
        dso.ch1.scale = 0.5
        dso.timebase_scale = 1e-4
        dso.timebase_offset = 0.0
        assert dso.ch1.scale == pytest.approx(0.5)
        assert dso.timebase == {"MODE": "MAIN", "REF": "CENT", "MAIN:RANG": 1e-3, "POS": 0.0}
        config = dso.ch1.current_configuration
        assert config["RANG"] == pytest.approx(4.0) and config["DISP"] is True
        dso.acquisition_type = "normal"
        dso.digitize("channel1")
        data, pre = dso.download_data(source="channel1", points=62500)
        assert pre["points"] == 1000 == data.size  # 62500 rounds down to the NORMal maximum
        t = scope.record.trigger_time_s + pre["xorigin"] + pre["xincrement"] * np.arange(1000)  # type: ignore[union-attr]
        assert np.max(np.abs(data - src.output("out", t))) < 0.01
        dso.check_errors()
    finally:
        dso.adapter.close()


def test_record_lengths_agree_with_the_driver() -> None:
    from instruments.keysight_infiniivision import NORMAL_RECORD_POINTS, RAW_RECORD_POINTS
    from labrig.sim import keysight_infiniivision as emulator

    assert emulator.NORMAL_POINTS == NORMAL_RECORD_POINTS
    assert emulator.RAW_POINTS == RAW_RECORD_POINTS
