"""Benchmark the accuracy and cost of homodyne gradient extraction on the virtual DNPU bench.

Part 1, Boon et al. (Nat Commun 2025) Fig. 3 on the simulated rig: at ``N`` random voltage sets
(controls uniform in their ranges, the two inputs uniform in theirs) the ``hge`` procedure
measures ``dI/dV`` of its five controls in parallel (all five sines in one 0.1 s window) and
sequentially (one sine per record) for Δf = 10 and 40 Hz (x [5, 9, 13, 19, 23], the authors'
amplitudes), and compares them with each other and with the device model's exact gradient. An
analytic model of the error (white floor, 1/f and drift leaking through the window's kernel,
curvature bias; derived above ``noise_psd``) is printed and drawn beside the measurement;
the figure goes to ``docs/hge_fig3.png``.

Part 2, the regime map: for 1/f corners 0, 10, 100, 1000 Hz (the station's ``[bench]
flicker_corner_hz``, set per case) and 3, 5, 7 controls, the device time HGE (window x
amplitude grid), central finite differences (step x window grid) and SPSA (steps; draws
extrapolated as 1/sqrt(draws)) need to reach one median relative gradient error
(``--target-error``), and the ratios FD/HGE and SPSA/HGE.

Device time is the bench's clock: playback and records *and* the instrument I/O the bench
charges (DAC trace uploads, messages). "Signal time" is the part the electrodes are driven and
the output recorded: what the method itself needs if instrument I/O were free.

Usage::

    .venv/bin/python scripts/bench_hge_gradient.py --smoke          # seconds, for CI
    .venv/bin/python scripts/bench_hge_gradient.py --quick          # ~5 min
    nice -n 10 .venv/bin/python scripts/bench_hge_gradient.py       # 150 + 16 points, ~8-20 min
    .venv/bin/python scripts/bench_hge_gradient.py --points 1000    # the paper's 1000 (~1 h)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from labrig.algorithms.baselines import central_difference, spsa
from labrig.algorithms.hge import AUTHORS_PLAN, FrequencyPlan
from labrig.physics.noise import ClockedCurrentNoise, TiaParams
from labrig.procedures.characterise import TIA_FULL_SCALE_V
from labrig.procedures.hge import HgeTraining
from labrig.rig import Rig, open_rig

FloatArray = npt.NDArray[np.float64]

MULTIPLES = (5, 9, 13, 19, 23)  # the authors' odd multiples of the frequency step
# Seven controls: the authors' five and two more odd multiples (second-order clean like theirs:
# sums and differences of odd multiples are even). A third-order clean set of seven needs
# multiples up to 127, above the 10 kS/s playback's Nyquist at a 40 Hz step.
MULTIPLES_7 = (*MULTIPLES, 29, 31)
DC_SETTLE_S = 1e-3  # ~19 TIA time constants (3 kHz): the read-out has settled after a step


# ------------------------------------------------------------------------------- set-up
def spaced_plan(
    step_hz: float, window_s: float, amplitudes_v: tuple[float, ...] = AUTHORS_PLAN.amplitudes_v
) -> FrequencyPlan:
    """``step_hz`` x [5, 9, 13, 19, 23] (the authors' amplitudes by default) on ``window_s``."""
    plan = FrequencyPlan(
        frequencies_hz=tuple(step_hz * m for m in MULTIPLES),
        amplitudes_v=amplitudes_v,
        window_s=window_s,
        sample_rate_hz=AUTHORS_PLAN.sample_rate_hz,
    )
    plan.validate()  # raises unless the window holds integer periods of every frequency
    return plan


@dataclass(frozen=True)
class HgeConfig:
    """One way of running HGE: a plan (spacing, window) and parallel or sequential sines."""

    label: str
    step_hz: float
    window_s: float
    sequential: bool
    amplitudes_v: tuple[float, ...] = AUTHORS_PLAN.amplitudes_v

    @property
    def plan(self) -> FrequencyPlan:
        return spaced_plan(self.step_hz, self.window_s, self.amplitudes_v)


# ----------------------------------------------------------------------------- measuring
@dataclass
class Results:
    """Per-configuration estimates and costs, one row per voltage set."""

    gradients: dict[str, list[FloatArray]] = field(default_factory=dict)
    device_s: dict[str, list[float]] = field(default_factory=dict)
    signal_s: dict[str, list[float]] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)

    def add(self, label: str, grad: FloatArray, device_s: float, signal_s: float) -> None:
        self.gradients.setdefault(label, []).append(grad)
        self.device_s.setdefault(label, []).append(device_s)
        self.signal_s.setdefault(label, []).append(signal_s)


