"""Baseline gradient estimators that HGE is compared with: central differences and SPSA.

Both only need a way to measure the device at a set of control voltages. ``measure`` maps
``controls (n,) -> float`` or ``-> (C,)`` (one output per input case); a batched
``measure_batch`` maps ``(m, n) -> (m,)`` or ``(m, C)`` and lets a procedure play all points
in one sequence. Each estimate reports how many measurement points it used, so a procedure can
convert it to device time (points × time per point) and compare methods on one budget.

- Central differences: ``∂f/∂V_j ≈ (f(V + h e_j) - f(V - h e_j)) / 2h``; 2n points,
  error O(h²) plus noise ``σ / (√2 h)`` per component.
- SPSA (Spall 1992): ``ĝ = (f(V + h Δ) - f(V - h Δ)) / 2h · Δ`` with Rademacher ``Δ``
  (so ``1/Δ_j = Δ_j``); 2 points per draw, unbiased to O(h²) but with variance from the other
  components, reduced by averaging ``n_draws`` draws.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Measure = Callable[[FloatArray], "float | FloatArray"]
MeasureBatch = Callable[[FloatArray], FloatArray]


@dataclass(frozen=True, eq=False)
class GradientEstimate:
    """A gradient estimate and its cost.

    ``gradient`` is ``(n,)`` for a scalar measurement or ``(C, n)`` for one output per case
    (``gradient[c, j] ≈ ∂f_c/∂V_j``); ``n_measurements`` is the number of control settings
    measured.
    """

    gradient: FloatArray
    n_measurements: int


def _points(
    measure: Measure | None, measure_batch: MeasureBatch | None, points: FloatArray
) -> FloatArray:
    """Measure every row of ``points``; result ``(m,)`` or ``(m, C)``."""
    if measure is not None and measure_batch is None:
        return np.array([np.asarray(measure(p), dtype=float) for p in points])
    if measure_batch is not None and measure is None:
        out = np.asarray(measure_batch(points), dtype=float)
        if out.shape[0] != points.shape[0]:
            raise ValueError(
                f"measure_batch returned {out.shape[0]} results for {points.shape[0]} points"
            )
        return out
    raise ValueError("give exactly one of measure and measure_batch")


def _check_controls(controls_v: npt.ArrayLike, step_v: float, where: str) -> FloatArray:
    v = np.asarray(controls_v, dtype=float).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"{where}: controls must be a non-empty finite vector")
    if not step_v > 0:
        raise ValueError(f"{where}: step_v={step_v!r} must be > 0")
    return v


def central_difference(
    controls_v: npt.ArrayLike,
    step_v: float,
    measure: Measure | None = None,
    *,
    measure_batch: MeasureBatch | None = None,
) -> GradientEstimate:
    """Central-difference gradient at ``controls_v`` with step ``step_v`` volts (2n points).

    The points are ordered ``V + h e_0, V - h e_0, V + h e_1, ...``.
    """
    v = _check_controls(controls_v, step_v, "central_difference")
    n = v.size
    offsets = np.repeat(np.eye(n), 2, axis=0) * np.tile([step_v, -step_v], n)[:, None]
    out = _points(measure, measure_batch, v[None, :] + offsets)
    plus, minus = out[0::2], out[1::2]  # (n,) or (n, C)
    grad = (plus - minus) / (2.0 * step_v)
    return GradientEstimate(gradient=np.moveaxis(grad, 0, -1), n_measurements=2 * n)


def spsa(
    controls_v: npt.ArrayLike,
    step_v: float,
    rng: np.random.Generator,
    measure: Measure | None = None,
    *,
    measure_batch: MeasureBatch | None = None,
    n_draws: int = 1,
) -> GradientEstimate:
    """SPSA gradient at ``controls_v``: ``n_draws`` Rademacher directions, 2 points each.

    The points are ordered ``V + hΔ_0, V - hΔ_0, V + hΔ_1, ...``; the estimate is the mean over
    draws of ``(f₊ - f₋) / 2h · Δ``.
    """
    v = _check_controls(controls_v, step_v, "spsa")
    if n_draws < 1:
        raise ValueError(f"spsa: n_draws={n_draws} must be >= 1")
    deltas = rng.choice(np.array([-1.0, 1.0]), size=(n_draws, v.size))
    points = np.empty((2 * n_draws, v.size))
    points[0::2] = v + step_v * deltas
    points[1::2] = v - step_v * deltas
    out = _points(measure, measure_batch, points)
    diff = (out[0::2] - out[1::2]) / (2.0 * step_v)  # (draws,) or (draws, C)
    # (draws,) @ (draws, n) -> (n,);  (C, draws) @ (draws, n) -> (C, n)
    grad = (diff if diff.ndim == 1 else diff.T) @ deltas / n_draws
    return GradientEstimate(gradient=grad, n_measurements=2 * n_draws)
