r"""Compiled per-sample solver behind :meth:`labrig.physics.dnpu.DnpuModel.current_trace_na`.

The physics is the one documented in :mod:`labrig.physics.dnpu` (same rates, same master
equation, same current); this module only evaluates it sample by sample with numba, because a
warm-started solve of a 26-site system costs a few microseconds compiled and hundreds of
microseconds as a chain of numpy calls. It is private: call the model, not these functions.

Per sample, in order:

1. **Rates from 33 exponentials instead of 533.** With ``ε_i = E_i / kT`` (``E_i`` linear in
   the voltages), ``u_i = e^{ε_i}`` and ``z_k = e^{-V_k / kT}``::

       e^{x_ij} = e^{ε_j - ε_i} = u_j / u_i        (hop i → j)
       e^{y_ik} = e^{ε_i - V_k / kT} = u_i z_k     (site i ↔ electrode k, z_7 = 1)

   so ``g(x_ij) = 2 / (1 + u_j/u_i)`` (smooth) or ``min(1, u_i/u_j)`` (Miller–Abrahams) and
   ``f_ik = 1 / (1 + u_i z_k)`` need one exponential per site and per electrode. The products
   stay finite while ``|ε_i|`` and ``|V_k / kT|`` are below :data:`EXPONENT_LIMIT` (300: every
   product or ratio of two factors is below ``e^600``); outside that (|V| > 2 V) the kernel
   says so and the caller uses the numpy path, which clips. ``W`` is kept dense, its rows
   padded with zero rates to a multiple of 16 columns, so that every product below is a
   multiply-add over whole rows that the compiler vectorises without a scalar remainder::

       F = (1 - p) ∘ (Wᵀ p) - p ∘ (W (1 - p)) + s - Γ p
       Wᵀ p = Σ_j p_j W[j, :]        (W (1 - p))_j = W[j, :] · (1 - p)

2. **Warm start.** The occupations are predicted by linear extrapolation in time,
   ``p ← 2 p[s-1] - p[s-2]``, per site kept only where it stays inside ``[0, 1]``.
3. **Chord steps with a reused inverse**, ``p ← p - J_ref⁻¹ F(p)``, where ``J_ref`` is the
   Jacobian at an earlier sample's solution, inverted once by Gauss–Jordan elimination. The
   inverse is stored transposed (it is computed as the inverse of ``Jᵀ``) so that
   ``J_ref⁻¹ F = Σ_j F_j (J_refᵀ)⁻¹[j, :]`` is again a sum of rows. ``Jᵀ`` is row-diagonally
   dominant (``J`` is column-diagonally dominant with margin ``Γ_i > 0``, see the model's
   docstring), so elimination without pivoting is stable. Any approximate inverse gives the
   exact solution if the iteration contracts: the inverse sets the speed, the residual ``F``
   sets the answer.
4. **Stopping.** The chord error contracts geometrically, ``|e_{k+1}| ≈ ρ |e_k|``, so after an
   update ``δ_k`` the remaining error is about ``|δ_k| ρ / (1 - ρ)`` with
   ``ρ ≈ |δ_k| / |δ_{k-1}|``. A sample stops when ``|δ_k|`` or that estimate is below
   ``tolerance`` (max norm over the sites). With ``J_ref`` a few samples old, ``ρ`` is 1e-3 to
   1e-2 and a sample takes 3–4 steps.
5. **Refresh and fallbacks.** A sample whose slowest observed ``ρ`` exceeded
   :data:`REFRESH_RATIO` replaces ``J_ref`` by its own Jacobian. If an update does not at least
   halve the previous one, or ``chord_iterations`` run out, full Newton finishes the sample from
   where the chord left it, and from the cold start ``p = s / Γ`` if that fails too; Newton
   leaves its last Jacobian as ``J_ref``. Fallbacks cost time, never accuracy.

Every occupation update that would leave ``[0, 1]`` is replaced, per site, by a move 99.9 % of
the way to the bound, as in the numpy Newton.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Largest |E_i / kT| and |V_k / kT| the exponential factorisation accepts (see step 1).
EXPONENT_LIMIT = 300.0

#: Observed chord contraction ratio above which ``J_ref`` is refreshed (step 5). Measured on
#: 3000-sample HGE-like traces: 0.1 needs ~20 inversions and ~4 steps per sample; 0.01 ~800
#: inversions and ~3 steps, slower overall because an inversion costs ~20 chord steps.
REFRESH_RATIO = 0.1

#: Status codes returned by :func:`trace_currents`.
STATUS_OK = 0
STATUS_EXPONENT_RANGE = 1
STATUS_NOT_CONVERGED = 2

#: Indices into the ``counters`` array of :func:`trace_currents`, and its length.
COUNT_CHORD_STEPS = 0
COUNT_INVERSIONS = 1
COUNT_NEWTON_SAMPLES = 2
COUNTER_COUNT = 3

#: Reassociation lets the compiler vectorise the dot products; contraction fuses multiply-adds.
_FASTMATH = {"reassoc", "contract"}


@njit(cache=True, error_model="numpy")
def _rates(
    volts: FloatArray,
    e0_kt: FloatArray,
    gate_kt_t: FloatArray,
    inv_kt: float,
    pair_pref: FloatArray,
    gamma_t: FloatArray,
    smooth: bool,
    w: FloatArray,
    source: FloatArray,
    fermi_out: FloatArray,
    eps: FloatArray,
    u: FloatArray,
    z: FloatArray,
) -> bool:
    """Fill ``W``, ``s`` and ``f_·7`` of one sample; False if an exponent is too large."""
    nsite, width = w.shape
    nel = gamma_t.shape[0]
    nact = volts.shape[0]
    for k in range(nact):
        arg = -volts[k] * inv_kt
        if abs(arg) > EXPONENT_LIMIT:
            return False
        z[k] = np.exp(arg)
    for k in range(nact, nel):
        z[k] = 1.0  # the output electrode, μ_7 = 0
    # ε = ε0 + Σ_k (α K_·k / kT) V_k, a row per electrode
    for i in range(width):
        eps[i] = e0_kt[i]
    for k in range(nact):
        vk = volts[k]
        for i in range(width):
            eps[i] += gate_kt_t[k, i] * vk
    for i in range(nsite):
        if abs(eps[i]) > EXPONENT_LIMIT:
            return False
        u[i] = np.exp(eps[i])
    # s_i = Σ_k Γ_ik f_ik,  f_ik = 1 / (1 + u_i z_k); padding: Γ = 0, u = 1.
    for i in range(width):
        source[i] = 0.0
        fermi_out[i] = 1.0 / (1.0 + u[i])
    for k in range(nel):
        zk = z[k]
        for i in range(width):
            source[i] += gamma_t[k, i] / (1.0 + u[i] * zk)
    for i in range(nsite):
        inv_ui = 1.0 / u[i]
        # Padding columns have ν = 0 and u = 1: their rates are 0.
        if smooth:
            for j in range(width):
                w[i, j] = pair_pref[i, j] * (2.0 / (1.0 + u[j] * inv_ui))  # ν_ij g(x_ij)
        else:
            for j in range(width):
                w[i, j] = pair_pref[i, j] * min(1.0, u[i] / u[j])  # ν_ij min(1, e^{-x_ij})
    return True


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _residual(
    occ: FloatArray,
    w: FloatArray,
    source: FloatArray,
    gamma_total: FloatArray,
    inflow: FloatArray,
    outflow: FloatArray,
    resid: FloatArray,
) -> None:
    """``F(p) = (1-p) ∘ (Wᵀp) - p ∘ (W(1-p)) + s - Γ p``; keeps ``Wᵀp`` and ``W(1-p)``."""
    nsite, width = w.shape
    for i in range(width):
        inflow[i] = 0.0
    for j in range(nsite):
        pj = occ[j]
        acc = 0.0
        for i in range(width):
            inflow[i] += pj * w[j, i]  # (Wᵀp)_i = Σ_j W_ji p_j
            acc += w[j, i] * (1.0 - occ[i])  # (W(1-p))_j = Σ_i W_ji (1 - p_i)
        outflow[j] = acc
    for i in range(nsite):
        resid[i] = (
            (1.0 - occ[i]) * inflow[i] - occ[i] * outflow[i] + source[i] - gamma_total[i] * occ[i]
        )


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _inverse_jacobian_t(
    occ: FloatArray,
    w: FloatArray,
    gamma_total: FloatArray,
    inflow: FloatArray,
    outflow: FloatArray,
    inv_t: FloatArray,
) -> None:
    """``inv_t = (Jᵀ)⁻¹ = (J⁻¹)ᵀ`` at ``occ`` (``inflow``/``outflow`` from :func:`_residual`).

    ``J = diag(1-p) Wᵀ + diag(p) W - diag(Wᵀp + W(1-p) + Γ)``, so off the diagonal
    ``Jᵀ[i, j] = J[j, i] = (1-p_j) W[i, j] + p_j W[j, i]``.
    """
    nsite, width = w.shape
    for i in range(nsite):
        for j in range(width):
            inv_t[i, j] = (1.0 - occ[j]) * w[i, j]
        for j in range(nsite):
            inv_t[i, j] += occ[j] * w[j, i]
        inv_t[i, i] = -(inflow[i] + outflow[i] + gamma_total[i])
    # In-place Gauss–Jordan without pivoting: the diagonal dominates its row. The padding
    # columns stay zero.
    for k in range(nsite):
        inv_pivot = 1.0 / inv_t[k, k]
        inv_t[k, k] = 1.0
        for j in range(width):
            inv_t[k, j] *= inv_pivot
        for i in range(nsite):
            if i != k:
                factor = inv_t[i, k]
                inv_t[i, k] = 0.0
                for j in range(width):
                    inv_t[i, j] -= factor * inv_t[k, j]


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _chord_step(occ: FloatArray, inv_t: FloatArray, resid: FloatArray, step: FloatArray) -> float:
    """``p ← p - J⁻¹ F`` kept inside [0, 1]; return the largest change of an occupation."""
    nsite, width = inv_t.shape
    for i in range(width):
        step[i] = 0.0
    for j in range(nsite):
        fj = resid[j]
        for i in range(width):
            step[i] += fj * inv_t[j, i]  # (J⁻¹ F)_i = Σ_j (J⁻¹)ᵀ[j, i] F_j
    change = 0.0
    for i in range(nsite):
        old = occ[i]
        new = old - step[i]
        if new < 0.0:
            new = old * 1e-3
        elif new > 1.0:
            new = 1.0 - (1.0 - old) * 1e-3
        change = max(change, abs(new - old))
        occ[i] = new
    return change


@njit(cache=True, error_model="numpy")
def _newton(
    occ: FloatArray,
    w: FloatArray,
    source: FloatArray,
    gamma_total: FloatArray,
    tolerance: float,
    max_iterations: int,
    inflow: FloatArray,
    outflow: FloatArray,
    resid: FloatArray,
    step: FloatArray,
    inv_t: FloatArray,
) -> int:
    """Full Newton from ``occ`` (in place); return the iterations used, -1 if not converged.

    ``inv_t`` is left holding the inverse Jacobian of the last iterate.
    """
    for it in range(max_iterations):
        _residual(occ, w, source, gamma_total, inflow, outflow, resid)
        _inverse_jacobian_t(occ, w, gamma_total, inflow, outflow, inv_t)
        if _chord_step(occ, inv_t, resid, step) < tolerance:
            return it + 1
    return -1


@njit(cache=True, error_model="numpy")
def trace_currents(
    volts: FloatArray,
    e0_kt: FloatArray,
    gate_kt_t: FloatArray,
    inv_kt: float,
    pair_pref: FloatArray,
    gamma_t: FloatArray,
    gamma_out_na: FloatArray,
    smooth: bool,
    tolerance: float,
    chord_iterations: int,
    refresh_ratio: float,
    max_newton_iterations: int,
    currents: FloatArray,
    counters: IntArray,
) -> tuple[int, int]:
    """Steady-state output current of every sample of ``volts`` (n, 7) into ``currents`` (nA).

    Site arrays are padded with zeros to ``width`` (a multiple of 16) entries: ``e0_kt``
    (width,) and ``gate_kt_t`` (7, width) give ``ε = e0_kt + V @ gate_kt_t``; ``pair_pref``
    (N, width) is the symmetric ``ν0 e^{-2 r_ij / a}`` with a zero diagonal; ``gamma_t`` is
    ``Γ_ki`` (8, width); ``gamma_out_na`` (N,) is ``e Γ_i7`` in nA. ``counters``
    (:data:`COUNTER_COUNT`,) receives the chord steps, the Jacobian inversions and the samples
    finished by Newton. Returns ``(status, sample)``: :data:`STATUS_OK` and ``n``, or the
    failure and the sample it hit.
    """
    n_samples = volts.shape[0]
    nsite, width = pair_pref.shape
    nel = gamma_t.shape[0]
    gamma_total = np.zeros(width)
    for k in range(nel):
        for i in range(width):
            gamma_total[i] += gamma_t[k, i]
    w = np.zeros((nsite, width))
    inv_t = np.zeros((nsite, width))
    z = np.empty(nel)
    # Vectors of length ``width``: the padding entries stay 0 (u: 1, a finite rate factor).
    source = np.zeros(width)
    fermi_out = np.zeros(width)
    eps = np.zeros(width)
    u = np.ones(width)
    occ = np.zeros(width)
    occ_prev = np.zeros(width)
    occ_prev2 = np.zeros(width)
    inflow = np.zeros(width)
    outflow = np.zeros(width)
    resid = np.zeros(width)
    step = np.zeros(width)
    counters[:] = 0
    for s in range(n_samples):
        if not _rates(
            volts[s],
            e0_kt,
            gate_kt_t,
            inv_kt,
            pair_pref,
            gamma_t,
            smooth,
            w,
            source,
            fermi_out,
            eps,
            u,
            z,
        ):
            return STATUS_EXPONENT_RANGE, s
        converged = False
        if s > 0:
            for i in range(nsite):
                guess = occ_prev[i]
                if s > 1:
                    guess = 2.0 * occ_prev[i] - occ_prev2[i]
                    if guess < 0.0 or guess > 1.0:
                        guess = occ_prev[i]
                occ[i] = guess
            previous_change = np.inf
            slowest = 0.0
            for it in range(chord_iterations):
                _residual(occ, w, source, gamma_total, inflow, outflow, resid)
                change = _chord_step(occ, inv_t, resid, step)
                counters[COUNT_CHORD_STEPS] += 1
                ratio = change / previous_change  # ρ estimate; 0 on the first step
                slowest = max(slowest, ratio)
                if change < tolerance or (
                    it > 0 and ratio < 0.5 and change * ratio / (1.0 - ratio) < tolerance
                ):
                    converged = True
                    break
                if ratio > 0.5:
                    break  # stalled: J_ref is too far from this sample's Jacobian
                previous_change = change
            if converged and slowest > refresh_ratio:
                _residual(occ, w, source, gamma_total, inflow, outflow, resid)
                _inverse_jacobian_t(occ, w, gamma_total, inflow, outflow, inv_t)
                counters[COUNT_INVERSIONS] += 1
        if not converged:
            counters[COUNT_NEWTON_SAMPLES] += 1
            used = -1
            if s > 0:
                used = _newton(
                    occ,
                    w,
                    source,
                    gamma_total,
                    tolerance,
                    max_newton_iterations,
                    inflow,
                    outflow,
                    resid,
                    step,
                    inv_t,
                )
            if used < 0:
                # Contact-equilibrium start p_i = s_i / Γ_i, as in the numpy Newton.
                for i in range(nsite):
                    occ[i] = min(max(source[i] / gamma_total[i], 1e-6), 1.0 - 1e-6)
                used = _newton(
                    occ,
                    w,
                    source,
                    gamma_total,
                    tolerance,
                    max_newton_iterations,
                    inflow,
                    outflow,
                    resid,
                    step,
                    inv_t,
                )
                if used < 0:
                    return STATUS_NOT_CONVERGED, s
            counters[COUNT_INVERSIONS] += used
        # I = e Σ_i Γ_i7 (p_i - f_i7)
        current = 0.0
        for i in range(nsite):
            current += gamma_out_na[i] * (occ[i] - fermi_out[i])
        currents[s] = current
        for i in range(nsite):
            occ_prev2[i] = occ_prev[i]
            occ_prev[i] = occ[i]
    return STATUS_OK, n_samples