class GradientBench:
    """The ``hge`` procedure's bench, measured one input case at a time.

    HGE estimates come from the procedure's own ``_measure_parallel`` / ``_measure_sequential``
    with its schedule reduced to one case; DC points for the baselines go through the same
    drivers (DAC ramp, settle, digitiser record with an immediate trigger).
    """

    def __init__(self, white_noise_psd: float | None = None) -> None:
        self.proc = HgeTraining(task="AND")
        self.proc.bind_rig(open_rig("sim-dnpu"))
        self.proc.startup()
        rig = self.proc.require_rig()
        if not isinstance(rig, Rig) or rig.built is None:
            raise RuntimeError("the gradient benchmark needs the in-process bench (sim-dnpu)")
        self.model = rig.built.device.model
        if white_noise_psd is not None:
            # A what-if: a noisier read-out than the station's (a warmer device, a worse TIA).
            self.set_noise(current_noise_psd_na2_per_hz=white_noise_psd)
        dnpu = rig.station.dnpu
        assert dnpu is not None
        self.dnpu = dnpu
        self.inputs = self.proc._inputs
        self.controls = self.proc._controls
        self.control_ranges = np.array(self.proc._control_ranges)
        self.input_ranges = np.array([dnpu.activation_ranges_v[k] for k in self.inputs])
        self._dc_window_s = -1.0
        self.n_electrodes = len(dnpu.electrode_channels)
        self.activation_ranges = np.array(dnpu.activation_ranges_v)

    # Noise --------------------------------------------------------------------------------
    @property
    def _readout(self) -> Any:
        rig = self.proc.require_rig()
        assert isinstance(rig, Rig) and rig.built is not None
        return rig.built.device.readout

    @property
    def noise_params(self) -> TiaParams:
        params: TiaParams = self._readout.params
        return params

    def set_noise(self, **changes: float) -> None:
        """Rebuild the bench's clocked current noise with some :class:`TiaParams` changed (same
        seed, so the rest of the process is the station's), e.g. another 1/f corner: one case
        of the regime map."""
        readout = self._readout
        params = dataclasses.replace(readout.params, **changes)
        old = readout.noise
        readout.params = params
        readout.noise = ClockedCurrentNoise(
            params, seed=old._seed, rate_hz=old.rate_hz, block_s=old.block_s
        )

    # Any electrodes as controls -------------------------------------------------------------
    def hge_on(
        self,
        volts: FloatArray,
        electrodes: tuple[int, ...],
        step_hz: float,
        window_s: float,
        amplitude_v: float,
    ) -> tuple[FloatArray, float]:
        """Parallel HGE with ``electrodes`` perturbed (``step_hz`` x MULTIPLES_7[:n], one
        amplitude) and every other electrode held at its DC value in ``volts`` (the procedure
        treats the held ones as the case's inputs): (dI/dV of ``electrodes``, device time)."""
        proc = self.proc
        n = len(electrodes)
        held = tuple(k for k in range(self.n_electrodes) if k not in electrodes)
        plan = FrequencyPlan(
            frequencies_hz=tuple(step_hz * m for m in MULTIPLES_7[:n]),
            amplitudes_v=(amplitude_v,) * n,
            window_s=window_s,
            sample_rate_hz=AUTHORS_PLAN.sample_rate_hz,
        )
        plan.validate()
        proc._inputs, proc._controls = held, electrodes
        self._dc_window_s = -1.0
        proc.plateau_s = window_s
        proc._plan = plan
        proc._case_inputs_v = volts[list(held)][None, :]
        t0 = self.clock()
        try:
            m = proc._measure_parallel(volts[list(electrodes)])
        finally:
            proc._inputs, proc._controls = self.inputs, self.controls
        return np.asarray(m.dI_dV[0], dtype=float), self.clock() - t0

    def dc_at(self, volts: FloatArray, window_s: float) -> float:
        """Mean output current (nA) with the electrodes at ``volts`` (ramp, settle, window)."""
        rig = self.proc.require_rig()
        self._configure_dc(window_s)
        rig.dac.ramp_to({self.dnpu.electrode_channels[k]: float(v) for k, v in enumerate(volts)})
        self.proc.wait(DC_SETTLE_S)
        record = rig.digitizer.acquire(self.dnpu.digitizer_channel)
        return float(np.mean(record.volts)) * self.dnpu.tia_gain_na_per_v

    def dc_gradient(
        self,
        volts: FloatArray,
        electrodes: tuple[int, ...],
        step_v: float,
        window_s: float,
        rng: np.random.Generator | None = None,
        draws: int = 0,
    ) -> tuple[FloatArray, float]:
        """Central differences (``draws == 0``) or SPSA over ``electrodes``, the others held:
        (gradient, device time)."""
        idx = list(electrodes)

        def measure(c: FloatArray) -> float:
            v = volts.copy()
            v[idx] = c
            return self.dc_at(v, window_s)

        self.proc.require_rig().dac.stop_generators()
        t0 = self.clock()
        if draws:
            assert rng is not None
            est = spsa(volts[idx], step_v, rng, measure, n_draws=draws)
        else:
            est = central_difference(volts[idx], step_v, measure)
        device = self.clock() - t0
        self.to_zero()
        return np.asarray(est.gradient, dtype=float), device

    def close(self) -> None:
        rig = self.proc.rig
        if isinstance(rig, Rig):
            rig.close()
            self.proc.rig = None

    def clock(self) -> float:
        return self.proc.require_rig().device_time_s()

    def electrode_voltages(self, inputs_v: FloatArray, controls_v: FloatArray) -> FloatArray:
        v = np.zeros(len(self.inputs) + len(self.controls))
        v[list(self.inputs)] = inputs_v
        v[list(self.controls)] = controls_v
        return v

    # HGE ----------------------------------------------------------------------------------
    def hge(
        self, config: HgeConfig, inputs_v: FloatArray, controls_v: FloatArray
    ) -> tuple[FloatArray, bool, float, float]:
        """One HGE estimate: (dI/dV of the controls, clipped, device time, signal time)."""
        proc = self.proc
        plan = config.plan
        proc._inputs, proc._controls = self.inputs, self.controls
        self._dc_window_s = -1.0  # the playback re-arms the scope: DC reads reconfigure it
        proc.plateau_s = plan.window_s
        proc._plan = plan
        proc._case_inputs_v = inputs_v[None, :]
        t0 = self.clock()
        if config.sequential:
            m = proc._measure_sequential(controls_v)
        else:
            m = proc._measure_parallel(controls_v)
        device = self.clock() - t0
        # ramp in + plateau + ramp back to 0 V, once per record
        per_record = plan.window_s + 2 * proc.ramp_s
        records = len(self.controls) if config.sequential else 1
        return np.asarray(m.dI_dV[0], dtype=float), m.clipped, device, records * per_record

    # DC baselines ---------------------------------------------------------------------------
    def _configure_dc(self, window_s: float) -> None:
        if window_s == self._dc_window_s:
            return
        scope = self.proc.require_rig().digitizer
        scope.configure_acquisition(
            self.dnpu.digitizer_channel,
            volts_range=2 * TIA_FULL_SCALE_V,
            offset_v=0.0,
            duration_s=window_s,
            trigger="immediate",
        )
        scope.set_points(1000)  # the mean of a DC window needs no more
        self._dc_window_s = window_s

    def to_zero(self) -> None:
        """Back to 0 V DC: HGE schedules ramp in from there."""
        rig = self.proc.require_rig()
        rig.dac.ramp_to({ch: 0.0 for ch in self.dnpu.electrode_channels})


