"""Tasks for in-materio training: two-input Boolean gates, sphere and ring classification.

A :class:`Task` holds its input cases in normalised units (0 = low end, 1 = high end of each
input electrode's range) and a target per case; :func:`input_voltages` maps cases to volts with
the station's ranges.

Boolean gates. Cases are always ordered ``(0,0), (0,1), (1,0), (1,1)`` as ``(a, b)`` with
``a`` on the first input electrode. A gate is its 4-character truth string, character ``i``
being the output for case ``i`` (AND ``"0001"``, XOR ``"0110"``), or equivalently the integer
whose 4-bit binary form is that string, ``code = int(truth, 2)`` (AND = 1, OR = 7, NAND = 14,
NOR = 8, XOR = 6, XNOR = 9): the output for case ``i`` is bit ``3 - i``.

A gate is *found* when one threshold separates every 1-case (above) from every 0-case (below):
:func:`separable`. Use ``separable(-outputs, targets)`` to accept an inverted read-out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

BOOLEAN_CASES: FloatArray = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
BOOLEAN_CASES.setflags(write=False)

# Names of all 16 two-input functions (a = first input, b = second input).
GATE_NAMES: dict[str, str] = {
    "FALSE": "0000",
    "AND": "0001",
    "A_AND_NOT_B": "0010",
    "A": "0011",
    "NOT_A_AND_B": "0100",
    "B": "0101",
    "XOR": "0110",
    "OR": "0111",
    "NOR": "1000",
    "XNOR": "1001",
    "NOT_B": "1010",
    "A_OR_NOT_B": "1011",
    "NOT_A": "1100",
    "NOT_A_OR_B": "1101",
    "NAND": "1110",
    "TRUE": "1111",
}
_NAME_OF = {truth: name for name, truth in GATE_NAMES.items()}


@dataclass(frozen=True, eq=False)
class Task:
    """A set of input cases and their targets.

    ``case_inputs01`` is ``(C, n_inputs)`` in normalised units [0, 1]; ``targets`` is ``(C,)``
    (0/1 for classification). ``kind`` is ``"boolean"`` or ``"classification"``.
    """

    name: str
    case_inputs01: FloatArray
    targets: FloatArray
    kind: str

    @property
    def n_cases(self) -> int:
        return int(self.targets.size)

    @property
    def n_inputs(self) -> int:
        return int(self.case_inputs01.shape[1])


def truth_string(name_or_code: str | int) -> str:
    """The 4-character truth string of a gate given by name, truth string or integer code."""
    if isinstance(name_or_code, (int, np.integer)) and not isinstance(name_or_code, bool):
        code = int(name_or_code)
        if not 0 <= code <= 15:
            raise ValueError(f"Boolean function code {code} is outside 0..15")
        return format(code, "04b")
    if not isinstance(name_or_code, str):
        raise ValueError(f"gate {name_or_code!r} must be a name, a 4-bit string or an int 0..15")
    text = name_or_code.strip()
    if len(text) == 4 and set(text) <= {"0", "1"}:
        return text
    key = text.upper().replace(" ", "_").replace("-", "_")
    if key not in GATE_NAMES:
        raise ValueError(
            f"unknown gate {name_or_code!r}; use a 4-bit truth string, an int 0..15 or one of "
            f"{', '.join(GATE_NAMES)}"
        )
    return GATE_NAMES[key]


def boolean_task(name_or_code: str | int) -> Task:
    """The two-input Boolean task for a gate name (``"XOR"``), truth string or int code."""
    truth = truth_string(name_or_code)
    targets = np.array([float(ch) for ch in truth])
    targets.setflags(write=False)
    return Task(_NAME_OF[truth], BOOLEAN_CASES, targets, "boolean")


def separable(
    outputs: npt.ArrayLike, targets: npt.ArrayLike, min_gap: float = 0.0
) -> tuple[bool, float]:
    """Whether one threshold puts every 1-case above and every 0-case below it.

    Returns ``(found, threshold)`` with the threshold midway between the lowest 1-case and the
    highest 0-case; found when that gap exceeds ``min_gap`` (strictly). With only one class
    present the threshold is ``-inf`` (all 1) or ``+inf`` (all 0) and the answer is True.
    """
    x = np.asarray(outputs, dtype=float).reshape(-1)
    t = np.asarray(targets, dtype=float).reshape(-1)
    if x.shape != t.shape:
        raise ValueError(f"separable: {x.size} outputs but {t.size} targets")
    hi = t > 0.5
    if hi.all():
        return True, -np.inf
    if not hi.any():
        return True, np.inf
    low_of_hi, high_of_lo = float(x[hi].min()), float(x[~hi].max())
    return low_of_hi - high_of_lo > min_gap, 0.5 * (low_of_hi + high_of_lo)


def accuracy(outputs: npt.ArrayLike, targets: npt.ArrayLike, threshold: float) -> float:
    """Fraction of cases classified right by ``output > threshold`` ⇔ class 1."""
    x = np.asarray(outputs, dtype=float).reshape(-1)
    t = np.asarray(targets, dtype=float).reshape(-1)
    if x.shape != t.shape:
        raise ValueError(f"accuracy: {x.size} outputs but {t.size} targets")
    return float(np.mean((x > threshold) == (t > 0.5)))


def best_threshold(outputs: npt.ArrayLike, targets: npt.ArrayLike) -> tuple[float, float]:
    """``(accuracy, threshold)`` of the best single threshold (1-cases above), for tasks that
    are not perfectly separable. Candidate thresholds lie midway between sorted outputs."""
    x = np.asarray(outputs, dtype=float).reshape(-1)
    t = np.asarray(targets, dtype=float).reshape(-1)
    if x.shape != t.shape or x.size == 0:
        raise ValueError(f"best_threshold: {x.size} outputs, {t.size} targets")
    xs = np.sort(x)
    cands = np.concatenate([[xs[0] - 1.0], 0.5 * (xs[1:] + xs[:-1]), [xs[-1] + 1.0]])
    accs = np.mean((x[None, :] > cands[:, None]) == (t[None, :] > 0.5), axis=1)
    k = int(np.argmax(accs))
    return float(accs[k]), float(cands[k])


def input_voltages(case_inputs01: npt.ArrayLike, ranges_v: npt.ArrayLike) -> FloatArray:
    """Map normalised inputs to volts: ``V = low + x (high - low)`` per input electrode.

    ``ranges_v`` is ``(n_inputs, 2)`` rows ``(low, high)`` (from the station's electrode
    ranges). Inputs must lie in [0, 1].
    """
    x = np.atleast_2d(np.asarray(case_inputs01, dtype=float))
    r = np.asarray(ranges_v, dtype=float).reshape(-1, 2)
    if r.shape[0] != x.shape[1]:
        raise ValueError(f"{x.shape[1]} inputs per case but {r.shape[0]} input ranges")
    if not np.all(r[:, 0] < r[:, 1]):
        raise ValueError(f"input ranges {r.tolist()} must have low < high")
    if not (np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= 1.0):
        raise ValueError(
            f"normalised inputs span [{np.nanmin(x):g}, {np.nanmax(x):g}], outside [0, 1]"
        )
    return r[:, 0] + x * (r[:, 1] - r[:, 0])


def sphere_task(
    n_points: int, seed: int, *, radius: float | None = None, center: float = 0.5
) -> Task:
    """Three-input sphere classification: class 1 inside a sphere in the unit input cube.

    Points are uniform in [0, 1]³ (``np.random.default_rng(seed)``). The default radius
    ``(3 / (8π))^(1/3) ≈ 0.49`` puts half the cube's volume inside, so classes are balanced.
    """
    if n_points < 2:
        raise ValueError(f"sphere_task: n_points={n_points} must be >= 2")
    r = (3.0 / (8.0 * np.pi)) ** (1.0 / 3.0) if radius is None else float(radius)
    if not r > 0:
        raise ValueError(f"sphere_task: radius={r!r} must be > 0")
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0.0, 1.0, size=(n_points, 3))
    inside = np.linalg.norm(pts - center, axis=1) < r
    return Task(f"sphere(seed={seed})", pts, inside.astype(float), "classification")


def ring_task(
    n_points: int,
    seed: int,
    *,
    inner_radius: float = 0.2,
    ring: tuple[float, float] = (0.28, 0.40),
    outer_radius: float = 0.48,
) -> Task:
    """Two-input ring classification: class 1 in an annulus, class 0 inside or outside it.

    Around the centre (0.5, 0.5): class 0 for ``r < inner_radius`` or ``r > outer_radius``,
    class 1 for ``ring[0] <= r <= ring[1]``; the gaps between them are left empty (points there
    are redrawn), which sets the margin a classifier can have. Seeded and uniform in [0, 1]².
    """
    if n_points < 2:
        raise ValueError(f"ring_task: n_points={n_points} must be >= 2")
    if not 0 < inner_radius < ring[0] <= ring[1] < outer_radius:
        raise ValueError(
            f"ring_task: need 0 < inner_radius ({inner_radius}) < ring {ring} < "
            f"outer_radius ({outer_radius})"
        )
    rng = np.random.default_rng(seed)
    kept: list[FloatArray] = []
    count = 0
    while count < n_points:
        pts = rng.uniform(0.0, 1.0, size=(2 * n_points, 2))
        r = np.linalg.norm(pts - 0.5, axis=1)
        ok = (r < inner_radius) | (r > outer_radius) | ((r >= ring[0]) & (r <= ring[1]))
        kept.append(pts[ok])
        count += int(ok.sum())
    pts = np.concatenate(kept)[:n_points]
    r = np.linalg.norm(pts - 0.5, axis=1)
    target = ((r >= ring[0]) & (r <= ring[1])).astype(float)
    return Task(f"ring(seed={seed})", pts, target, "classification")
