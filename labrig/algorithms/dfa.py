"""Augmented direct feedback alignment (Nakajima et al. 2022) and its baselines, pure numpy.

Network (batch-major: rows are samples; every layer has a bias, stored as the last weight column)::

    h^(0) = x
    a^(l) = [h^(l-1), 1] W^(l)^T            l = 1..L     (digital: the input mask / weights)
    h^(l) = f_phys(a^(l))                                (physical layer, opaque to the learner)
    y     = [h^(L), 1] W_out^T
    e     = softmax(y) - onehot(target)    (softmax cross-entropy)   or   e = y - target (MSE)

Aug-DFA backward, no model of ``f_phys``::

    delta^(l) = (e B^(l)^T) * g(a^(l))          fixed random B^(l), shape (n_l, n_out)
    dW^(l)    = delta^(l)^T [h^(l-1), 1] / batch
    dW_out    = e^T [h^(L), 1] / batch

``g`` is any function the user picks (:data:`G_LIBRARY`: cos, sin, tanh', triangle, abs, one).
Plain DFA is the same with ``g = f'`` (needs a model); backpropagation needs the model's
vector-Jacobian product. The projection ``e B^(l)^T`` may be replaced by a physical pass
(``projection(l, e)``), as in the paper's hardware-emulated training. Updates go through
:mod:`labrig.algorithms.optim` (``W <- optimizer.step(key, W, dW)``).

Usage::

    net = DeepNetwork.create([64, 100, 10], seed=0)
    opt = make_optimizer("adam", 1e-3)
    fwd = forward(net, xb, physical_layer)            # physical_layer(l, a) -> h
    loss = aug_dfa_step(net, fwd, yb, "cos", opt)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from labrig.algorithms.optim import Optimizer

FloatArray = npt.NDArray[np.float64]
LossName = Literal["softmax_ce", "mse"]
PhysicalLayer = Callable[[int, FloatArray], FloatArray]
"""``physical_layer(l, a) -> h``: layer ``l`` (0-based), pre-activations ``(batch, n_l)``."""
Projection = Callable[[int, FloatArray], FloatArray]
"""``projection(l, e) -> (batch, n_l)``: ``e B^(l)^T`` computed elsewhere (e.g. by the hardware)."""
Surrogate = Callable[[FloatArray], FloatArray]
LayerVJP = Callable[[int, FloatArray, FloatArray], FloatArray]
"""``vjp(l, a, grad_h) -> grad_a``: backpropagation through layer ``l``'s model."""


def _triangle(a: FloatArray) -> FloatArray:
    # Triangle wave of period 2 pi with the phase of cos: 1 at 0, -1 at pi (a piecewise-linear cos).
    # tri(a) = 2 |s - 1| - 1 with s = (a / pi) mod 2.
    return 2.0 * np.abs(np.mod(a / np.pi, 2.0) - 1.0) - 1.0


def _tanh_prime(a: FloatArray) -> FloatArray:
    return 1.0 - np.tanh(a) ** 2


G_LIBRARY: dict[str, Surrogate] = {
    "cos": np.cos,
    "sin": np.sin,
    "tanh_prime": _tanh_prime,
    "triangle": _triangle,
    "abs": np.abs,
    "one": np.ones_like,
}
"""Named alternative nonlinearities ``g`` for aug-DFA."""


def surrogate(g: str | Surrogate) -> Surrogate:
    """Resolve ``g``: a name from :data:`G_LIBRARY` or a callable, returned as a callable."""
    if callable(g):
        return g
    try:
        return G_LIBRARY[g.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown g {g!r}; choose one of {sorted(G_LIBRARY)} or pass a callable"
        ) from None


def _with_bias(h: FloatArray) -> FloatArray:
    return np.concatenate([h, np.ones((*h.shape[:-1], 1))], axis=-1)


