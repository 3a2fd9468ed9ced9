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

The reservoir's drive is an AWG playing an arb with zero-order hold. When its source says so
(``held_grid(port, t0, t1) -> (t_edge, rate)``, an optional extension of the part protocol that
the 33500B emulator offers), the part reads the drive once per held sample and the model holds it
over its internal steps, whose edges then fall on the AWG's sample edges; any other source is
evaluated on the uniform internal grid. Either way the result is kept for the bench generation.
"""

from __future__ import annotations

import importlib.util
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


_INTERP_KERNEL: Any = None


def _interp_uniform(t: FloatArray, first: float, rate: float, values: FloatArray) -> FloatArray:
    """Linear interpolation of ``values`` (sample ``j`` at ``first + j / rate``) at ``t``: what
    ``np.interp`` gives on that grid, found by index arithmetic instead of a search (compiled
    when numba is installed)."""
    global _INTERP_KERNEL
    if _INTERP_KERNEL is None and importlib.util.find_spec("numba") is not None:
        from numba import njit

        @njit(cache=True, error_model="numpy")  # type: ignore[misc]
        def interp(  # pragma: no cover - compiled
            t: FloatArray, first: float, rate: float, values: FloatArray, out: FloatArray
        ) -> None:
            top = values.size - 1
            for i in range(t.size):
                pos = (t[i] - first) * rate
                if pos <= 0.0:
                    out[i] = values[0]
                elif pos >= top:
                    out[i] = values[top]
                else:
                    j = int(pos)
                    f = pos - j
                    out[i] = values[j] + f * (values[j + 1] - values[j])

        _INTERP_KERNEL = interp
    if _INTERP_KERNEL is None or values.size < 2:
        return np.interp(t, first + np.arange(values.size) / rate, values)
    out = np.empty(t.size)
    _INTERP_KERNEL(np.ascontiguousarray(t), first, rate, np.ascontiguousarray(values), out)
    return out


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
        dac_noise: Any = None,
    ) -> None:
        self.name = name
        # The DAC's output noise and resolution, as the electrodes receive them (a
        # labrig.physics.noise.DacNoiseParams; None: the DAC's voltages exactly).
        self.dac_noise = dac_noise
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
        volts = self.electrode_voltages(grid)
        if self.dac_noise is not None:
            volts = self.dac_noise.apply(volts, fs, self.bench.rng_for(f"{self.name}.dac", grid[0]))
        current = self.model.current_trace_na(volts)
        current = np.asarray(current) + self.drift_offset_na
        if getattr(self.readout, "noise", None) is not None:
            # The current noise is one process on the bench clock: the same instant reads the
            # same noise in every record, DC window and trace.
            return np.asarray(self.readout.output_on_clock_v(current, grid, fs))
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
        # (bench generation, first grid time, grid rate, PD voltage on the grid): see output().
        self._cache: tuple[int, float, float, FloatArray] | None = None
        bench.add(self)

    def _history_s(self) -> float:
        # The loop remembers its past through the feedback. Its small-signal gain is at most
        # eta * alpha (the steepest slope of eta sin^2 times the feedback strength): start enough
        # delay periods early that whatever came before has decayed below 1e-3.
        params: Any = self.model.params
        delay_s = (params.node_count + params.desync_nodes) * params.node_duration_s
        loop_gain = min(params.eta_v * params.alpha, 0.99)
        periods = math.ceil(math.log(1e-3) / math.log(loop_gain)) if loop_gain > 0 else 1
        return float(delay_s * min(max(periods, 2), 40))

    def _held_grid(self, t0: float, t1: float) -> tuple[float, float] | None:
        """The drive's zero-order-hold grid ``(t_edge, rate)`` over ``[t0, t1]``, if its source
        (an AWG playing an arb) can state one; None for any other source."""
        source = self.bench.wiring.get(f"{self.name}.rf")
        if source is None:
            return None
        part_name, _, port = source.partition(".")
        held_grid = getattr(self.bench.parts.get(part_name), "held_grid", None)
        if held_grid is None:
            return None
        grid = held_grid(port, t0, t1)
        if grid is None or not (grid[1] > 0 and math.isfinite(grid[0])):
            return None
        return float(grid[0]), float(grid[1])

    def output(self, port: str, t: FloatArray) -> FloatArray:
        t = np.asarray(t, dtype=float)
        if port != "pd":
            raise KeyError(f"{self.name} has no output port {port!r} (ports: pd)")
        if t.size == 0:
            return np.zeros(0)
        t_lo, t_hi = float(t.min()), float(t.max())
        # Every reader in one bench generation (no setting changed) sees one signal, noise and
        # all, and the loop is simulated once for them.
        cached = self._cache
        if (
            cached is not None
            and cached[0] == self.bench.generation
            and cached[1] <= t_lo
            and t_hi <= cached[1] + (cached[3].size - 1) / cached[2]
        ):
            return _interp_uniform(t, cached[1], cached[2], cached[3])
        self._cache = None
        t_start = t_lo - self._history_s()
        bias = float(np.mean(self.bench.signal(f"{self.name}.bias", t[:1])))
        held = self._held_grid(t_start, t_hi)
        if held is not None:
            # The AWG holds each sample for 1/rate: read the drive once per held sample (at its
            # midpoint) and let the model hold it over its internal steps. Exactly the drive the
            # loop sees, with the steps' edges on the AWG's sample edges, at 1/m of the cost of
            # evaluating the AWG at every internal step.
            t_edge, rate = held
            k0 = math.floor((t_start - t_edge) * rate)
            k1 = math.floor((t_hi - t_edge) * rate) + 2
            first = t_edge + k0 / rate
            mids = np.asarray(t_edge + (np.arange(k0, k1) + 0.5) / rate, dtype=np.float64)
            drive = self.bench.signal(f"{self.name}.rf", mids)
            rng = self.bench.rng_for(self.name, first)
            # The result lives in the model's reused buffer: it is this part's cache until the
            # next evaluation, which drops the cache before it overwrites the buffer.
            pd, fs_i = self.model.respond_internal(drive, rate, bias, rng, reuse_buffer=True)
        else:
            grid, dt = _uniform_grid(t, float(self.model.params.internal_rate_hz), t_lo - t_start)
            first, fs_i = float(grid[0]), 1.0 / dt
            drive = self.bench.signal(f"{self.name}.rf", grid)
            pd = self.model.respond(drive, fs_i, bias, self.bench.rng_for(self.name, first))
        pd = np.asarray(pd, dtype=float)
        self._cache = (self.bench.generation, first, float(fs_i), pd)
        return _interp_uniform(t, first, float(fs_i), pd)

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
        # dV/dt by a centred difference over +/-10 us: the DAC's output is a 1 MS/s staircase,
        # and a narrower stencil that straddles one step would turn it into a spike. Over 20 us
        # the staircase averages out; the error on a sine of frequency f is (2 pi f h)^2 / 6,
        # 2.6e-5 relative at 1 kHz.
        h = 1e-5
        v = self.bench.signal(f"{self.name}.in", t)
        dv = (
            self.bench.signal(f"{self.name}.in", t + h)
            - self.bench.signal(f"{self.name}.in", t - h)
        ) / (2 * h)
        return self.gain_v_per_a * (v / self.resistance_ohm + self.capacitance_f * dv)

    def on_trigger(self, port: str, t: float) -> None:
        """The load has no trigger inputs."""
