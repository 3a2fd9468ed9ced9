"""SR860 output-channel settings (COUT CEXP COFA COFP CRAT OAUT) and the IEEE 488.2 bit forms
of its status registers (``*ESR? n``, ``*STB? n``, ``*ESE n,b``, ``*SRE n,b``, ``ERRE n,b``)."""

from __future__ import annotations

import pytest

from labrig.sim.bench import Bench
from labrig.sim.srs_sr860 import SR860Emulator


def ask(emu: SR860Emulator, command: str) -> str:
    return emu.feed(command.encode() + b"\n").decode().strip()


@pytest.fixture
def lockin() -> SR860Emulator:
    return SR860Emulator("lockin", Bench())


def test_output_channel_settings_round_trip_by_index_and_keyword(lockin: SR860Emulator) -> None:
    lockin.feed(b"COUT 1,1;COUT OCH1,XY\n")
    assert (ask(lockin, "COUT? 0"), ask(lockin, "COUT? OCH2")) == ("0", "1")
    lockin.feed(b"CEXP 0,2;CEXP Y,X10;CEXP 2,0\n")
    assert [ask(lockin, f"CEXP? {i}") for i in "XYR"] == ["2", "1", "0"]
    lockin.feed(b"COFA X,ON;COFP 0,12.5;COFP R,-999.99;CRAT 1,1\n")
    assert ask(lockin, "COFA? 0") == "1"
    assert float(ask(lockin, "COFP? 0")) == 12.5
    assert float(ask(lockin, "COFP? 2")) == -999.99
    assert ask(lockin, "CRAT? Y") == "1"
    assert ask(lockin, "*ESR?") == "0"  # all accepted


@pytest.mark.parametrize(
    "bad", ["COFP 0,1000", "CEXP 3,0", "CEXP 0,3", "COUT 2,0", "CRAT 0,2", "COFP 0"]
)
def test_output_settings_refuse_bad_values_with_exe(lockin: SR860Emulator, bad: str) -> None:
    before = [ask(lockin, f"COFP? {i}") for i in range(3)]
    assert lockin.feed(bad.encode() + b"\n") == b""
    # a bad value is EXE (bit 4); a missing one is a command error, CMD (bit 5)
    assert int(ask(lockin, "*ESR?")) == (32 if bad == "COFP 0" else 16)
    assert [ask(lockin, f"COFP? {i}") for i in range(3)] == before


def test_output_settings_reset_with_rst(lockin: SR860Emulator) -> None:
    lockin.feed(b"CEXP 0,2;COFA 1,1;COFP 1,5;CRAT 2,1;COUT 1,1\n*RST\n")
    assert ask(lockin, "CEXP? 0;COFA? 1;COFP? 1;CRAT? 2;COUT? 1") == "0;0;0;0;0"


def test_auto_offset_zeroes_the_reading_in_percent_of_full_scale(lockin: SR860Emulator) -> None:
    lockin.feed(b"OAUT 0\n")
    assert ask(lockin, "COFA? 0") == "1"
    assert float(ask(lockin, "COFP? 0")) == 0.0  # nothing on the input: X is 0


def test_esr_bit_form_reads_and_clears_one_bit(lockin: SR860Emulator) -> None:
    lockin.feed(b"NOSUCH\nFREQ -5\n")  # CME (bit 5) and EXE (bit 4)
    assert ask(lockin, "*ESR? 5") == "1"
    assert ask(lockin, "*ESR? 5") == "0"  # that bit was cleared ...
    assert ask(lockin, "*ESR? 4") == "1"  # ... and only that one
    lockin.feed(b"NOSUCH\n")
    assert ask(lockin, "*ESR?") == "32"
    assert ask(lockin, "*ESR?") == "0"


def test_enable_registers_bit_forms(lockin: SR860Emulator) -> None:
    lockin.feed(b"*ESE 4,1;*ESE 5,1\n")
    assert ask(lockin, "*ESE?") == "48"
    assert (ask(lockin, "*ESE? 4"), ask(lockin, "*ESE? 0")) == ("1", "0")
    lockin.feed(b"*ESE 4,0\n")
    assert ask(lockin, "*ESE?") == "32"
    lockin.feed(b"*SRE 5,1;*SRE 6,1\n")  # bit 6 (MSS) cannot be enabled
    assert ask(lockin, "*SRE?") == "32"
    assert ask(lockin, "*SRE? 5") == "1"
    lockin.feed(b"ERRE 3,1;ERRE 0,1\n")
    assert ask(lockin, "ERRE?") == "9"
    assert (ask(lockin, "ERRE? 3"), ask(lockin, "ERRE? 1")) == ("1", "0")
    lockin.feed(b"ERRE 200\n")
    assert ask(lockin, "ERRE?") == "200"
    assert ask(lockin, "*ESR?") == "0"
    for bad in ("*ESE 8,1", "*SRE 1,2", "ERRE 256", "ERRE? 8"):
        lockin.feed(bad.encode() + b"\n")
        assert int(ask(lockin, "*ESR?")) & (1 << 4), bad


def test_stb_bit_form_follows_the_enabled_event_bits(lockin: SR860Emulator) -> None:
    lockin.feed(b"*ESE 32;*SRE 32\nNOSUCH\n")
    assert ask(lockin, "*STB? 5") == "1"  # ESB: an enabled *ESR bit is set
    assert ask(lockin, "*STB? 6") == "1"  # MSS: ESB is enabled for service requests
    assert ask(lockin, "*STB? 5") == "1"  # reading the status byte clears nothing
    assert int(ask(lockin, "*STB?")) & 0b1100000 == 0b1100000
    ask(lockin, "*ESR?")
    assert ask(lockin, "*STB? 5") == "0"
