"""Losses (values and gradients against finite differences) and task definitions."""

from __future__ import annotations

import numpy as np
import pytest

from labrig.algorithms.losses import (
    affine_fit,
    corsig,
    fisher,
    get_loss,
    mse_with_fit,
    pearson,
)
from labrig.algorithms.tasks import (
    BOOLEAN_CASES,
    GATE_NAMES,
    accuracy,
    best_threshold,
    boolean_task,
    input_voltages,
    ring_task,
    separable,
    sphere_task,
    truth_string,
)


def _fd_grad(fn, x, t, h=1e-5):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (fn(x + e, t)[0] - fn(x - e, t)[0]) / (2 * h)
    return g


TARGET_SETS = [
    np.array([0.0, 0.0, 0.0, 1.0]),  # AND
    np.array([0.0, 1.0, 1.0, 0.0]),  # XOR
    np.array([1.0, 0.0, 0.0, 1.0]),  # XNOR
    np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]),  # 8 cases
]


@pytest.mark.parametrize("targets", TARGET_SETS)
@pytest.mark.parametrize(
    "loss",
    [
        corsig,
        lambda x, t: corsig(x, t, margin_na=2.0, softness_na=1.5),
        mse_with_fit,
        lambda x, t: mse_with_fit(x, t, signed=False),
        fisher,
        lambda x, t: fisher(x, t, signed=False),
        pearson,
    ],
)
def test_loss_gradients_match_finite_differences(loss, targets) -> None:
    rng = np.random.default_rng(0)
    for trial in range(6):
        # Outputs in nA with a spread that puts corsig's sigmoid in its sensitive range, and
        # sometimes inverted (ρ < 0) so both branches of the signed losses are exercised.
        x = rng.normal(scale=8.0, size=targets.size) + (10.0 if trial % 2 else -10.0) * targets
        _, g = loss(x, targets)
        np.testing.assert_allclose(g, _fd_grad(loss, x, targets), rtol=1e-5, atol=1e-8)


def test_corsig_values() -> None:
    t = np.array([0.0, 0.0, 0.0, 1.0])
    good, _ = corsig(np.array([0.0, 1.0, 2.0, 100.0]), t)
    inverted, _ = corsig(np.array([100.0, 101.0, 102.0, 0.0]), t)
    close, _ = corsig(np.array([0.0, 1.0, 2.0, 4.0]), t)  # right order, gap < 5 nA
    rho = np.corrcoef([0.0, 1.0, 2.0, 100.0], t)[0, 1]
    assert good == pytest.approx((1.1 - rho) / 1.05, rel=1e-9)
    assert good < close < inverted
    # The separation term pushes the lowest 1-case up and the highest 0-case down.
    _, g = corsig(np.array([0.0, 1.0, 2.0, 4.0]), t)
    assert g[3] < 0 and g[2] > 0


def test_corsig_tie_subgradient_is_shared() -> None:
    t = np.array([0.0, 0.0, 1.0, 1.0])
    x = np.array([0.0, 3.0, 6.0, 6.0])
    _, g = corsig(x, t)
    assert g[2] == pytest.approx(g[3])


def test_mse_with_fit_is_the_fitted_readout_error() -> None:
    x = np.array([3.0, 7.0, 6.0, 12.0])
    t = np.array([0.0, 1.0, 1.0, 1.0])
    a, b = affine_fit(x, t)
    loss, _ = mse_with_fit(x, t)
    assert loss == pytest.approx(np.mean((a * x + b - t) ** 2))
    rho = np.corrcoef(x, t)[0, 1]
    assert loss == pytest.approx(np.var(t) * (1 - rho**2))
    # Offset and scale of the outputs do not matter.
    assert mse_with_fit(5 * x - 40, t)[0] == pytest.approx(loss)
    # Signed: an inverted output is worse than no correlation; unsigned does not care.
    assert mse_with_fit(-x, t)[0] > np.var(t) > loss
    assert mse_with_fit(-x, t, signed=False)[0] == pytest.approx(loss)


def test_fisher_sign_and_value() -> None:
    t = np.array([0.0, 0.0, 1.0, 1.0])
    x = np.array([1.0, 3.0, 10.0, 12.0])
    loss, _ = fisher(x, t, eps=1e-3)
    assert loss == pytest.approx(-(81.0) / (1.0 + 1.0 + 1e-3))
    assert fisher(-x, t)[0] == pytest.approx(-loss, rel=1e-12)
    assert fisher(-x, t, signed=False)[0] == pytest.approx(loss)


