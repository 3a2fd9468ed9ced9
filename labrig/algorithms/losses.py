"""Losses over the outputs of a set of input cases, each with its gradient per case.

Every loss is ``loss(outputs, targets) -> (L, dL/doutputs)``: ``outputs`` is ``(C,)`` (one
output per input case, e.g. the mean current over the case's plateau), ``targets`` is ``(C,)``.
The per-case gradient is what HGE's chain rule needs,

    ∂L/∂V_j = Σ_c ∂L/∂I_c · ∂I_c/∂V_j .

Classification losses (``corsig``, ``fisher``) take binary targets (0/1; "1-cases" should end up
with the *higher* output) and need both classes present. ``corsig`` expects outputs in nA: its
5 nA margin and 3 nA softness are absolute.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
LossFn = Callable[[FloatArray, FloatArray], tuple[float, FloatArray]]

# Regularises the output spread in Pearson's ρ so a constant output gives ρ = 0, not 0/0.
_SPREAD_EPS = 1e-12


def _check(
    outputs: npt.ArrayLike, targets: npt.ArrayLike, where: str
) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(outputs, dtype=float).reshape(-1)
    t = np.asarray(targets, dtype=float).reshape(-1)
    if x.shape != t.shape:
        raise ValueError(f"{where}: {x.size} outputs but {t.size} targets")
    if x.size < 2:
        raise ValueError(f"{where}: need at least 2 cases, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(t))):
        raise ValueError(f"{where}: outputs and targets must be finite")
    return x, t


def _classes(t: FloatArray, where: str) -> tuple[FloatArray, FloatArray]:
    """Boolean masks of the 1-cases and 0-cases; both must be present."""
    if not np.all((t == 0) | (t == 1)):
        raise ValueError(f"{where}: targets must be 0 or 1, got {np.unique(t).tolist()}")
    hi = t == 1
    lo = ~hi
    if not hi.any() or not lo.any():
        raise ValueError(f"{where}: targets must contain both classes, got {t.tolist()}")
    return hi, lo


def pearson(outputs: npt.ArrayLike, targets: npt.ArrayLike) -> tuple[float, FloatArray]:
    """Pearson correlation ``ρ`` of outputs with targets, and ``∂ρ/∂x``.

    ``ρ = P / (S_x S_t)`` with ``P = Σ (x - x̄)(t - t̄)``, ``S_x = sqrt(Σ (x - x̄)² + ε)``,
    ``S_t = sqrt(Σ (t - t̄)²)``; since ``Σ (t - t̄) = 0`` and ``∂S_x/∂x_c = (x_c - x̄)/S_x``,

        ∂ρ/∂x_c = (t_c - t̄) / (S_x S_t) - ρ (x_c - x̄) / S_x² .
    """
    x, t = _check(outputs, targets, "pearson")
    dx, dt = x - x.mean(), t - t.mean()
    s_t = float(np.sqrt(dt @ dt))
    if s_t == 0:
        raise ValueError(f"pearson: targets are constant ({t.tolist()}); ρ is undefined")
    s_x = float(np.sqrt(dx @ dx + _SPREAD_EPS))
    rho = float(dx @ dt) / (s_x * s_t)
    return rho, dt / (s_x * s_t) - rho * dx / (s_x * s_x)


def _sigmoid(z: float) -> float:
    # Numerically stable logistic for either sign of z.
    if z >= 0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return float(e / (1.0 + e))


def corsig(
    outputs_na: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    margin_na: float = 5.0,
    softness_na: float = 3.0,
) -> tuple[float, FloatArray]:
    """Correlation-sigmoid loss of Boon et al.: low when outputs correlate with the target *and*
    the 1-cases sit at least ``margin_na`` above the 0-cases.

        L = (1.1 - ρ) / (σ(z) + 0.05),   z = (x_hi_min - x_lo_max - margin) / softness,

    with ``x_hi_min`` the lowest output among 1-cases and ``x_lo_max`` the highest among
    0-cases (outputs in nA). Gradient by the quotient rule, with ``N = 1.1 - ρ``,
    ``D = σ(z) + 0.05``:

        ∂L/∂x_c = -(∂ρ/∂x_c) / D - N σ(z)(1 - σ(z)) / (softness D²) · ∂(x_hi_min - x_lo_max)/∂x_c,

    where ``∂x_hi_min/∂x_c`` is 1 for the arg-min 1-case and 0 elsewhere (a subgradient; ties
    share it equally), likewise ``∂x_lo_max/∂x_c`` for the arg-max 0-case.
    """
    x, t = _check(outputs_na, targets, "corsig")
    hi, lo = _classes(t, "corsig")
    if not softness_na > 0:
        raise ValueError(f"corsig: softness_na={softness_na!r} must be > 0")
    rho, drho = pearson(x, t)
    x_hi_min = x[hi].min()
    x_lo_max = x[lo].max()
    sig = _sigmoid((x_hi_min - x_lo_max - margin_na) / softness_na)
    num, den = 1.1 - rho, sig + 0.05
    loss = num / den
    dgap = np.zeros_like(x)
    at_min = hi & (x == x_hi_min)
    at_max = lo & (x == x_lo_max)
    dgap[at_min] += 1.0 / at_min.sum()
    dgap[at_max] -= 1.0 / at_max.sum()
    grad = -drho / den - num * sig * (1.0 - sig) / (softness_na * den * den) * dgap
    return float(loss), grad


def affine_fit(outputs: npt.ArrayLike, targets: npt.ArrayLike) -> tuple[float, float]:
    """Least-squares ``(a, b)`` for ``targets ≈ a · outputs + b`` (``a = 0`` if constant)."""
    x, t = _check(outputs, targets, "affine_fit")
    dx = x - x.mean()
    var = float(dx @ dx)
    a = float(dx @ (t - t.mean())) / var if var > 0 else 0.0
    return a, float(t.mean() - a * x.mean())


def mse_with_fit(
    outputs: npt.ArrayLike, targets: npt.ArrayLike, *, signed: bool = True
) -> tuple[float, FloatArray]:
    """Mean squared error of the best affine read-out ``t̂ = a x + b`` (see :func:`affine_fit`).

    The fitted read-out makes the loss independent of the outputs' offset and scale:
    ``L = mean((a x + b - t)²) = Var(t) (1 - ρ²)``. Because ``(a, b)`` minimise ``L``, the
    envelope theorem gives the gradient with ``a, b`` held fixed:
    ``∂L/∂x_c = 2 a (a x_c + b - t_c) / C``.

    ``signed=True`` (default) refuses to let the fit flip the output: for ``ρ < 0`` the loss is
    continued as ``Var(t) (1 + ρ²)`` (i.e. ``L = Var(t)(1 - ρ|ρ|)``, gradient
    ``-2 Var(t) |ρ| ∂ρ/∂x``), so descent turns an inverted output round and the 1-cases end up
    high, as :func:`labrig.algorithms.tasks.separable` expects. Targets may be continuous.
    """
    x, t = _check(outputs, targets, "mse_with_fit")
    var_t = float(np.var(t))
    if var_t == 0:
        raise ValueError(f"mse_with_fit: targets are constant ({t.tolist()})")
    rho, drho = pearson(x, t)
    if signed and rho < 0:
        return var_t * (1.0 + rho * rho), 2.0 * var_t * rho * drho
    a, b = affine_fit(x, t)
    resid = a * x + b - t
    return float(np.mean(resid * resid)), 2.0 * a * resid / x.size


def fisher(
    outputs: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    signed: bool = True,
    eps: float = 1e-3,
) -> tuple[float, FloatArray]:
    """Negative Fisher linear-discriminant criterion between the 1-cases and the 0-cases.

    ``J = (μ₁ - μ₀)² / (σ₁² + σ₀² + ε)`` (population variances; ``ε`` in output units² keeps it
    finite when each class has one case or all equal outputs), ``L = -J``. ``signed=True``
    uses ``(μ₁ - μ₀)|μ₁ - μ₀|`` in the numerator so an inverted output is penalised. With
    ``d = μ₁ - μ₀``, ``s = σ₁² + σ₀² + ε``, and class ``k`` of size ``n_k`` holding case ``c``:
    ``∂μ_k/∂x_c = 1/n_k``, ``∂σ_k²/∂x_c = 2 (x_c - μ_k)/n_k``, so

        ∂J/∂x_c = ∂(num)/∂d · (±1/n_k) / s - num · 2 (x_c - μ_k) / (n_k s²) .
    """
    x, t = _check(outputs, targets, "fisher")
    hi, lo = _classes(t, "fisher")
    if not eps > 0:
        raise ValueError(f"fisher: eps={eps!r} must be > 0")
    n1, n0 = int(hi.sum()), int(lo.sum())
    mu1, mu0 = x[hi].mean(), x[lo].mean()
    s = x[hi].var() + x[lo].var() + eps
    d = mu1 - mu0
    num, dnum = (d * abs(d), 2 * abs(d)) if signed else (d * d, 2 * d)
    j = num / s
    dj = np.empty_like(x)
    dj[hi] = dnum / (n1 * s) - num * 2 * (x[hi] - mu1) / (n1 * s * s)
    dj[lo] = -dnum / (n0 * s) - num * 2 * (x[lo] - mu0) / (n0 * s * s)
    return float(-j), -dj


LOSSES: dict[str, LossFn] = {
    "corsig": corsig,
    "mse_with_fit": mse_with_fit,
    "fisher": fisher,
}


def get_loss(name: str) -> LossFn:
    """Loss by name: ``"corsig"``, ``"mse_with_fit"`` or ``"fisher"`` (case-insensitive)."""
    key = name.strip().lower()
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[key]
