"""Seeded noise generators and the DNPU read-out chain (transimpedance amplifier).

Everything here works on *uniform sample grids*: a series of ``n`` samples at rate ``fs`` (Hz).
Randomness always comes from a caller-supplied :class:`numpy.random.Generator`, so the same seed
gives the same series.

Conventions
-----------
* A *one-sided* power spectral density ``S(f)`` (units²/Hz, ``0 < f <= fs/2``) is the one a
  Welch estimate (``scipy.signal.welch``, default ``scaling="density"``) reports. White noise of
  variance ``σ²`` sampled at ``fs`` has ``S = 2 σ² / fs``.
* :func:`white_plus_flicker` shapes ``S(f) = S_w (1 + f_c / f)``: white level ``S_w`` above the
  flicker corner ``f_c``, ``1/f`` below it.
* :func:`ou_drift` is an Ornstein–Uhlenbeck process ``dx = -x/τ dt + D dW`` (a random walk with
  diffusion ``D`` when ``τ = ∞``).

The read-out chain (:class:`ReadoutChain`) turns the device's output current into the TIA's output
voltage: noise and drift are added to the current, the first-order bandwidth of the amplifier
low-passes it, the gain converts it to volts, and the op-amp rails clip it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import signal

FloatArray = npt.NDArray[np.float64]


def _check_positive(name: str, value: float, where: str) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{where}: {name} must be a positive finite number, got {value!r}")


def _check_grid(n: int, fs: float, where: str) -> None:
    if n < 0:
        raise ValueError(f"{where}: sample count n must be >= 0, got {n!r}")
    _check_positive("sample rate fs (Hz)", fs, where)


def white_plus_flicker(
    rng: np.random.Generator,
    n: int,
    fs: float,
    white_psd: float,
    corner_hz: float = 0.0,
) -> FloatArray:
    """Return ``n`` samples of zero-mean Gaussian noise with one-sided PSD ``S_w (1 + f_c/f)``.

    ``white_psd`` is ``S_w`` in units²/Hz (e.g. nA²/Hz); ``corner_hz`` is the flicker corner
    ``f_c`` where the ``1/f`` part equals the white part (0 gives pure white noise). The series has
    exactly zero mean (the DC bin is empty); its lowest frequency is ``fs / n``.

    Example: ``white_plus_flicker(np.random.default_rng(1), 30000, 10e3, 1e-5, 100.0)``.
    """
    where = "white_plus_flicker"
    _check_grid(n, fs, where)
    if not (white_psd >= 0 and math.isfinite(white_psd)):
        raise ValueError(f"{where}: white_psd must be >= 0 and finite, got {white_psd!r}")
    if not (corner_hz >= 0 and math.isfinite(corner_hz)):
        raise ValueError(f"{where}: corner_hz must be >= 0 and finite, got {corner_hz!r}")
    if n == 0:
        return np.zeros(0)
    # White samples of variance σ² = S_w fs / 2 have the one-sided PSD S_w.
    white = rng.standard_normal(n) * math.sqrt(white_psd * fs / 2.0)
    if corner_hz == 0.0 or n < 2:
        return white
    # Shape in the frequency domain: |H(f)|² = 1 + f_c/f, so the PSD becomes S_w (1 + f_c/f).
    spectrum = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, d=1.0 / fs)
    gain = np.zeros_like(f)
    gain[1:] = np.sqrt(1.0 + corner_hz / f[1:])
    return np.fft.irfft(spectrum * gain, n=n)


def ou_drift(
    rng: np.random.Generator,
    n: int,
    fs: float,
    diffusion_per_sqrt_s: float,
    tau_s: float = math.inf,
    x0: float = 0.0,
) -> FloatArray:
    """Return ``n`` samples of an Ornstein–Uhlenbeck drift ``dx = -x/τ dt + D dW``, ``x(0) = x0``.

    ``diffusion_per_sqrt_s`` is ``D`` (units/√s): over a time ``t ≪ τ`` the drift wanders by
    about ``D √t``. With ``tau_s = inf`` the process is a random walk; with finite ``τ`` it
    relaxes to a stationary spread of ``D √(τ/2)``.

    The update is the exact discretisation of the SDE on the grid (``Δt = 1/fs``):
    ``x[k+1] = ρ x[k] + D √(τ (1 - ρ²) / 2) ξ_k`` with ``ρ = exp(-Δt/τ)`` (``D √Δt ξ_k`` for
    ``τ = ∞``), ``ξ_k`` standard normal.
    """
    where = "ou_drift"
    _check_grid(n, fs, where)
    if not (diffusion_per_sqrt_s >= 0 and math.isfinite(diffusion_per_sqrt_s)):
        raise ValueError(
            f"{where}: diffusion_per_sqrt_s must be >= 0, got {diffusion_per_sqrt_s!r}"
        )
    if not tau_s > 0:
        raise ValueError(f"{where}: tau_s must be > 0 (inf for a random walk), got {tau_s!r}")
    if n == 0:
        return np.zeros(0)
    dt = 1.0 / fs
    if math.isinf(tau_s):
        rho = 1.0
        step_sd = diffusion_per_sqrt_s * math.sqrt(dt)
    else:
        rho = math.exp(-dt / tau_s)
        step_sd = diffusion_per_sqrt_s * math.sqrt(tau_s * (1.0 - rho * rho) / 2.0)
    kicks = rng.standard_normal(n - 1) * step_sd
    # AR(1) recursion x[k+1] = ρ x[k] + kick[k], run by lfilter from the initial value x0.
    out = np.empty(n)
    out[0] = x0
    if n > 1:
        tail, _ = signal.lfilter([1.0], [1.0, -rho], kicks, zi=[rho * x0])
        out[1:] = tail
    return out


def quantise(x: npt.ArrayLike, lsb: float) -> FloatArray:
    """Round ``x`` to the nearest multiple of ``lsb`` (an ADC's or DAC's least significant bit)."""
    _check_positive("lsb", lsb, "quantise")
    return np.round(np.asarray(x, dtype=float) / lsb) * lsb


def first_order_lowpass(x: npt.ArrayLike, fs: float, tau_s: float) -> FloatArray:
    """Low-pass ``x`` (uniform grid, rate ``fs``) through ``τ dy/dt = x - y``, starting settled.

    The input is taken as piecewise linear between samples (first-order hold), and the filter is
    solved exactly over each interval, so a sampled sinusoid of frequency ``f`` comes out with the
    continuous-time response ``1 / (1 + j 2π f τ)``: gain ``1/√(1 + (f/fc)²)`` and phase lag
    ``atan(f/fc)`` with ``fc = 1/(2πτ)`` (up to the O((f/fs)²) error of linear interpolation).

    With ``ρ = exp(-Δt/τ)`` and ``c = (τ/Δt)(1 - ρ)``:
    ``y[k+1] = ρ y[k] + (1 - c) x[k+1] + (c - ρ) x[k]``; ``y[0] = x[0]`` (no start transient).
    """
    where = "first_order_lowpass"
    _check_positive("sample rate fs (Hz)", fs, where)
    if not (tau_s >= 0 and math.isfinite(tau_s)):
        raise ValueError(f"{where}: tau_s must be >= 0 and finite, got {tau_s!r}")
    xa = np.asarray(x, dtype=float)
    if xa.ndim != 1:
        raise ValueError(f"{where}: x must be 1-D, got shape {xa.shape}")
    if xa.size == 0 or tau_s == 0.0:
        return xa.copy()
    dt = 1.0 / fs
    rho = math.exp(-dt / tau_s)
    c = (tau_s / dt) * (-math.expm1(-dt / tau_s))
    b = [1.0 - c, c - rho]
    a = [1.0, -rho]
    # Settled start: for a constant input x0 the state equals x0 (b sums to 1 - ρ).
    zi = signal.lfiltic(b, a, y=[xa[0]], x=[xa[0]])
    y, _ = signal.lfilter(b, a, xa, zi=zi)
    return np.asarray(y, dtype=float)


@dataclass(frozen=True)
class TiaParams:
    """The transimpedance amplifier that holds the DNPU output at virtual ground and reads it.

    Attributes:
        gain_na_per_v: current per output volt (nA/V); 100 nA/V is a 10 MΩ feedback resistor.
        saturation_v: the op-amp rails (V): the output is clipped to ``±saturation_v``.
        bandwidth_hz: first-order −3 dB bandwidth ``fc`` (Hz); a sinusoid at ``f`` lags by
            ``atan(f/fc)``.
        current_noise_psd_na2_per_hz: white current-noise level ``S_w`` (nA²/Hz, one-sided),
            referred to the input.
        flicker_corner_hz: frequency (Hz) below which the ``1/f`` current noise dominates.
        drift_na_per_sqrt_s: slow drift of the input current (nA/√s), an Ornstein–Uhlenbeck
            process (:func:`ou_drift`).
        drift_tau_s: relaxation time of the drift (s); the drift's long-run spread is
            ``drift_na_per_sqrt_s · √(drift_tau_s / 2)``.
    """

    gain_na_per_v: float = 100.0
    saturation_v: float = 3.5
    bandwidth_hz: float = 3000.0
    current_noise_psd_na2_per_hz: float = 1e-5
    flicker_corner_hz: float = 100.0
    drift_na_per_sqrt_s: float = 0.02
    drift_tau_s: float = 300.0

    def __post_init__(self) -> None:
        where = "TiaParams"
        for name in ("gain_na_per_v", "saturation_v", "bandwidth_hz", "drift_tau_s"):
            _check_positive(name, float(getattr(self, name)), where)
        for name in ("current_noise_psd_na2_per_hz", "flicker_corner_hz", "drift_na_per_sqrt_s"):
            value = float(getattr(self, name))
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{where}: {name} must be >= 0 and finite, got {value!r}")

    @property
    def tau_s(self) -> float:
        """Time constant ``τ = 1/(2π fc)`` of the amplifier's first-order response (s)."""
        return 1.0 / (2.0 * math.pi * self.bandwidth_hz)

    def phase_lag_rad(self, f_hz: npt.ArrayLike) -> FloatArray:
        """Phase lag ``atan(f/fc)`` (rad) of the read-out at frequency ``f_hz``."""
        return np.arctan(np.asarray(f_hz, dtype=float) / self.bandwidth_hz)


