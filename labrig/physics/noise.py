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
from collections.abc import Sequence
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

    def __init__(
        self, params: TiaParams | None = None, noise: ClockedCurrentNoise | None = None
    ) -> None:
        self.params = params if params is not None else TiaParams()
        # The current noise as one process on the bench clock (see :meth:`output_on_clock_v`);
        # None: per-record noise from a caller's generator (:meth:`output_v`).
        self.noise = noise

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

    def output_on_clock_v(
        self, current_na: npt.ArrayLike, t: npt.ArrayLike, fs: float
    ) -> FloatArray:
        """The TIA output (V) for ``current_na`` (nA) on the uniform grid ``t`` (bench s, rate
        ``fs``), with the noise of the clocked process :attr:`noise` at those instants.

        The amplifier is linear up to its rails, so the low-pass of signal plus noise is the
        low-passed signal (settled start) plus the process's low-passed noise; then the gain
        and the rails.
        """
        if self.noise is None:
            raise ValueError("ReadoutChain.output_on_clock_v: this chain has no clocked noise")
        i = np.asarray(current_na, dtype=float)
        ts = np.asarray(t, dtype=float)
        if i.ndim != 1 or ts.shape != i.shape:
            raise ValueError(
                f"ReadoutChain: current_na {i.shape} and t {ts.shape} must be equal 1-D shapes"
            )
        p = self.params
        filtered = first_order_lowpass(i, fs, p.tau_s) + self.noise.filtered_na(ts)
        return np.clip(filtered / p.gain_na_per_v, -p.saturation_v, p.saturation_v)


@dataclass(frozen=True)
class DacNoiseParams:
    """A DAC channel's output imperfections, as the device sees them.

    Attributes:
        lsb_v: the output's resolution (V); QDAC-II: 25 bits over ±10 V, 20 V / 2**25 ≈ 0.6 µV.
        noise_v_per_sqrt_hz: white output-voltage noise density (V/√Hz); QDAC-II: < 10 nV/√Hz.
    """

    lsb_v: float = 20.0 / 2**25
    noise_v_per_sqrt_hz: float = 10e-9

    def __post_init__(self) -> None:
        for name in ("lsb_v", "noise_v_per_sqrt_hz"):
            value = float(getattr(self, name))
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"DacNoiseParams: {name} must be >= 0 and finite, got {value!r}")

    def apply(self, volts: npt.ArrayLike, fs: float, rng: np.random.Generator) -> FloatArray:
        """``volts`` (samples at rate ``fs`` along axis 0) as the DAC delivers them: rounded to
        the LSB, plus white noise of one-sided density ``noise_v_per_sqrt_hz``
        (``σ = e_n √(fs/2)`` per sample)."""
        v = np.asarray(volts, dtype=float)
        out = quantise(v, self.lsb_v) if self.lsb_v > 0 else v.copy()
        if self.noise_v_per_sqrt_hz > 0 and out.size:
            _check_positive("sample rate fs (Hz)", fs, "DacNoiseParams.apply")
            out += rng.standard_normal(out.shape) * (self.noise_v_per_sqrt_hz * math.sqrt(fs / 2))
        return out


# ------------------------------------------------------------------ one process on a clock
# Flicker noise as a superposition of Lorentzians (relaxing two-level fluctuators, the
# McWhorter picture of 1/f noise; in hopping conduction the fluctuators are carriers trapped on
# isolated sites or clusters that exchange charge slowly with the percolating network). Each is
# an Ornstein-Uhlenbeck process; ``FLICKER_PER_DECADE`` of them per decade of corner frequency,
# with equal variances, sum to a 1/f spectrum within 0.1 dB from 0.01 Hz to 3 kHz (tested).
FLICKER_PER_DECADE = 3
FLICKER_LOW_HZ = 1e-4  # below this the 1/f part flattens (the slowest fluctuator's corner)
FLICKER_HIGH_HZ = 1e5  # above this it falls as 1/f^2 (where white noise dominates anyway)
_POINTS_PER_CORNER_PERIOD = 20  # a component's in-block grid resolves its corner this finely


