"""Aug-DFA core: the update rule by hand, gradients, training on digits, ridge, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from labrig.algorithms.datasets import load_digits_task
from labrig.algorithms.dfa import (
    G_LIBRARY,
    DeepNetwork,
    PhysicalLayer,
    accuracy,
    aug_dfa_step,
    bp_gradients,
    dfa_gradients,
    forward,
    loss_and_error,
    one_hot,
    ridge_readout,
    surrogate,
)
from labrig.algorithms.optim import SGD, make_optimizer
from labrig.physics.reservoir import DelayReservoir, ReservoirParams


def identity(l: int, a: np.ndarray) -> np.ndarray:
    return a


def sin2(l: int, a: np.ndarray) -> np.ndarray:
    return np.sin(a + np.pi / 4) ** 2


def sin2_prime(a: np.ndarray) -> np.ndarray:
    return np.sin(2 * (a + np.pi / 4))


def tiny_net() -> DeepNetwork:
    # 2-2-2, bias in the last column.
    w0 = np.array([[0.1, 0.2, 0.0], [0.3, -0.1, 0.1]])
    w_out = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    b0 = np.array([[1.0, 0.0], [0.0, 2.0]])
    return DeepNetwork([w0], w_out, [b0])


def test_update_rule_matches_hand_computation() -> None:
    net = tiny_net()
    x = np.array([[1.0, 2.0]])
    fwd = forward(net, x, identity)
    # a = W0 [x, 1] = [0.5, 0.2]; h = a; y = h; e = y - t = [-0.5, 0.2]
    np.testing.assert_allclose(fwd.a[0], [[0.5, 0.2]])
    loss = aug_dfa_step(net, fwd, np.array([[1.0, 0.0]]), "one", SGD(0.1), loss="mse")
    assert loss == pytest.approx(0.5 * (0.25 + 0.04))
    # B e = [-0.5, 0.4]; g = 1; dW0 = delta^T [1, 2, 1]
    np.testing.assert_allclose(net.weights[0], [[0.15, 0.3, 0.05], [0.26, -0.18, 0.06]])
    # dW_out = e^T [0.5, 0.2, 1]
    np.testing.assert_allclose(net.readout, [[1.025, 0.01, 0.05], [-0.01, 0.996, -0.02]])


def test_update_rule_with_cos_and_batch_mean() -> None:
    x = np.array([[1.0, 2.0]])
    target = np.array([[1.0, 0.0]])
    _, g1 = dfa_gradients(tiny_net(), forward(tiny_net(), x, identity), target, "cos", loss="mse")
    np.testing.assert_allclose(g1["W0"][:, 0], [-0.5 * np.cos(0.5), 0.4 * np.cos(0.2)], rtol=1e-12)
    # The same sample twice: the batch mean is unchanged.
    x2, t2 = np.repeat(x, 2, axis=0), np.repeat(target, 2, axis=0)
    net = tiny_net()
    _, g2 = dfa_gradients(net, forward(net, x2, identity), t2, "cos", loss="mse")
    for key in g1:
        np.testing.assert_allclose(g2[key], g1[key], rtol=1e-12)


def test_projection_hook_replaces_b_times_e() -> None:
    net = DeepNetwork.create([5, 4, 3, 3], seed=1)
    x = np.random.default_rng(0).normal(size=(6, 5))
    fwd = forward(net, x, sin2)
    labels = np.array([0, 1, 2, 0, 1, 2])
    _, ref = dfa_gradients(net, fwd, labels, "cos")
    calls: list[int] = []

    def external(l: int, e: np.ndarray) -> np.ndarray:
        calls.append(l)
        return e @ net.feedback[l].T

    _, got = dfa_gradients(net, fwd, labels, "cos", projection=external)
    assert calls == [0, 1]
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key])
    with pytest.raises(ValueError, match="projection for layer 0"):
        dfa_gradients(net, fwd, labels, "cos", projection=lambda l, e: e)


def _numeric_grads(
    net: DeepNetwork, x: np.ndarray, labels: np.ndarray, layer: PhysicalLayer
) -> dict[str, np.ndarray]:
    """Central differences of the mean loss wrt every weight."""
    out = {}
    eps = 1e-6
    mats = {f"W{l}": w for l, w in enumerate(net.weights)} | {"W_out": net.readout}
    for key, w in mats.items():  # arrays are modified in place and restored
        g = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            old = w[idx]
            w[idx] = old + eps
            lp, _ = loss_and_error(forward(net, x, layer).y, labels)
            w[idx] = old - eps
            lm, _ = loss_and_error(forward(net, x, layer).y, labels)
            w[idx] = old
            g[idx] = (lp - lm) / (2 * eps)
        out[key] = g
    return out


def test_bp_gradients_match_finite_differences() -> None:
    net = DeepNetwork.create([4, 5, 3, 3], seed=2, weight_scale=1.5)
    rng = np.random.default_rng(3)
    net.readout = rng.normal(size=net.readout.shape)
    x = rng.normal(size=(7, 4))
    labels = rng.integers(0, 3, size=7)
    _, grads = bp_gradients(net, forward(net, x, sin2), labels, fprime=sin2_prime)
    num = _numeric_grads(net, x, labels, sin2)
    for key in grads:
        np.testing.assert_allclose(grads[key], num[key], atol=1e-7, rtol=1e-5)


def test_bp_through_reservoir_twin_matches_finite_differences() -> None:
    # A coupled physical layer (slow PD: neighbouring nodes blur) needs the twin's VJP.
    twin = DelayReservoir(ReservoirParams(node_count=5, pd_bandwidth_hz=5e6))

    def layer(l: int, a: np.ndarray) -> np.ndarray:
        return twin.layer_nodes(a, periods=2)

    def vjp(l: int, a: np.ndarray, grad_h: np.ndarray) -> np.ndarray:
        return twin.layer_vjp(a, grad_h, periods=2)

    net = DeepNetwork.create([3, 5, 2], seed=4, weight_scale=2.0)
    rng = np.random.default_rng(5)
    net.readout = rng.normal(size=net.readout.shape)
    x = rng.normal(size=(4, 3))
    labels = np.array([0, 1, 1, 0])
    _, grads = bp_gradients(net, forward(net, x, layer), labels, vjp=vjp)
    num = _numeric_grads(net, x, labels, layer)
    for key in grads:
        np.testing.assert_allclose(grads[key], num[key], atol=1e-7, rtol=1e-5)
    with pytest.raises(ValueError, match="exactly one"):
        bp_gradients(net, forward(net, x, layer), labels)


def test_aug_dfa_with_cos_trains_digits_above_90_percent() -> None:
    task = load_digits_task(seed=0)
    net = DeepNetwork.create([64, 200, 10], seed=0)
    w0_init = net.weights[0].copy()
    opt = make_optimizer("adam", 3e-3)
    rng = np.random.default_rng(0)
    for _ in range(15):
        perm = rng.permutation(len(task.y_train))
        for i in range(0, len(perm), 32):
            idx = perm[i : i + 32]
            fwd = forward(net, task.x_train[idx], sin2)
            aug_dfa_step(net, fwd, task.y_train[idx], "cos", opt)
    acc = accuracy(forward(net, task.x_test, sin2).y, task.y_test)
    assert acc > 0.90
    # The hidden layer really was trained, and its aug-DFA update points downhill: it aligns
    # with the true (backprop) gradient, the mechanism DFA relies on.
    assert np.linalg.norm(net.weights[0] - w0_init) > 0.1 * np.linalg.norm(w0_init)
    fwd = forward(net, task.x_train[:500], sin2)
    _, g_dfa = dfa_gradients(net, fwd, task.y_train[:500], "cos")
    _, g_bp = bp_gradients(net, fwd, task.y_train[:500], fprime=sin2_prime)
    cosine = np.sum(g_dfa["W0"] * g_bp["W0"]) / (
        np.linalg.norm(g_dfa["W0"]) * np.linalg.norm(g_bp["W0"])
    )
    assert cosine > 0.1


def test_ridge_readout_solves_linear_problem_exactly() -> None:
    rng = np.random.default_rng(6)
    H = rng.normal(size=(50, 8))
    A = rng.normal(size=(3, 8))
    b = rng.normal(size=3)
    Y = H @ A.T + b
    w = ridge_readout(H, Y, lam=0.0)
    np.testing.assert_allclose(w[:, :-1], A, atol=1e-10)
    np.testing.assert_allclose(w[:, -1], b, atol=1e-10)
    # Heavy regularisation shrinks the weights but not the bias (the mean of Y remains).
    w_big = ridge_readout(H, Y, lam=1e9)
    assert np.abs(w_big[:, :-1]).max() < 1e-5
    np.testing.assert_allclose(w_big[:, -1], Y.mean(axis=0), atol=1e-3)
    with pytest.raises(ValueError, match="lam"):
        ridge_readout(H, Y, lam=-1.0)


def test_determinism_and_checkpoint_round_trip() -> None:
    task = load_digits_task(seed=1)

    def train(seed: int) -> DeepNetwork:
        net = DeepNetwork.create([64, 30, 10], seed=seed)
        opt = make_optimizer("adam", 1e-2)
        for i in range(0, 320, 32):
            fwd = forward(net, task.x_train[i : i + 32], sin2)
            aug_dfa_step(net, fwd, task.y_train[i : i + 32], "triangle", opt)
        return net

    a, b, c = train(0), train(0), train(1)
    for wa, wb in zip([*a.weights, a.readout], [*b.weights, b.readout], strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert not np.allclose(a.weights[0], c.weights[0])
    restored = DeepNetwork.create([64, 30, 10], seed=99)
    restored.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(restored.feedback[0], a.feedback[0])
    np.testing.assert_array_equal(
        forward(restored, task.x_test, sin2).y, forward(a, task.x_test, sin2).y
    )


def test_g_library_and_errors() -> None:
    tri = G_LIBRARY["triangle"]
    np.testing.assert_allclose(
        tri(np.array([0.0, np.pi / 2, np.pi, 1.5 * np.pi, 2 * np.pi, -np.pi])),
        [1.0, 0.0, -1.0, 0.0, 1.0, -1.0],
        atol=1e-12,
    )
    np.testing.assert_allclose(G_LIBRARY["tanh_prime"](np.array([0.0])), [1.0])
    assert surrogate("COS") is np.cos
    with pytest.raises(ValueError, match="unknown g"):
        surrogate("relu")
    with pytest.raises(ValueError, match="labels"):
        one_hot(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="sizes"):
        DeepNetwork.create([4, 3], seed=0)
    net = DeepNetwork.create([4, 3, 2], seed=0)
    with pytest.raises(ValueError, match="x must be"):
        forward(net, np.zeros((2, 5)), identity)
    with pytest.raises(ValueError, match="returned shape"):
        forward(net, np.zeros((2, 4)), lambda l, a: a[:, :1])


def test_sequence_network_pools_over_time_and_projects_the_error_to_every_period() -> None:
    from labrig.algorithms import dfa as dfa_alg

    rng = np.random.default_rng(0)
    net = dfa_alg.DeepNetwork.create([1, 6, 3], seed=1, time_windows=4)
    assert net.readout.shape == (3, 6 * 4 + 1)
    net.readout = rng.normal(size=net.readout.shape)
    x = rng.normal(size=(5, 10, 1))
    fwd = dfa_alg.forward(net, x, lambda _l, a: np.tanh(a))
    assert fwd.a[0].shape == (5, 10, 6)
    # Windows of 3, 3, 2, 2 periods (array_split), each averaged.
    np.testing.assert_allclose(fwd.readout_input[:, 6:12], fwd.h[1][:, 3:6].mean(axis=1))
    labels = np.array([0, 1, 2, 0, 1])
    _, grads = dfa_alg.dfa_gradients(net, fwd, labels, "cos")
    _, e = dfa_alg.loss_and_error(fwd.y, labels)
    # The same error reaches every period: the update is the mean of the per-period updates.
    per_period = [
        ((e @ net.feedback[0].T) * np.cos(fwd.a[0][:, t])).T
        @ np.concatenate([x[:, t], np.ones((5, 1))], axis=1)
        / 5
        for t in range(10)
    ]
    np.testing.assert_allclose(grads["W0"], np.mean(per_period, axis=0))
    again = dfa_alg.DeepNetwork.from_state_dict(net.state_dict())
    assert again.time_windows == 4
    np.testing.assert_array_equal(again.readout, net.readout)
