"""A first-order RC load: a device with a closed-form answer, for testing the read-out path.

The load is a resistor ``R`` from the drive to the virtual-ground input of the TIA, with a
capacitance ``C`` that makes the current respond with the time constant ``τ = R C``:

    τ dI/dt + I = V(t) / R          ⇔          H(f) = I(f) / V(f) = (1/R) / (1 + j 2π f R C)

so a sinusoidal drive of amplitude ``A`` at ``f`` gives a current of amplitude
``A / (R √(1 + (2π f R C)²))`` lagging by ``atan(2π f R C)``. Tests of lock-ins, HGE demodulation
and the TIA chain use it because every number has an analytic value.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from labrig.physics.noise import first_order_lowpass

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]


class RcLoad:
    """Resistor ``resistance_ohm`` with a first-order capacitive lag ``τ = R·C``.

    Usage::

        load = RcLoad(10e6, 1e-12)          # 10 MΩ, 1 pF → τ = 10 µs
        i = load.current_a(t, v)             # t uniform (s), v (V) → i (A)
        h = load.transfer(1e3)               # complex admittance at 1 kHz (A/V)
    """

    def __init__(self, resistance_ohm: float, capacitance_f: float) -> None:
        if not (resistance_ohm > 0 and math.isfinite(resistance_ohm)):
            raise ValueError(
                f"RcLoad: resistance_ohm must be > 0 and finite, got {resistance_ohm!r}"
            )
        if not (capacitance_f >= 0 and math.isfinite(capacitance_f)):
            raise ValueError(
                f"RcLoad: capacitance_f must be >= 0 and finite, got {capacitance_f!r}"
            )
        self.resistance_ohm = float(resistance_ohm)
        self.capacitance_f = float(capacitance_f)

    @property
    def tau_s(self) -> float:
        """Time constant ``τ = R C`` (s)."""
        return self.resistance_ohm * self.capacitance_f

    @property
    def cutoff_hz(self) -> float:
        """−3 dB frequency ``1/(2π R C)`` (Hz); infinite without capacitance."""
        return math.inf if self.tau_s == 0 else 1.0 / (2.0 * math.pi * self.tau_s)

    def transfer(self, f_hz: npt.ArrayLike) -> ComplexArray:
        """Admittance ``H(f) = (1/R) / (1 + j 2π f R C)`` (A/V) at ``f_hz``."""
        f = np.asarray(f_hz, dtype=float)
        return np.asarray((1.0 / self.resistance_ohm) / (1.0 + 2j * np.pi * f * self.tau_s))

    def current_a(self, t: npt.ArrayLike, v: npt.ArrayLike) -> FloatArray:
        """Current (A) for the voltage ``v`` (V) sampled at the uniform times ``t`` (s).

        The load starts settled (``I = V[0]/R``); between samples ``v`` is taken as piecewise
        linear and the ODE is solved exactly (:func:`labrig.physics.noise.first_order_lowpass`).
        """
        ta = np.asarray(t, dtype=float)
        va = np.asarray(v, dtype=float)
        if ta.ndim != 1 or va.shape != ta.shape:
            raise ValueError(
                f"RcLoad.current_a: t and v must be 1-D of equal length, got {ta.shape} and "
                f"{va.shape}"
            )
        if ta.size < 2:
            return va / self.resistance_ohm
        dt = np.diff(ta)
        step = float(dt.mean())
        if not step > 0 or np.max(np.abs(dt - step)) > 1e-9 * step:
            raise ValueError(
                f"RcLoad.current_a: t must be uniform and increasing; steps span "
                f"[{dt.min()!r}, {dt.max()!r}] s"
            )
        return first_order_lowpass(va / self.resistance_ohm, 1.0 / step, self.tau_s)
