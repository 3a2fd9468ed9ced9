"""Boolean-function analysis of a device: which of the 16 two-input functions its outputs realise.

Pure numpy on arrays. The device is anything with ``activation_ranges_v`` (seven ``(low, high)``
pairs, V) and ``current_na(voltages (n, 7)) -> (n,)`` — the physics model, a surrogate, or a
table — so the analysis lives with the tasks it judges and the device models need not know it.

Convention (as :mod:`labrig.algorithms.tasks`): inputs on electrodes 0 and 1 step through the cases
(0,0), (0,1), (1,0), (1,1), logical 0 at the low end of the electrode's activation range and 1 at
the high end; controls on electrodes 2-6. Function code ``t = int(truth, 2)``: the output for
case ``c`` is bit ``3 - c`` of ``t`` (XOR "0110" is 6).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from labrig.algorithms.tasks import BOOLEAN_CASES, GATE_NAMES

FloatArray = npt.NDArray[np.float64]

ACTIVATION_COUNT = 7
INPUT_ELECTRODES = (0, 1)
CONTROL_ELECTRODES = (2, 3, 4, 5, 6)

#: The six common gates as function codes.
COMMON_GATES: dict[str, int] = {
    name: int(GATE_NAMES[name], 2) for name in ("AND", "OR", "NAND", "NOR", "XOR", "XNOR")
}


class BooleanDevice(Protocol):
    """What the analysis needs from a device model."""

    activation_ranges_v: tuple[tuple[float, float], ...]

    def current_na(self, voltages: npt.ArrayLike) -> FloatArray: ...


def boolean_voltages(model: BooleanDevice, controls_v: npt.ArrayLike) -> FloatArray:
    """Electrode voltages ``(n, 4, 7)`` for the four input cases at each of ``(n, 5)`` controls.

    Inputs on electrodes 0 and 1 at the low (logical 0) or high (logical 1) end of the model's
    activation range; controls on electrodes 2–6, which must lie within their ranges.
    """
    c = np.asarray(controls_v, dtype=float)
    c2 = c.reshape(1, -1) if c.ndim == 1 else c
    n_ctrl = len(CONTROL_ELECTRODES)
    if c2.ndim != 2 or c2.shape[1] != n_ctrl:
        raise ValueError(
            f"boolean_voltages: controls_v must have shape (n, {n_ctrl}), got {c.shape}"
        )
    ranges = np.asarray(model.activation_ranges_v, dtype=float)
    lo = ranges[list(CONTROL_ELECTRODES), 0]
    hi = ranges[list(CONTROL_ELECTRODES), 1]
    bad = (c2 < lo - 1e-12) | (c2 > hi + 1e-12) | ~np.isfinite(c2)
    if bad.any():
        row, col = (int(k) for k in np.argwhere(bad)[0])
        raise ValueError(
            f"boolean_voltages: control {c2[row, col]!r} V on electrode {CONTROL_ELECTRODES[col]} "
            f"(row {row}) is outside the activation range [{lo[col]}, {hi[col]}] V"
        )
    volts = np.empty((c2.shape[0], len(BOOLEAN_CASES), ACTIVATION_COUNT))
    volts[:, :, list(CONTROL_ELECTRODES)] = c2[:, None, :]
    for case, bits in enumerate(BOOLEAN_CASES):
        for el, bit in zip(INPUT_ELECTRODES, bits, strict=True):
            volts[:, case, el] = ranges[el, int(bit)]
    return volts


def boolean_outputs(model: BooleanDevice, controls_v: npt.ArrayLike) -> FloatArray:
    """Noise-free output currents ``(n, 4)`` (nA) for the cases (0,0), (0,1), (1,0), (1,1).

    ``controls_v``: ``(n, 5)`` control voltages on electrodes 2–6 (or one ``(5,)`` row → ``(4,)``).
    """
    c = np.asarray(controls_v, dtype=float)
    volts = boolean_voltages(model, c)
    out = np.asarray(model.current_na(volts.reshape(-1, ACTIVATION_COUNT))).reshape(-1, 4)
    return out[0] if c.ndim == 1 else out


def function_table(outputs: npt.ArrayLike, min_gap_na: float = 1.0) -> npt.NDArray[np.bool_]:
    """Which of the 16 functions each row of ``outputs`` ``(n, 4)`` realises → ``(n, 16)`` bool.

    Column ``t`` is the function with code ``t`` (``int(truth, 2)``; the output for case ``c`` is
    bit ``3 - c``). A non-constant function (1..14) is realised when one threshold separates its
    1-cases from its 0-cases with the 1-cases *higher*, by at least ``min_gap_na``::

        min(I[c] for c with bit 3 - c of t set) - max(I[c] for the others) >= min_gap_na

    The constant functions 0 and 15 are realised when the output does not depend on the inputs
    at that resolution: ``max(I) - min(I) < min_gap_na``. (With no absolute threshold a constant
    output reads as either constant, so both are counted together.)
    """
    if not min_gap_na > 0:
        raise ValueError(f"function_table: min_gap_na must be > 0, got {min_gap_na!r}")
    out = np.asarray(outputs, dtype=float)
    out2 = out.reshape(1, -1) if out.ndim == 1 else out
    if out2.ndim != 2 or out2.shape[1] != 4:
        raise ValueError(f"function_table: outputs must have shape (n, 4), got {out.shape}")
    table = np.zeros((out2.shape[0], 16), dtype=bool)
    for t in range(1, 15):
        ones = np.array([(t >> (3 - c)) & 1 for c in range(4)], dtype=bool)
        table[:, t] = out2[:, ones].min(axis=1) - out2[:, ~ones].max(axis=1) >= min_gap_na
    flat = out2.max(axis=1) - out2.min(axis=1) < min_gap_na
    table[:, 0] = flat
    table[:, 15] = flat
    return table


def realised_functions(outputs: npt.ArrayLike, min_gap_na: float = 1.0) -> set[int]:
    """The set of truth tables (0..15) realised by any row of ``outputs`` ``(n, 4)`` or ``(4,)``.

    See :func:`function_table` for the criterion. Example: ``6 in realised_functions(out)`` asks
    whether XOR appears.
    """
    table = function_table(outputs, min_gap_na)
    return {int(t) for t in np.nonzero(table.any(axis=0))[0]}