def _lorentzian_psd(f: FloatArray, sigma: float, theta: float) -> FloatArray:
    """One-sided PSD of an OU process of stationary spread ``sigma`` and rate ``theta`` (1/s):
    ``S(f) = 4 σ² θ / (θ² + (2π f)²)``."""
    return np.asarray(4.0 * sigma**2 * theta / (theta**2 + (2.0 * math.pi * f) ** 2))


class ClockedCurrentNoise:
    """The DNPU's output-current noise as ONE process on the bench clock: white + 1/f + drift.

    The noise is a function of bench time ``t`` (s) alone: the same ``seed`` gives the same
    value at the same instant, however the instants are grouped into requests (records, DC
    windows, traces, lock-in reads), in whatever order they are asked for, on a fresh object or
    an old one — so a run resumed on a new bench at the checkpoint's time replays it exactly,
    and a DC level read twice differs as a lab's does (by the 1/f noise and the drift between
    the two reads, not only by the white noise within each window).

    Model (currents in nA, one-sided PSDs in nA²/Hz)::

        i_n(t) = w(t) + Σ_j x_j(t) + d(t)
        S(f)   = S_w                                   white, sampled at ``rate_hz``
               + Σ_j 4 σ_j² θ_j / (θ_j² + (2πf)²)       ≈ S_w f_c / f  for 1e-4 Hz ≪ f ≪ 100 kHz
               + 4 σ_d² θ_d / (θ_d² + (2πf)²)          drift, θ_d = 1/τ_d, σ_d = D √(τ_d / 2)

    ``x_j`` are Ornstein–Uhlenbeck processes with corners ``f_j`` log-spaced at
    ``FLICKER_PER_DECADE`` per decade and ``σ_j² = S_w f_c ln(10) / FLICKER_PER_DECADE``
    (``Σ_j 4 σ_j² τ_j / (1 + (2πfτ_j)²)`` then integrates to ``S_w f_c / f``). The drift ``d``
    is one more, slow OU process (a random walk of ``D`` nA/√s on times ≪ ``τ_d``).

    How it is a function of time: time is cut into blocks of ``block_s``. Each OU component's
    values at block edges follow the exact AR(1) recursion across whole blocks, seeded by chunk
    of blocks; inside a block, the path between the two edge values is drawn as an OU *bridge*
    (an unconditioned path from the left edge, seeded by the block, plus
    ``sinh(θt)/sinh(θT) (x_right - path(T))``), on a grid that resolves the component's corner
    (20 points per corner period; the slow components are interpolated linearly). White noise is
    drawn per block on the grid ``k / rate_hz``. Blocks are cached (a few), so a bench reading
    forward in time pays for each block once.

    :meth:`filtered_na` returns the noise after the TIA's first-order low-pass (the amplifier
    filters the current noise with the signal), filtered on the fine grid with a settled history
    from the previous block and interpolated to the requested instants: add it to the low-passed
    signal current.
    """

    def __init__(
        self,
        params: TiaParams,
        seed: int | Sequence[int] = 0,
        *,
        rate_hz: float = 100e3,
        block_s: float = 1.0,
        cache_blocks: int = 6,
    ) -> None:
        where = "ClockedCurrentNoise"
        _check_positive("rate_hz", rate_hz, where)
        _check_positive("block_s", block_s, where)
        n = round(rate_hz * block_s)
        if abs(n - rate_hz * block_s) > 1e-9 * n or n < 16:
            raise ValueError(
                f"{where}: block_s * rate_hz = {block_s * rate_hz!r} must be an integer >= 16"
            )
        self.params = params
        self.rate_hz = float(rate_hz)
        self.block_s = float(block_s)
        self.block_n = int(n)
        self._seed = [int(s) & 0xFFFFFFFF for s in (seed if isinstance(seed, Sequence) else [seed])]
        self._cache_blocks = max(2, int(cache_blocks))
        # Components: rate θ (1/s) and stationary spread σ (nA).
        thetas: list[float] = []
        sigmas: list[float] = []
        if params.flicker_corner_hz > 0 and params.current_noise_psd_na2_per_hz > 0:
            var = (
                params.current_noise_psd_na2_per_hz
                * params.flicker_corner_hz
                * math.log(10.0)
                / FLICKER_PER_DECADE
            )
            decades = math.log10(FLICKER_HIGH_HZ / FLICKER_LOW_HZ)
            count = round(decades * FLICKER_PER_DECADE)
            for j in range(count):
                f_j = FLICKER_LOW_HZ * 10 ** ((j + 0.5) / FLICKER_PER_DECADE)
                thetas.append(2.0 * math.pi * f_j)
                sigmas.append(math.sqrt(var))
        if params.drift_na_per_sqrt_s > 0:
            thetas.append(1.0 / params.drift_tau_s)
            sigmas.append(params.drift_na_per_sqrt_s * math.sqrt(params.drift_tau_s / 2.0))
        self.thetas = np.asarray(thetas, dtype=float)
        self.sigmas = np.asarray(sigmas, dtype=float)
        # Each component's in-block grid: block_n / decimation steps, decimation a power of 10
        # that divides block_n and keeps >= 20 points per corner period (>= 4 points a block).
        decimations = []
        for theta in self.thetas:
            corner_hz = theta / (2.0 * math.pi)
            want = self.block_n / max(1.0, _POINTS_PER_CORNER_PERIOD * corner_hz * self.block_s)
            d = 1
            while d * 10 <= want and self.block_n % (d * 10) == 0 and self.block_n // (d * 10) >= 4:
                d *= 10
            decimations.append(d)
        self._decimation = np.asarray(decimations, dtype=int)
        # Block edges: the first block starts at FIRST_BLOCK * block_s (room for the history
        # a read-out asks for before t = 0); the state there is drawn from the stationary law.
        self._first_block = -2
        self._edges = np.zeros((0, self.thetas.size))
        self._raw: dict[int, FloatArray] = {}
        self._filtered: dict[int, FloatArray] = {}

    # -------------------------------------------------------------------------- the model
    @property
    def white_sigma_na(self) -> float:
        """Standard deviation of one white sample on the fine grid: ``√(S_w rate / 2)``."""
        return math.sqrt(self.params.current_noise_psd_na2_per_hz * self.rate_hz / 2.0)

    def psd_na2_per_hz(self, f_hz: npt.ArrayLike) -> FloatArray:
        """The process's one-sided PSD (nA²/Hz) at ``f_hz`` (before the TIA's low-pass)."""
        f = np.asarray(f_hz, dtype=float)
        total = np.full(f.shape, self.params.current_noise_psd_na2_per_hz)
        for sigma, theta in zip(self.sigmas, self.thetas, strict=True):
            total = total + _lorentzian_psd(f, float(sigma), float(theta))
        return np.asarray(total)

    # ---------------------------------------------------------------------- block edges
    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([*self._seed, *(k & 0xFFFFFFFF for k in key)])

    def _edge_states(self, last_block: int) -> FloatArray:
        """Component values at the edges of blocks ``first .. last_block + 1`` (rows)."""
        need = last_block + 2 - self._first_block
        chunk = 256
        while self._edges.shape[0] < need:
            have = self._edges.shape[0]
            c = have // chunk  # chunk index of the next rows (rows come in whole chunks)
            rng = self._rng(0xED6E, c)
            kicks = rng.standard_normal((chunk, self.thetas.size))
            rho = np.exp(-self.thetas * self.block_s)
            step_sd = self.sigmas * np.sqrt(-np.expm1(-2.0 * self.thetas * self.block_s))
            rows = np.empty((chunk, self.thetas.size))
            prev = self._edges[-1] if have else None
            for r in range(chunk):
                if prev is None:
                    rows[r] = self.sigmas * kicks[r]  # stationary start
                else:
                    rows[r] = rho * prev + step_sd * kicks[r]
                prev = rows[r]
            self._edges = np.concatenate([self._edges, rows])
        return self._edges

    # --------------------------------------------------------------------------- blocks
    def _raw_block(self, b: int) -> FloatArray:
        """The unfiltered noise on block ``b``'s fine grid (``block_n`` samples from ``b T``)."""
        cached = self._raw.get(b)
        if cached is not None:
            return cached
        n = self.block_n
        edges = self._edge_states(b)
        left = edges[b - self._first_block]
        right = edges[b + 1 - self._first_block]
        rng = self._rng(0xB10C, b)
        out = rng.standard_normal(n) * self.white_sigma_na
        by_decimation: dict[int, FloatArray] = {}
        for j, (theta, sigma) in enumerate(zip(self.thetas, self.sigmas, strict=True)):
            d = int(self._decimation[j])
            m = n // d
            dt = self.block_s / m
            rho = math.exp(-theta * dt)
            kicks = rng.standard_normal(m) * (sigma * math.sqrt(-math.expm1(-2.0 * theta * dt)))
            path = np.empty(m + 1)
            path[0] = left[j]
            tail, _ = signal.lfilter([1.0], [1.0, -rho], kicks, zi=[rho * left[j]])
            path[1:] = tail
            # Bridge to the right edge: + sinh(θt)/sinh(θT) (x_right - path(T)), written
            # with exponentials that neither overflow (θT large) nor cancel (θT small).
            t = dt * np.arange(m + 1)
            weight = (
                np.exp(-theta * (self.block_s - t))
                * np.expm1(-2.0 * theta * t)
                / math.expm1(-2.0 * theta * self.block_s)
            )
            path += weight * (right[j] - path[-1])
            acc = by_decimation.get(d)
            by_decimation[d] = path if acc is None else acc + path
        for d, path in by_decimation.items():
            if d == 1:
                out += path[:n]
            else:
                out += np.interp(np.arange(n) / d, np.arange(path.size), path)
        self._remember(self._raw, b, out)
        return out

    def _remember(self, cache: dict[int, FloatArray], b: int, value: FloatArray) -> None:
        cache[b] = value
        while len(cache) > self._cache_blocks:
            cache.pop(next(iter(cache)))  # the oldest: a bench reads forward in time

    def _filtered_block(self, b: int) -> FloatArray:
        """Block ``b``'s noise after the TIA low-pass, with the previous block as history."""
        cached = self._filtered.get(b)
        if cached is not None:
            return cached
        raw = self._raw_block(b)
        tau = self.params.tau_s
        history = min(self.block_n, math.ceil(12.0 * tau * self.rate_hz) + 2)
        if b > self._first_block:
            raw = np.concatenate([self._raw_block(b - 1)[-history:], raw])
        else:
            history = 0
        out = first_order_lowpass(raw, self.rate_hz, tau)[history:]
        self._remember(self._filtered, b, out)
        return out

    def filtered_na(self, t: npt.ArrayLike) -> FloatArray:
        """The TIA-filtered current noise (nA) at bench times ``t`` (s, any order)."""
        ts = np.asarray(t, dtype=float)
        flat = ts.reshape(-1)
        out = np.empty(flat.size)
        if flat.size == 0:
            return out.reshape(ts.shape)
        if not np.all(np.isfinite(flat)):
            raise ValueError("ClockedCurrentNoise.filtered_na: times must be finite")
        earliest = self._first_block * self.block_s
        if float(flat.min()) < earliest:
            raise ValueError(
                f"ClockedCurrentNoise.filtered_na: time {float(flat.min())!r} s is before the "
                f"process starts ({earliest} s)"
            )
        pos = flat * self.rate_hz  # fine-grid position
        k = np.floor(pos).astype(np.int64)
        blocks = np.floor_divide(k, self.block_n)
        order = np.argsort(blocks, kind="stable")
        sorted_blocks = blocks[order]
        starts = np.flatnonzero(np.r_[True, sorted_blocks[1:] != sorted_blocks[:-1]])
        ends = np.r_[starts[1:], sorted_blocks.size]
        for s, e in zip(starts, ends, strict=True):
            b = int(sorted_blocks[s])
            idx = order[s:e]
            values = self._filtered_block(b)
            local = pos[idx] - b * self.block_n
            if float(local.max()) > self.block_n - 1:
                # The last interval needs the next block's first sample.
                values = np.append(values, self._filtered_block(b + 1)[0])
            out[idx] = np.interp(local, np.arange(values.size, dtype=float), values)
        return out.reshape(ts.shape)
