"""Homodyne gradient extraction (HGE): frequency plans, perturbation waveforms, demodulation.

Every control electrode j is perturbed at once with its own sine,
``V_j(t) = V_j0 + A_j sin(2π f_j t)``. To first order the output current is

    I(t) = I(V_0) + Σ_j (∂I/∂V_j) A_j sin(2π f_j t) + (higher orders),

so the component of ``I`` at ``f_j`` carries ``∂I/∂V_j``. Over a window that holds an integer
number of periods of every ``f_j`` the references ``sin(2π f_j t)``, ``cos(2π f_j t)`` are
orthogonal to each other (and to every other integer-period tone), and a boxcar mean is a perfect
lock-in:

    X_j = mean((I - Ī) sin(2π f_j t)),   Y_j = mean((I - Ī) cos(2π f_j t)),
    ∂I/∂V_j ≈ sign · 2 sqrt(X_j² + Y_j²) / A_j,

with sign + when the phase ``atan2(Y_j, X_j)``, after correcting the known read-out lag (a
first-order TIA: ``atan(f / f_c)``), is within ±90° of the excitation.

The second-order terms of the Taylor series, ``½ H_ik A_i A_k sin_i sin_k``, put power at
``f_i ± f_k`` and ``2 f_i``; the third-order terms at ``3 f_i``, ``2 f_i ± f_k``,
``f_i ± f_k ± f_l``. A plan is *collision-free* when none of those products lands on an
excitation frequency (the window makes every other product orthogonal). Odd multiples of a
common step ``u`` never collide at second order: ``u·odd ± u·odd = u·even``.

Typical use (the procedure binds this to instruments)::

    plan = AUTHORS_PLAN                      # or plan_frequencies(5, 10e3, 0.05, 80.0)
    plan.validate()
    sched = build_case_waveforms(case_inputs_v, controls_v, plan, ramp_s=0.02)
    trace = <play sched.voltages_v, record the output current on the same sample grid>
    grads = case_gradients(trace, sched, plan, phase_correction_rad=lag)
    grads.dI_dV          # (cases, controls)

Units: volts and hertz; currents in whatever unit the trace has (gradients come out per volt).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Tolerance for "is an integer" on products like f * window (relative to 1 cycle / sample).
_INT_TOL = 1e-6


def _as_int(value: float, what: str, where: str) -> int:
    """Return ``value`` as an int when it is one within ``_INT_TOL``; raise otherwise."""
    rounded = round(value)
    if abs(value - rounded) > _INT_TOL:
        raise ValueError(f"{what} = {value:.9g} is not an integer ({where})")
    return int(rounded)


# --------------------------------------------------------------------------------------------
# Intermodulation bookkeeping
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Collision:
    """An intermodulation product that lands on an excitation frequency.

    ``coefficients[i]`` multiplies excitation ``i`` (e.g. ``(2, 1, 0, -1, 0)`` is
    ``2 f_0 + f_1 - f_3``); ``product_hz`` is where the product lands after folding about
    Nyquist; ``hits`` is the index of the excitation it hits.
    """

    coefficients: tuple[int, ...]
    product_hz: float
    hits: int

    @property
    def order(self) -> int:
        return sum(abs(c) for c in self.coefficients)

    def describe(self) -> str:
        terms = []
        for i, c in enumerate(self.coefficients):
            if c:
                mag = "" if abs(c) == 1 else f"{abs(c)}*"
                terms.append(("-" if c < 0 else "+") + f"{mag}f{i}")
        text = " ".join(terms).lstrip("+")
        return f"|{text}| = f{self.hits} ({self.product_hz:g} Hz)"


def _collisions_in_bins(
    bins: Sequence[int], n_samples: int, order: int
) -> list[tuple[tuple[int, ...], int, int]]:
    """Products of exactly ``order`` that land on an excitation bin.

    ``bins`` are frequencies in cycles per window (integers), ``n_samples`` the window length:
    a product at bin ``b`` is seen at ``|b| mod N`` folded to ``min(b, N - b)`` (aliasing).
    A product whose net coefficient vector has fewer than ``order`` terms (``f_i - f_i + f_k``)
    is a lower-order or self term, not a product of this order, and is skipped: the self terms
    (e.g. ``sin³`` → ``¾ sin``) are the perturbation's own curvature bias, which no plan avoids.
    """
    n = len(bins)
    where = {b: i for i, b in enumerate(bins)}
    found: dict[tuple[int, ...], tuple[int, int]] = {}
    for idx in itertools.combinations_with_replacement(range(n), order):
        # Fix the first sign to + : |p| is symmetric under flipping all signs.
        for signs in itertools.product((1, -1), repeat=order - 1):
            coeff = [0] * n
            coeff[idx[0]] += 1
            for i, s in zip(idx[1:], signs, strict=True):
                coeff[i] += s
            if sum(abs(c) for c in coeff) != order:
                continue
            folded = _fold(sum(c * b for c, b in zip(coeff, bins, strict=True)), n_samples)
            if folded in where:
                key = tuple(coeff)
                if key[next(i for i, c in enumerate(key) if c)] < 0:
                    key = tuple(-c for c in key)
                found[key] = (folded, where[folded])
    return [(k, b, hit) for k, (b, hit) in found.items()]


def first_order_response(
    frequencies_hz: Sequence[float] | FloatArray, cutoff_hz: float
) -> tuple[FloatArray, FloatArray]:
    """Gain and phase lag of a first-order low-pass read-out (e.g. a TIA) at ``frequencies_hz``.

    ``H(f) = 1 / (1 + i f / f_c)``: gain ``1 / sqrt(1 + (f/f_c)²)``, lag ``atan(f / f_c)`` rad.
    Pass them to :func:`gradient_from_xy` / :func:`case_gradients` as ``readout_gain`` and
    ``phase_correction_rad``.
    """
    if not cutoff_hz > 0:
        raise ValueError(f"read-out cutoff {cutoff_hz!r} Hz must be > 0")
    ratio = np.asarray(frequencies_hz, dtype=float) / cutoff_hz
    return 1.0 / np.sqrt(1.0 + ratio * ratio), np.arctan(ratio)


# --------------------------------------------------------------------------------------------
# Frequency plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrequencyPlan:
    """Perturbation frequency and amplitude for each control electrode, and the demod window.

    ``frequencies_hz[j]`` and ``amplitudes_v[j]`` belong to control ``j`` (in the order the
    procedure lists its controls). ``window_s`` is the demodulation window: it must hold an
    integer number of samples and an integer number of periods of every frequency. Call
    :meth:`validate` before use; :func:`plan_frequencies` returns validated plans.
    """

    frequencies_hz: tuple[float, ...]
    amplitudes_v: tuple[float, ...]
    window_s: float
    sample_rate_hz: float

    @property
    def n_samples(self) -> int:
        """Samples in one demodulation window."""
        return _as_int(self.window_s * self.sample_rate_hz, "window_s * sample_rate_hz", "plan")

    @property
    def bins(self) -> tuple[int, ...]:
        """Frequencies in cycles per window (integers for a valid plan)."""
        return tuple(
            _as_int(f * self.window_s, f"f{j} * window_s (f{j} = {f:g} Hz)", "plan")
            for j, f in enumerate(self.frequencies_hz)
        )

    def collisions(self, order: int) -> list[Collision]:
        """Intermodulation products of exactly ``order`` (2 or 3) landing on an excitation."""
        if order not in (2, 3):
            raise ValueError(f"intermodulation order {order!r} must be 2 or 3")
        unit = 1.0 / self.window_s
        return [
            Collision(coeff, b * unit, hit)
            for coeff, b, hit in _collisions_in_bins(self.bins, self.n_samples, order)
        ]

    def validate(self, *, third_order: bool = False, max_hz: float | None = None) -> None:
        """Raise ValueError unless the plan can be demodulated cleanly.

        Checks: as many amplitudes as frequencies, all positive and distinct; an integer number
        of samples per window and of periods of every frequency per window; every frequency
        below Nyquist (and below ``max_hz`` if given, e.g. the TIA bandwidth); no second-order
        intermodulation product on an excitation frequency, and with ``third_order=True`` no
        third-order one either.
        """
        f, a = self.frequencies_hz, self.amplitudes_v
        if len(f) == 0:
            raise ValueError("frequency plan has no frequencies")
        if len(a) != len(f):
            raise ValueError(f"frequency plan has {len(f)} frequencies but {len(a)} amplitudes_v")
        if not (self.sample_rate_hz > 0 and self.window_s > 0):
            raise ValueError(
                f"plan sample_rate_hz={self.sample_rate_hz!r} and window_s={self.window_s!r} "
                "must be > 0"
            )
        for j, (fj, aj) in enumerate(zip(f, a, strict=True)):
            if not fj > 0:
                raise ValueError(f"plan frequency f{j} = {fj!r} Hz must be > 0")
            if not aj > 0:
                raise ValueError(f"plan amplitude A{j} = {aj!r} V must be > 0")
        nyquist = self.sample_rate_hz / 2
        limit, source = (nyquist, "Nyquist") if max_hz is None else (min(nyquist, max_hz), "max_hz")
        if max(f) >= limit:
            raise ValueError(f"plan frequency {max(f):g} Hz is not below {limit:g} Hz ({source})")
        bins = self.bins  # raises on non-integer periods
        _ = self.n_samples  # raises on a non-integer window
        if len(set(bins)) != len(bins):
            raise ValueError(f"plan frequencies {f} are not distinct on the window's grid")
        orders = (2, 3) if third_order else (2,)
        for order in orders:
            hits = self.collisions(order)
            if hits:
                text = "; ".join(c.describe() for c in hits[:5])
                raise ValueError(
                    f"order-{order} intermodulation lands on excitation frequencies: {text}"
                )


AUTHORS_PLAN = FrequencyPlan(
    frequencies_hz=(200.0, 360.0, 520.0, 760.0, 920.0),  # 40 Hz x [5, 9, 13, 19, 23]
    amplitudes_v=(0.030, 0.010, 0.010, 0.005, 0.005),
    window_s=0.050,
    sample_rate_hz=10_000.0,
)
"""The settings of the authors' public code (2020): second-order clean, not third-order clean
(``2·200 + 360 = 760 Hz``)."""


def plan_frequencies(
    n: int,
    sample_rate_hz: float,
    window_s: float,
    min_spacing_hz: float,
    base_hz: float | None = None,
    max_hz: float | None = None,
    *,
    amplitudes_v: Sequence[float] | float = 0.01,
    tia_bandwidth_hz: float | None = None,
    avoid_third_order: bool = True,
    search_budget: int = 50_000,
) -> FrequencyPlan:
    """Choose ``n`` perturbation frequencies for one demodulation window.

    Frequencies are odd multiples ``m·u`` of a step ``u``: ``u`` is the smallest multiple of
    ``1/window_s`` with ``2u ≥ min_spacing_hz``, so every frequency has an integer number of
    periods per window, neighbours are at least ``min_spacing_hz`` apart and no second-order
    product (``u·even``) lands on an excitation (``u·odd``). Among the odd multiples in
    ``[base_hz, max_hz]`` it searches for the set with the lowest top frequency that is also
    free of third-order collisions (``avoid_third_order``); if none exists within the range (or
    the search budget), it takes the lowest set that minimises third-order collisions.

    Defaults: ``base_hz = 5u`` (clear of drift and 1/f noise, as the authors chose);
    ``max_hz = min(sample_rate/10, tia_bandwidth/2)`` — well below Nyquist (so low-order
    products do not alias) and where the TIA's gain and phase are still nearly flat.
    ``amplitudes_v`` is one value for all or one per frequency (see :func:`assign_amplitudes`).

    Raises ValueError when the range cannot hold ``n`` frequencies.
    """
    if n < 1:
        raise ValueError(f"number of frequencies n={n!r} must be >= 1")
    if not (sample_rate_hz > 0 and window_s > 0 and min_spacing_hz > 0):
        raise ValueError(
            f"sample_rate_hz={sample_rate_hz!r}, window_s={window_s!r}, "
            f"min_spacing_hz={min_spacing_hz!r} must all be > 0"
        )
    _as_int(window_s * sample_rate_hz, "window_s * sample_rate_hz", "plan_frequencies")
    bin_hz = 1.0 / window_s
    step_bins = max(1, math.ceil(min_spacing_hz / 2 / bin_hz - _INT_TOL))
    u = step_bins * bin_hz
    if base_hz is None:
        base_hz = 5 * u
    if max_hz is None:
        max_hz = sample_rate_hz / 10
        if tia_bandwidth_hz is not None:
            max_hz = min(max_hz, tia_bandwidth_hz / 2)
    elif tia_bandwidth_hz is not None and max_hz >= tia_bandwidth_hz:
        raise ValueError(
            f"max_hz={max_hz:g} Hz is not below tia_bandwidth_hz={tia_bandwidth_hz:g} Hz"
        )
    m_lo = max(1, math.ceil(base_hz / u - _INT_TOL))
    m_lo += 1 - m_lo % 2  # first odd multiple >= base
    m_hi = math.floor(max_hz / u + _INT_TOL)
    candidates = list(range(m_lo, m_hi + 1, 2))
    if len(candidates) < n:
        raise ValueError(
            f"only {len(candidates)} odd multiples of {u:g} Hz lie in [{base_hz:g}, {max_hz:g}] "
            f"Hz; need n={n} (lower min_spacing_hz or base_hz, or raise max_hz)"
        )

    # Search on the window's integer grid (bins), with aliasing folded as validate() does.
    n_window = round(window_s * sample_rate_hz)
    cand_bins = [m * step_bins for m in candidates]
    chosen: list[int] | None = None
    if avoid_third_order:
        chosen = _search_third_order_free(cand_bins, n, n_window, search_budget)
    third_order_free = chosen is not None
    if chosen is None:
        chosen = _fewest_third_order(cand_bins, n, n_window) if avoid_third_order else cand_bins[:n]

    if isinstance(amplitudes_v, (int, float)):
        amps = tuple(float(amplitudes_v) for _ in range(n))
    else:
        amps = tuple(float(a) for a in amplitudes_v)
    plan = FrequencyPlan(
        frequencies_hz=tuple(b * bin_hz for b in chosen),
        amplitudes_v=amps,
        window_s=window_s,
        sample_rate_hz=sample_rate_hz,
    )
    plan.validate(third_order=third_order_free, max_hz=tia_bandwidth_hz)
    return plan


def _fold(product: int, n_window: int) -> int:
    """Bin at which a product is seen after sampling: |p| mod N, folded about Nyquist."""
    p = abs(product) % n_window
    return min(p, n_window - p)


def _third_order_with(current: list[int], b: int, n_window: int) -> list[int]:
    """Folded third-order products that involve ``b`` at least once, with ``b`` not in current.

    ``3b``, ``2b ± x``, ``2x ± b`` and ``b ± x ± y`` (x < y) for x, y in ``current``; every one is
    a genuine third-order term because ``b`` cannot cancel against another element.
    """
    out = [3 * b]
    for x in current:
        out += [2 * b + x, 2 * b - x, 2 * x + b, 2 * x - b]
    for x, y in itertools.combinations(current, 2):
        out += [b + x + y, b + x - y, b - x + y, b - x - y]
    return [_fold(p, n_window) for p in out]


def _search_third_order_free(
    candidates: list[int], n: int, n_window: int, budget: int
) -> list[int] | None:
    """Third-order-free subset of ``candidates`` with the lowest top element, or None.

    For each top candidate in turn (lowest first), a depth-first search over the candidates
    below it; the set's products are kept incrementally, so a node costs O(n²). ``budget``
    bounds the nodes visited over the whole search.
    """
    nodes = 0

    def extend(current: list[int], products: set[int], below: int) -> list[int] | None:
        nonlocal nodes
        if len(current) == n:
            return current
        for i in range(below - 1, -1, -1):
            if i + 1 < n - len(current):
                return None
            nodes += 1
            if nodes > budget:
                return None
            b = candidates[i]
            if b in products:
                continue
            new = _third_order_with(current, b, n_window)
            members = {*current, b}
            if any(p in members for p in new):
                continue
            done = extend([*current, b], products.union(new), i)
            if done is not None:
                return done
        return None

    for top in range(n - 1, len(candidates)):
        b = candidates[top]
        start = _third_order_with([], b, n_window)
        if b in start:
            continue
        found = extend([b], set(start), top)
        if found is not None:
            return sorted(found)
        if nodes > budget:
            return None
    return None


def _fewest_third_order(candidates: list[int], n: int, n_window: int) -> list[int]:
    """Greedy: add the candidate that brings the fewest new third-order collisions."""
    chosen: list[int] = []
    for _ in range(n):
        remaining = [c for c in candidates if c not in chosen]
        scores = [len(_collisions_in_bins([*chosen, c], n_window, 3)) for c in remaining]
        chosen.append(remaining[int(np.argmin(scores))])
    return sorted(chosen)


def assign_amplitudes(
    sensitivities: Sequence[float] | FloatArray,
    target_signal: float,
    min_amplitude_v: float,
    max_amplitude_v: float,
) -> tuple[float, ...]:
    """Perturbation amplitude per electrode: ``A_j = target_signal / |∂I/∂V_j|``, bounded.

    A less sensitive electrode gets a larger amplitude so each channel's signal ``|g_j| A_j``
    is about ``target_signal`` (same current unit as ``sensitivities``, e.g. nA and nA/V).
    The result is bounded to ``[min_amplitude_v, max_amplitude_v]`` by design: the upper bound
    keeps the perturbation small (the gradient is the slope averaged over ±A), the lower bound
    keeps it above the DAC resolution. A zero sensitivity gets ``max_amplitude_v``.
    """
    if not 0 < min_amplitude_v <= max_amplitude_v:
        raise ValueError(
            f"amplitude bounds [{min_amplitude_v!r}, {max_amplitude_v!r}] V must satisfy "
            "0 < min <= max"
        )
    if not target_signal > 0:
        raise ValueError(f"target_signal={target_signal!r} must be > 0")
    s = np.abs(np.asarray(sensitivities, dtype=float))
    if not np.all(np.isfinite(s)):
        raise ValueError(f"sensitivities {s.tolist()} must be finite")
    with np.errstate(divide="ignore"):
        amps = np.where(s > 0, target_signal / np.where(s > 0, s, 1.0), np.inf)
    return tuple(float(a) for a in np.clip(amps, min_amplitude_v, max_amplitude_v))


# --------------------------------------------------------------------------------------------
# Waveforms for a sequence of input cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CaseSchedule:
    """Electrode voltage sequences for all input cases on one sample grid.

    ``voltages_v[e, k]`` is electrode ``e`` at sample ``k`` (time ``k / sample_rate_hz``).
    Case ``c`` holds its plateau in ``case_plateaus[c]``; demodulation uses only
    ``case_windows[c]`` (``demod_mask`` marks the same samples; ramps and settling are masked
    out). ``reference_time_s[k]`` is the time since the start of the current plateau — the
    sines' phase reference (NaN on ramps).
    """

    voltages_v: FloatArray
    sample_rate_hz: float
    input_electrodes: tuple[int, ...]
    control_electrodes: tuple[int, ...]
    case_plateaus: tuple[slice, ...]
    case_windows: tuple[slice, ...]
    demod_mask: BoolArray
    reference_time_s: FloatArray
    with_sines: bool

    @property
    def n_samples(self) -> int:
        return int(self.voltages_v.shape[1])

    @property
    def n_cases(self) -> int:
        return len(self.case_windows)

    @property
    def duration_s(self) -> float:
        """Playback time of the whole schedule."""
        return self.n_samples / self.sample_rate_hz

    @property
    def time_s(self) -> FloatArray:
        return np.arange(self.n_samples) / self.sample_rate_hz


RampShape = Literal["linear", "cosine"]


def _samples(duration_s: float, fs: float, what: str) -> int:
    if duration_s < 0:
        raise ValueError(f"{what}={duration_s!r} s must be >= 0")
    return _as_int(duration_s * fs, f"{what} * sample_rate_hz", "build_case_waveforms")


def build_case_waveforms(
    case_inputs_v: npt.ArrayLike,
    controls_v: npt.ArrayLike,
    plan: FrequencyPlan,
    plateau_s: float | None = None,
    ramp_s: float = 0.02,
    sample_rate_hz: float | None = None,
    *,
    settle_s: float = 0.0,
    ramp_shape: RampShape = "linear",
    with_sines: bool = True,
    input_electrodes: Sequence[int] | None = None,
    control_electrodes: Sequence[int] | None = None,
    start_v: npt.ArrayLike | None = None,
) -> CaseSchedule:
    """Build the electrode voltages that step through all input cases with perturbations.

    ``case_inputs_v`` is ``(C, n_inputs)`` volts (see
    :func:`labrig.algorithms.tasks.input_voltages`), ``controls_v`` the ``n_controls`` DC
    control voltages (one per plan frequency). Each case is a plateau of ``plateau_s``
    (default ``settle_s + plan.window_s``): inputs at the case's values, control ``j`` at
    ``controls_v[j] + A_j sin(2π f_j τ)`` with ``τ`` restarting at 0 at the plateau start
    (so the phase reference is the same in every case). The demodulation window is the
    ``plan.window_s`` after ``settle_s`` (time for the read-out to settle after the ramp).
    Between cases a ``ramp_s`` ramp (``"linear"`` or raised-``"cosine"``) goes from the last
    plateau sample to the next plateau's first. With ``start_v`` (one value per electrode) the
    schedule starts with a ramp from there. ``with_sines=False`` gives plain DC plateaus (the
    final, unperturbed measurement).

    Rows are electrodes: by default inputs first (``0..n_inputs-1``) then controls; or give
    ``input_electrodes`` and ``control_electrodes`` (together they must be ``0..n-1``).
    ``sample_rate_hz`` defaults to (and must equal) the plan's.
    """
    fs = plan.sample_rate_hz if sample_rate_hz is None else float(sample_rate_hz)
    if not math.isclose(fs, plan.sample_rate_hz, rel_tol=1e-12):
        raise ValueError(
            f"sample_rate_hz={fs:g} differs from the plan's {plan.sample_rate_hz:g} Hz"
        )
    plan.validate()
    inputs = np.atleast_2d(np.asarray(case_inputs_v, dtype=float))
    controls = np.asarray(controls_v, dtype=float).reshape(-1)
    n_cases, n_in = inputs.shape
    n_ctl = controls.size
    if n_ctl != len(plan.frequencies_hz):
        raise ValueError(
            f"{n_ctl} control voltages but the plan has {len(plan.frequencies_hz)} frequencies"
        )
    if n_cases < 1:
        raise ValueError("case_inputs_v has no cases")
    if not (np.all(np.isfinite(inputs)) and np.all(np.isfinite(controls))):
        raise ValueError("case_inputs_v and controls_v must be finite")
    in_el = tuple(range(n_in)) if input_electrodes is None else tuple(input_electrodes)
    ctl_el = (
        tuple(range(n_in, n_in + n_ctl))
        if control_electrodes is None
        else tuple(control_electrodes)
    )
    if len(in_el) != n_in or len(ctl_el) != n_ctl:
        raise ValueError(
            f"electrode mapping has {len(in_el)} inputs / {len(ctl_el)} controls, "
            f"data has {n_in} / {n_ctl}"
        )
    n_el = n_in + n_ctl
    if sorted(in_el + ctl_el) != list(range(n_el)):
        raise ValueError(
            f"input_electrodes {in_el} and control_electrodes {ctl_el} must together be "
            f"0..{n_el - 1} exactly once"
        )
    if ramp_shape not in ("linear", "cosine"):
        raise ValueError(f"ramp_shape {ramp_shape!r} must be 'linear' or 'cosine'")

    n_window = plan.n_samples
    n_settle = _samples(settle_s, fs, "settle_s")
    n_plateau = n_settle + n_window if plateau_s is None else _samples(plateau_s, fs, "plateau_s")
    if n_settle + n_window > n_plateau:
        raise ValueError(
            f"plateau_s={n_plateau / fs:g} s is shorter than settle_s + window_s = "
            f"{(n_settle + n_window) / fs:g} s"
        )
    n_ramp = _samples(ramp_s, fs, "ramp_s")

    # One plateau's control perturbation, A_j sin(2π f_j τ), τ = k / fs from the plateau start.
    tau = np.arange(n_plateau) / fs
    freqs = np.asarray(plan.frequencies_hz)[:, None]
    amps = np.asarray(plan.amplitudes_v)[:, None]
    wiggle = amps * np.sin(2 * np.pi * freqs * tau[None, :]) if with_sines else 0.0 * tau[None, :]

    def plateau(c: int) -> FloatArray:
        block = np.empty((n_el, n_plateau))
        block[list(in_el)] = inputs[c][:, None]
        block[list(ctl_el)] = controls[:, None] + wiggle
        return block

    def ramp(a: FloatArray, b: FloatArray) -> FloatArray:
        s = np.arange(1, n_ramp + 1) / (n_ramp + 1)  # end points belong to the plateaus
        if ramp_shape == "cosine":
            s = 0.5 * (1 - np.cos(np.pi * s))
        return a[:, None] + (b - a)[:, None] * s[None, :]

    pieces: list[FloatArray] = []
    ref: list[FloatArray] = []
    plateaus: list[slice] = []
    windows: list[slice] = []
    pos = 0
    if start_v is not None:
        start = np.asarray(start_v, dtype=float).reshape(-1)
        if start.size != n_el:
            raise ValueError(f"start_v has {start.size} values, need one per electrode ({n_el})")
        first = plateau(0)[:, 0]
        pieces.append(ramp(start, first))
        ref.append(np.full(n_ramp, np.nan))
        pos += n_ramp
    for c in range(n_cases):
        block = plateau(c)
        pieces.append(block)
        ref.append(tau)
        plateaus.append(slice(pos, pos + n_plateau))
        windows.append(slice(pos + n_settle, pos + n_settle + n_window))
        pos += n_plateau
        if c + 1 < n_cases and n_ramp:
            pieces.append(ramp(block[:, -1], plateau(c + 1)[:, 0]))
            ref.append(np.full(n_ramp, np.nan))
            pos += n_ramp
    volts = np.concatenate(pieces, axis=1)
    mask = np.zeros(pos, dtype=bool)
    for w in windows:
        mask[w] = True
    ref_t = np.concatenate(ref)
    for arr in (volts, mask, ref_t):
        arr.setflags(write=False)
    return CaseSchedule(
        voltages_v=volts,
        sample_rate_hz=fs,
        input_electrodes=in_el,
        control_electrodes=ctl_el,
        case_plateaus=tuple(plateaus),
        case_windows=tuple(windows),
        demod_mask=mask,
        reference_time_s=ref_t,
        with_sines=with_sines,
    )


# --------------------------------------------------------------------------------------------
# Demodulation
# --------------------------------------------------------------------------------------------


def _per_frequency(
    value: float | Sequence[float] | FloatArray | None, n: int, what: str
) -> FloatArray:
    """A scalar (same for every frequency) or one value per frequency, as an ``(n,)`` array."""
    if value is None:
        return np.zeros(n)
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{what} has shape {arr.shape}; need a scalar or {n} values")
    return arr.copy()


def demodulate(
    trace: npt.ArrayLike,
    sample_rate_hz: float,
    plan: FrequencyPlan,
    phase_lag_rad: float | Sequence[float] | FloatArray | None = None,
    *,
    start_time_s: float = 0.0,
) -> tuple[FloatArray, FloatArray]:
    """In-phase and quadrature components of ``trace`` at each plan frequency.

    ``X_j = mean((I - Ī) sin(2π f_j t - φ_j))``, ``Y_j = mean((I - Ī) cos(2π f_j t - φ_j))``
    with ``t = start_time_s + k / sample_rate_hz`` (``start_time_s`` is the time since the sines
    started) and ``φ_j = phase_lag_rad`` (0 if None): with the known read-out lag here, a
    signal ``g A sin(2π f t - φ)`` gives ``X = g A / 2``, ``Y = 0``. ``trace`` is 1-D (one
    window) or ``(..., n)``; it must hold an integer number of periods of every frequency,
    otherwise the references are not orthogonal and ValueError is raised.
    """
    data = np.asarray(trace, dtype=float)
    n = data.shape[-1]
    freqs = np.asarray(plan.frequencies_hz, dtype=float)
    for j, f in enumerate(freqs):
        _as_int(f * n / sample_rate_hz, f"periods of f{j} = {f:g} Hz in {n} samples", "demodulate")
    lag = _per_frequency(phase_lag_rad, freqs.size, "phase_lag_rad")
    t = start_time_s + np.arange(n) / sample_rate_hz
    arg = 2 * np.pi * freqs[:, None] * t[None, :] - lag[:, None]
    centred = data - data.mean(axis=-1, keepdims=True)
    x = centred @ np.sin(arg).T / n
    y = centred @ np.cos(arg).T / n
    return x, y


def gradient_from_xy(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    amplitudes_v: Sequence[float] | FloatArray,
    phase_correction_rad: float | Sequence[float] | FloatArray = 0.0,
    *,
    readout_gain: float | Sequence[float] | FloatArray = 1.0,
    projection: bool = False,
) -> FloatArray:
    """``∂I/∂V_j`` from the demodulated components (see :func:`demodulate`).

    Default (the paper's estimator): ``sign · 2 sqrt(X² + Y²) / (A_j · gain_j)``, sign + when
    ``cos(atan2(Y, X) + phase_correction) ≥ 0``, i.e. the phase after undoing the read-out lag
    is within ±90° of the excitation. ``phase_correction_rad`` is the read-out's lag (e.g. the
    TIA's ``atan(f/f_c)``), ``readout_gain`` its relative gain at ``f_j`` (1 if flat).

    ``projection=True`` instead projects onto the corrected excitation phase,
    ``2 (X cos φ - Y sin φ) / (A gain)``: unbiased by noise near zero gradient (the magnitude
    estimator's noise floor is Rayleigh-distributed and its sign flips randomly there).
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    n = xa.shape[-1]
    amps = _per_frequency(amplitudes_v, n, "amplitudes_v")
    if np.any(amps <= 0):
        raise ValueError(f"amplitudes_v {amps.tolist()} must be > 0")
    phi = _per_frequency(phase_correction_rad, n, "phase_correction_rad")
    gain = _per_frequency(readout_gain, n, "readout_gain")
    if np.any(gain <= 0):
        raise ValueError(f"readout_gain {gain.tolist()} must be > 0")
    scale = 2.0 / (amps * gain)
    if projection:
        return scale * (xa * np.cos(phi) - ya * np.sin(phi))
    sign = np.where(np.cos(np.arctan2(ya, xa) + phi) >= 0, 1.0, -1.0)
    return sign * scale * np.hypot(xa, ya)


def gradient_from_lockin(
    r_rms: float | FloatArray,
    theta_deg: float | FloatArray,
    amplitude_v: float | FloatArray,
    phase_correction_deg: float | FloatArray = 0.0,
    *,
    readout_gain: float | FloatArray = 1.0,
) -> FloatArray:
    """``∂I/∂V`` from a hardware lock-in's RMS magnitude and phase: ``±√2 R / (A · gain)``.

    The lock-in's reference must be in phase with the excitation sine; ``theta_deg`` is its
    phase reading. Sign + when ``cos(θ + phase_correction) ≥ 0`` (``phase_correction_deg`` is
    the read-out lag in degrees). ``R`` in the current unit of the result's numerator.
    """
    r = np.asarray(r_rms, dtype=float)
    amp = np.asarray(amplitude_v, dtype=float)
    gain = np.asarray(readout_gain, dtype=float)
    if np.any(amp <= 0) or np.any(gain <= 0):
        raise ValueError(f"amplitude_v {amp} and readout_gain {gain} must be > 0")
    phase = np.deg2rad(np.asarray(theta_deg, dtype=float) + phase_correction_deg)
    sign = np.where(np.cos(phase) >= 0, 1.0, -1.0)
    return np.asarray(sign * np.sqrt(2.0) * np.abs(r) / (amp * gain), dtype=float)


@dataclass(frozen=True, eq=False)
class CaseGradients:
    """Per-case result of :func:`case_gradients`.

    ``dI_dV[c, j]`` is ``∂I/∂V_j`` in case ``c`` (current unit per volt); ``mean_output[c]``
    the mean output over the case's window; ``x``, ``y`` the raw components ``(C, n_controls)``.
    """

    dI_dV: FloatArray
    mean_output: FloatArray
    x: FloatArray
    y: FloatArray


def _check_trace(trace: npt.ArrayLike, schedule: CaseSchedule) -> FloatArray:
    data = np.asarray(trace, dtype=float).reshape(-1)
    if data.size != schedule.n_samples:
        raise ValueError(f"trace has {data.size} samples; the schedule has {schedule.n_samples}")
    return data


def case_gradients(
    trace: npt.ArrayLike,
    schedule: CaseSchedule,
    plan: FrequencyPlan,
    *,
    phase_correction_rad: float | Sequence[float] | FloatArray = 0.0,
    readout_gain: float | Sequence[float] | FloatArray = 1.0,
    projection: bool = False,
) -> CaseGradients:
    """Demodulate an output trace recorded while ``schedule`` played; one gradient per case.

    ``trace`` is the output current on the schedule's sample grid (``schedule.n_samples``
    values). Each case's window is demodulated against sines that restart at its plateau start;
    see :func:`gradient_from_xy` for the corrections.
    """
    if not schedule.with_sines:
        raise ValueError("schedule was built with_sines=False: nothing to demodulate")
    data = _check_trace(trace, schedule)
    xs, ys, means = [], [], []
    for w in schedule.case_windows:
        seg = data[w]
        x, y = demodulate(
            seg,
            schedule.sample_rate_hz,
            plan,
            start_time_s=float(schedule.reference_time_s[w.start]),
        )
        xs.append(x)
        ys.append(y)
        means.append(seg.mean())
    x_all, y_all = np.array(xs), np.array(ys)
    grads = gradient_from_xy(
        x_all,
        y_all,
        plan.amplitudes_v,
        phase_correction_rad,
        readout_gain=readout_gain,
        projection=projection,
    )
    return CaseGradients(dI_dV=grads, mean_output=np.array(means), x=x_all, y=y_all)
