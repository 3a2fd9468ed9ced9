"""PyMeasure's own drivers for the emulated models work, unchanged, against the bench over TCP.

The emulators speak the real instruments' command sets, so a driver somebody else wrote for the
hardware must work on the simulator too: PyMeasure's ``Agilent33500`` (the 33500 family, our
33522B), ``KeysightDSOX1102G`` (an InfiniiVision X-series, same ``:WAVeform`` subsystem as the
DSOX3024T) and ``SR860``. They reach a :class:`~labrig.sim.tcp.BenchServer` on an ephemeral port
through pyvisa-py, the way they reach a LAN instrument.

Bench wiring: AWG channel 1 -> scope channel 1 (an arb uploaded with PyMeasure's own ASCII method
is digitised with PyMeasure's own waveform method); AWG channel 2 (a sine) -> lock-in input.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from pymeasure.instruments.agilent import Agilent33500
from pymeasure.instruments.keysight import KeysightDSOX1102G
from pymeasure.instruments.srs import SR860
from sim_contract import leftover_bench_threads

from labrig.sim.bench import Bench
from labrig.sim.keysight_33500b import Keysight33500BEmulator
from labrig.sim.keysight_infiniivision import InfiniiVisionEmulator
from labrig.sim.srs_sr860 import SR860Emulator
from labrig.sim.tcp import BenchServer

# PyMeasure's DSOX1102G class does not say whether the model speaks SCPI; it warns on every use.
pytestmark = pytest.mark.filterwarnings("ignore:It is not known whether this device:FutureWarning")

# A raw socket has no end-of-message signal: every client of a LAN instrument's socket port names
# the line feed that ends a message (PyMeasure's own docs do too).
SOCKET = {"read_termination": "\n", "write_termination": "\n"}

# A ramp of DAC codes; at 2 Vpp and 0 V offset code c plays as c / 32767 V.
RAMP_CODES = list(range(-12000, 12000, 750))


@dataclass
class Served:
    bench: Bench
    server: BenchServer

    def resource(self, name: str) -> str:
        return self.server.resources()[name]


@pytest.fixture
def served() -> Iterator[Served]:
    bench = Bench(wiring={"scope.ch1": "awg.ch1", "lockin.in": "awg.ch2"}, seed=3)
    emulators = {
        "awg": Keysight33500BEmulator("awg", bench),
        "scope": InfiniiVisionEmulator("scope", bench, noise_divisions=0.0),
        "lockin": SR860Emulator("lockin", bench),
    }
    with BenchServer(emulators) as server:
        yield Served(bench, server)
    leftover = leftover_bench_threads()
    assert not leftover, leftover


@pytest.fixture
def generator(served: Served) -> Iterator[Agilent33500]:
    gen = Agilent33500(served.resource("awg"), visa_library="@py", **SOCKET)
    yield gen
    gen.adapter.close()


@pytest.fixture
def scope(served: Served) -> Iterator[KeysightDSOX1102G]:
    dso = KeysightDSOX1102G(served.resource("scope"), visa_library="@py", **SOCKET)
    yield dso
    dso.adapter.close()


@pytest.fixture
def lockin(served: Served) -> Iterator[SR860]:
    lia = SR860(served.resource("lockin"), visa_library="@py", **SOCKET)
    yield lia
    lia.adapter.close()


def settle(served: Served, lockin: SR860, seconds: float = 1.0) -> None:
    """Let ``seconds`` of bench time pass once the lock-in has taken every setting.

    Writes over TCP are not acknowledged: a query's reply is what proves the server has run the
    writes before it. Only then may bench time move, or it would move under the old settings.
    """
    assert int(lockin.ask("*ESR?")) & 0b110000 == 0  # no command or execution error
    with served.bench.lock:
        served.bench.clock.advance(seconds)  # 100 time constants of 10 ms: settled


def test_agilent33500_properties_round_trip(generator: Agilent33500) -> None:
    assert "33522B" in generator.id
    ch1, ch2 = generator.ch_1, generator.ch_2
    ch1.shape = "SQU"
    ch1.frequency = 12345.0
    ch1.amplitude = 1.25
    ch1.offset = -0.2
    ch1.square_dutycycle = 30.0
    ch2.shape = "SIN"
    ch2.frequency = 2500.0
    ch2.phase = 45.0
    assert ch1.shape == "SQU"
    assert ch1.frequency == pytest.approx(12345.0)
    assert ch1.amplitude == pytest.approx(1.25)
    assert ch1.offset == pytest.approx(-0.2)
    assert ch1.square_dutycycle == pytest.approx(30.0)
    assert ch2.shape == "SIN"
    assert ch2.frequency == pytest.approx(2500.0)
    assert ch2.phase == pytest.approx(45.0)
    assert ch1.frequency != ch2.frequency  # the channels really are separate
    ch1.output = True
    assert ch1.output is True
    ch1.output = False
    assert ch1.output is False
    assert generator.check_errors() == []


def test_agilent33500_reports_the_instruments_range_error(generator: Agilent33500) -> None:
    generator.write("SOUR1:FREQ 1e12")  # PyMeasure's validator would clip; the raw write does not
    errors = generator.check_errors()
    assert errors and errors[0][0] == -222


def test_ascii_arb_from_pymeasure_is_played_and_digitised_by_pymeasure(
    served: Served, generator: Agilent33500, scope: KeysightDSOX1102G
) -> None:
    ch1 = generator.ch_1
    ch1.data_volatile_clear()
    ch1.data_arb("LABRAMP", RAMP_CODES, data_format="DAC")  # comma-separated ASCII codes
    ch1.shape = "ARB"
    ch1.arb_file = "LABRAMP"
    ch1.arb_srate = 1e6  # 32 samples: a 32 us period
    ch1.amplitude = 2.0
    ch1.offset = 0.0
    ch1.output = True
    assert generator.check_errors() == []
    assert ch1.arb_file.strip('"') == "LABRAMP"
    assert int(generator.ask("SOUR1:FUNC:ARB:POIN?")) == len(RAMP_CODES)

    scope.timebase_scale = 1e-5  # 100 us on screen: three periods of the ramp
    scope.ch1.scale = 0.1
    scope.ch1.offset = 0.0
    assert scope.timebase_scale == pytest.approx(1e-5)
    assert scope.ch1.scale == pytest.approx(0.1)
    assert scope.timebase["MAIN:RANG"] == pytest.approx(1e-4)
    scope.acquisition_type = "normal"
    assert scope.ask(":SYST:ERR?").startswith(("+0", "0"))  # the reply: all set before time moves
    with served.bench.lock:
        served.bench.clock.advance(1e-3)  # a record from long after the output came on
    scope.digitize("channel1")
    scope.ask("*OPC?")
    data, preamble = scope.download_data(source="channel1", points=1000)

    assert preamble["points"] == 1000 == data.size
    assert preamble["xincrement"] == pytest.approx(1e-7)
    volts = np.asarray(data, dtype=float)
    levels = np.array(RAMP_CODES) / 32767.0
    # every sample is one of the arb's levels (to the 10-bit ADC step of 0.8 mV) ...
    nearest = np.min(np.abs(volts[:, None] - levels[None, :]), axis=1)
    assert nearest.max() < 1e-3
    # ... and the record runs through all of them (three ramps on screen)
    assert volts.min() == pytest.approx(levels.min(), abs=1e-3)
    assert volts.max() == pytest.approx(levels.max(), abs=1e-3)
    assert len(np.unique(np.round(volts, 3))) >= len(RAMP_CODES) - 1


def test_scope_properties_round_trip(scope: KeysightDSOX1102G) -> None:
    assert "DSO-X 3024T" in scope.id
    scope.timebase_mode = "main"
    scope.timebase_offset = 2e-6
    scope.timebase_range = 2e-3
    scope.acquisition_type = "average"
    scope.waveform_points_mode = "raw"
    scope.waveform_format = "word"
    scope.waveform_source = "channel2"
    scope.ch2.coupling = "ac"
    scope.ch2.range = 4.0
    assert scope.timebase_mode == "main"
    assert scope.timebase_offset == pytest.approx(2e-6)
    assert scope.timebase_range == pytest.approx(2e-3)
    assert scope.timebase_scale == pytest.approx(2e-4)
    assert scope.acquisition_type == "average"
    assert scope.waveform_points_mode == "raw"
    assert scope.waveform_format == "word"
    assert scope.waveform_source == "channel2"
    assert scope.ch2.coupling == "ac"
    assert scope.ch2.scale == pytest.approx(0.5)  # range / 8 divisions
    assert scope.ask(":SYST:ERR?").startswith(("+0", "0"))


def test_sr860_properties_round_trip(lockin: SR860) -> None:
    assert "SR860" in lockin.ask("*IDN?")  # PyMeasure's SR860 has no SCPI ``id``
    lockin.frequency = 1234.5
    lockin.phase = 12.5
    lockin.harmonic = 2
    lockin.sine_voltage = 0.25
    lockin.time_constant = 0.03
    lockin.sensitivity = 0.2
    lockin.filter_slope = 2
    lockin.input_coupling = "DC"
    assert lockin.frequency == pytest.approx(1234.5)
    assert lockin.phase == pytest.approx(12.5)
    assert lockin.harmonic == 2
    assert lockin.sine_voltage == pytest.approx(0.25)
    assert lockin.time_constant == pytest.approx(0.03)
    assert lockin.sensitivity == pytest.approx(0.2)
    assert lockin.filter_slope == 2
    assert lockin.input_coupling == "DC"
    assert lockin.reference_source == "INT"
    lockin.reference_source = "EXT"
    assert lockin.reference_source == "EXT"
    # FREQ? now answers the external reference's frequency, and nothing is wired to ``ref``
    assert lockin.frequency == 0.0
    assert int(lockin.ask("*ESR?")) & 0b110000 == 0  # no command or execution error


def test_sr860_reads_the_sine_wired_into_it(
    served: Served, generator: Agilent33500, lockin: SR860
) -> None:
    ch2 = generator.ch_2
    ch2.shape = "SIN"
    ch2.frequency = 1000.0
    ch2.amplitude = 1.0  # Vpp: 0.5 V peak, 0.3536 V rms
    ch2.offset = 0.0
    ch2.output = True
    assert generator.check_errors() == []

    lockin.reference_source = "INT"
    lockin.frequency = 1000.0
    lockin.harmonic = 1
    lockin.time_constant = 0.01
    lockin.filter_slope = 3
    lockin.sensitivity = 1.0
    lockin.input_coupling = "AC"
    settle(served, lockin)
    x, y, r = lockin.snap("X", "Y", "R")
    rms = 0.5 / math.sqrt(2.0)
    assert r == pytest.approx(rms, rel=0.02)
    assert math.hypot(x, y) == pytest.approx(r, rel=1e-3)
    assert lockin.magnitude == pytest.approx(rms, rel=0.02)

    # off the signal's frequency there is (almost) nothing
    lockin.frequency = 1370.0
    settle(served, lockin)
    assert lockin.magnitude < 0.02 * rms
