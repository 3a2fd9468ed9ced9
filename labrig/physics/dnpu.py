r"""A dopant-network processing unit (DNPU): boron acceptors in silicon, read at 77 K.

The device is a small disordered network of boron acceptors between eight metal electrodes. Seven
*activation* electrodes (index 0–6) are driven by DACs; the *output* electrode (index 7) is held at
virtual ground by the transimpedance amplifier, which measures the current flowing into it. The
model is nonlinear and non-monotonic in the electrode voltages because the electrodes do two things
at once: they are sources and sinks of holes, and they *gate* the network by shifting the energies
of the sites that the holes hop through. A hop that was downhill becomes uphill, a path closes,
the current takes another route or stops — which is what lets one device realise every two-input
Boolean function for some setting of its control voltages.

Geometry (one seeded draw per device)
-------------------------------------
* A disk of radius ``R`` (50 nm). ``N`` acceptor sites (26) and ``N_D`` compensating donors (3) at
  uniformly random positions with ``r <= R - rim_clearance``.
* Eight electrodes are arcs of the rim, each covering ``electrode_arc_fraction`` of its 45° sector,
  centred at angles ``2π s_k / 8`` with the slot ``s_k`` of electrode ``k`` from
  ``electrode_slots``. The default puts the output at slot 0, the two Boolean inputs (electrodes 0
  and 1) on the far side, and electrodes 2 and 6 next to the output (they carry the largest
  currents, hence their narrower default ranges).

Electrostatics
--------------
The potential inside the disk is the harmonic function with the rim potential ``u(θ)`` as
boundary value — the disk's Poisson integral::

    φ(r, θ) = 1/(2π) ∫ P(r, θ - t) u(t) dt,     P(r, ψ) = (R² - r²) / (R² - 2 R r cos ψ + r²)

``u`` equals ``V_k`` on arc ``k`` and varies linearly in angle across each insulating gap between
two neighbouring arcs. ``u`` is linear in the voltages, so ``φ_i = Σ_k K_ik V_k``; the weights
``K_ik >= 0`` (``Σ_k K_ik = 1``) are computed once per device by quadrature.

Site energies (hole energies, eV)
---------------------------------
::

    E_i = E_A + ε_i + Σ_d  e² / (4π ε0 ε_r √(|r_i - r_d|² + r_s²))  + α e φ_i

* ``ε_i ~ N(0, σ)`` with ``σ`` = 5 meV: energy disorder.
* The ionised donors (+e) repel holes; their Coulomb shifts are frozen (``r_s`` softens the
  singularity).
* ``α`` (``gate_coupling``, 0.5) is the capacitive lever arm: only a fraction of the local
  electrostatic energy reaches the dopant levels (the rest drops across the substrate and the
  contact regions). ``α >= 0.3`` is what makes gating strong enough for XOR and XNOR.

Electrode ``k`` is a reservoir of holes with electrochemical potential ``μ_k = e V_k``
(``μ_7 = 0``).

Rates (per second)
------------------
Hop of a hole from site ``i`` to site ``j``, ``ΔE_ij = E_j - E_i``, ``kT`` = 6.64 meV at 77 K::

    W_ij = ν0 exp(-2 r_ij / a) g(ΔE_ij / kT)
    g(x) = 2 / (1 + e^x)          (smooth detailed-balance form, default)
    g(x) = min(1, e^{-x})         (Miller–Abrahams, ``rate_form="miller_abrahams"``)

with ``ν0`` = 1e13 /s and localisation length ``a`` = 8 nm. Both forms obey detailed balance,
``g(x) / g(-x) = e^{-x}``; the smooth one has ``g(x) + g(-x) = 2``, which the code uses to get both
directions from one exponential. Tunnelling between site ``i`` and electrode ``k`` at distance
``d_ik`` from the arc (a wide-band metal contact)::

    Γ_ik = ν_c exp(-2 d_ik / a);   in-rate Γ_ik f_ik,  out-rate Γ_ik (1 - f_ik)
    f_ik = 1 / (1 + exp((E_i - μ_k) / kT))

``ν_c`` (5e13 /s) is larger than ``ν0`` because a metal contact offers many states over its area.

Mean-field master equation
--------------------------
With ``p_i`` the probability that site ``i`` holds a hole (Pauli exclusion through the
``(1 - p)`` factors, no Coulomb interaction between the occupations)::

    0 = F_i(p) = Σ_j [W_ji p_j (1 - p_i) - W_ij p_i (1 - p_j)] + s_i - Γ_i p_i
    s_i = Σ_k Γ_ik f_ik,    Γ_i = Σ_k Γ_ik

Its Jacobian ``J = diag(1-p) Wᵀ + diag(p) W - diag(Wᵀp + W(1-p) + Γ)`` is a column-diagonally-
dominant M-matrix (the margin of column ``i`` is ``Γ_i > 0``), so Newton's method with each step
kept inside ``[0, 1]`` converges from the contact-equilibrium start ``p_i = s_i / Γ_i`` in 5–8
iterations. Coulomb feedback between occupations is left out on purpose: it is not needed for the
gates and it makes Newton fail from cold starts.

Output current (nA), positive when holes flow from the network into the output electrode::

    I = e Σ_i Γ_i7 (p_i - f_i7)

Gradient: by the implicit-function theorem, ``dI/dV = ∂I/∂V - λᵀ ∂F/∂V`` with the adjoint
``Jᵀ λ = ∂I/∂p`` — exact to the Newton tolerance, one extra solve per point.

Traces
------
:meth:`DnpuModel.current_trace_na` solves every sample to a tight tolerance (no output is
interpolated), but cheaply, by exploiting that consecutive samples of a smooth series have nearly
the same solution and Jacobian. The default path is a compiled sample-by-sample loop
(``labrig/physics/_dnpu_kernel.py``, numba): rates from one exponential per site and per
electrode (``e^{x_ij} = e^{ε_j} / e^{ε_i}``), a warm start extrapolated from the two previous
samples, chord steps ``p ← p - J_ref⁻¹ F(p)`` with the inverse Jacobian of an earlier sample,
refreshed when the contraction slows, and full Newton wherever the chord stalls (a voltage jump).
The numpy path (``method="reference"``) does the same in batches: Newton on the middle sample of
each block, a first-order prediction ``p_c + (dp/dV)_c (V - V_c)`` (implicit-function theorem) for
the others, chord steps with the block's inverse Jacobian. Its small batched matrix products want
one BLAS thread (``OPENBLAS_NUM_THREADS=1``): threaded BLAS is several times slower at these sizes.

Boolean convention (labrig's Boolean tasks', :mod:`labrig.algorithms.tasks`)
-------------------------------------------------------------------------
Inputs on electrodes 0 and 1; logical 0 = low end of that electrode's activation range, logical 1
= high end; controls on electrodes 2–6. Cases are ordered (0,0), (0,1), (1,0), (1,1); a function
is the integer of its truth string, ``int(truth, 2)``: the output for case ``i`` is bit ``3 - i``
(AND = ``0b0001`` = 1, XOR = ``0b0110`` = 6). The analysis of which functions a device realises
(``boolean_outputs``, ``function_table``) lives in :mod:`labrig.algorithms.boolean`: the physics
takes plain arrays and knows no tasks.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

ELECTRODE_COUNT = 8
ACTIVATION_COUNT = 7
OUTPUT_ELECTRODE = 7
INPUT_ELECTRODES = (0, 1)
CONTROL_ELECTRODES = (2, 3, 4, 5, 6)

#: Activation ranges (V) per electrode 0..6: wide for the electrodes away from the output, narrow
#: for electrodes 2 and 6, which sit next to the output and would otherwise drive it past the TIA.
DEFAULT_ACTIVATION_RANGES_V: tuple[tuple[float, float], ...] = (
    (-1.2, 0.6),
    (-1.2, 0.6),
    (-0.7, 0.3),
    (-1.2, 0.6),
    (-1.2, 0.6),
    (-1.2, 0.6),
    (-0.7, 0.3),
)

BOLTZMANN_EV_PER_K = 8.617333262e-5
ELEMENTARY_CHARGE_C = 1.602176634e-19
#: e² / (4π ε0) in eV·nm.
COULOMB_EV_NM = 1.439964548
_NA_PER_HOLE_PER_S = ELEMENTARY_CHARGE_C * 1e9
_EXP_CLIP = 700.0
_KERNEL_ROW_MULTIPLE = 16

TraceMethod = Literal["auto", "kernel", "reference"]


@dataclass(frozen=True)
class DnpuParams:
    """Physical constants of the DNPU model (one set shared by all device seeds).

    Attributes:
        radius_nm: radius ``R`` of the active disk (nm).
        acceptor_count: number ``N`` of boron acceptor sites (hopping sites).
        donor_count: number of compensating donors (frozen positive charges).
        localisation_length_nm: ``a`` (nm) in ``exp(-2r/a)``.
        hop_attempt_frequency_hz: ``ν0`` (1/s), prefactor of site-site hops.
        contact_attempt_frequency_hz: ``ν_c`` (1/s), prefactor of site-electrode tunnelling.
        temperature_k: temperature (K); ``kT = k_B T`` (6.64 meV at 77 K).
        energy_disorder_mev: standard deviation of the random site energies (meV).
        acceptor_level_mev: mean site energy relative to the grounded output's Fermi level (meV).
        gate_coupling: ``α``, fraction of ``e φ`` that shifts a site energy (dimensionless).
        relative_permittivity: ``ε_r`` of silicon for the donor Coulomb shifts.
        coulomb_softening_nm: ``r_s`` (nm) in ``1/√(r² + r_s²)``.
        electrode_arc_fraction: fraction of each 45° rim sector covered by its electrode.
        rim_clearance_nm: sites and donors lie at ``r <= R - rim_clearance_nm`` (nm).
        electrode_slots: rim slot (0..7, slot ``s`` at angle ``2π s/8``) of electrodes 0..7.
        rate_form: ``"smooth"`` (``2/(1+e^x)``) or ``"miller_abrahams"`` (``min(1, e^-x)``).
        newton_tolerance: convergence threshold on the occupation update (dimensionless).
        max_newton_iterations: Newton iterations before a sample is declared failed.
    """

    radius_nm: float = 50.0
    acceptor_count: int = 26
    donor_count: int = 3
    localisation_length_nm: float = 8.0
    hop_attempt_frequency_hz: float = 1e13
    contact_attempt_frequency_hz: float = 5e13
    temperature_k: float = 77.0
    energy_disorder_mev: float = 5.0
    acceptor_level_mev: float = 0.0
    gate_coupling: float = 0.5
    relative_permittivity: float = 11.7
    coulomb_softening_nm: float = 1.0
    electrode_arc_fraction: float = 0.3
    rim_clearance_nm: float = 2.0
    electrode_slots: tuple[int, ...] = (3, 5, 1, 2, 4, 6, 7, 0)
    rate_form: Literal["smooth", "miller_abrahams"] = "smooth"
    newton_tolerance: float = 1e-11
    max_newton_iterations: int = 60

    def __post_init__(self) -> None:
        where = "DnpuParams"
        positive = (
            "radius_nm",
            "localisation_length_nm",
            "hop_attempt_frequency_hz",
            "contact_attempt_frequency_hz",
            "temperature_k",
            "relative_permittivity",
            "coulomb_softening_nm",
            "newton_tolerance",
        )
        for name in positive:
            value = float(getattr(self, name))
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{where}: {name} must be positive and finite, got {value!r}")
        if self.acceptor_count < 2:
            raise ValueError(f"{where}: acceptor_count must be >= 2, got {self.acceptor_count!r}")
        if self.donor_count < 0:
            raise ValueError(f"{where}: donor_count must be >= 0, got {self.donor_count!r}")
        if not self.energy_disorder_mev >= 0:
            raise ValueError(
                f"{where}: energy_disorder_mev must be >= 0, got {self.energy_disorder_mev!r}"
            )
        if not 0 <= self.gate_coupling <= 1:
            raise ValueError(
                f"{where}: gate_coupling must be in [0, 1], got {self.gate_coupling!r}"
            )
        if not 0 < self.electrode_arc_fraction < 1:
            raise ValueError(
                f"{where}: electrode_arc_fraction must be in (0, 1), got "
                f"{self.electrode_arc_fraction!r}"
            )
        if not 0 <= self.rim_clearance_nm < self.radius_nm:
            raise ValueError(
                f"{where}: rim_clearance_nm must be in [0, radius_nm={self.radius_nm}), got "
                f"{self.rim_clearance_nm!r}"
            )
        if sorted(self.electrode_slots) != list(range(ELECTRODE_COUNT)):
            raise ValueError(
                f"{where}: electrode_slots must be a permutation of 0..7, got "
                f"{self.electrode_slots!r}"
            )
        if self.rate_form not in ("smooth", "miller_abrahams"):
            raise ValueError(
                f"{where}: rate_form must be 'smooth' or 'miller_abrahams', got {self.rate_form!r}"
            )
        if self.max_newton_iterations < 1:
            raise ValueError(
                f"{where}: max_newton_iterations must be >= 1, got {self.max_newton_iterations!r}"
            )

    @property
    def kt_ev(self) -> float:
        """Thermal energy ``k_B T`` (eV)."""
        return BOLTZMANN_EV_PER_K * self.temperature_k


class DeviceModel(Protocol):
    """What the simulator needs from a device: :class:`DnpuModel` or a surrogate."""

    activation_ranges_v: tuple[tuple[float, float], ...]

    def current_na(self, voltages: npt.ArrayLike) -> FloatArray: ...

    def gradient_na_per_v(self, voltages: npt.ArrayLike) -> FloatArray: ...

    def current_trace_na(self, voltages: npt.ArrayLike) -> FloatArray: ...


class DnpuConvergenceError(RuntimeError):
    """The master equation did not converge for some voltage samples (should not happen)."""


@dataclass(frozen=True)
class _Rates:
    """Voltage-dependent rates for a batch of samples (see the module docstring)."""

    w_fwd: FloatArray  # (n, P) W_IJ for the pairs I < J
    w_bwd: FloatArray  # (n, P) W_JI
    fermi: FloatArray  # (n, Q) f_ik for the site-electrode couplings
    source: FloatArray  # (n, N) s_i = Σ_k Γ_ik f_ik


def _poisson_weights(
    rho: FloatArray, theta: FloatArray, centres: FloatArray, half_width: float, m: int = 1 << 15
) -> FloatArray:
    """``K_ik``: potential at ``(rho_i R, theta_i)`` per volt on electrode ``k`` (midpoint rule)."""
    t = (np.arange(m) + 0.5) * (2.0 * np.pi / m)
    step = 2.0 * np.pi / len(centres)
    basis = np.empty((m, len(centres)))
    for k, c in enumerate(centres):
        # Boundary basis function of electrode k: 1 on its arc, falling linearly across each gap
        # to 0 at the neighbouring arc. The basis functions sum to 1 everywhere on the rim.
        dist = np.abs(np.angle(np.exp(1j * (t - c))))
        basis[:, k] = np.clip((step - half_width - dist) / (step - 2.0 * half_width), 0.0, 1.0)
    r = rho[:, None]
    kernel = (1.0 - r**2) / (1.0 - 2.0 * r * np.cos(theta[:, None] - t[None, :]) + r**2)
    return np.asarray(kernel @ basis / m)


def _kernel_available() -> bool:
    """Whether the compiled trace kernel can be used (numba importable)."""
    return importlib.util.find_spec("numba") is not None


class DnpuModel:
    """One DNPU device instance, drawn from ``seed`` (same seed → same device).

    Usage::

        dnpu = DnpuModel(seed=0)
        i = dnpu.current_na(v)              # (n, 7) V -> (n,) nA, steady state, noise-free
        g = dnpu.gradient_na_per_v(v)       # (n, 7) nA/V, for validating gradient estimators
        trace = dnpu.current_trace_na(vt)   # fast path for a smooth time series (n, 7)

    Attributes:
        seed: the device seed.
        params: the physical constants (:class:`DnpuParams`).
        activation_ranges_v: (low, high) per activation electrode (V), for Boolean tasks and
            random search; the device itself accepts any finite voltage.
        sites_nm, donors_nm: positions (nm), shape (N, 2) and (N_D, 2).
        site_energy_ev: voltage-independent part of the site energies ``E_i`` (eV).
        potential_weights: ``K`` (N, 8): site potential per electrode volt.
    """

    def __init__(self, seed: int = 0, params: DnpuParams | None = None) -> None:
        self.seed = int(seed)
        self.params = params if params is not None else DnpuParams()
        self.activation_ranges_v: tuple[tuple[float, float], ...] = DEFAULT_ACTIVATION_RANGES_V
        p = self.params
        rng = np.random.default_rng(self.seed)
        n = p.acceptor_count
        r_max = p.radius_nm - p.rim_clearance_nm
        # Uniform in the disk: r = r_max √u.
        r_site = r_max * np.sqrt(rng.random(n))
        th_site = 2.0 * np.pi * rng.random(n)
        disorder_ev = rng.normal(0.0, p.energy_disorder_mev * 1e-3, n)
        r_don = r_max * np.sqrt(rng.random(p.donor_count))
        th_don = 2.0 * np.pi * rng.random(p.donor_count)
        self.sites_nm = np.stack([r_site * np.cos(th_site), r_site * np.sin(th_site)], axis=1)
        self.donors_nm = np.stack([r_don * np.cos(th_don), r_don * np.sin(th_don)], axis=1)

        d_sd = np.linalg.norm(self.sites_nm[:, None, :] - self.donors_nm[None, :, :], axis=2)
        donor_shift_ev = (
            COULOMB_EV_NM / p.relative_permittivity / np.sqrt(d_sd**2 + p.coulomb_softening_nm**2)
        ).sum(axis=1)
        self.site_energy_ev = p.acceptor_level_mev * 1e-3 + disorder_ev + donor_shift_ev

        centres = 2.0 * np.pi * np.asarray(p.electrode_slots, dtype=float) / ELECTRODE_COUNT
        half = np.pi / ELECTRODE_COUNT * p.electrode_arc_fraction
        self.potential_weights = _poisson_weights(r_site / p.radius_nm, th_site, centres, half)

        # Distance from each site to each arc: radial if the site faces the arc, else to the
        # nearer arc end (law of cosines with the angle beyond the end).
        off = np.abs(np.angle(np.exp(1j * (th_site[:, None] - centres[None, :]))))
        beyond = np.clip(off - half, 0.0, None)
        rs = r_site[:, None]
        self.electrode_distance_nm = np.sqrt(
            p.radius_nm**2 + rs**2 - 2.0 * p.radius_nm * rs * np.cos(beyond)
        )

        self._build_rate_tables()

    # ----------------------------------------------------------------- precomputed tables
    def _build_rate_tables(self) -> None:
        p = self.params
        n = p.acceptor_count
        kt = p.kt_ev
        a = p.localisation_length_nm
        k7 = self.potential_weights[:, :ACTIVATION_COUNT]
        alpha = p.gate_coupling

        # Site pairs I < J: W_IJ = pref g(x), x = (E_J - E_I)/kT = x0 + V @ mx.
        i_idx, j_idx = np.triu_indices(n, 1)
        r_ij = np.linalg.norm(self.sites_nm[i_idx] - self.sites_nm[j_idx], axis=1)
        self._pair_i: IntArray = i_idx
        self._pair_j: IntArray = j_idx
        self._pair_pref = p.hop_attempt_frequency_hz * np.exp(-2.0 * r_ij / a)
        e0 = self.site_energy_ev
        self._x0 = (e0[j_idx] - e0[i_idx]) / kt
        self._mx = np.ascontiguousarray((alpha * (k7[j_idx] - k7[i_idx]) / kt).T)  # (7, P)
        # Net hole flux I→J enters F_J and leaves F_I: F = flux @ incidence.
        incidence = np.zeros((len(i_idx), n))
        incidence[np.arange(len(i_idx)), i_idx] = -1.0
        incidence[np.arange(len(i_idx)), j_idx] = 1.0
        self._incidence = incidence

        # Site-electrode couplings q = (site, electrode): y = (E_i - μ_k)/kT = y0 + V @ my.
        q_site, q_el = np.divmod(np.arange(n * ELECTRODE_COUNT), ELECTRODE_COUNT)
        self._gamma = p.contact_attempt_frequency_hz * np.exp(
            -2.0 * self.electrode_distance_nm[q_site, q_el] / a
        )
        self._y0 = e0[q_site] / kt
        mu = np.zeros((ACTIVATION_COUNT, len(q_site)))
        driven = q_el < ACTIVATION_COUNT
        mu[q_el[driven], np.nonzero(driven)[0]] = 1.0
        self._my = np.ascontiguousarray((alpha * k7[q_site].T - mu) / kt)  # (7, Q)
        self._gamma_total = self._gamma.reshape(n, ELECTRODE_COUNT).sum(axis=1)
        scatter = np.zeros((len(q_site), n))
        scatter[np.arange(len(q_site)), q_site] = self._gamma
        self._gamma_scatter = scatter  # s = fermi @ scatter
        self._contact_incidence = (scatter > 0).astype(float)
        out = q_el == OUTPUT_ELECTRODE
        self._out_q: IntArray = np.nonzero(out)[0]
        self._gamma_out = self._gamma[out]  # Γ_i7, site order
        self._flat_fwd = i_idx * n + j_idx
        self._flat_bwd = j_idx * n + i_idx

        # Tables of the compiled trace kernel (labrig/physics/_dnpu_kernel.py), one row per
        # electrode or site, each row padded with zeros to a multiple of 16 sites so that the
        # kernel's row loops vectorise without a scalar remainder: site energies in kT,
        # ε = ε0 + V @ (α K / kT)ᵀ; hop prefactors ν_ij (symmetric, zero diagonal); Γ_ki.
        width = -(-n // _KERNEL_ROW_MULTIPLE) * _KERNEL_ROW_MULTIPLE
        self._e0_kt_rows = np.zeros(width)
        self._e0_kt_rows[:n] = e0 / kt
        self._gate_kt_rows = np.zeros((ACTIVATION_COUNT, width))
        self._gate_kt_rows[:, :n] = alpha * k7.T / kt
        pref = np.zeros((n, width))
        pref[i_idx, j_idx] = self._pair_pref
        pref[j_idx, i_idx] = self._pair_pref
        self._pref_rows = pref
        self._gamma_rows = np.zeros((ELECTRODE_COUNT, width))
        self._gamma_rows[:, :n] = self._gamma.reshape(n, ELECTRODE_COUNT).T
        self._gamma_out_na = _NA_PER_HOLE_PER_S * self._gamma_out

    # ----------------------------------------------------------------------- internals
    @property
    def site_count(self) -> int:
        """Number of acceptor sites ``N``."""
        return self.params.acceptor_count

    def _as_batch(self, voltages: npt.ArrayLike, where: str) -> tuple[FloatArray, bool]:
        v = np.asarray(voltages, dtype=float)
        single = v.ndim == 1
        v2 = v.reshape(1, -1) if single else v
        if v2.ndim != 2 or v2.shape[1] != ACTIVATION_COUNT:
            raise ValueError(
                f"DnpuModel.{where}: voltages must have shape (n, {ACTIVATION_COUNT}) or "
                f"({ACTIVATION_COUNT},), got {v.shape}"
            )
        if not np.all(np.isfinite(v2)):
            raise ValueError(f"DnpuModel.{where}: voltages must be finite")
        return v2, single

    def _rates(self, v: FloatArray) -> _Rates:
        x = self._x0 + v @ self._mx
        if self.params.rate_form == "smooth":
            g = 2.0 / (1.0 + np.exp(np.clip(x, -_EXP_CLIP, _EXP_CLIP)))
            w_fwd = self._pair_pref * g
            w_bwd = self._pair_pref * (2.0 - g)  # g(-x) = 2 - g(x)
        else:
            boltz = np.exp(-np.abs(np.clip(x, -_EXP_CLIP, _EXP_CLIP)))
            w_fwd = self._pair_pref * np.where(x > 0, boltz, 1.0)
            w_bwd = self._pair_pref * np.where(x < 0, boltz, 1.0)
        y = self._y0 + v @ self._my
        fermi = 1.0 / (1.0 + np.exp(np.clip(y, -_EXP_CLIP, _EXP_CLIP)))
        return _Rates(w_fwd, w_bwd, fermi, fermi @ self._gamma_scatter)

    def _dense(self, rates: _Rates, rows: IntArray | slice) -> FloatArray:
        """Dense rate matrices ``W[s, i, j]`` (hole hop i→j) for the selected samples."""
        n = self.site_count
        wf = rates.w_fwd[rows]
        w = np.zeros((wf.shape[0], n * n))
        w[:, self._flat_fwd] = wf
        w[:, self._flat_bwd] = rates.w_bwd[rows]
        return w.reshape(-1, n, n)

    def _jacobian(self, occ: FloatArray, w: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Return (J, F without the source term) for dense ``w``; see the module docstring."""
        q = 1.0 - occ
        wt = np.swapaxes(w, 1, 2)
        inflow = np.einsum("sij,sj->si", wt, occ)  # Σ_j W_ji p_j
        outflow = np.einsum("sij,sj->si", w, q)  # Σ_j W_ij (1 - p_j)
        jac = q[:, :, None] * wt + occ[:, :, None] * w
        diag = np.arange(self.site_count)
        jac[:, diag, diag] -= inflow + outflow + self._gamma_total
        resid = q * inflow - occ * outflow - self._gamma_total * occ
        return jac, resid

    def _residual(self, occ: FloatArray, rates: _Rates, rows: IntArray | slice) -> FloatArray:
        """``F(p)`` from the pair lists (no dense matrices): the cheap residual for traces."""
        pi = occ[:, self._pair_i]
        pj = occ[:, self._pair_j]
        flux = rates.w_fwd[rows] * pi * (1.0 - pj) - rates.w_bwd[rows] * pj * (1.0 - pi)
        return np.asarray(flux @ self._incidence + rates.source[rows] - self._gamma_total * occ)

    @staticmethod
    def _safe_update(occ: FloatArray, step: FloatArray) -> FloatArray:
        # A full Newton step that would leave [0, 1] is replaced, per site, by a move 99.9 % of
        # the way to the bound: occupations of 1e-40 are legitimate and are reached geometrically.
        new = occ + step
        new = np.where(new < 0.0, occ * 1e-3, new)
        return np.where(new > 1.0, 1.0 - (1.0 - occ) * 1e-3, new)

    def _newton(
        self, rates: _Rates, rows: IntArray, occ0: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Solve ``F(p) = 0`` for the samples ``rows``; return (p, J at the last iterate)."""
        p = self.params
        if occ0 is None:
            occ = np.clip(rates.source[rows] / self._gamma_total, 1e-6, 1.0 - 1e-6)
        else:
            occ = occ0.copy()
        jac_out = np.empty((len(rows), self.site_count, self.site_count))
        active = np.arange(len(rows))
        for _ in range(p.max_newton_iterations):
            sel = rows[active]
            w = self._dense(rates, sel)
            jac, resid = self._jacobian(occ[active], w)
            resid += rates.source[sel]
            step = np.asarray(np.linalg.solve(jac, -resid[:, :, None])[:, :, 0], dtype=np.float64)
            new = self._safe_update(occ[active], step)
            change = np.abs(new - occ[active]).max(axis=1)
            occ[active] = new
            jac_out[active] = jac
            active = active[change >= p.newton_tolerance]
            if active.size == 0:
                return occ, jac_out
        worst = rows[active[:3]]
        raise DnpuConvergenceError(
            f"DnpuModel(seed={self.seed}): Newton did not converge in "
            f"{p.max_newton_iterations} iterations for {active.size} samples (first: rows "
            f"{worst.tolist()})"
        )

    def _current(self, occ: FloatArray, rates: _Rates, rows: IntArray | slice) -> FloatArray:
        # I = e Σ_i Γ_i7 (p_i - f_i7), in nA.
        f_out = rates.fermi[rows][:, self._out_q]
        return np.asarray(_NA_PER_HOLE_PER_S * ((occ - f_out) @ self._gamma_out))

    # ------------------------------------------------------------------------ public API
    def occupations(self, voltages: npt.ArrayLike) -> FloatArray:
        """Steady-state hole occupations ``p`` (n, N) for ``(n, 7)`` voltages (diagnostics)."""
        v, single = self._as_batch(voltages, "occupations")
        rates = self._rates(v)
        occ, _ = self._newton(rates, np.arange(v.shape[0]))
        return occ[0] if single else occ

    def current_na(self, voltages: npt.ArrayLike, chunk: int = 2048) -> FloatArray:
        """Noise-free steady-state output current (nA).

        ``voltages``: ``(n, 7)`` activation-electrode voltages (V) → ``(n,)``; a single ``(7,)``
        row gives a 0-d array. Each sample is solved independently (batched Newton, cold start).
        """
        v, single = self._as_batch(voltages, "current_na")
        out = np.empty(v.shape[0])
        for start in range(0, v.shape[0], chunk):
            vb = v[start : start + chunk]
            rates = self._rates(vb)
            rows = np.arange(vb.shape[0])
            occ, _ = self._newton(rates, rows)
            out[start : start + chunk] = self._current(occ, rates, rows)
        return out[0] if single else out

    def gradient_na_per_v(self, voltages: npt.ArrayLike, chunk: int = 2048) -> FloatArray:
        """Exact ``∂I/∂V_k`` (nA/V) of :meth:`current_na`: ``(n, 7)`` → ``(n, 7)``.

        Implicit-function theorem on the converged master equation, by the adjoint
        ``Jᵀ λ = Γ_·7`` (``∂I/∂p``)::

            dI/dV_k = e [ -λᵀ ∂F/∂V_k - Σ_i Γ_i7 ∂f_i7/∂V_k ]

        For validating gradient estimators (HGE, finite differences), not for training.
        """
        v, single = self._as_batch(voltages, "gradient_na_per_v")
        grads = np.empty_like(v)
        for start in range(0, v.shape[0], chunk):
            vb = v[start : start + chunk]
            rates = self._rates(vb)
            rows = np.arange(vb.shape[0])
            occ, _ = self._newton(rates, rows)
            jac, _ = self._jacobian(occ, self._dense(rates, rows))
            rhs = np.broadcast_to(self._gamma_out, occ.shape)[:, :, None]
            lam = np.linalg.solve(np.swapaxes(jac, 1, 2), rhs)[:, :, 0]
            dfdv = self._dfdv(vb, occ, rates, rows)
            fermi_out = rates.fermi[:, self._out_q]
            dfermi_out = -fermi_out * (1.0 - fermi_out)
            direct = (self._gamma_out * dfermi_out) @ self._my[:, self._out_q].T
            grads[start : start + chunk] = _NA_PER_HOLE_PER_S * (
                -np.einsum("ni,nik->nk", lam, dfdv) - direct
            )
        return grads[0] if single else grads

    def current_trace_na(
        self,
        voltages: npt.ArrayLike,
        block: int = 8,
        chord_iterations: int = 6,
        tolerance: float = 1e-9,
        chunk: int = 512,
        method: TraceMethod = "auto",
    ) -> FloatArray:
        """Output current (nA) for a time series of voltages ``(n, 7)`` → ``(n,)``.

        The same steady state as :meth:`current_na`, every sample solved until the occupation
        update is below ``tolerance`` (the current is then exact to about
        ``e max_i Γ_i7 · tolerance``, ~1e-7 nA for the default), but much faster for smooth
        series. Voltage jumps cost time, never accuracy: samples the fast iteration does not
        settle are finished by full Newton.

        ``method``:

        * ``"kernel"``: the compiled sample-by-sample solver (:mod:`._dnpu_kernel`, needs
          numba): warm start by linear extrapolation from the two previous samples, chord
          steps ``p ← p - J_ref⁻¹ F(p)`` with the inverse Jacobian of an earlier sample (at
          most ``chord_iterations`` per sample, stopping when the update, or the update times
          the observed contraction ratio, is below ``tolerance``), a fresh ``J_ref`` when the
          contraction slows, and Newton where the chord stalls. About 3 ms per 1000 samples.
          The first call in a fresh environment compiles the kernel (seconds; cached on disk).
        * ``"reference"``: the batched numpy solver: Newton on the middle sample of each
          ``block``, a first-order prediction ``p_c + (dp/dV)_c (V - V_c)`` for the others,
          chord steps with the block's inverse Jacobian, ``chunk`` samples at a time. About
          40 ms per 1000 samples; kept for comparison and as the fallback.
        * ``"auto"`` (default): ``"kernel"`` if numba is installed, else ``"reference"``.

        The kernel needs ``|E_i| / kT`` and ``|V_k| / kT`` below 300 (about 2 V); beyond that
        the trace is solved by the reference path, which clips the exponents.
        """
        v, single = self._as_batch(voltages, "current_trace_na")
        if block < 1 or chunk < block:
            raise ValueError(
                f"DnpuModel.current_trace_na: need 1 <= block <= chunk, got block={block!r}, "
                f"chunk={chunk!r}"
            )
        if not tolerance > 0:
            raise ValueError(
                f"DnpuModel.current_trace_na: tolerance must be > 0, got {tolerance!r}"
            )
        if chord_iterations < 1:
            raise ValueError(
                f"DnpuModel.current_trace_na: chord_iterations must be >= 1, got "
                f"{chord_iterations!r}"
            )
        if method not in ("auto", "kernel", "reference"):
            raise ValueError(
                f"DnpuModel.current_trace_na: method must be 'auto', 'kernel' or 'reference', "
                f"got {method!r}"
            )
        out: FloatArray | None = None
        if method == "kernel" or (method == "auto" and _kernel_available()):
            out = self._trace_kernel(v, chord_iterations, tolerance)
        if out is None:
            out = np.empty(v.shape[0])
            step = (chunk // block) * block
            for start in range(0, v.shape[0], step):
                out[start : start + step] = self._trace_chunk(
                    v[start : start + step], block, chord_iterations, tolerance
                )
        return out[0] if single else out

    def _trace_kernel(
        self, v: FloatArray, chord_iterations: int, tolerance: float
    ) -> FloatArray | None:
        """The compiled path; None when the exponents are out of its range (see the caller)."""
        from labrig.physics import _dnpu_kernel as kernel

        p = self.params
        currents = np.empty(v.shape[0])
        counters = np.zeros(kernel.COUNTER_COUNT, dtype=np.int64)
        status, sample = kernel.trace_currents(
            np.ascontiguousarray(v),
            self._e0_kt_rows,
            self._gate_kt_rows,
            1.0 / p.kt_ev,
            self._pref_rows,
            self._gamma_rows,
            self._gamma_out_na,
            p.rate_form == "smooth",
            tolerance,
            chord_iterations,
            kernel.REFRESH_RATIO,
            p.max_newton_iterations,
            currents,
            counters,
        )
        if status == kernel.STATUS_EXPONENT_RANGE:
            return None
        if status != kernel.STATUS_OK:
            raise DnpuConvergenceError(
                f"DnpuModel(seed={self.seed}): Newton did not converge in "
                f"{p.max_newton_iterations} iterations for trace sample {sample} "
                f"(voltages {v[sample].tolist()})"
            )
        return currents

    def _dfdv(self, v: FloatArray, occ: FloatArray, rates: _Rates, rows: IntArray) -> FloatArray:
        """``∂F_i/∂V_k`` at fixed occupations, shape (len(rows), N, 7)."""
        x = self._x0 + v[rows] @ self._mx
        wf = rates.w_fwd[rows]
        wb = rates.w_bwd[rows]
        if self.params.rate_form == "smooth":
            g = wf / self._pair_pref
            dw_fwd = self._pair_pref * (-0.5 * g * (2.0 - g))  # g'(x) = -g(2-g)/2
            dw_bwd = -dw_fwd
        else:
            dw_fwd = np.where(x > 0, -wf, 0.0)
            dw_bwd = np.where(x < 0, wb, 0.0)
        pi = occ[:, self._pair_i]
        pj = occ[:, self._pair_j]
        dflux = dw_fwd * pi * (1.0 - pj) - dw_bwd * pj * (1.0 - pi)
        fermi = rates.fermi[rows]
        dsource = self._gamma * (-fermi * (1.0 - fermi))
        # Σ_P incidence[P, i] dflux_P mx[k, P] + Σ_q [site(q) = i] Γ_q f'_q my[k, q]
        pair_part = self._incidence.T @ (dflux[:, :, None] * self._mx.T)
        contact_part = self._contact_incidence.T @ (dsource[:, :, None] * self._my.T)
        return np.asarray(pair_part + contact_part)

    def _trace_chunk(
        self, v: FloatArray, block: int, chord_iterations: int, tolerance: float
    ) -> FloatArray:
        n_samples = v.shape[0]
        nsite = self.site_count
        rates = self._rates(v)
        n_blocks = -(-n_samples // block)
        owner = np.minimum(np.arange(n_samples) // block, n_blocks - 1)
        centres = np.minimum(np.arange(n_blocks) * block + block // 2, n_samples - 1)
        occ_c, jac_c = self._newton(rates, centres)
        all_rows = np.arange(n_samples)
        if block == 1:
            return self._current(occ_c, rates, all_rows)
        jinv = np.linalg.inv(jac_c)
        # Predictor: dp/dV = -J⁻¹ ∂F/∂V at each block's middle sample.
        dpdv = -(jinv @ self._dfdv(v, occ_c, rates, centres))  # (blocks, N, 7)
        dv = v - v[centres][owner]
        occ = occ_c[owner] + np.einsum("snk,sk->sn", dpdv[owner], dv)
        occ = np.clip(occ, 0.0, 1.0)
        occ[centres] = occ_c

        jinv_t = np.swapaxes(jinv, 1, 2)
        pending = np.ones(n_samples, dtype=bool)
        pending[centres] = False
        for _ in range(chord_iterations):
            rows = np.nonzero(pending)[0]
            if rows.size == 0:
                break
            resid = np.zeros((n_blocks * block, nsite))
            resid[rows] = self._residual(occ[rows], rates, rows)
            step = -(resid.reshape(n_blocks, block, nsite) @ jinv_t).reshape(-1, nsite)
            new = self._safe_update(occ[rows], step[rows])
            change = np.abs(new - occ[rows]).max(axis=1)
            occ[rows] = new
            pending[rows[change < tolerance]] = False
        if pending.any():
            rows = np.nonzero(pending)[0]
            occ[rows], _ = self._newton(rates, rows, occ0=occ[rows])
        return self._current(occ, rates, all_rows)