def time_pool(h: FloatArray, windows: int) -> FloatArray:
    """Readout features of a sequence layer: ``h`` ``(batch, T, n)`` averaged over ``windows``
    consecutive, nearly equal stretches of the ``T`` periods, ``(batch, windows * n)``
    (``windows = T``: every period's states). A 2-D ``h`` is returned as it is."""
    if h.ndim == 2:
        return h
    parts = np.array_split(np.arange(h.shape[1]), windows)
    return np.concatenate([h[:, p].mean(axis=1) for p in parts], axis=1)


@dataclass
class DeepNetwork:
    """Weights of an ``L``-layer network plus readout and the fixed feedback matrices.

    ``weights[l]`` is ``(n_{l+1}, n_l + 1)``, ``readout`` is ``(n_out, n_L + 1)`` (last column:
    bias), ``feedback[l]`` is ``B^(l)``, ``(n_{l+1}, n_out)``. Build with :meth:`create`.
    """

    weights: list[FloatArray]
    readout: FloatArray
    feedback: list[FloatArray]
    seed: int = 0
    time_windows: int = 1
    """Sequence networks: the readout sees :func:`time_pool` of the last layer over this many
    windows of periods, so it is ``(n_out, time_windows * n_L + 1)``."""

    @classmethod
    def create(
        cls,
        sizes: Sequence[int],
        seed: int,
        *,
        weight_scale: float = 1.0,
        feedback_scale: float = 1.0,
        time_windows: int = 1,
    ) -> DeepNetwork:
        """Random network for layer sizes ``[n_in, n_1, ..., n_L, n_out]``.

        ``W^(l) ~ N(0, weight_scale^2 / n_in)`` (bias 0), readout 0, ``B^(l) ~ N(0,
        feedback_scale^2 / n_out)``; all from ``seed``. Scale ``weight_scale`` so that ``a``
        spans the physical layer's useful input range. ``time_windows`` > 1 (or 1 for a
        sequence read at one pooled window) sizes the readout for pooled sequence features.
        """
        if len(sizes) < 3 or any(int(n) < 1 for n in sizes):
            raise ValueError(
                f"DeepNetwork.create: sizes must be [n_in, n_1, ..., n_out] with >= 1 hidden "
                f"layer and all >= 1, got {list(sizes)}"
            )
        rng = np.random.default_rng(seed)
        sizes = [int(n) for n in sizes]
        n_out = sizes[-1]
        weights, feedback = [], []
        for n_in, n_h in itertools.pairwise(sizes[:-1]):
            w = np.zeros((n_h, n_in + 1))
            w[:, :-1] = rng.normal(0.0, weight_scale / np.sqrt(n_in), size=(n_h, n_in))
            weights.append(w)
            feedback.append(rng.normal(0.0, feedback_scale / np.sqrt(n_out), size=(n_h, n_out)))
        if time_windows < 1:
            raise ValueError(f"DeepNetwork.create: time_windows must be >= 1, got {time_windows}")
        readout = np.zeros((n_out, sizes[-2] * time_windows + 1))
        return cls(weights, readout, feedback, seed=int(seed), time_windows=int(time_windows))

    def state_dict(self) -> dict[str, object]:
        """Plain arrays for a checkpoint (round-trips through :meth:`load_state_dict`)."""
        state: dict[str, object] = {
            "seed": self.seed,
            "n_layers": len(self.weights),
            "time_windows": self.time_windows,
        }
        for l, (w, b) in enumerate(zip(self.weights, self.feedback, strict=True)):
            state[f"W{l}"] = w.copy()
            state[f"B{l}"] = b.copy()
        state["W_out"] = self.readout.copy()
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, object]) -> DeepNetwork:
        """Rebuild a network saved by :meth:`state_dict`."""
        n = int(np.asarray(state["n_layers"]))
        weights = [np.asarray(state[f"W{l}"], dtype=float).copy() for l in range(n)]
        feedback = [np.asarray(state[f"B{l}"], dtype=float).copy() for l in range(n)]
        net = cls(
            weights,
            np.asarray(state["W_out"], dtype=float).copy(),
            feedback,
            seed=int(np.asarray(state["seed"])),
            time_windows=int(np.asarray(state.get("time_windows", 1))),
        )
        net._check()
        return net

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Replace all weights in place with those from :meth:`state_dict`."""
        other = DeepNetwork.from_state_dict(state)
        self.weights, self.readout, self.feedback, self.seed = (
            other.weights,
            other.readout,
            other.feedback,
            other.seed,
        )
        self.time_windows = other.time_windows

    def _check(self) -> None:
        n_out = self.readout.shape[0]
        prev = self.weights[0].shape[1] - 1
        for l, (w, b) in enumerate(zip(self.weights, self.feedback, strict=True)):
            if w.ndim != 2 or w.shape[1] != prev + 1 or b.shape != (w.shape[0], n_out):
                raise ValueError(
                    f"DeepNetwork: layer {l} shapes W {w.shape}, B {b.shape} do not chain"
                )
            prev = w.shape[0]
        if self.readout.shape[1] != prev * self.time_windows + 1:
            raise ValueError(
                f"DeepNetwork: readout {self.readout.shape} does not match last layer {prev}"
            )


@dataclass
class Forward:
    """What a forward pass keeps: ``a[l]`` pre-activations, ``h[l]`` activations (``h[0] = x``),
    ``y`` the readout output, ``features`` what the readout saw (``h[-1]``, or its
    :func:`time_pool` for a sequence)."""

    a: list[FloatArray]
    h: list[FloatArray]
    y: FloatArray
    features: FloatArray | None = None

    @property
    def readout_input(self) -> FloatArray:
        """The readout's input: ``features`` if set, else ``h[-1]``."""
        return self.h[-1] if self.features is None else self.features