@pytest.mark.parametrize("loss", [corsig, fisher])
def test_classification_losses_need_both_classes(loss) -> None:
    with pytest.raises(ValueError, match="both classes"):
        loss(np.arange(4.0), np.ones(4))
    with pytest.raises(ValueError, match="0 or 1"):
        loss(np.arange(4.0), np.array([0.0, 0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match="targets"):
        loss(np.arange(4.0), np.array([0.0, 1.0]))


def test_get_loss() -> None:
    assert get_loss(" CorSig ") is corsig
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("hinge")


# ------------------------------------------------------------------ Boolean tasks


def test_gate_encoding() -> None:
    named = {"AND": "0001", "OR": "0111", "NAND": "1110", "NOR": "1000", "XOR": "0110"}
    named["XNOR"] = "1001"
    for name, truth in named.items():
        task = boolean_task(name)
        np.testing.assert_array_equal(task.targets, [float(c) for c in truth])
        assert boolean_task(int(truth, 2)).name == name
        assert boolean_task(truth).name == name
        assert boolean_task(name.lower()).name == name
    np.testing.assert_array_equal(boolean_task("AND").case_inputs01, BOOLEAN_CASES)
    np.testing.assert_array_equal(BOOLEAN_CASES, [[0, 0], [0, 1], [1, 0], [1, 1]])
    assert truth_string(6) == "0110" and truth_string("a and not b") == "0010"
    with pytest.raises(ValueError, match=r"0\.\.15"):
        boolean_task(16)
    with pytest.raises(ValueError, match="unknown gate"):
        boolean_task("IMPLIES")


def test_all_sixteen_functions_match_their_names() -> None:
    tasks = [boolean_task(code) for code in range(16)]
    assert len(tasks) == 16 and len(GATE_NAMES) == 16
    assert {tuple(t.targets) for t in tasks} == {
        tuple(float(c) for c in format(k, "04b")) for k in range(16)
    }
    logic = {
        "FALSE": lambda a, b: False,
        "AND": lambda a, b: a and b,
        "A_AND_NOT_B": lambda a, b: a and not b,
        "A": lambda a, b: a,
        "NOT_A_AND_B": lambda a, b: (not a) and b,
        "B": lambda a, b: b,
        "XOR": lambda a, b: a != b,
        "OR": lambda a, b: a or b,
        "NOR": lambda a, b: not (a or b),
        "XNOR": lambda a, b: a == b,
        "NOT_B": lambda a, b: not b,
        "A_OR_NOT_B": lambda a, b: a or not b,
        "NOT_A": lambda a, b: not a,
        "NOT_A_OR_B": lambda a, b: (not a) or b,
        "NAND": lambda a, b: not (a and b),
        "TRUE": lambda a, b: True,
    }
    for task in tasks:
        expect = [float(logic[task.name](bool(a), bool(b))) for a, b in BOOLEAN_CASES]
        np.testing.assert_array_equal(task.targets, expect, err_msg=task.name)


def test_separable_threshold_and_accuracy() -> None:
    t = boolean_task("AND").targets
    found, thr = separable([1.0, 2.0, 3.0, 10.0], t)
    assert found and thr == pytest.approx(6.5)
    assert accuracy([1.0, 2.0, 3.0, 10.0], t, thr) == 1.0
    assert not separable([1.0, 2.0, 3.0, 10.0], t, min_gap=8.0)[0]
    assert not separable([10.0, 2.0, 3.0, 1.0], t)[0]  # inverted AND is not AND
    assert separable(-np.array([10.0, 2.0, 3.0, 1.0]), t)[0]  # unless asked by negating
    xor = boolean_task("XOR").targets
    assert not separable([0.0, 5.0, 5.0, 5.0], xor)[0]  # OR-like output is not XOR
    assert accuracy([0.0, 5.0, 5.0, 5.0], xor, 2.5) == 0.75
    assert separable([1.0, 2.0], [1.0, 1.0]) == (True, -np.inf)
    acc, thr = best_threshold([0.0, 5.0, 5.0, 5.0], xor)
    assert acc == 0.75 and 0.0 < thr < 5.0


def test_input_voltages() -> None:
    v = input_voltages(BOOLEAN_CASES, [(-1.2, 0.6), (-0.7, 0.3)])
    np.testing.assert_allclose(v, [[-1.2, -0.7], [-1.2, 0.3], [0.6, -0.7], [0.6, 0.3]])
    with pytest.raises(ValueError, match="outside"):
        input_voltages([[0.0, 1.2]], [(-1.2, 0.6), (-0.7, 0.3)])
    with pytest.raises(ValueError, match="low < high"):
        input_voltages([[0.0, 1.0]], [(0.6, -1.2), (-0.7, 0.3)])
    with pytest.raises(ValueError, match="input ranges"):
        input_voltages([[0.0, 1.0]], [(-1.2, 0.6)])


def test_sphere_task() -> None:
    task = sphere_task(400, seed=3)
    assert task.case_inputs01.shape == (400, 3) and task.n_inputs == 3
    r = np.linalg.norm(task.case_inputs01 - 0.5, axis=1)
    np.testing.assert_array_equal(task.targets, (r < (3 / (8 * np.pi)) ** (1 / 3)).astype(float))
    assert 0.4 < task.targets.mean() < 0.6  # half the cube's volume is inside
    np.testing.assert_array_equal(sphere_task(400, seed=3).case_inputs01, task.case_inputs01)
    assert not np.array_equal(sphere_task(400, seed=4).case_inputs01, task.case_inputs01)


def test_ring_task() -> None:
    task = ring_task(500, seed=1)
    assert task.case_inputs01.shape == (500, 2)
    r = np.linalg.norm(task.case_inputs01 - 0.5, axis=1)
    ring = task.targets == 1
    assert np.all((r[ring] >= 0.28) & (r[ring] <= 0.40))
    assert np.all((r[~ring] < 0.2) | (r[~ring] > 0.48))
    assert (r[~ring] < 0.2).any() and (r[~ring] > 0.48).any()  # inside and outside
    np.testing.assert_array_equal(ring_task(500, seed=1).targets, task.targets)
    with pytest.raises(ValueError, match="inner_radius"):
        ring_task(10, seed=0, inner_radius=0.3)
