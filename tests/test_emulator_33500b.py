"""The Keysight 33522B emulator: command set, arb memory, playback physics, triggers, PyMeasure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from emulator_wire import ask, error_codes, profile_device, profile_reply, send

from labrig.sim import inprocess
from labrig.sim.bench import Bench, FloatArray
from labrig.sim.keysight_33500b import BUILTIN_ARB, IDN, Keysight33500BEmulator

PROFILE = Path(__file__).resolve().parents[1] / "sim_profiles" / "keysight_33500b.yaml"


class TriggerRecorder:
    """A bench part that remembers the trigger events delivered to it."""

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.events: list[tuple[str, float]] = []

    def output(self, port: str, t: FloatArray) -> FloatArray:
        return np.zeros_like(np.asarray(t, dtype=float))

    def on_trigger(self, port: str, t: float) -> None:
        self.events.append((port, t))


@pytest.fixture
def awg() -> Keysight33500BEmulator:
    return Keysight33500BEmulator("awg", Bench(seed=3))


def block(payload: bytes) -> bytes:
    length = str(len(payload)).encode()
    return b"#" + str(len(length)).encode() + length + payload


def play(emu: Keysight33500BEmulator, name: str, srate: float, vpp: float, offset: float) -> None:
    send(emu, f"SOUR1:FUNC:ARB {name};:SOUR1:FUNC ARB;:SOUR1:FUNC:ARB:SRAT {srate!r}")
    send(emu, f"SOUR1:VOLT {vpp!r};:SOUR1:VOLT:OFFS {offset!r};:OUTP1 ON")


def sample_centres(emu: Keysight33500BEmulator, n: int, srate: float) -> FloatArray:
    """Bench times at the middle of the first ``n`` samples after the playback origin."""
    return emu.playback[1].origin_s + (np.arange(n, dtype=np.float64) + 0.5) / srate


# --------------------------------------------------------------------------- profile and reset


def test_profile_loads_in_pyvisa_sim_and_matches_identity() -> None:
    pyvisa = pytest.importorskip("pyvisa")
    rm = pyvisa.ResourceManager(f"{PROFILE}@sim")
    try:
        res = rm.open_resource(
            "TCPIP0::127.0.0.1::5025::SOCKET", read_termination="\n", write_termination="\n"
        )
        assert res.query("*IDN?") == IDN
        assert res.query("SOUR1:FUNC:ARB?") == f'"{BUILTIN_ARB}"'
    finally:
        rm.close()


def test_every_profile_default_is_the_emulator_reset_state(awg: Keysight33500BEmulator) -> None:
    device = profile_device(PROFILE, "keysight_33522b")
    send(awg, "SOUR2:VOLT 3;:OUTP1 ON;:FORM:BORD SWAP;:TRIG2:SOUR BUS")
    send(awg, "*RST")
    for name, prop in device["properties"].items():
        expected = profile_reply(prop, prop["default"])
        assert ask(awg, prop["getter"]["q"]) == expected, name
    for dialogue in device["dialogues"]:
        reply = ask(awg, dialogue["q"])
        assert reply == dialogue.get("r", ""), dialogue["q"]
    assert error_codes(awg) == []


def test_profile_limits_round_trip_on_the_emulator(awg: Keysight33500BEmulator) -> None:
    """Each settable profile property accepts its spec's extremes / valid values and reports
    them as pyvisa-sim would."""
    for name, prop in profile_device(PROFILE, "keysight_33522b")["properties"].items():
        if "setter" not in prop:
            continue
        specs = prop["specs"]
        values = list(specs.get("valid", [])) or [specs["min"], specs["max"]]
        for value in values:
            send(awg, "*RST")
            send(awg, prop["setter"]["q"].replace("{:d}", "{}").replace("{:s}", "{}").format(value))
            assert ask(awg, prop["getter"]["q"]) == profile_reply(prop, value), (name, value)
            assert error_codes(awg) == [], (name, value)


def test_reset_keeps_arbs_and_error_queue(awg: Keysight33500BEmulator) -> None:
    send(awg, "SOUR1:DATA:ARB:DAC KEEPME,0,1,2,3,4,5,6,7")
    send(awg, "SOUR1:BOGUS 1")
    send(awg, "*RST")
    assert ask(awg, "SOUR1:DATA:VOL:CAT?") == f'"{BUILTIN_ARB}","KEEPME"'
    assert error_codes(awg) == [-113]


def test_short_long_lowercase_and_omitted_suffix_forms(awg: Keysight33500BEmulator) -> None:
    send(awg, "source1:frequency 2.5e3")
    assert ask(awg, "FREQ?") == "+2.500000000000000E+03"
    send(awg, ":SOURce2:FUNCtion SQUare;FUNCtion:SQUare:DCYCle 20")
    assert ask(awg, "SOUR2:FUNC?;FUNC:SQU:DCYC?") == "SQU;+2.000000000000000E+01"
    send(awg, "OUTPut2:LOAD INFinity")
    assert ask(awg, "OUTP2:LOAD?") == "9.9E+37"
    assert ask(awg, "SOUR3:FREQ?") == ""
    assert error_codes(awg) == [-114]


# --------------------------------------------------------------------------- amplitude rules


def test_out_of_range_amplitude_is_clamped_and_reported(awg: Keysight33500BEmulator) -> None:
    send(awg, "SOUR1:VOLT 12")
    assert float(ask(awg, "SOUR1:VOLT?")) == 10.0
    assert ask(awg, "SYST:ERR?") == '-222,"Data out of range;value clipped to upper limit"'
    send(awg, "SOUR1:VOLT 1;:SOUR1:VOLT:OFFS 6")
    assert float(ask(awg, "SOUR1:VOLT:OFFS?")) == pytest.approx(4.5)  # |offset| + Vpp/2 <= 5 V
    send(awg, "SOUR1:VOLT 0.0001")
    assert float(ask(awg, "SOUR1:VOLT?")) == pytest.approx(1e-3)
    assert error_codes(awg) == [-222, -222]


def test_load_rescales_displayed_levels_and_limits(awg: Keysight33500BEmulator) -> None:
    send(awg, "SOUR1:VOLT 2;:SOUR1:VOLT:OFFS 0.5;:OUTP1:LOAD INF")
    assert float(ask(awg, "SOUR1:VOLT?")) == pytest.approx(4.0)
    assert float(ask(awg, "SOUR1:VOLT:OFFS?")) == pytest.approx(1.0)
    send(awg, "SOUR1:VOLT:OFFS 0;:SOUR1:VOLT 20")  # 20 Vpp is legal into high impedance
    assert float(ask(awg, "SOUR1:VOLT?")) == pytest.approx(20.0)
    send(awg, "SOUR1:VOLT:UNIT DBM")
    assert error_codes(awg) == [-221]


def test_high_and_low_levels_set_amplitude_and_offset(awg: Keysight33500BEmulator) -> None:
    send(awg, "SOUR1:VOLT:HIGH 2;:SOUR1:VOLT:LOW -1")
    assert float(ask(awg, "SOUR1:VOLT?")) == pytest.approx(3.0)
    assert float(ask(awg, "SOUR1:VOLT:OFFS?")) == pytest.approx(0.5)
    send(awg, "SOUR1:VOLT:UNIT VRMS")
    assert float(ask(awg, "SOUR1:VOLT?")) == pytest.approx(3.0 / (2 * math.sqrt(2)))


# --------------------------------------------------------------------------- arb memory


@pytest.mark.parametrize("order", ["NORM", "SWAP"])
def test_float32_block_upload_plays_back_in_volts(awg: Keysight33500BEmulator, order: str) -> None:
    samples = np.linspace(-1.0, 1.0, 64).astype(np.float32)
    dtype = ">f4" if order == "NORM" else "<f4"
    send(awg, f"FORM:BORD {order}")
    send(awg, b"SOUR1:DATA:ARB RAMP64," + block(samples.astype(dtype).tobytes()))
    play(awg, "ramp64", 1e4, 2.0, 0.25)
    assert error_codes(awg) == []
    assert ask(awg, "SOUR1:FUNC:ARB?;:SOUR1:FUNC:ARB:POIN?") == '"RAMP64";+64'
    t = sample_centres(awg, 128, 1e4)
    expected = 0.25 + 1.0 * np.tile(samples.astype(float), 2)
    np.testing.assert_allclose(awg.output("ch1", t), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("order", ["NORM", "SWAP"])
def test_int16_block_upload_both_byte_orders(awg: Keysight33500BEmulator, order: str) -> None:
    codes = np.array([0, 32767, -32767, 16384, -16384, 1, -1, 8192, 300, -300], dtype=np.int16)
    dtype = ">i2" if order == "NORM" else "<i2"
    send(awg, f"FORM:BORD {order}")
    send(awg, b"SOUR1:DATA:ARB:DAC CODES," + block(codes.astype(dtype).tobytes()))
    play(awg, "CODES", 1e6, 4.0, -0.5)
    t = sample_centres(awg, codes.size, 1e6)
    np.testing.assert_allclose(awg.output("ch1", t), -0.5 + 2.0 * codes / 32767, atol=1e-12)


def test_ascii_uploads_float_and_dac(awg: Keysight33500BEmulator) -> None:
    values = [0.0, 0.5, 1.0, -1.0, -0.5, 0.25, 0.75, -0.25]
    send(awg, "SOUR1:DATA:ARB asc, " + ", ".join(str(v) for v in values))  # PyMeasure's form
    send(awg, "SOUR1:DATA:ARB:DAC ascdac, " + ", ".join(str(int(v * 32767)) for v in values))
    play(awg, "ASC", 1e3, 1.0, 0.0)
    t = sample_centres(awg, 8, 1e3)
    np.testing.assert_allclose(awg.output("ch1", t), 0.5 * np.array(values), atol=1e-12)
    send(awg, "SOUR1:FUNC:ARB ASCDAC")
    t = sample_centres(awg, 8, 1e3)
    np.testing.assert_allclose(awg.output("ch1", t), 0.5 * np.array(values), atol=1e-4)
    assert error_codes(awg) == []


def test_arb_name_length_value_and_memory_errors(awg: Keysight33500BEmulator) -> None:
    eight = ",".join(["0"] * 8)
    send(awg, f"SOUR1:DATA:ARB:DAC ABCDEFGHIJKLM,{eight}")  # 13 characters
    send(awg, f"SOUR1:DATA:ARB:DAC 9LIVES,{eight}")
    send(awg, f"SOUR1:DATA:ARB:DAC GOOD_1,{eight}")
    send(awg, f"SOUR1:DATA:ARB:DAC good_1,{eight}")  # same name, stored upper-case
    send(awg, "SOUR1:DATA:ARB:DAC SHORT,1,2,3,4,5,6,7")  # 7 points
    send(awg, "SOUR1:DATA:ARB OVER,0,0,0,0,0,0,0,1.5")
    send(awg, b"SOUR1:DATA:ARB:DAC ODD," + block(b"\x00" * 17))
    send(awg, "SOUR1:FUNC:ARB NOSUCH")
    assert error_codes(awg) == [-224, -224, -221, -224, -222, -161, -256]
    assert ask(awg, "SOUR1:DATA:VOL:CAT?") == f'"{BUILTIN_ARB}","GOOD_1"'
    assert ask(awg, "SOUR2:DATA:VOL:CAT?") == f'"{BUILTIN_ARB}"'  # memory is per channel
    too_many = np.zeros(1_000_001, dtype=np.int16).tobytes()
    send(awg, b"SOUR1:DATA:ARB:DAC HUGE," + block(too_many))
    assert error_codes(awg) == [-224]


def test_volatile_memory_accounting_and_clear(awg: Keysight33500BEmulator) -> None:
    free0 = int(ask(awg, "SOUR1:DATA:VOL:FREE?"))
    send(awg, "SOUR1:DATA:ARB:DAC A1," + ",".join(["5"] * 130))
    assert free0 - int(ask(awg, "SOUR1:DATA:VOL:FREE?")) == 256  # 128-point blocks
    assert ask(awg, "SOUR1:DATA:ATTR:POIN? A1") == "+130"
    send(awg, "SOUR1:FUNC:ARB A1")
    send(awg, "SOUR1:DATA:VOL:CLE")
    assert int(ask(awg, "SOUR1:DATA:VOL:FREE?")) == free0
    assert ask(awg, "SOUR1:FUNC:ARB?") == f'"{BUILTIN_ARB}"'
    big = np.zeros(1_000_000, dtype=np.int16).tobytes()
    send(awg, b"SOUR1:DATA:ARB:DAC BIG," + block(big))
    send(awg, b"SOUR1:DATA:ARB:DAC BIG2," + block(big))
    assert error_codes(awg) == [-225]


# --------------------------------------------------------------------------- playback physics


def test_output_off_is_zero_and_sine_follows_the_formula(awg: Keysight33500BEmulator) -> None:
    send(awg, "SOUR1:FREQ 1000;:SOUR1:VOLT 2;:SOUR1:VOLT:OFFS 0.1;:SOUR1:PHAS 90")
    t = np.linspace(0.0, 2e-3, 101)
    assert np.all(awg.output("ch1", t) == 0.0)
    send(awg, "OUTP1 ON")
    t = awg.playback[1].origin_s + np.linspace(0.0, 2e-3, 101)
    expected = 0.1 + np.sin(2 * np.pi * (1000 * (t - awg.playback[1].origin_s) + 0.25))
    np.testing.assert_allclose(awg.output("ch1", t), expected, atol=1e-12)
    send(awg, "OUTP1:POL INV")
    np.testing.assert_allclose(awg.output("ch1", t), 0.2 - expected, atol=1e-12)


def test_bus_triggered_burst_plays_ncycles_fires_sync_and_opc_waits() -> None:
    bench = Bench()
    awg = Keysight33500BEmulator("awg", bench)
    rec = bench.add(TriggerRecorder())
    bench.connect("rec.in", "awg.sync")
    data = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, -1.0])
    send(awg, "SOUR1:DATA:ARB W," + ",".join(str(float(v)) for v in data))
    play(awg, "W", 1e3, 2.0, 0.0)  # 8 ms per cycle
    send(awg, "SOUR1:BURS:MODE TRIG;:SOUR1:BURS:NCYC 2;:TRIG1:SOUR BUS;:SOUR1:BURS:STAT ON")
    bench.clock.advance(0.5)
    t_trg = bench.clock.now
    assert awg.output("ch1", np.array([t_trg - 0.1]))[0] == pytest.approx(0.1)  # idles at sample 0
    assert ask(awg, "*TRG;*OPC?") == "1"
    assert isinstance(rec, TriggerRecorder)
    assert rec.events == [("in", t_trg)]
    assert bench.clock.now == pytest.approx(t_trg + 0.016)
    t = t_trg + (np.arange(20, dtype=np.float64) + 0.5) / 1e3
    expected = np.concatenate([data, data, np.full(4, data[0])])
    np.testing.assert_allclose(awg.output("ch1", t), expected, atol=1e-12)
    sync = awg.output("sync", t)
    assert np.all(sync[:16] > 3.0) and np.all(sync[16:] == 0.0)


def test_triggers_from_other_sources_and_delay(awg: Keysight33500BEmulator) -> None:
    send(awg, "SOUR1:FUNC SQU;:SOUR1:BURS:STAT ON;:SOUR1:BURS:NCYC 1;:OUTP1 ON")
    send(awg, "*TRG")  # source IMMediate: *TRG is not for this channel
    assert awg.playback[1].burst_starts == []
    send(awg, "TRIG1:SOUR EXT;:TRIG1:DEL 0.002")
    awg.on_trigger("ext", 1.0)
    send(awg, "TRIG1")
    assert awg.playback[1].burst_starts == [pytest.approx(0.002), pytest.approx(1.002)]


# --------------------------------------------------------------------------- third-party driver


def test_pymeasure_agilent33500_driver_against_the_emulator() -> None:
    from pymeasure.instruments.agilent import Agilent33500

    bench = Bench()
    awg = Keysight33500BEmulator("awg", bench)
    lib = inprocess.make_visa_library({"awg": awg})
    gen = Agilent33500(
        inprocess.resource_name("awg"),
        visa_library=lib,
        read_termination="\n",
        write_termination="\n",
    )
    try:
        assert "Agilent Technologies" in gen.id
        ch = gen.ch_1
        ch.shape = "SQU"
        ch.frequency = 1234.5
        ch.amplitude = 2.0
        ch.offset = 0.5
        ch.output_load = "INF"
        assert (ch.shape, ch.frequency, ch.output_load) == ("SQU", 1234.5, 9.9e37)
        # the displayed levels follow the load: double into high impedance
        assert ch.amplitude == pytest.approx(4.0) and ch.offset == pytest.approx(1.0)
        ch.data_volatile_clear()
        ch.data_arb("test", range(-10000, 10000, 2000), data_format="DAC")
        ch.arb_file = "test"
        ch.shape = "ARB"
        ch.arb_srate = 1e6
        assert ch.arb_file == '"TEST"'  # quoted, upper-case
        assert gen.ch_2.burst_mode == "TRIG"
        ch.burst_state = True
        ch.burst_ncycles = 3
        gen.trigger_source = "BUS"
        ch.output = True
        gen.trigger()
        gen.check_errors()
        assert awg.playback[1].burst_starts == [pytest.approx(bench.clock.now - 30e-6)]
    finally:
        gen.adapter.close()


def test_held_grid_states_where_the_output_is_constant() -> None:
    bench = Bench()
    awg = Keysight33500BEmulator("awg", bench)
    data = np.random.default_rng(0).uniform(-1.0, 1.0, 64)
    send(awg, "SOUR1:DATA:ARB W," + ",".join(f"{v:.6f}" for v in data))
    play(awg, "W", 1e6, 2.0, 0.1)
    send(awg, "SOUR1:PHAS 37")
    rng = np.random.default_rng(1)

    def check(t0: float, t1: float) -> None:
        grid = awg.held_grid("ch1", t0, t1)
        assert grid is not None
        edge, rate = grid
        t = rng.uniform(t0, t1, 4000)
        mid = edge + (np.floor((t - edge) * rate) + 0.5) / rate
        np.testing.assert_array_equal(awg.output("ch1", t), awg.output("ch1", mid))

    check(0.0, 2e-4)  # continuous, with a phase offset
    send(awg, "SOUR1:BURS:MODE TRIG;:SOUR1:BURS:NCYC 2;:TRIG1:SOUR BUS;:SOUR1:BURS:STAT ON")
    send(awg, "SOUR1:BURS:PHAS 90")
    check(0.0, 1e-3)  # never triggered: idle
    bench.clock.advance(1e-3)
    t_trg = bench.clock.now
    send(awg, "*TRG")
    check(t_trg - 3e-4, t_trg + 3e-4)  # one burst in the span
    bench.clock.advance(5e-5)
    send(awg, "*TRG")  # a second burst while the first plays: two grids
    assert awg.held_grid("ch1", t_trg - 1e-5, t_trg + 3e-4) is None
    send(awg, "SOUR1:FUNC SIN")
    assert awg.held_grid("ch1", 0.0, 1e-3) is None
