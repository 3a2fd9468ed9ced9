"""Device models as bench parts: what sits between the instruments' outputs and inputs.

Each part reads its input ports through the bench wiring (whatever instrument output is cabled to
them), runs the numerical model from :mod:`labrig.physics`, and offers its output ports to the
instruments that read them (scope channels, lock-in inputs).

Ports
-----
``DnpuPart`` (name ``dnpu``): inputs ``e0`` .. ``e6`` (electrode potentials, V); outputs ``tia``
(transimpedance-amplifier output, V) and ``current`` (noise-free device current, nA).

``ReservoirPart`` (name ``reservoir``): inputs ``rf`` (modulator drive, V) and ``bias`` (modulator
bias, V); output ``pd`` (photodetector voltage, V).

``RcPart`` (name ``rc``): input ``in`` (V); output ``tia`` (V) — a resistor with a parallel
capacitance into a virtual-ground transimpedance amplifier, for tests with analytic answers.

Stateful read-outs (the TIA's low-pass, the reservoir's delay loop) are evaluated on a uniform grid
that starts some time constants before the first requested instant, so the filter has settled on
the signal's real history rather than on a zero initial state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from labrig.sim.bench import Bench

FloatArray = npt.NDArray[np.float64]


def _uniform_grid(t: FloatArray, rate_hz: float, history_s: float) -> tuple[FloatArray, float]:
    """A uniform grid at ``rate_hz`` covering ``[t.min() - history_s, t.max()]``."""
    dt = 1.0 / rate_hz
    start = float(t.min()) - history_s
    n = int(np.ceil((float(t.max()) - start) / dt)) + 2
    return np.asarray(start + dt * np.arange(n), dtype=float), dt


def _is_uniform(t: FloatArray) -> bool:
    if t.size < 3:
        return False
    d = np.diff(t)
    return bool(np.all(d > 0) and np.ptp(d) <= 1e-9 * max(float(d.mean()), 1e-300) + 1e-15)


class DnpuPart:
    """A dopant-network processing unit behind a transimpedance amplifier."""

    def __init__(
        self,
        bench: Bench,
        model: Any,
        readout: Any,
        name: str = "dnpu",
        internal_rate_hz: float = 20e3,
    ) -> None:
        self.name = name
        self.bench = bench
        self.model = model
        self.readout = readout
        self.internal_rate_hz = internal_rate_hz
        self.electrode_count = 7
        # A step in the device's slow drift (a ``drift`` fault): an offset current, as a
        # charge trap switching near the output would cause.
        self.drift_offset_na = 0.0
        # (bench generation, grid, grid step, TIA output on the grid): see output().
        self._cache: tuple[int, FloatArray, float, FloatArray] | None = None
        bench.add(self)

    def step_drift(self, amount_na: float) -> None:
        """Shift the device's output current by ``amount_na`` from now on."""
        self.drift_offset_na += float(amount_na)
        self._cache = None

    def electrode_voltages(self, t: FloatArray) -> FloatArray:
        """Electrode potentials (len(t), 7) at ``t``, as the wired DAC outputs deliver them."""
        v = np.empty((t.size, self.electrode_count))
        for k in range(self.electrode_count):
            port = f"{self.name}.e{k}"
            v[:, k] = self.bench.signal(port, t)
            if t.size and self.bench.watches(port):
                self.bench.log_voltage(port, float(v[:, k].min()), float(v[:, k].max()))
        return v

    def output(self, port: str, t: FloatArray) -> FloatArray:
        t = np.asarray(t, dtype=float)
        if t.size == 0:
            return np.zeros(0)
        if port == "current":
            return np.asarray(self.model.current_trace_na(self.electrode_voltages(t)))
        if port != "tia":
            raise KeyError(f"{self.name} has no output port {port!r} (ports: tia, current)")
        # The TIA's low-pass needs the signal's recent history: evaluate on a uniform grid that
        # starts five bandwidth time constants early, then read the requested instants off it.
        # The grid is kept while no instrument setting changes (the bench's generation), so
        # every reader of this output in that time — the scope, several lock-ins — sees one
        # signal (as real instruments on one cable do) and the device is solved once.
        bandwidth = float(self.readout.params.bandwidth_hz)
        history = 5.0 / (2.0 * np.pi * bandwidth)
        # Solve at least at the internal rate, so that one grid serves readers at different
        # rates (lock-ins at different frequencies); finer requests get their own rate.
        uniform = _is_uniform(t) and float(t[1] - t[0]) <= 1.0 / self.internal_rate_hz
        step = float(t[1] - t[0]) if uniform else 1.0 / self.internal_rate_hz
        cached = self._cache
        if (
            cached is not None
            and cached[0] == self.bench.generation
            and cached[2] <= step * (1 + 1e-9)
            and cached[1][0] <= t[0]
            and t[-1] <= cached[1][-1]
        ):
            return np.interp(t, cached[1], cached[3])
        if uniform:
            n_hist = int(np.ceil(history / step))
            grid = t[0] + step * np.arange(-n_hist, t.size)
        else:
            grid, step = _uniform_grid(t, self.internal_rate_hz, history)
        out = self._tia_on_grid(grid, 1.0 / step)
        self._cache = (self.bench.generation, grid, step, out)
        if uniform:
            return out[grid.size - t.size :]
        return np.interp(t, grid, out)

    def _tia_on_grid(self, grid: FloatArray, fs: float) -> FloatArray:
        current = self.model.current_trace_na(self.electrode_voltages(grid))
        current = np.asarray(current) + self.drift_offset_na
        rng = self.bench.rng_for(self.name, float(grid[0]))
        return np.asarray(self.readout.output_v(current, fs, rng))

    def on_trigger(self, port: str, t: float) -> None:
        """The device has no trigger inputs."""