def forward(net: DeepNetwork, x: npt.ArrayLike, physical_layer: PhysicalLayer) -> Forward:
    """Run ``x`` through the network; ``physical_layer(l, a)`` may be hardware.

    ``x`` is ``(batch, n_in)``, or a sequence ``(batch, T, n_in)``: then every layer runs over
    all ``T`` periods (``a_t^(l) = [h_t^(l-1), 1] W^(l)^T``, the physical layer carrying state
    from period to period) and the readout sees :func:`time_pool` of the last layer.
    """
    h = np.asarray(x, dtype=float)
    if h.ndim not in (2, 3) or h.shape[-1] != net.weights[0].shape[1] - 1:
        raise ValueError(
            f"forward: x must be (batch, {net.weights[0].shape[1] - 1}) or (batch, T, "
            f"{net.weights[0].shape[1] - 1}), got shape {h.shape}"
        )
    hs, as_ = [h], []
    for l, w in enumerate(net.weights):
        a = _with_bias(h) @ w.T
        h = np.asarray(physical_layer(l, a), dtype=float)
        if h.shape != a.shape:
            raise ValueError(
                f"forward: physical layer {l} returned shape {h.shape}, expected {a.shape}"
            )
        as_.append(a)
        hs.append(h)
    feats = time_pool(h, net.time_windows)
    y = _with_bias(feats) @ net.readout.T
    return Forward(as_, hs, y, feats)


