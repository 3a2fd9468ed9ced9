"""The RC load: a device with an analytic answer, measured through the emulators.

A QDAC-II sine drives a resistor R with a parallel capacitance C into a virtual-ground
transimpedance amplifier of gain G; an SR860 referenced to the same sine must read
``|G (1/R + j 2 pi f C)| A / sqrt(2)`` and the phase lead ``atan(2 pi f R C)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from labrig.sim.bench import Bench
from labrig.sim.devices import RcPart
from labrig.sim.qdevil_qdac2 import QDac2Emulator
from labrig.sim.srs_sr860 import SR860Emulator


@pytest.mark.parametrize("f_hz", [200.0, 1000.0])
def test_lockin_reads_the_rc_transfer_function(f_hz: float) -> None:
    bench = Bench()
    dac = QDac2Emulator("dac", bench)
    rc = RcPart(bench, resistance_ohm=1e7, capacitance_f=1e-11, gain_v_per_a=1e7)
    lockin = SR860Emulator("lockin", bench)
    bench.connect("rc.in", "dac.ch1")
    bench.connect("lockin.in", "rc.tia")
    bench.connect("lockin.ref", "dac.ch1")
    amplitude = 0.1
    dac.feed(
        f"sour1:sine:freq {f_hz};:sour1:sine:span {2 * amplitude};:sour1:sine:coun -1\n"
        "sour1:sine:trig:sour imm;:sour1:sine:init\n".encode()
    )
    lockin.feed(f"FREQ {f_hz};RSRC EXT;OFLT 9;OFSL 3\n".encode())
    bench.clock.advance(1.0)
    r, theta = (float(x) for x in lockin.feed(b"SNAP? R,THETA\n").decode().split(","))
    h = rc.transfer(f_hz)
    assert r == pytest.approx(abs(h) * amplitude / math.sqrt(2), rel=0.01)
    # the current leads the voltage by atan(2 pi f R C) (the lock-in reports -lead as theta
    # when the signal lags; compare the angle of the transfer function directly)
    assert abs(theta - math.degrees(np.angle(h))) < 1.0