# ------------------------------------------------------------------------------- metrics
def cosine(a: FloatArray, b: FloatArray) -> FloatArray:
    """Row-wise cosine similarity of ``(n, k)`` arrays."""
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(num / np.where(den > 0, den, np.nan))


def relative_error(estimate: FloatArray, exact: FloatArray) -> FloatArray:
    """Row-wise ``|g - g_exact| / |g_exact|``."""
    return np.asarray(np.linalg.norm(estimate - exact, axis=1) / np.linalg.norm(exact, axis=1))


@dataclass(frozen=True)
class Row:
    label: str
    n: int
    cos_median: float
    cos_p10: float
    err_median: float
    err_p90: float
    device_s: float
    signal_s: float
    clipped: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarise(
    label: str, results: Results, exact: FloatArray, keep: FloatArray, clipped: int = 0
) -> Row:
    n = min(len(results.gradients[label]), exact.shape[0])
    grads = np.array(results.gradients[label][:n])
    ok = keep[:n]
    cos = cosine(grads[ok], exact[:n][ok])
    err = relative_error(grads[ok], exact[:n][ok])
    return Row(
        label,
        int(ok.sum()),
        float(np.median(cos)),
        float(np.percentile(cos, 10)),
        float(np.median(err)),
        float(np.percentile(err, 90)),
        float(np.mean(results.device_s[label][:n])),
        float(np.mean(results.signal_s[label][:n])),
        clipped,
    )


def print_table(title: str, rows: Sequence[Row]) -> None:
    print(f"\n{title}")
    print(
        f"  {'configuration':<42} {'n':>5} {'cos med':>8} {'cos p10':>8} {'err med':>8} "
        f"{'err p90':>8} {'device s':>9} {'signal s':>9}"
    )
    for r in rows:
        print(
            f"  {r.label:<42} {r.n:>5} {r.cos_median:>8.4f} {r.cos_p10:>8.4f} "
            f"{r.err_median:>8.4f} {r.err_p90:>8.4f} {r.device_s:>9.3f} {r.signal_s:>9.3f}"
            + (f"  ({r.clipped} clipped, excluded)" if r.clipped else "")
        )


# ------------------------------------------------------------------------ analytic model
# The error of one HGE component, derived for Fig. 3 (Boon et al. 2025).
#
# The procedure demodulates the TIA-corrected current i(t) = I(V + sum_k A_k sin(w_k t)) + n(t)
# over a rectangular window of T seconds holding whole periods of every f_k:
#     g_j = (2 / (A_j T)) * integral_0^T i(t) sin(w_j t) dt          (in phase after the
# TIA's lag and gain at f_j are divided out: the read-out filters signal and noise alike, so
# the correction puts both back at the TIA's input and its phase lag costs nothing here).
#
# 1. Noise (stationary, one-sided PSD S(f) in nA^2/Hz: white S_w, 1/f S_w f_c / f, drift
#    4 s_d^2 th / (th^2 + (2 pi f)^2), s_d = D sqrt(tau_d / 2), th = 1 / tau_d):
#        Var(g_j) = (1 / A_j^2) * integral_0^inf S(f) [sinc^2((f - f_j) T) + sinc^2((f + f_j) T)] df
#    The bracket is the window's leakage kernel: it integrates to 1/T (white noise alone gives
#    the floor S_w / (T A_j^2)) and is zero at f = 0 and every other f_k = m_k df when T is a
#    whole number of periods of df, so the sines do not leak into each other; what leaks into
#    f_j is the noise in the main lobe (|f - f_j| < 1/T) and, through the sidelobes falling as
#    1 / (pi (f - f_j) T)^2, the 1/f noise and drift far below it. With df = 10 Hz the lowest
#    frequency (50 Hz) sits at half the default 100 Hz corner: its 1/f PSD is 3x the white floor.
# 2. Bias (deterministic, from the device's curvature; the Taylor expansion of I to third order
#    averaged over the window): sin^3 = (3 sin - sin 3x) / 4 and <sin^2> = 1/2 give
#        b_j = (A_j^2 / 8) d3I/dV_j^3 + sum_{k != j, perturbed together} (A_k^2 / 4) d3I/dV_j dV_k^2
#    Sequential extraction (one sine per record) has the self term only. Third-order products
#    landing on another f_j (2 f_a +- f_b = f_j, e.g. 2 x 5 + 9 = 19) are left out: they depend
#    on the multiples, not on df, and are smaller than the cross term for these amplitudes.
# Model error of a voltage set: sqrt(|b|^2 + sum_j Var(g_j)) / |g_exact|; the figure shows its
# median over the voltage sets beside the measured median.