class ReadoutChain:
    """Device current (nA) → TIA output voltage (V), with noise, drift, bandwidth and clipping.

    Sign convention: ``output_v = +current_na / gain_na_per_v``. A bare inverting TIA gives the
    opposite sign; labrig folds that inversion into the chain so that positive current into the
    output electrode reads as positive volts everywhere (simulator, drivers, plots).

    Clipping is *hard* (``np.clip`` at ``±saturation_v``), as an op-amp output hits its rails; it is
    applied last, after the bandwidth, because the rails act on the amplifier output.

    Usage::

        chain = ReadoutChain(TiaParams())
        v = chain.output_v(current_na, fs=10e3, rng=np.random.default_rng(0))
    """

    def __init__(self, params: TiaParams | None = None) -> None:
        self.params = params if params is not None else TiaParams()

    def noisy_current_na(
        self, current_na: npt.ArrayLike, fs: float, rng: np.random.Generator
    ) -> FloatArray:
        """Add the current noise (white + 1/f) and drift to ``current_na`` (before the filter)."""
        i = np.asarray(current_na, dtype=float)
        if i.ndim != 1:
            raise ValueError(f"ReadoutChain: current_na must be 1-D, got shape {i.shape}")
        p = self.params
        n = i.size
        noise = white_plus_flicker(rng, n, fs, p.current_noise_psd_na2_per_hz, p.flicker_corner_hz)
        drift = ou_drift(rng, n, fs, p.drift_na_per_sqrt_s, p.drift_tau_s)
        return i + noise + drift

    def ideal_output_v(self, current_na: npt.ArrayLike, fs: float) -> FloatArray:
        """Noise-free read-out: the low-passed current over the gain, clipped at the rails."""
        i = np.asarray(current_na, dtype=float)
        if i.ndim != 1:
            raise ValueError(f"ReadoutChain: current_na must be 1-D, got shape {i.shape}")
        p = self.params
        filtered = first_order_lowpass(i, fs, p.tau_s)
        return np.clip(filtered / p.gain_na_per_v, -p.saturation_v, p.saturation_v)

    def output_v(
        self, current_na: npt.ArrayLike, fs: float, rng: np.random.Generator
    ) -> FloatArray:
        """Return the TIA output (V) for the current ``current_na`` (nA) sampled at ``fs`` (Hz).

        Steps: ``i + noise + drift`` → first-order low-pass (``τ = 1/(2π fc)``, exact on the
        grid, settled start) → ``/ gain_na_per_v`` → hard clip at ``±saturation_v``.
        """
        return self.ideal_output_v(self.noisy_current_na(current_na, fs, rng), fs)