def one_hot(labels: npt.ArrayLike, n_classes: int) -> FloatArray:
    """``(batch, n_classes)`` one-hot rows for integer ``labels``."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or (lab.size and (lab.min() < 0 or lab.max() >= n_classes)):
        raise ValueError(f"one_hot: labels must be 1-D integers in [0, {n_classes}), got {lab!r}")
    out = np.zeros((lab.size, n_classes))
    out[np.arange(lab.size), lab.astype(np.int64)] = 1.0
    return out


def softmax(y: FloatArray) -> FloatArray:
    z = y - y.max(axis=1, keepdims=True)
    ez = np.exp(z)
    return ez / ez.sum(axis=1, keepdims=True)


def loss_and_error(
    y: FloatArray, target: npt.ArrayLike, loss: LossName = "softmax_ce"
) -> tuple[float, FloatArray]:
    """Mean loss over the batch and the error ``e = dL_sample/dy`` (not divided by the batch).

    ``target``: integer labels or one-hot rows for ``softmax_ce``; values ``(batch, n_out)``
    for ``mse`` (``L = 0.5 * sum (y - t)^2`` per sample).
    """
    t = np.asarray(target)
    if loss == "softmax_ce":
        onehot = one_hot(t, y.shape[1]) if t.ndim == 1 else t.astype(float)
        if onehot.shape != y.shape:
            raise ValueError(f"loss: target shape {onehot.shape} != output shape {y.shape}")
        p = softmax(y)
        value = float(-np.mean(np.sum(onehot * np.log(np.clip(p, 1e-300, None)), axis=1)))
        return value, p - onehot
    if loss == "mse":
        tt = t.astype(float).reshape(y.shape) if t.size == y.size else None
        if tt is None:
            raise ValueError(f"loss: target shape {t.shape} does not fit output shape {y.shape}")
        e = y - tt
        return float(0.5 * np.mean(np.sum(e * e, axis=1))), e
    raise ValueError(f"unknown loss {loss!r}; choose 'softmax_ce' or 'mse'")


def dfa_gradients(
    net: DeepNetwork,
    fwd: Forward,
    target: npt.ArrayLike,
    g: str | Surrogate,
    *,
    loss: LossName = "softmax_ce",
    projection: Projection | None = None,
) -> tuple[float, dict[str, FloatArray]]:
    """Loss and the (aug-)DFA update directions ``{"W0": ..., "W_out": ...}`` (mean over batch)."""
    gfun = surrogate(g)
    value, e = loss_and_error(fwd.y, target, loss)
    batch = e.shape[0]
    grads: dict[str, FloatArray] = {}
    for l, b in enumerate(net.feedback):
        # delta^(l) = (e B^(l)^T) * g(a^(l)); dW^(l) = delta^T [h^(l-1), 1] / batch
        proj = e @ b.T if projection is None else np.asarray(projection(l, e), dtype=float)
        a = fwd.a[l]
        if a.ndim == 3:
            # Sequences: the one error of a sample reaches every period's pre-activation,
            # delta_t = (e B^T) * g(a_t), and the update is averaged over periods (Nakajima et
            # al. 2022 project the error to every time step for time series the same way).
            if proj.shape != a.shape[::2]:
                raise ValueError(
                    f"dfa: projection for layer {l} has shape {proj.shape}, expected {a.shape[::2]}"
                )
            delta3 = proj[:, None, :] * gfun(a)
            hb = _with_bias(fwd.h[l])
            grads[f"W{l}"] = np.einsum("btj,btk->jk", delta3, hb) / (batch * a.shape[1])
            continue
        if proj.shape != a.shape:
            raise ValueError(
                f"dfa: projection for layer {l} has shape {proj.shape}, expected {a.shape}"
            )
        delta = proj * gfun(a)
        grads[f"W{l}"] = delta.T @ _with_bias(fwd.h[l]) / batch
    grads["W_out"] = e.T @ _with_bias(fwd.readout_input) / batch
    return value, grads


def bp_gradients(
    net: DeepNetwork,
    fwd: Forward,
    target: npt.ArrayLike,
    *,
    fprime: Surrogate | None = None,
    vjp: LayerVJP | None = None,
    loss: LossName = "softmax_ce",
) -> tuple[float, dict[str, FloatArray]]:
    """Loss and exact backpropagation gradients through a model of the physical layer.

    Give ``fprime`` for an elementwise ``f`` (``grad_a = grad_h * f'(a)``) or ``vjp(l, a, grad_h)``
    for a coupled layer such as the reservoir twin.
    """
    if (fprime is None) == (vjp is None):
        raise ValueError("bp_gradients: give exactly one of fprime or vjp")
    if fwd.a[0].ndim != 2:
        raise ValueError("bp_gradients: sequence networks are trained by (aug-)DFA only")
    value, e = loss_and_error(fwd.y, target, loss)
    batch = e.shape[0]
    grads: dict[str, FloatArray] = {"W_out": e.T @ _with_bias(fwd.h[-1]) / batch}
    grad_h = e @ net.readout[:, :-1]
    for l in reversed(range(len(net.weights))):
        a = fwd.a[l]
        if fprime is not None:
            grad_a = grad_h * fprime(a)
        elif vjp is not None:
            grad_a = np.asarray(vjp(l, a, grad_h), dtype=float)
        grads[f"W{l}"] = grad_a.T @ _with_bias(fwd.h[l]) / batch
        grad_h = grad_a @ net.weights[l][:, :-1]
    return value, grads


def apply_gradients(
    net: DeepNetwork,
    grads: dict[str, FloatArray],
    optimizer: Optimizer,
    *,
    train_readout: bool = True,
) -> None:
    """Update the network in place: ``W <- optimizer.step(key, W, dW)`` for each key."""
    for l in range(len(net.weights)):
        net.weights[l] = optimizer.step(f"W{l}", net.weights[l], grads[f"W{l}"])
    if train_readout:
        net.readout = optimizer.step("W_out", net.readout, grads["W_out"])


def aug_dfa_step(
    net: DeepNetwork,
    fwd: Forward,
    target: npt.ArrayLike,
    g: str | Surrogate,
    optimizer: Optimizer,
    *,
    loss: LossName = "softmax_ce",
    projection: Projection | None = None,
    train_readout: bool = True,
) -> float:
    """One aug-DFA update from a forward pass; returns the batch loss before the update."""
    value, grads = dfa_gradients(net, fwd, target, g, loss=loss, projection=projection)
    apply_gradients(net, grads, optimizer, train_readout=train_readout)
    return value


def dfa_step(
    net: DeepNetwork,
    fwd: Forward,
    target: npt.ArrayLike,
    fprime: Surrogate,
    optimizer: Optimizer,
    *,
    loss: LossName = "softmax_ce",
    train_readout: bool = True,
) -> float:
    """Plain DFA: aug-DFA with ``g = f'`` of a model of the physical layer."""
    return aug_dfa_step(net, fwd, target, fprime, optimizer, loss=loss, train_readout=train_readout)


def bp_step(
    net: DeepNetwork,
    fwd: Forward,
    target: npt.ArrayLike,
    optimizer: Optimizer,
    *,
    fprime: Surrogate | None = None,
    vjp: LayerVJP | None = None,
    loss: LossName = "softmax_ce",
    train_readout: bool = True,
) -> float:
    """Backpropagation baseline (the forward pass should run through the same model)."""
    value, grads = bp_gradients(net, fwd, target, fprime=fprime, vjp=vjp, loss=loss)
    apply_gradients(net, grads, optimizer, train_readout=train_readout)
    return value


def ridge_readout(H: npt.ArrayLike, Y: npt.ArrayLike, lam: float) -> FloatArray:
    """Closed-form readout ``W_out`` ``(n_out, n_h + 1)`` minimising
    ``|[H, 1] W^T - Y|^2 + lam |W_no_bias|^2`` (the bias is not penalised).

    ``Y`` is ``(batch, n_out)`` (one-hot rows for classification) or ``(batch,)``.
    """
    h = np.asarray(H, dtype=float)
    y = np.asarray(Y, dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    if h.ndim != 2 or y.ndim != 2 or h.shape[0] != y.shape[0]:
        raise ValueError(
            f"ridge_readout: H {h.shape} and Y {y.shape} must be (batch, .) with equal batch"
        )
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"ridge_readout: lam must be finite and >= 0, got {lam!r}")
    hb = _with_bias(h)
    # Normal equations (Hb^T Hb + lam P) W^T = Hb^T Y, P = diag(1, ..., 1, 0); lstsq when lam = 0
    # so a rank-deficient H still gets the minimum-norm solution.
    if lam == 0:
        w_t, *_ = np.linalg.lstsq(hb, y, rcond=None)
    else:
        reg = lam * np.eye(hb.shape[1])
        reg[-1, -1] = 0.0
        w_t = np.linalg.solve(hb.T @ hb + reg, hb.T @ y)
    return np.asarray(w_t.T)


def accuracy(y: FloatArray, labels: npt.ArrayLike) -> float:
    """Fraction of rows whose argmax equals the label."""
    return float(np.mean(np.argmax(y, axis=1) == np.asarray(labels)))