def noise_psd(f_hz: FloatArray, params: TiaParams) -> FloatArray:
    """The bench's one-sided current-noise PSD (nA^2/Hz): white + 1/f + drift (OU)."""
    f = np.asarray(f_hz, dtype=float)
    s_w = params.current_noise_psd_na2_per_hz
    out = s_w * (1.0 + params.flicker_corner_hz / np.maximum(f, 1e-12))
    if params.drift_na_per_sqrt_s > 0:
        theta = 1.0 / params.drift_tau_s
        var = params.drift_na_per_sqrt_s**2 * params.drift_tau_s / 2.0
        out = out + 4.0 * var * theta / (theta**2 + (2 * np.pi * f) ** 2)
    return np.asarray(out)


def demodulation_noise_variance(
    frequency_hz: float, window_s: float, psd: Callable[[FloatArray], FloatArray]
) -> float:
    """``integral_0^inf S(f) [sinc^2((f - f_j) T) + sinc^2((f + f_j) T)] df`` (nA^2): the
    variance of the in-phase amplitude ``(2/T) integral n(t) sin(w_j t) dt`` of stationary noise
    of PSD ``psd`` over a rectangular window of ``window_s``. Divide by ``A_j^2`` for dI/dV."""
    if frequency_hz <= 0 or window_s <= 0:
        raise ValueError(
            f"demodulation_noise_variance: frequency {frequency_hz!r} Hz and window "
            f"{window_s!r} s must be > 0"
        )
    t = window_s
    # Fine linear grid over the main lobe and near sidelobes (20 points per 1/T), a log grid
    # below and above: the kernel's sidelobes fall as f^-2, so the far tails converge.
    near = np.linspace(max(1e-6, frequency_hz - 200 / t), frequency_hz + 200 / t, 8001)
    low = np.geomspace(1e-6, near[0], 2000) if near[0] > 1e-6 else np.empty(0)
    high = np.geomspace(near[-1], near[-1] + 1e6, 4000)
    f = np.unique(np.concatenate([low, near, high]))
    kernel = np.sinc((f - frequency_hz) * t) ** 2 + np.sinc((f + frequency_hz) * t) ** 2
    return float(np.trapezoid(psd(f) * kernel, f))


def third_derivatives(
    gradient: Callable[[FloatArray], FloatArray], volts: FloatArray, step_v: float = 2e-3
) -> FloatArray:
    """``d3I / dV_j dV_k^2`` of the exact model, ``(N, electrodes, electrodes)`` [j, k], by
    second differences of its exact gradient."""
    g0 = np.asarray(gradient(volts))
    n_el = volts.shape[1]
    out = np.empty((volts.shape[0], n_el, n_el))
    for k in range(n_el):
        dv = np.zeros(n_el)
        dv[k] = step_v
        gp, gm = np.asarray(gradient(volts + dv)), np.asarray(gradient(volts - dv))
        out[:, :, k] = (gp - 2 * g0 + gm) / step_v**2
    return out


def hge_bias(d3: FloatArray, amplitudes_v: Sequence[float], parallel: bool) -> FloatArray:
    """The curvature bias ``b_j`` of the electrodes perturbed (``d3`` restricted to them)."""
    a2 = np.asarray(amplitudes_v, dtype=float) ** 2
    self_term = np.einsum("njj->nj", d3) * a2 / 8.0
    if not parallel:
        return np.asarray(self_term)
    cross = d3 * (a2 / 4.0)[None, None, :]
    cross_sum = cross.sum(axis=2) - np.einsum("njj->nj", cross)
    return np.asarray(self_term + cross_sum)


def model_error(
    exact: FloatArray,
    d3: FloatArray,
    plan: FrequencyPlan,
    params: TiaParams,
    parallel: bool,
) -> FloatArray:
    """Per voltage set, the model's expected relative error ``sqrt(|b|^2 + sum Var) / |g|``."""
    psd = lambda f: noise_psd(f, params)  # noqa: E731
    var = sum(
        demodulation_noise_variance(f, plan.window_s, psd) / a**2
        for f, a in zip(plan.frequencies_hz, plan.amplitudes_v, strict=True)
    )
    bias = hge_bias(d3, plan.amplitudes_v, parallel)
    return np.asarray(np.sqrt(np.sum(bias**2, axis=1) + var) / np.linalg.norm(exact, axis=1))