class ReservoirPart:
    """A Mach-Zehnder modulator in a fibre delay loop, read by a photodetector."""

    def __init__(self, bench: Bench, model: Any, name: str = "reservoir") -> None:
        self.name = name
        self.bench = bench
        self.model = model
        bench.add(self)

    def output(self, port: str, t: FloatArray) -> FloatArray:
        t = np.asarray(t, dtype=float)
        if port != "pd":
            raise KeyError(f"{self.name} has no output port {port!r} (ports: pd)")
        if t.size == 0:
            return np.zeros(0)
        params: Any = self.model.params
        rate = float(params.internal_rate_hz)
        # The loop remembers its past through the feedback. Its small-signal gain is at most
        # eta * alpha (the steepest slope of eta sin^2 times the feedback strength): start enough
        # delay periods early that whatever came before has decayed below 1e-3.
        delay_s = (params.node_count + params.desync_nodes) * params.node_duration_s
        loop_gain = min(params.eta_v * params.alpha, 0.99)
        periods = math.ceil(math.log(1e-3) / math.log(loop_gain)) if loop_gain > 0 else 1
        grid, dt = _uniform_grid(t, rate, delay_s * min(max(periods, 2), 40))
        drive = self.bench.signal(f"{self.name}.rf", grid)
        bias = float(np.mean(self.bench.signal(f"{self.name}.bias", t[:1])))
        pd = self.model.respond(
            drive, 1.0 / dt, bias, self.bench.rng_for(self.name, float(grid[0]))
        )
        return np.interp(t, grid, np.asarray(pd))

    def on_trigger(self, port: str, t: float) -> None:
        """The reservoir has no trigger inputs."""


@dataclass
class RcPart:
    """A resistor ``R`` with a parallel capacitance ``C`` into a virtual-ground TIA of gain ``G``.

    The current into the virtual ground is ``I = V/R + C dV/dt``; the TIA outputs
    ``V_out = G I`` (G in V/A). For a sine input of frequency ``f`` the transfer is
    ``G (1/R + j 2 pi f C)``: in phase at low frequency, leading by ``atan(2 pi f R C)``.
    """

    bench: Bench
    resistance_ohm: float = 1e7
    capacitance_f: float = 1e-11
    gain_v_per_a: float = 1e7
    name: str = "rc"

    def __post_init__(self) -> None:
        self.bench.add(self)

    def transfer(self, f_hz: float) -> complex:
        return self.gain_v_per_a * (
            1.0 / self.resistance_ohm + 2j * np.pi * f_hz * self.capacitance_f
        )

    def output(self, port: str, t: FloatArray) -> FloatArray:
        t = np.asarray(t, dtype=float)
        if port != "tia":
            raise KeyError(f"{self.name} has no output port {port!r} (ports: tia)")
        if t.size == 0:
            return np.zeros(0)
        # dV/dt by a centred difference on a fine local stencil around every requested instant.
        h = 1e-7
        v = self.bench.signal(f"{self.name}.in", t)
        dv = (
            self.bench.signal(f"{self.name}.in", t + h)
            - self.bench.signal(f"{self.name}.in", t - h)
        ) / (2 * h)
        return self.gain_v_per_a * (v / self.resistance_ohm + self.capacitance_f * dv)

    def on_trigger(self, port: str, t: float) -> None:
        """The load has no trigger inputs."""
