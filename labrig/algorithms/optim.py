"""First-order optimisers over flat parameter arrays, with state that can be checkpointed.

Both training methods use these: HGE descends on control voltages, aug-DFA on layer weights.
State is plain numpy arrays and ints (``state_dict`` / ``load_state_dict``) so a run can be
resumed bit-for-bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass
class SGD:
    """Plain gradient descent: ``p <- p - lr g``. Stateless, so its checkpoint state is empty."""

    learning_rate: float

    def step(self, key: str, params: FloatArray, grad: FloatArray) -> FloatArray:
        """Return updated ``params`` (a new array) for the parameter group ``key``."""
        return params - self.learning_rate * grad

    def state_dict(self) -> dict[str, object]:
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Nothing to restore (older checkpoints may hold an empty ``velocity``; it is ignored)."""


@dataclass
class Adam:
    """Adam (Kingma & Ba 2015) with bias correction:

    ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
    ``p <- p - lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1^t)``.
    """

    learning_rate: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    _m: dict[str, FloatArray] = field(default_factory=dict)
    _v: dict[str, FloatArray] = field(default_factory=dict)
    _t: dict[str, int] = field(default_factory=dict)

    def step(self, key: str, params: FloatArray, grad: FloatArray) -> FloatArray:
        """Return updated ``params`` (a new array) for the parameter group ``key``."""
        m = self._m.get(key, np.zeros_like(grad))
        v = self._v.get(key, np.zeros_like(grad))
        t = self._t.get(key, 0) + 1
        m = self.beta1 * m + (1.0 - self.beta1) * grad
        v = self.beta2 * v + (1.0 - self.beta2) * grad * grad
        self._m[key], self._v[key], self._t[key] = m, v, t
        m_hat = m / (1.0 - self.beta1**t)
        v_hat = v / (1.0 - self.beta2**t)
        return params - self.learning_rate * m_hat / (np.sqrt(v_hat) + self.eps)

    def state_dict(self) -> dict[str, object]:
        return {
            "m": {k: a.copy() for k, a in self._m.items()},
            "v": {k: a.copy() for k, a in self._v.items()},
            "t": dict(self._t),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        m, v, t = state.get("m", {}), state.get("v", {}), state.get("t", {})
        if not (isinstance(m, dict) and isinstance(v, dict) and isinstance(t, dict)):
            raise TypeError("Adam state 'm', 'v', 't' must be mappings")
        self._m = {str(k): np.asarray(a, dtype=float) for k, a in m.items()}
        self._v = {str(k): np.asarray(a, dtype=float) for k, a in v.items()}
        self._t = {str(k): int(n) for k, n in t.items()}


Optimizer = SGD | Adam


def make_optimizer(name: str, learning_rate: float) -> Optimizer:
    """``"sgd"`` or ``"adam"`` (case-insensitive)."""
    key = name.strip().lower()
    if key == "sgd":
        return SGD(learning_rate)
    if key == "adam":
        return Adam(learning_rate)
    raise ValueError(f"unknown optimiser {name!r}; choose 'sgd' or 'adam'")