# ------------------------------------------------------------------------------ Fig. 3
FIG3_WINDOW_S = 0.1  # the authors' 0.1 s per point
FIG3_CONFIGS = tuple(
    HgeConfig(f"{step:g} Hz, {mode}", step, FIG3_WINDOW_S, mode == "sequential")
    for step in (10.0, 40.0)
    for mode in ("parallel", "sequential")
)


def random_sets(
    bench: GradientBench, n: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``n`` random voltage sets as the procedure draws them: (inputs, controls, electrodes)."""
    lo, hi = bench.control_ranges[:, 0], bench.control_ranges[:, 1]
    controls = lo + (hi - lo) * rng.random((n, len(lo)))
    ilo, ihi = bench.input_ranges[:, 0], bench.input_ranges[:, 1]
    inputs = ilo + (ihi - ilo) * rng.random((n, len(ilo)))
    volts = np.array(
        [bench.electrode_voltages(i, c) for i, c in zip(inputs, controls, strict=True)]
    )
    return inputs, controls, volts


def fig3(
    bench: GradientBench, n_points: int, rng: np.random.Generator, png: str | None, smoke: bool
) -> dict[str, Any]:
    inputs, controls, volts = random_sets(bench, n_points, rng)
    ctrl = list(bench.controls)
    exact = np.asarray(bench.model.gradient_na_per_v(volts))[:, ctrl]
    d3 = third_derivatives(bench.model.gradient_na_per_v, volts)[:, ctrl][:, :, ctrl]
    results = Results()
    clipped = np.zeros(n_points, dtype=bool)
    started = time.perf_counter()
    configs = FIG3_CONFIGS[::2] if smoke else FIG3_CONFIGS
    for p in range(n_points):
        for config in configs:
            grad, clip, device, signal = bench.hge(config, inputs[p], controls[p])
            results.add(config.label, grad, device, signal)
            clipped[p] |= clip
        if (p + 1) % 25 == 0 or p + 1 == n_points:
            print(f"  {p + 1}/{n_points} points, {time.perf_counter() - started:.0f} s", flush=True)
    keep = ~clipped
    rows = [summarise(c.label, results, exact, keep, int(clipped.sum())) for c in configs]
    print_table(
        f"Fig. 3: HGE against the exact gradient, {n_points} random voltage sets, "
        f"{1e3 * FIG3_WINDOW_S:g} ms per point, authors' amplitudes",
        rows,
    )
    params = bench.noise_params
    model: dict[str, float] = {}
    print("\n  error vs spacing: measured median | model median (noise only, bias only)")
    for c, r in zip(configs, rows, strict=True):
        m = model_error(exact[keep], d3[keep], c.plan, params, not c.sequential)
        noise_only = model_error(
            exact[keep], np.zeros_like(d3[keep]), c.plan, params, not c.sequential
        )
        bias_only = np.linalg.norm(
            hge_bias(d3[keep], c.plan.amplitudes_v, not c.sequential), axis=1
        ) / np.linalg.norm(exact[keep], axis=1)
        model[c.label] = float(np.median(m))
        print(
            f"  {c.label:<24} {r.err_median:.4f} | {np.median(m):.4f} "
            f"({np.median(noise_only):.4f}, {np.median(bias_only):.4f})"
        )
    grads = {c.label: np.array(results.gradients[c.label])[keep] for c in configs}
    if not smoke:
        for step in (10, 40):
            par, seq = grads[f"{step} Hz, parallel"], grads[f"{step} Hz, sequential"]
            print(
                f"  {step} Hz: parallel vs sequential, median |g_par - g_seq| / |g_seq| "
                f"{np.median(relative_error(par, seq)):.4f}"
            )
    if png:
        plot_fig3(png, configs, grads, exact[keep], d3[keep], rows, params, n_points)
        print(f"  figure: {png}")
    return {"rows": [r.as_dict() for r in rows], "model_median": model}


def plot_fig3(
    png: str,
    configs: Sequence[HgeConfig],
    grads: dict[str, FloatArray],
    exact: FloatArray,
    d3: FloatArray,
    rows: Sequence[Row],
    params: TiaParams,
    n_points: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    lim = float(np.percentile(np.abs(exact), 99.5)) * 1.1
    ax = axes[0]
    colours = {10.0: "tab:blue", 40.0: "tab:orange"}
    for c in configs:
        if c.sequential or f"{c.step_hz:g} Hz, sequential" not in grads:
            continue
        seq = grads[f"{c.step_hz:g} Hz, sequential"]
        ax.scatter(
            seq.ravel(),
            grads[c.label].ravel(),
            s=3,
            alpha=0.4,
            color=colours[c.step_hz],
            label=f"Δf = {c.step_hz:g} Hz",
        )
    ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8, label="y = x")
    ax.set(
        xlabel="sequential dI/dV (nA/V)",
        ylabel="parallel dI/dV (nA/V)",
        title="parallel vs sequential",
        xlim=(-lim, lim),
        ylim=(-lim, lim),
    )
    ax.legend(markerscale=4)
    ax = axes[1]
    for c in configs:
        ax.scatter(
            exact.ravel(),
            grads[c.label].ravel(),
            s=3,
            alpha=0.3,
            label=c.label,
        )
    ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8, label="y = x")
    ax.set(
        xlabel="exact dI/dV of the model (nA/V)",
        ylabel="measured dI/dV (nA/V)",
        title="HGE vs the exact gradient",
        xlim=(-lim, lim),
        ylim=(-lim, lim),
    )
    ax.legend(markerscale=4, fontsize=8)
    ax = axes[2]
    # The bench (and the model's leakage kernel's zeros) need whole periods of every f_j in the
    # window: spacings in multiples of 1/T. Elsewhere the DC current itself leaks into f_j.
    steps = np.arange(1, 11) / FIG3_WINDOW_S
    hot = dataclasses.replace(params, flicker_corner_hz=1000.0)
    for sequential, colour in ((False, "tab:green"), (True, "tab:purple")):
        mode = "sequential" if sequential else "parallel"
        curves: dict[str, list[float]] = {"": [], "hot": []}
        for s in steps:
            plan = FrequencyPlan(
                tuple(s * m for m in MULTIPLES),
                AUTHORS_PLAN.amplitudes_v,
                FIG3_WINDOW_S,
                AUTHORS_PLAN.sample_rate_hz,
            )
            curves[""].append(np.median(model_error(exact, d3, plan, params, not sequential)))
            curves["hot"].append(np.median(model_error(exact, d3, plan, hot, not sequential)))
        ax.plot(steps, curves[""], ".-", color=colour, label=f"model, {mode}")
        ax.plot(steps, curves["hot"], ":", color=colour, label=f"model, {mode}, 1/f corner 1 kHz")
        meas = [
            (c.step_hz, r) for c, r in zip(configs, rows, strict=True) if c.sequential == sequential
        ]
        if meas:
            x = [m[0] for m in meas]
            y = np.array([m[1].err_median for m in meas])
            up = np.array([m[1].err_p90 for m in meas]) - y
            ax.errorbar(
                x,
                y,
                yerr=[np.zeros_like(y), up],
                fmt="o",
                color=colour,
                ms=7,
                capsize=3,
                label=f"bench median (bar: 90th pct), {mode}",
            )
    ax.set(
        xlabel="frequency spacing Δf (Hz)",
        ylabel="relative gradient error |g - g*| / |g*|",
        title=f"error vs Δf, {1e3 * FIG3_WINDOW_S:g} ms windows",
        yscale="log",
    )
    ax.legend(fontsize=8)
    fig.suptitle(
        f"Boon Fig. 3 on the bench: {n_points} random voltage sets, white "
        f"{params.current_noise_psd_na2_per_hz:g} nA²/Hz, 1/f corner "
        f"{params.flicker_corner_hz:g} Hz, drift {params.drift_na_per_sqrt_s:g} nA/√s"
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------------- regime map
CORNERS_HZ = (0.0, 10.0, 100.0, 1000.0)
N_CONTROLS = (3, 5, 7)
HGE_WINDOWS_S = (0.025, 0.05, 0.1, 0.2, 0.4)
HGE_AMPLITUDES_V = (0.010, 0.020)
FD_STEPS_V = (0.002, 0.005, 0.010, 0.020)
FD_WINDOWS_S = (0.001, 0.005, 0.020, 0.100)
SPSA_STEPS_V = (0.010, 0.020)
SPSA_WINDOW_S = 0.005
SPSA_DRAWS = 8
DEFAULT_POINTS = 150  # Fig. 3 at the paper's 1000 takes ~50 min of this machine: --points 1000
DEFAULT_MAP_POINTS = 16
RANGE_MARGIN_V = 0.025  # the largest HGE amplitude (20 mV) + 5 mV inside every range


def perturbed_sets(bench: GradientBench) -> dict[int, tuple[int, ...]]:
    """Which electrodes are the controls for 3, 5 and 7 controls: the procedure's five
    controls (the first three of them for 3); for 7 the two input electrodes too. The
    electrodes not perturbed are held at their DC values (the procedure's case inputs)."""
    ctrl = tuple(bench.controls)
    return {3: ctrl[:3], 5: ctrl, 7: tuple(range(bench.n_electrodes))}


@dataclass(frozen=True)
class Cost:
    """One measured configuration of a method: its median error and mean costs (s)."""

    label: str
    err_median: float
    device_s: float
    signal_s: float
    extrapolated: bool = False

    def cost(self, kind: str) -> float:
        return self.device_s if kind == "device" else self.signal_s


@dataclass
class Samples:
    """Per-configuration relative errors and costs, one entry per voltage set."""

    err: list[float] = field(default_factory=list)
    device_s: list[float] = field(default_factory=list)
    signal_s: list[float] = field(default_factory=list)

    def summary(self, label: str) -> Cost:
        return Cost(
            label,
            float(np.median(self.err)),
            float(np.mean(self.device_s)),
            float(np.mean(self.signal_s)),
        )


def cheapest_cost(
    configs: dict[str, Samples], target: float, kind: str, extrapolate: bool = False
) -> tuple[Cost | None, Cost]:
    """(the cheapest configuration by ``kind`` cost whose median error is <= ``target``, or
    None; the most accurate configuration). With ``extrapolate`` (SPSA), a configuration that
    misses the target is scaled to the draws that would reach it: its error (the random
    directions' cross-talk plus noise) falls as 1/sqrt(draws), its cost grows with them."""
    rows = [sm.summary(label) for label, sm in configs.items()]
    best = min(rows, key=lambda r: r.err_median)
    good = [r for r in rows if r.err_median <= target]
    if extrapolate:
        for r in rows:
            if r.err_median > target:
                k = (r.err_median / target) ** 2
                good.append(
                    Cost(
                        f"{r.label} x{k:.1f} draws",
                        target,
                        r.device_s * k,
                        r.signal_s * k,
                        extrapolated=True,
                    )
                )
    return (min(good, key=lambda r: r.cost(kind)) if good else None), best


def regime_map(
    bench: GradientBench, n_points: int, rng: np.random.Generator, target: float, smoke: bool
) -> dict[str, Any]:
    ranges = bench.activation_ranges
    lo, hi = ranges[:, 0] + RANGE_MARGIN_V, ranges[:, 1] - RANGE_MARGIN_V
    volts = lo + (hi - lo) * rng.random((n_points, bench.n_electrodes))
    exact_all = np.asarray(bench.model.gradient_na_per_v(volts))
    sets = perturbed_sets(bench)
    corners = CORNERS_HZ[2:3] if smoke else CORNERS_HZ
    hge_grid = (
        [(0.05, 0.01)] if smoke else [(w, a) for w in HGE_WINDOWS_S for a in HGE_AMPLITUDES_V]
    )
    fd_grid = [(0.005, 0.005)] if smoke else [(h, w) for h in FD_STEPS_V for w in FD_WINDOWS_S]
    spsa_steps = SPSA_STEPS_V[:1] if smoke else SPSA_STEPS_V
    default_corner = bench.noise_params.flicker_corner_hz
    ramp_s = bench.proc.ramp_s
    all7 = tuple(range(bench.n_electrodes))
    started = time.perf_counter()
    spsa_rng = np.random.default_rng(12345)
    print(
        f"\nRegime map: {n_points} random voltage sets per case (every electrode uniform in its "
        f"range less {1e3 * RANGE_MARGIN_V:g} mV), target median relative error {target:g}. "
        "Controls perturbed: "
        + "; ".join(f"{n}: electrodes {list(e)}" for n, e in sets.items())
        + " (the others held at their DC values). HGE: parallel, 40 Hz x "
        f"{list(MULTIPLES_7)}[:n], one amplitude on every control.",
        flush=True,
    )
    cases: dict[tuple[float, int], dict[str, dict[str, Samples]]] = {}
    try:
        for corner in corners:
            bench.set_noise(flicker_corner_hz=corner)
            for n in sets:
                cases[(corner, n)] = {"HGE": {}, "FD": {}, "SPSA": {}}

            def add(
                corner: float,
                n: int,
                method: str,
                label: str,
                g: FloatArray,
                exact: FloatArray,
                device_s: float,
                signal_s: float,
            ) -> None:
                sm = cases[(corner, n)][method].setdefault(label, Samples())
                sm.err.append(float(np.linalg.norm(g - exact) / np.linalg.norm(exact)))
                sm.device_s.append(device_s)
                sm.signal_s.append(signal_s)

            for p in range(n_points):
                v = volts[p]
                for n, electrodes in sets.items():
                    e = exact_all[p, list(electrodes)]
                    for w, a in hge_grid:
                        g, t = bench.hge_on(v, electrodes, 40.0, w, a)
                        label = f"A={1e3 * a:g} mV, {1e3 * w:g} ms"
                        add(corner, n, "HGE", label, g, e, t, w + 2 * ramp_s)
                    for h in spsa_steps:
                        g, t = bench.dc_gradient(
                            v, electrodes, h, SPSA_WINDOW_S, spsa_rng, SPSA_DRAWS
                        )
                        label = f"h={1e3 * h:g} mV, {1e3 * SPSA_WINDOW_S:g} ms, {SPSA_DRAWS} draws"
                        signal = 2 * SPSA_DRAWS * (DC_SETTLE_S + SPSA_WINDOW_S)
                        add(corner, n, "SPSA", label, g, e, t, signal)
                # Central differences on all seven electrodes once; 3 and 5 controls are
                # subsets of its pairs (each pair is measured back to back, as alone), charged
                # n/7 of the device time.
                for h, w in fd_grid:
                    g7, t7 = bench.dc_gradient(v, all7, h, w)
                    for n, electrodes in sets.items():
                        idx = list(electrodes)
                        label = f"h={1e3 * h:g} mV, {1e3 * w:g} ms/point"
                        share = len(idx) / len(all7)
                        signal = 2 * len(idx) * (DC_SETTLE_S + w)
                        add(corner, n, "FD", label, g7[idx], exact_all[p, idx], t7 * share, signal)
            print(f"  corner {corner:g} Hz done, {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        bench.set_noise(flicker_corner_hz=default_corner)
    out: dict[str, Any] = {"target_error": target, "device": [], "signal": []}
    for kind in ("device", "signal"):
        table = []
        for (corner, n), methods in cases.items():
            row: dict[str, Any] = {"corner_hz": corner, "controls": n}
            for method, configs in methods.items():
                reach, best = cheapest_cost(configs, target, kind, extrapolate=method == "SPSA")
                row[method], row[f"{method}_best"] = reach, best
            table.append(row)
        print_regime(table, target, default_corner, kind)
        out[kind] = [
            {k: (dataclasses.asdict(v) if isinstance(v, Cost) else v) for k, v in r.items()}
            for r in table
        ]
    print_hge_curve(cases, default_corner)
    return out


def print_regime(
    table: Sequence[dict[str, Any]], target: float, default_corner: float, kind: str
) -> None:
    what = (
        "device time (bench clock: signals and the instrument I/O the bench charges)"
        if kind == "device"
        else "signal time (electrodes driven and output recorded; I/O free)"
    )
    print(f"\n{what} to a median relative gradient error <= {target:g}")
    print("  (cheapest measured configuration; '-' = none of the grid reached it, best shown)")
    print(
        f"  {'corner':>7} {'n':>2}  {'HGE s':>8} {'FD s':>8} {'SPSA s':>8}  {'FD/HGE':>7} "
        f"{'SPSA/HGE':>8}  HGE | FD | SPSA configuration"
    )
    for r in table:
        cells, labels = [], []
        for m in ("HGE", "FD", "SPSA"):
            c: Cost | None = r[m]
            if c is None:
                b: Cost = r[f"{m}_best"]
                cells.append(f"{'-':>8}")
                labels.append(f"none (best {b.err_median:.3f}: {b.label})")
            else:
                cells.append(f"{c.cost(kind):>8.3f}")
                labels.append(c.label + (" [extrapolated]" if c.extrapolated else ""))
        ratios = []
        for m in ("FD", "SPSA"):
            c, h = r[m], r["HGE"]
            ratios.append(
                "n/a" if c is None or h is None else f"{c.cost(kind) / h.cost(kind):.1f}x"
            )
        mark = " *" if r["corner_hz"] == default_corner and r["controls"] == 5 else ""
        print(
            f"  {r['corner_hz']:>5g}Hz {r['controls']:>2}  {' '.join(cells)}  "
            f"{ratios[0]:>7} {ratios[1]:>8}  {' | '.join(labels)}{mark}"
        )
    print("  * the station's default noise with 5 controls (the issue's goal: FD/HGE >= 10x)")


def print_hge_curve(
    cases: dict[tuple[float, int], dict[str, dict[str, Samples]]], default_corner: float
) -> None:
    """Median error of every configuration at the default corner, 5 controls: the curves the
    cheapest-reaching choice is read from."""
    methods = cases.get((default_corner, 5))
    if methods is None:
        return
    print(f"\nAll configurations at the default corner ({default_corner:g} Hz), 5 controls:")
    for method, configs in methods.items():
        for label, sm in configs.items():
            c = sm.summary(label)
            print(
                f"  {method:<5} {label:<34} err med {c.err_median:.4f}  device "
                f"{c.device_s:7.3f} s  signal {c.signal_s:7.3f} s"
            )


# ----------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer points (40 and 3)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI (< 20 s)")
    parser.add_argument(
        "--points",
        type=int,
        default=None,
        help=f"Fig. 3 random voltage sets (default {DEFAULT_POINTS}; the paper's 1000)",
    )
    parser.add_argument(
        "--map-points",
        type=int,
        default=None,
        help=f"voltage sets per regime-map case (default {DEFAULT_MAP_POINTS})",
    )
    parser.add_argument(
        "--target-error",
        type=float,
        default=0.1,
        help="median relative gradient error every method must reach in the regime map",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random voltage sets")
    parser.add_argument(
        "--white-noise",
        type=float,
        default=None,
        help="what-if: the read-out's white current noise in nA^2/Hz (station: 1e-5)",
    )
    parser.add_argument("--png", default="docs/hge_fig3.png", help="Fig. 3 figure ('' for none)")
    parser.add_argument("--no-map", action="store_true", help="Fig. 3 only")
    parser.add_argument("--json", default=None, help="write the tables to this file")
    args = parser.parse_args()
    if args.smoke:
        n_points, n_map = args.points or 2, args.map_points or 1
    elif args.quick:
        n_points, n_map = args.points or 40, args.map_points or 3
    else:
        n_points, n_map = args.points or DEFAULT_POINTS, args.map_points or DEFAULT_MAP_POINTS
    if n_points < 1 or n_map < 1:
        raise SystemExit(f"--points {n_points} and --map-points {n_map} must be >= 1")
    if n_points < 1000:
        print(
            f"NOTE: {n_points} voltage sets for Fig. 3, not the paper's 1000 (CPU budget); "
            f"--points 1000 runs the full study"
        )
    started = time.perf_counter()
    bench = GradientBench(args.white_noise)
    rng = np.random.default_rng(args.seed)
    out: dict[str, Any] = {"points": n_points, "map_points": n_map}
    try:
        params = bench.noise_params
        print(
            f"bench noise: white {params.current_noise_psd_na2_per_hz:g} nA^2/Hz, 1/f corner "
            f"{params.flicker_corner_hz:g} Hz, drift {params.drift_na_per_sqrt_s:g} nA/sqrt(s) "
            f"(tau {params.drift_tau_s:g} s); device seed 0",
            flush=True,
        )
        png = None if args.smoke or not args.png else args.png
        out["fig3"] = fig3(bench, n_points, rng, png, args.smoke)
        if not args.no_map:
            out["regime"] = regime_map(bench, n_map, rng, args.target_error, args.smoke)
    finally:
        bench.close()
    print(f"wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
