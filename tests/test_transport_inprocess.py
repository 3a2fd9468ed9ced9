"""The in-process PyVISA backend, through PyVISA and through PyMeasure."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import pyvisa
from pymeasure.instruments import Instrument, SCPIMixin
from pymeasure.instruments.validators import strict_range
from pyvisa.constants import StatusCode
from pyvisa.errors import VisaIOError
from pyvisa.resources import MessageBasedResource
from sim_contract import ToyEmulator

from labrig.sim.bench import Bench, Fault
from labrig.sim.inprocess import (
    InProcessVisaLibrary,
    make_resource_manager,
    make_visa_library,
    resource_name,
)

IDN = "labrig,TOY1,0001,1.0"


@pytest.fixture
def bench() -> Bench:
    return Bench()


@pytest.fixture
def toy(bench: Bench) -> ToyEmulator:
    return ToyEmulator("toy", bench)


@pytest.fixture
def rm_and_names(
    toy: ToyEmulator, bench: Bench
) -> Iterator[tuple[pyvisa.ResourceManager, dict[str, str]]]:
    rm, names = make_resource_manager({"toy": toy, "toy2": ToyEmulator("toy2", bench)})
    yield rm, names
    rm.close()


def open_toy(
    rm_and_names: tuple[pyvisa.ResourceManager, dict[str, str]], name: str = "toy"
) -> MessageBasedResource:
    rm, names = rm_and_names
    res = rm.open_resource(names[name], read_termination="\n", write_termination="\n", timeout=500)
    assert isinstance(res, MessageBasedResource)
    return res


def test_resource_names_and_listing(
    rm_and_names: tuple[pyvisa.ResourceManager, dict[str, str]],
) -> None:
    rm, names = rm_and_names
    assert names == {"toy": resource_name("toy"), "toy2": resource_name("toy2")}
    assert names["toy"] == "TCPIP0::toy.labrig::5025::SOCKET"
    assert set(rm.list_resources("?*")) == set(names.values())
    assert rm.list_resources("?*::INSTR") == ()
    with pytest.raises(VisaIOError):
        rm.open_resource("TCPIP0::nothere.labrig::5025::SOCKET")


def test_identify_write_query(
    rm_and_names: tuple[pyvisa.ResourceManager, dict[str, str]], toy: ToyEmulator
) -> None:
    inst = open_toy(rm_and_names)
    assert inst.query("*IDN?") == IDN
    inst.write("SOUR2:FREQ 5e3;:OUTP2 ON")
    assert toy.freq[1] == 5e3 and toy.outputs[1]
    assert inst.query("SOUR2:FREQ?;:OUTP2?") == "+5.000000000000000E+03;1"
    # the board number may be left out, as in any VISA resource name
    rm, _ = rm_and_names
    again = rm.open_resource("TCPIP::toy.labrig::5025::SOCKET", read_termination="\n")
    assert isinstance(again, MessageBasedResource)
    assert again.query("*IDN?") == IDN
    again.close()
    inst.close()


def test_binary_block_round_trip(
    rm_and_names: tuple[pyvisa.ResourceManager, dict[str, str]],
) -> None:
    inst = open_toy(rm_and_names)
    values = np.random.default_rng(2).standard_normal(200_000).astype(np.float32)
    inst.write_binary_values("DATA:ARB wave,", values, datatype="f")  # type: ignore[arg-type]
    got = inst.query_binary_values("DATA:ARB? wave", datatype="f", container=np.ndarray)
    np.testing.assert_array_equal(got, values)
    assert inst.query("SYST:ERR?") == '+0,"No error"'


def test_query_without_reply_times_out_at_once(
    rm_and_names: tuple[pyvisa.ResourceManager, dict[str, str]],
) -> None:
    inst = open_toy(rm_and_names)
    inst.timeout = 60_000
    start = time.perf_counter()
    with pytest.raises(VisaIOError) as err:
        inst.query("NOSUCH?")
    assert err.value.error_code == StatusCode.error_timeout
    assert time.perf_counter() - start < 1.0
    assert inst.query("SYST:ERR?").startswith("-113,")


def test_clients_have_their_own_input_and_output(
    rm_and_names: tuple[pyvisa.ResourceManager, dict[str, str]],
) -> None:
    a, b = open_toy(rm_and_names), open_toy(rm_and_names)
    a.write_raw(b"SOUR1:FREQ 3")
    b.write("*IDN?")
    a.write_raw(b"3;FREQ?\n")
    assert a.read() == "+3.300000000000000E+01"
    assert b.read() == IDN


def test_clear_discards_pending_output_and_input(
    rm_and_names: tuple[pyvisa.ResourceManager, dict[str, str]],
) -> None:
    inst = open_toy(rm_and_names)
    inst.write("*IDN?")
    inst.write_raw(b"DATA:ARB w,#19abc")  # an unfinished block
    inst.clear()
    assert inst.query("*OPC?") == "1"


def test_serial_poll_reads_the_status_byte(
    rm_and_names: tuple[pyvisa.ResourceManager, dict[str, str]],
) -> None:
    inst = open_toy(rm_and_names)
    assert inst.read_stb() == 0
    inst.write("BOGUS")
    assert inst.read_stb() & 4  # error queue not empty


def test_closing_the_manager_releases_the_library(toy: ToyEmulator) -> None:
    lib = make_visa_library({"toy": toy})
    rm = pyvisa.ResourceManager(lib)
    assert rm.visalib is lib
    rm.close()
    assert lib not in InProcessVisaLibrary._registry.values()


# --------------------------------------------------------------------------- faults


def test_drop_loses_the_connection(
    rm_and_names: tuple[pyvisa.ResourceManager, dict[str, str]], bench: Bench
) -> None:
    inst = open_toy(rm_and_names)
    bench.faults.add(Fault("drop", "toy", at_command=1))
    with pytest.raises(VisaIOError) as err:
        inst.query("*IDN?")
    assert err.value.error_code == StatusCode.error_connection_lost
    with pytest.raises(VisaIOError):
        inst.write("*IDN?")
    assert open_toy(rm_and_names).query("*IDN?") == IDN


def test_delay_within_and_beyond_the_timeout(
    rm_and_names: tuple[pyvisa.ResourceManager, dict[str, str]], bench: Bench
) -> None:
    inst = open_toy(rm_and_names)
    bench.faults.add(Fault("delay", "toy", at_command=1, seconds=0.2))
    start = time.perf_counter()
    assert inst.query("*IDN?") == IDN
    assert time.perf_counter() - start >= 0.2
    bench.faults.add(Fault("delay", "toy", at_command=2, seconds=0.4))
    inst.timeout = 100
    with pytest.raises(VisaIOError) as err:
        inst.query("*IDN?")
    assert err.value.error_code == StatusCode.error_timeout
    time.sleep(0.35)
    assert inst.read() == IDN  # the late reply is still delivered, as on a real link


def test_garble_and_silence(
    rm_and_names: tuple[pyvisa.ResourceManager, dict[str, str]], bench: Bench
) -> None:
    inst = open_toy(rm_and_names)
    bench.faults.add(Fault("garble", "toy", at_command=1))
    bench.faults.add(Fault("silence", "toy", at_command=2))
    with pytest.raises(UnicodeDecodeError):
        inst.query("*IDN?")
    with pytest.raises(VisaIOError) as err:
        inst.query("*IDN?")
    assert err.value.error_code == StatusCode.error_timeout
    assert inst.query("*IDN?") == IDN


# --------------------------------------------------------------------------- PyMeasure


class ToyInstrument(SCPIMixin, Instrument):
    """A PyMeasure driver for the toy emulator, as a labrig driver would be written."""

    def __init__(self, adapter: str, name: str = "Toy", **kwargs: object) -> None:
        super().__init__(adapter, name, read_termination="\n", write_termination="\n", **kwargs)

    frequency = Instrument.control(
        "SOUR1:FREQ?",
        "SOUR1:FREQ %r",
        """Control the channel-1 frequency in Hz (1 mHz to 30 MHz).""",
        validator=strict_range,
        values=(1e-3, 30e6),
    )
    output_enabled = Instrument.control(
        "OUTP1?", "OUTP1 %d", """Control whether output 1 is on.""", cast=int
    )


def test_pymeasure_instrument_with_library_object(toy: ToyEmulator) -> None:
    lib = make_visa_library({"toy": toy})
    inst = ToyInstrument(resource_name("toy"), visa_library=lib)
    try:
        assert inst.id == IDN
        inst.frequency = 1234.5678901234567
        assert inst.frequency == 1234.5678901234567  # repr-precise both ways
        inst.output_enabled = 1
        assert toy.outputs[0]
        assert inst.check_errors() == []
        inst.write("FREQ 1e12")  # bypass the driver's validator: the emulator refuses it
        errors = inst.check_errors()
        assert [int(e[0]) for e in errors] == [-222]
        assert toy.freq[0] == 1234.5678901234567
    finally:
        inst.adapter.close()
        if lib.resource_manager is not None:
            lib.resource_manager.close()
