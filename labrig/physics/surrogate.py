"""A brains-py style surrogate of a measured DNPU: a ReLU MLP saved as ``.npz``.

A lab that has trained a surrogate network on measurements of its own device can plug it into the
simulated rig instead of :class:`labrig.physics.dnpu.DnpuModel`. The network maps the 7 activation
voltages (V) to the output current:

    h_0 = x                                    (7 electrode voltages, V)
    h_k = relu(W_{k-1} h_{k-1} + b_{k-1})      k = 1 .. L-1   (hidden layers, 5 × 90 in brains-py)
    I   = amplification · (W_{L-1} h_{L-1} + b_{L-1})          (nA)

File layout (``numpy.savez``; written by :func:`save_surrogate`):

================  =============  ==========================================================
key               shape          meaning
================  =============  ==========================================================
``W0`` … ``W{L-1}``  ``(out, in)``   layer weights, PyTorch ``nn.Linear`` convention
``b0`` … ``b{L-1}``  ``(out,)``      layer biases
``electrode_ranges`` ``(7, 2)``      (low, high) activation range per electrode (V)
``amplification``   ``()``          output scale (nA per network unit)
================  =============  ==========================================================

The first layer takes 7 inputs, the last gives 1 output, and consecutive shapes must chain.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from labrig.physics.dnpu import ACTIVATION_COUNT

FloatArray = npt.NDArray[np.float64]


class SurrogateFileError(ValueError):
    """A surrogate ``.npz`` file is missing an array or has one of the wrong shape."""


def _check_network(
    weights: Sequence[FloatArray],
    biases: Sequence[FloatArray],
    ranges: FloatArray,
    amplification: float,
    source: str,
) -> None:
    if len(weights) == 0 or len(weights) != len(biases):
        raise SurrogateFileError(
            f"{source}: need as many weights as biases (>= 1); got {len(weights)} weights and "
            f"{len(biases)} biases"
        )
    n_in = ACTIVATION_COUNT
    for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if w.ndim != 2 or w.shape[1] != n_in:
            raise SurrogateFileError(
                f"{source}: W{k} has shape {w.shape}; expected (out, {n_in}) to follow the "
                f"previous layer"
            )
        if b.shape != (w.shape[0],):
            raise SurrogateFileError(
                f"{source}: b{k} has shape {b.shape}; expected ({w.shape[0]},)"
            )
        n_in = w.shape[0]
    if n_in != 1:
        raise SurrogateFileError(
            f"{source}: last layer W{len(weights) - 1} gives {n_in} outputs; expected 1"
        )
    if ranges.shape != (ACTIVATION_COUNT, 2):
        raise SurrogateFileError(
            f"{source}: electrode_ranges has shape {ranges.shape}; expected ({ACTIVATION_COUNT}, 2)"
        )
    if not np.all(ranges[:, 0] < ranges[:, 1]):
        raise SurrogateFileError(f"{source}: electrode_ranges rows must be (low < high): {ranges}")
    if not np.isfinite(amplification) or amplification == 0:
        raise SurrogateFileError(
            f"{source}: amplification must be finite and nonzero, got {amplification}"
        )
    for k, arr in enumerate(weights):
        if not np.all(np.isfinite(arr)):
            raise SurrogateFileError(f"{source}: W{k} contains non-finite values")


class SurrogateModel:
    """A ReLU MLP stand-in for a DNPU, with the same interface as ``DnpuModel``.

    Build it from arrays or load it with :meth:`load`::

        model = SurrogateModel.load("my_device.npz")
        i_na = model.current_na(voltages)          # (n, 7) V -> (n,) nA
        g = model.gradient_na_per_v(voltages)      # exact, by back-propagation
    """

    def __init__(
        self,
        weights: Sequence[npt.ArrayLike],
        biases: Sequence[npt.ArrayLike],
        electrode_ranges: npt.ArrayLike,
        amplification: float,
        source: str = "SurrogateModel",
    ) -> None:
        self.weights = [np.asarray(w, dtype=float) for w in weights]
        self.biases = [np.asarray(b, dtype=float) for b in biases]
        ranges = np.asarray(electrode_ranges, dtype=float)
        self.amplification = float(amplification)
        _check_network(self.weights, self.biases, ranges, self.amplification, source)
        self.electrode_ranges = ranges
        self.activation_ranges_v: tuple[tuple[float, float], ...] = tuple(
            (float(lo), float(hi)) for lo, hi in ranges
        )
        self.source = source

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SurrogateModel:
        """Read a surrogate from an ``.npz`` file (layout in the module docstring)."""
        source = os.fspath(path)
        with np.load(source, allow_pickle=False) as data:
            keys = set(data.files)
            for key in ("electrode_ranges", "amplification", "W0", "b0"):
                if key not in keys:
                    raise SurrogateFileError(
                        f"{source}: missing array {key!r}; found {sorted(keys)}"
                    )
            weights: list[FloatArray] = []
            biases: list[FloatArray] = []
            k = 0
            while f"W{k}" in keys:
                if f"b{k}" not in keys:
                    raise SurrogateFileError(f"{source}: missing array 'b{k}' for layer W{k}")
                weights.append(np.asarray(data[f"W{k}"], dtype=float))
                biases.append(np.asarray(data[f"b{k}"], dtype=float))
                k += 1
            amp = np.asarray(data["amplification"], dtype=float)
            if amp.size != 1:
                raise SurrogateFileError(
                    f"{source}: amplification has shape {amp.shape}; expected a scalar"
                )
            ranges = np.asarray(data["electrode_ranges"], dtype=float)
        return cls(weights, biases, ranges, float(amp.reshape(())), source=source)

    def _as_batch(self, voltages: npt.ArrayLike) -> tuple[FloatArray, bool]:
        v = np.asarray(voltages, dtype=float)
        single = v.ndim == 1
        v2 = v.reshape(1, -1) if single else v
        if v2.ndim != 2 or v2.shape[1] != ACTIVATION_COUNT:
            raise ValueError(
                f"{self.source}: voltages must have shape (n, {ACTIVATION_COUNT}) or "
                f"({ACTIVATION_COUNT},), got {v.shape}"
            )
        return v2, single

    def _forward(self, v: FloatArray) -> tuple[FloatArray, list[FloatArray]]:
        h = v
        masks: list[FloatArray] = []
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = h @ w.T + b
            if k < last:
                mask = (z > 0).astype(float)
                masks.append(mask)
                h = z * mask
            else:
                h = z
        return self.amplification * h[:, 0], masks

    def current_na(self, voltages: npt.ArrayLike) -> FloatArray:
        """Output current (nA) for ``(n, 7)`` voltages (V) → ``(n,)``; ``(7,)`` → scalar array."""
        v, single = self._as_batch(voltages)
        out, _ = self._forward(v)
        return out[0] if single else out

    def gradient_na_per_v(self, voltages: npt.ArrayLike) -> FloatArray:
        """Exact ``∂I/∂V`` (nA/V) by back-propagation: ``(n, 7)`` → ``(n, 7)``."""
        v, single = self._as_batch(voltages)
        _, masks = self._forward(v)
        # dI/dx = amp · W_{L-1} · D_{L-2} W_{L-2} ··· D_0 W_0, with D_k = diag(relu'(z_k)).
        g = np.broadcast_to(
            self.amplification * self.weights[-1], (v.shape[0], self.weights[-1].shape[1])
        )
        for k in range(len(self.weights) - 2, -1, -1):
            g = (g * masks[k]) @ self.weights[k]
        return g[0] if single else g

    def current_trace_na(self, voltages: npt.ArrayLike) -> FloatArray:
        """Current for a time series of voltages; for an MLP it is :meth:`current_na`."""
        return np.atleast_1d(self.current_na(voltages))


def save_surrogate(
    path: str | os.PathLike[str],
    weights: Sequence[npt.ArrayLike],
    biases: Sequence[npt.ArrayLike],
    electrode_ranges: npt.ArrayLike,
    amplification: float,
) -> None:
    """Write a surrogate ``.npz`` (checked first, so a bad network never reaches disk)."""
    model = SurrogateModel(weights, biases, electrode_ranges, amplification, source=os.fspath(path))
    arrays: dict[str, FloatArray] = {}
    for k, (w, b) in enumerate(zip(model.weights, model.biases, strict=True)):
        arrays[f"W{k}"] = w
        arrays[f"b{k}"] = b
    arrays["electrode_ranges"] = model.electrode_ranges
    arrays["amplification"] = np.asarray(model.amplification)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def random_surrogate(
    seed: int = 0,
    hidden: Sequence[int] = (90, 90, 90, 90, 90),
    electrode_ranges: npt.ArrayLike | None = None,
    amplification: float = 100.0,
) -> SurrogateModel:
    """A randomly initialised (He-normal) surrogate of brains-py shape, for tests and demos."""
    from labrig.physics.dnpu import DEFAULT_ACTIVATION_RANGES_V

    rng = np.random.default_rng(seed)
    sizes = [ACTIVATION_COUNT, *hidden, 1]
    weights = [
        rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in))
        for n_in, n_out in itertools.pairwise(sizes)
    ]
    biases = [rng.normal(0.0, 0.1, n_out) for n_out in sizes[1:]]
    ranges = DEFAULT_ACTIVATION_RANGES_V if electrode_ranges is None else electrode_ranges
    return SurrogateModel(
        weights, biases, ranges, amplification, source=f"random_surrogate({seed})"
    )
