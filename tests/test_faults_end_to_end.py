"""Every fault the bench can inject is seen by a client that uses the labrig drivers.

The faults are scheduled through the bench's own control endpoint (``BenchClient.add_fault``,
i.e. ``SIM:FAULt:ADD`` over VISA), as a reliability test on a served bench would do, and observed
through the instrument drivers — over TCP (pyvisa-py against a :class:`BenchServer` on an
ephemeral port) and through the in-process backend. The bench is the built-in ``sim-dnpu``
station's, so a ``drift`` fault moves a real device model.

``at_command=1`` means "on the next command the instrument receives": the fault plan fires a
fault once the instrument's command count reaches ``at_command``, and the count already stands
past 1 after the driver has connected.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pytest
from pyvisa.constants import StatusCode
from pyvisa.errors import VisaIOError

from instruments.errors import InstrumentConnectionError, InstrumentReportedError
from instruments.keysight_infiniivision import KeysightInfiniiVision
from instruments.qdevil_qdac2 import QDac2
from instruments.srs_sr860 import SR860
from labrig.sim.assemble import BuiltBench, build_bench
from labrig.sim.control import BenchClient
from labrig.sim.inprocess import make_visa_library
from labrig.sim.tcp import BenchServer
from labrig.station import load_station

T = TypeVar("T")
CONNECTION_ERRORS = (VisaIOError, InstrumentConnectionError, ConnectionError)


@dataclass
class FaultBench:
    """A sim-dnpu bench reachable through one transport, and the drivers opened on it."""

    transport: str
    built: BuiltBench
    resources: dict[str, str]
    visa_library: Any
    opened: list[Any] = field(default_factory=list)

    def open(self, cls: Callable[..., T], name: str, timeout_ms: int = 5000) -> T:
        driver = cls(
            self.resources[name], name=name, visa_library=self.visa_library, timeout=timeout_ms
        )
        self.opened.append(driver)
        return driver

    @property
    def tcp(self) -> bool:
        return self.transport == "tcp"


@pytest.fixture(scope="module")
def dnpu_bench() -> BuiltBench:
    # Built once per module (the DNPU model takes seconds); each test opens its own connections
    # and clears the faults it leaves behind.
    return build_bench(load_station("sim-dnpu"))


@pytest.fixture(params=["tcp", "inprocess"])
def fb(request: pytest.FixtureRequest, dnpu_bench: BuiltBench) -> Iterator[FaultBench]:
    transport = str(request.param)
    if transport == "tcp":
        with BenchServer(dnpu_bench.emulators) as server:
            bench = FaultBench(transport, dnpu_bench, server.resources(), "@py")
            yield bench
            _close(bench)
    else:
        library = make_visa_library(dnpu_bench.emulators)
        bench = FaultBench(transport, dnpu_bench, library.resources(), library)
        yield bench
        _close(bench)
    dnpu_bench.bench.faults.faults.clear()


def _close(bench: FaultBench) -> None:
    for driver in bench.opened:
        # a dropped connection may refuse to close cleanly
        with contextlib.suppress(Exception):
            driver.adapter.close()


@pytest.fixture
def control(fb: FaultBench) -> BenchClient:
    return fb.open(BenchClient, "bench")


def test_drop_is_a_connection_error(fb: FaultBench, control: BenchClient) -> None:
    dac = fb.open(QDac2, "dac", timeout_ms=1000)
    assert "QDAC-II" in dac.identity
    control.add_fault("drop", "dac", at_command=1)
    with pytest.raises(CONNECTION_ERRORS):
        dac.get_voltage(1)
    with pytest.raises(CONNECTION_ERRORS):  # the connection stays lost
        dac.get_voltage(1)
    # a new connection to the same instrument works: only that client was dropped
    assert fb.open(QDac2, "dac").get_voltage(1) == pytest.approx(0.0)
    assert int(control.ask("SIM:FAUL:COUN?")) == 0


def test_delay_makes_the_reply_late_or_a_timeout(fb: FaultBench, control: BenchClient) -> None:
    dac = fb.open(QDac2, "dac", timeout_ms=5000)
    dac.get_voltage(1)
    control.add_fault("delay", "dac", at_command=1, value=0.3)
    started = time.monotonic()
    assert dac.get_voltage(1) == pytest.approx(0.0)  # the right reply ...
    assert time.monotonic() - started >= 0.3  # ... late
    started = time.monotonic()
    dac.get_voltage(1)
    assert time.monotonic() - started < 0.25  # once only

    impatient = fb.open(QDac2, "dac", timeout_ms=200)
    control.add_fault("delay", "dac", at_command=1, value=1.0)
    with pytest.raises(VisaIOError) as info:
        impatient.get_voltage(1)
    assert info.value.error_code == StatusCode.error_timeout


def test_garble_raises_instead_of_giving_a_wrong_number(
    fb: FaultBench, control: BenchClient
) -> None:
    dac = fb.open(QDac2, "dac")
    scope = fb.open(KeysightInfiniiVision, "scope")
    control.add_fault("garble", "dac", at_command=1)
    control.add_fault("garble", "scope", at_command=1)
    # the corrupted bytes are not ASCII: decoding fails loudly (UnicodeDecodeError is a
    # ValueError); nothing returns a number
    with pytest.raises(ValueError, match="decode"):
        dac.get_voltage(1)
    with pytest.raises(ValueError, match="decode"):
        _ = scope.timebase_scale
    # the line was consumed whole: the next query is in step again
    assert dac.get_voltage(1) == pytest.approx(0.0)


def test_silence_is_a_timeout(fb: FaultBench, control: BenchClient) -> None:
    dac = fb.open(QDac2, "dac", timeout_ms=300)
    control.add_fault("silence", "dac", at_command=1)
    started = time.monotonic()
    with pytest.raises(VisaIOError) as info:
        dac.get_voltage(1)
    assert info.value.error_code == StatusCode.error_timeout
    if fb.tcp:  # in process nothing can arrive later, so the backend fails at once
        assert time.monotonic() - started >= 0.25
    assert dac.get_voltage(1) == pytest.approx(0.0)  # nothing left over: in step again


def test_injected_error_reaches_check_errors(fb: FaultBench, control: BenchClient) -> None:
    dac = fb.open(QDac2, "dac")
    scope = fb.open(KeysightInfiniiVision, "scope")
    lockin = fb.open(SR860, "lockin1")
    dac.check_errors()
    scope.check_errors()
    lockin.check_errors()
    control.add_fault("error", "dac", at_command=1, value=-310)
    control.add_fault("error", "scope", at_command=1, value=-350)
    control.add_fault("error", "lockin1", at_command=1, value=-200)
    with pytest.raises(InstrumentReportedError) as dac_error:
        dac.check_errors()
    assert dac_error.value.code == -310 and dac_error.value.instrument == "dac"
    with pytest.raises(InstrumentReportedError) as scope_error:
        scope.check_errors()
    assert scope_error.value.code == -350
    # the SR860 has no error queue: an execution error sets *ESR bit 4 (value 16)
    with pytest.raises(InstrumentReportedError) as lockin_error:
        lockin.check_errors()
    assert lockin_error.value.code == 16
    for driver in (dac, scope, lockin):
        driver.check_errors()  # reading the error cleared it


def _mean_tia_volts(scope: KeysightInfiniiVision) -> float:
    wave = scope.acquire(1, timeout_s=10.0)
    assert wave.volts.size >= 100
    return float(np.mean(wave.volts))


def test_drift_shifts_the_device_current(fb: FaultBench, control: BenchClient) -> None:
    station = load_station("sim-dnpu")
    assert station.dnpu is not None
    gain_na_per_v = station.dnpu.tia_gain_na_per_v
    scope = fb.open(KeysightInfiniiVision, "scope")
    # External trigger with an AUTO sweep: nothing drives EXT, so the scope triggers itself at
    # once (an edge trigger on the channel would search the flat TIA output for a crossing).
    scope.configure_acquisition(1, 8.0, 0.0, 1e-3, "external")
    scope.write(":TRIG:SWE AUTO")
    scope.set_points(1000)
    before = _mean_tia_volts(scope)
    drift_na = 40.0
    control.add_fault("drift", "scope", at_command=1, value=drift_na)
    after = _mean_tia_volts(scope)
    # the TIA turns the extra current into volts: shift = drift / gain (40 nA -> 0.4 V)
    assert (after - before) * gain_na_per_v == pytest.approx(drift_na, rel=0.05)
    control.add_fault("drift", "scope", at_command=1, value=-drift_na)  # leave it as found
    assert _mean_tia_volts(scope) == pytest.approx(before, abs=0.05 * drift_na / gain_na_per_v)


def test_realtime_pacing_takes_wall_time(fb: FaultBench, control: BenchClient) -> None:
    start_bench = control.time_s()
    # Real time runs from the moment the bench takes SIM:PAC REAL, which is after this instant:
    # from here the wait cannot be over before 0.2 s of wall time.
    started = time.monotonic()
    try:
        control.write("SIM:PAC REAL")
        control.wait(0.2)
        assert time.monotonic() - started >= 0.2
        assert control.time_s() - start_bench == pytest.approx(0.2, abs=1e-9)
        assert control.ask("SIM:PAC?").strip() == "REAL"
    finally:
        control.write("SIM:PAC FAST")
    assert control.ask("SIM:PAC?").strip() == "FAST"
    started = time.monotonic()
    control.wait(0.2)
    assert time.monotonic() - started < 0.1
