"""Calibration of the delay-reservoir rig: what a procedure must know of the optics, measured.

A procedure never assumes the modulator's V_pi, its bias point, the photodetector's levels or the
loop delay: they come from a measurement on the rig (``labrig calibrate``, or a training
procedure's start-up frames), fitted here and stored in a small TOML file that the station
references (``[reservoir] calibration = "reservoir-cal.toml"``, relative to the station file).

The fits (pure numpy/scipy, no instrument):

* :func:`fit_mzm` -- the modulator's open-loop transfer curve, measured from a dark loop (each
  level is read before its light has been round the loop once, so the feedback is zero)::

      pd(V) = dark + (bright - dark) * sin^2(pi / (2 V_pi) * (V - V_null))

  ``V_null`` is the drive at the null (with the bias DAC at ``bias_dac_v``): the modulator's
  bias point in drive volts; quadrature is ``V_null + V_pi / 2``.
* :func:`fit_feedback` -- the loop's steady-state (closed-loop) curve with the open-loop fit
  known: each settled level obeys ``x = A sin^2(kappa (V - V_null) + beta x)`` with ``x = pd -
  dark``, so ``beta`` (rad of modulator phase per volt of PD signal, the loop's feedback
  strength) is an explicit one-parameter least-squares fit.

File format (every key required except ``feedback_rad_per_v`` and the provenance)::

    [calibration]
    kind = "reservoir"
    v_pi_v = 4.0
    null_drive_v = 0.0
    bias_dac_v = 0.0
    dark_v = 0.0
    bright_v = 1.0
    loop_delay_s = 4.04e-6
    node_duration_s = 4e-8
    node_count = 100
    feedback_rad_per_v = 0.785
    fit_rms_v = 0.004
    measured_at = "2026-12-08T00:00:00+00:00"
    run = "runs/2026-12-08_..."
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy.optimize import least_squares

from labrig.errors import ProcedureError

FloatArray = npt.NDArray[np.float64]


class CalibrationError(ProcedureError):
    """A calibration file that cannot be used, or a measurement that cannot be fitted."""


class ReservoirTwin(Protocol):
    """A node-level model of the reservoir rig with its exact derivatives (the digital twin).

    Drives ``J`` are AWG volts per node slot, ``(batch, N)`` held ``periods`` periods (or a
    sequence ``(batch, T, N)``); states are photodetector volts. Only a simulated station can
    supply one (:attr:`labrig.rig.Rig.twin`); the baselines that need a model of the rig
    (plain DFA, backpropagation through the twin) take it as an explicit input.
    """

    def layer_nodes(self, J: npt.ArrayLike, *, periods: int = 3) -> FloatArray:
        """Noise-free node states for drives ``J``."""
        ...

    def layer_derivative_diag(self, J: npt.ArrayLike, *, periods: int = 3) -> FloatArray:
        """``dX_i/dJ_i``, same shape as ``J``."""
        ...

    def layer_vjp(
        self, J: npt.ArrayLike, grad_out: npt.ArrayLike, *, periods: int = 3
    ) -> FloatArray:
        """``grad_out^T dX/dJ``."""
        ...


@dataclass(frozen=True)
class ReservoirCalibration:
    """The measured optics of one reservoir rig. Volts and seconds.

    ``null_drive_v``: AWG drive at the modulator's null (dark), with the bias DAC at
    ``bias_dac_v``; the null repeats every ``2 v_pi_v``. ``dark_v``/``bright_v``: photodetector
    (scope) volts at the null and at full transmission, from a dark loop. ``loop_delay_s``: the
    delay of the fibre loop, from the impulse response; ``desync_nodes`` follows from it.
    """

    v_pi_v: float
    null_drive_v: float
    bias_dac_v: float
    dark_v: float
    bright_v: float
    loop_delay_s: float
    node_duration_s: float
    node_count: int
    feedback_rad_per_v: float = float("nan")
    fit_rms_v: float = float("nan")
    measured_at: str = ""
    run: str = ""

    def __post_init__(self) -> None:
        for name in ("v_pi_v", "loop_delay_s", "node_duration_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise CalibrationError(f"calibration: {name} must be finite and > 0, got {value!r}")
        for name in ("null_drive_v", "bias_dac_v", "dark_v", "bright_v"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise CalibrationError(f"calibration: {name} must be finite, got {value!r}")
        if not self.bright_v > self.dark_v:
            raise CalibrationError(
                f"calibration: bright_v = {self.bright_v!r} V must exceed dark_v = "
                f"{self.dark_v!r} V (no light reached the photodetector?)"
            )
        if self.node_count < 1:
            raise CalibrationError(f"calibration: node_count must be >= 1, got {self.node_count}")

    @property
    def eta_v(self) -> float:
        """Photodetector swing from the null to full transmission (V)."""
        return self.bright_v - self.dark_v

    @property
    def desync_nodes(self) -> int:
        """Loop delay in node slots beyond one period: ``round(tau / theta) - N``."""
        return round(self.loop_delay_s / self.node_duration_s) - self.node_count

    def null_near(self, v: float) -> float:
        """The null drive (one of every ``2 V_pi``) closest to ``v``."""
        period = 2.0 * self.v_pi_v
        return self.null_drive_v + period * round((v - self.null_drive_v) / period)

    def drive_at(self, phase_in_v_pi: float, window_v: float) -> float:
        """The drive ``null + phase * V_pi`` (phase in units of V_pi from a null, 0.5 =
        quadrature on the rising slope) nearest to 0 V; refused if none lies in ``+/-
        window_v``."""
        v = self.null_near(-phase_in_v_pi * self.v_pi_v) + phase_in_v_pi * self.v_pi_v
        if abs(v) > window_v:
            raise CalibrationError(
                f"calibration: no drive at {phase_in_v_pi:g} V_pi from a null lies within "
                f"+/-{window_v:g} V (V_pi = {self.v_pi_v:g} V, null at {self.null_drive_v:g} V)"
            )
        return v

    def bright_drive(self, window_v: float) -> float:
        """A full-transmission drive inside ``+/- window_v`` (the one nearest to 0 V)."""
        return self.drive_at(1.0, window_v)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_mzm(drive_v: npt.ArrayLike, pd_v: npt.ArrayLike) -> tuple[dict[str, float], float]:
    """Fit ``pd = dark + (bright - dark) sin^2(pi (V - V_null) / (2 V_pi))`` to an open-loop
    transfer curve. Returns ``({v_pi_v, null_drive_v, dark_v, bright_v}, rms residual)``.

    A grid over V_pi (from an eighth of the span to twice the span) and V_null (over one
    period), with dark and bright solved linearly at each node, gives the start; least squares
    refines all four. ``V_null`` is returned in ``[-V_pi, V_pi)``. Needs at least half a period
    of curve (a null and a peak) to be meaningful: a span shorter than V_pi is refused.
    """
    v = np.asarray(drive_v, dtype=float).ravel()
    y = np.asarray(pd_v, dtype=float).ravel()
    if v.size != y.size or v.size < 8:
        raise CalibrationError(
            f"fit_mzm: need >= 8 (drive, pd) pairs of equal length, got {v.size} and {y.size}"
        )
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(y))):
        raise CalibrationError("fit_mzm: the transfer curve holds NaN or inf")
    span = float(v.max() - v.min())
    if span <= 0:
        raise CalibrationError("fit_mzm: the drive levels are all equal")

    # Every grid node at once: for each (V_pi, V_null), the least-squares line y ~ dark + amp s
    # has amp = cov(s, y) / var(s) and residual sum (var(y) - cov^2 / var(s)) * n.
    v_pis = np.geomspace(span / 8.0, 2.0 * span, 160)
    frac = np.arange(64) / 64.0
    nulls = (2.0 * frac[None, :] - 1.0) * v_pis[:, None]  # (160, 64) over [-V_pi, V_pi)
    kappa = (np.pi / (2.0 * v_pis))[:, None, None]
    s_all = np.sin(kappa * (v[None, None, :] - nulls[:, :, None])) ** 2  # (160, 64, n)
    s_c = s_all - s_all.mean(axis=2, keepdims=True)
    y_c = y - y.mean()
    var_s = np.einsum("ijk,ijk->ij", s_c, s_c)
    cov = np.einsum("ijk,k->ij", s_c, y_c)
    with np.errstate(divide="ignore", invalid="ignore"):
        amp_grid = cov / var_s
        rss = float(y_c @ y_c) - cov * amp_grid
    rss = np.where((var_s > 1e-12) & (amp_grid > 0), rss, np.inf)
    i, j = np.unravel_index(int(np.argmin(rss)), rss.shape)
    if not np.isfinite(rss[i, j]):
        raise CalibrationError("fit_mzm: no sin^2 with positive swing fits the curve")
    v_pi0, null0, amp0 = float(v_pis[i]), float(nulls[i, j]), float(amp_grid[i, j])
    dark0 = float(y.mean() - amp0 * s_all[i, j].mean())

    def design(v_pi: float, null: float) -> FloatArray:
        return np.asarray(np.sin(np.pi / (2.0 * v_pi) * (v - null)) ** 2, dtype=float)

    def residual(p: FloatArray) -> FloatArray:
        return np.asarray(p[2] + p[3] * design(p[0], p[1]) - y, dtype=float)

    sol = least_squares(residual, [v_pi0, null0, dark0, amp0], method="lm")
    v_pi, null, dark, amp = (float(x) for x in sol.x)
    if not (v_pi > 0 and amp > 0):
        raise CalibrationError(f"fit_mzm: the fit diverged (V_pi = {v_pi:g}, swing = {amp:g})")
    null = (null + v_pi) % (2.0 * v_pi) - v_pi
    rms = float(np.sqrt(np.mean(residual(sol.x) ** 2)))
    return {"v_pi_v": v_pi, "null_drive_v": null, "dark_v": dark, "bright_v": dark + amp}, rms


def fit_feedback(
    drive_v: npt.ArrayLike, pd_v: npt.ArrayLike, open_loop: dict[str, float]
) -> tuple[float, float]:
    """The loop's feedback strength ``beta`` (rad per V of PD signal) from a settled,
    closed-loop transfer curve and the open-loop fit; returns ``(beta, rms residual)``."""
    v = np.asarray(drive_v, dtype=float).ravel()
    x = np.asarray(pd_v, dtype=float).ravel() - open_loop["dark_v"]
    amp = open_loop["bright_v"] - open_loop["dark_v"]
    kappa = math.pi / (2.0 * open_loop["v_pi_v"])
    phase = kappa * (v - open_loop["null_drive_v"])

    def residual(p: FloatArray) -> FloatArray:
        return np.asarray(amp * np.sin(phase + p[0] * x) ** 2 - x, dtype=float)

    # Start from several guesses: the residual is periodic in beta * x.
    starts = [0.0, 0.5 * kappa, 2.0 * kappa, 4.0 * kappa]
    sols = [least_squares(residual, [b0], method="lm") for b0 in starts]
    sol = min(sols, key=lambda s: float(np.sum(s.fun**2)))
    return float(sol.x[0]), float(np.sqrt(np.mean(sol.fun**2)))


# ------------------------------------------------------------------------------------ files
def save_calibration(cal: ReservoirCalibration, path: str | Path) -> Path:
    """Write ``cal`` as a calibration TOML file (see the module docstring)."""
    lines = ["[calibration]", 'kind = "reservoir"']
    for f in fields(cal):
        value = getattr(cal, f.name)
        if isinstance(value, str):
            lines.append(f"{f.name} = {_toml_string(value)}")
        elif isinstance(value, float) and not math.isfinite(value):
            continue  # TOML has nan, but an unmeasured value is simply absent
        else:
            lines.append(f"{f.name} = {value!r}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _toml_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def load_calibration(path: str | Path) -> ReservoirCalibration:
    """Read a calibration file; a missing file or key, or a bad value, raises
    :class:`CalibrationError` naming the file and key."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CalibrationError(f"calibration file {p}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CalibrationError(f"calibration file {p}: not valid TOML: {exc}") from exc
    table = data.get("calibration")
    if not isinstance(table, dict) or table.get("kind") != "reservoir":
        raise CalibrationError(f'calibration file {p}: needs [calibration] kind = "reservoir"')
    known = {f.name: f for f in fields(ReservoirCalibration)}
    unknown = set(table) - set(known) - {"kind"}
    if unknown:
        raise CalibrationError(f"calibration file {p}: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name not in table:
            if f.default is MISSING:
                raise CalibrationError(f"calibration file {p}: missing key {name!r}")
            continue
        value = table[name]
        want = str if name in ("measured_at", "run") else int if name == "node_count" else float
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or isinstance(value, bool):
            raise CalibrationError(
                f"calibration file {p}: {name} must be {want.__name__}, got {value!r}"
            )
        values[name] = value
    try:
        return ReservoirCalibration(**values)
    except CalibrationError as exc:
        raise CalibrationError(f"calibration file {p}: {exc}") from exc


__all__ = [
    "CalibrationError",
    "ReservoirCalibration",
    "ReservoirTwin",
    "fit_feedback",
    "fit_mzm",
    "load_calibration",
    "save_calibration",
]
