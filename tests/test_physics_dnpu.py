"""Tests of the DNPU device model, the Boolean helpers and the surrogate loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labrig.algorithms.boolean import (
    COMMON_GATES,
    boolean_outputs,
    boolean_voltages,
    function_table,
    realised_functions,
)
from labrig.algorithms.hge import AUTHORS_PLAN
from labrig.algorithms.tasks import GATE_NAMES, boolean_task
from labrig.physics.dnpu import ACTIVATION_COUNT, DnpuModel, DnpuParams
from labrig.physics.surrogate import (
    SurrogateFileError,
    SurrogateModel,
    random_surrogate,
    save_surrogate,
)


@pytest.fixture(scope="module")
def dnpu() -> DnpuModel:
    return DnpuModel(seed=0)


def _random_voltages(model: DnpuModel, n: int, seed: int) -> np.ndarray:
    ranges = np.asarray(model.activation_ranges_v)
    rng = np.random.default_rng(seed)
    return ranges[:, 0] + (ranges[:, 1] - ranges[:, 0]) * rng.random((n, ACTIVATION_COUNT))


def _random_controls(model: DnpuModel, n: int, seed: int) -> np.ndarray:
    return _random_voltages(model, n, seed)[:, 2:]


def test_potential_weights_are_a_partition_of_unity(dnpu: DnpuModel) -> None:
    # The Poisson integral of a rim potential that is 1 everywhere is 1 everywhere inside.
    k = dnpu.potential_weights
    assert k.shape == (dnpu.site_count, 8)
    assert np.all(k >= -1e-12)
    np.testing.assert_allclose(k.sum(axis=1), 1.0, atol=1e-6)


def test_equal_voltages_on_all_electrodes_give_no_current(dnpu: DnpuModel) -> None:
    # All electrodes at the output's potential: thermal equilibrium, detailed balance, I = 0.
    assert abs(float(dnpu.current_na(np.zeros(ACTIVATION_COUNT)))) < 1e-9


def test_current_scale_is_tens_to_hundreds_of_na(dnpu: DnpuModel) -> None:
    i = np.abs(dnpu.current_na(_random_voltages(dnpu, 400, seed=1)))
    assert 10.0 < np.median(i) < 400.0
    assert np.percentile(i, 95) < 400.0
    assert np.percentile(i, 95) > 50.0


def test_same_seed_same_device_different_seed_different_device() -> None:
    v = _random_voltages(DnpuModel(0), 50, seed=2)
    a = DnpuModel(seed=3).current_na(v)
    b = DnpuModel(seed=3).current_na(v)
    c = DnpuModel(seed=4).current_na(v)
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 10.0


def test_some_single_electrode_sweeps_reverse(dnpu: DnpuModel) -> None:
    # Non-monotonic: along some sweeps of one electrode the current rises and then falls (or the
    # reverse) by more than 1 nA. A network of monotone resistors could never do this.
    rng = np.random.default_rng(5)
    ranges = np.asarray(dnpu.activation_ranges_v)
    base = _random_voltages(dnpu, 60, seed=6)
    grid = np.linspace(0.0, 1.0, 61)
    reversing = 0
    for row in base:
        el = int(rng.integers(ACTIVATION_COUNT))
        sweep = np.repeat(row[None, :], grid.size, axis=0)
        sweep[:, el] = ranges[el, 0] + (ranges[el, 1] - ranges[el, 0]) * grid
        i = dnpu.current_na(sweep)
        rise = np.max(i - np.minimum.accumulate(i))
        fall = np.max(np.maximum.accumulate(i) - i)
        reversing += bool(rise > 1.0 and fall > 1.0)
    assert reversing >= 1


def test_gradient_matches_central_differences(dnpu: DnpuModel) -> None:
    v = _random_voltages(dnpu, 12, seed=7)
    grad = dnpu.gradient_na_per_v(v)
    h = 1e-6
    fd = np.stack(
        [
            (
                dnpu.current_na(v + h * np.eye(ACTIVATION_COUNT)[k])
                - dnpu.current_na(v - h * np.eye(ACTIVATION_COUNT)[k])
            )
            / (2 * h)
            for k in range(ACTIVATION_COUNT)
        ],
        axis=1,
    )
    scale = np.abs(fd).max(axis=1, keepdims=True) + 1.0
    assert np.max(np.abs(grad - fd) / scale) < 1e-5
    assert np.abs(fd).max() > 10.0  # the check is not vacuous


def test_gradient_single_row_shape(dnpu: DnpuModel) -> None:
    g = dnpu.gradient_na_per_v(np.zeros(ACTIVATION_COUNT))
    assert g.shape == (ACTIVATION_COUNT,)


def _authors_sines(t: np.ndarray) -> np.ndarray:
    """The HGE perturbations of the authors' plan on the five controls (electrodes 2-6)."""
    sines = np.zeros((t.size, 7))
    for k, (f, a) in enumerate(
        zip(AUTHORS_PLAN.frequencies_hz, AUTHORS_PLAN.amplitudes_v, strict=True)
    ):
        sines[:, 2 + k] = a * np.sin(2 * np.pi * f * t)
    return sines


def test_trace_matches_pointwise_solution_including_a_jump(dnpu: DnpuModel) -> None:
    fs = 10e3
    t = np.arange(1000) / fs
    base = _random_voltages(dnpu, 1, seed=8)[0]
    v = base + _authors_sines(t)
    v[600:, 0] += 0.8  # an input step: the fast path must fall back, not smear it
    fast = dnpu.current_trace_na(v)
    exact = dnpu.current_na(v)
    assert np.max(np.abs(fast - exact)) <= 1e-6 * (np.abs(exact).max() + 1.0)
    assert abs(exact[605] - exact[595]) > 1.0  # the step really changes the current


def _hge_trace(model: DnpuModel, n: int, seed: int) -> np.ndarray:
    """A slow input ramp plus HGE-like sines (5-30 mV, 200-920 Hz) on the controls, 10 kHz."""
    t = np.arange(n) / 10e3
    base = _random_voltages(model, 1, seed=seed)[0]
    v = base + _authors_sines(t)
    v[:, 0] += np.linspace(0.0, 0.3, n)
    return v


@pytest.mark.parametrize("rate_form", ["smooth", "miller_abrahams"])
def test_compiled_trace_matches_exact_and_reference_across_a_step(rate_form: str) -> None:
    pytest.importorskip("numba")
    model = DnpuModel(0, DnpuParams(rate_form=rate_form))  # type: ignore[arg-type]
    v = _hge_trace(model, 1500, seed=16)
    v[900:, 1] -= 0.8  # an input step: chord stalls there, Newton must finish the sample
    exact = model.current_na(v)
    fast = model.current_trace_na(v, method="kernel")
    reference = model.current_trace_na(v, method="reference")
    scale = np.abs(exact).max()
    assert np.max(np.abs(fast - exact)) <= 1e-4 * scale
    assert np.max(np.abs(fast - exact)) <= 1e-6 * (scale + 1.0)  # in fact far tighter
    assert np.max(np.abs(reference - exact)) <= 1e-6 * (scale + 1.0)
    assert abs(exact[905] - exact[895]) > 1.0  # the step really changes the current


def test_compiled_trace_falls_back_beyond_its_exponent_range(dnpu: DnpuModel) -> None:
    # |V| / kT > 300 (V > 2 V) would overflow the kernel's factored exponentials: the numpy
    # path, which clips them, must take over with the same answer.
    pytest.importorskip("numba")
    v = _hge_trace(dnpu, 40, seed=17)
    v[20:, 3] = 2.5
    np.testing.assert_allclose(
        dnpu.current_trace_na(v, method="kernel"), dnpu.current_na(v), rtol=1e-8, atol=1e-6
    )
    with pytest.raises(ValueError, match="method"):
        dnpu.current_trace_na(v, method="fast")  # type: ignore[arg-type]


def test_trace_handles_short_and_single_inputs(dnpu: DnpuModel) -> None:
    v = _random_voltages(dnpu, 5, seed=9)
    np.testing.assert_allclose(dnpu.current_trace_na(v), dnpu.current_na(v), rtol=1e-8, atol=1e-8)
    assert np.ndim(dnpu.current_trace_na(v[0])) == 0


def test_miller_abrahams_rate_form_runs_and_differs() -> None:
    v = _random_voltages(DnpuModel(0), 20, seed=10)
    smooth = DnpuModel(0).current_na(v)
    ma = DnpuModel(0, DnpuParams(rate_form="miller_abrahams")).current_na(v)
    assert np.all(np.isfinite(ma))
    assert np.max(np.abs(ma - smooth)) > 0.1


def test_bad_voltages_and_params_raise(dnpu: DnpuModel) -> None:
    with pytest.raises(ValueError, match=r"shape \(n, 7\)"):
        dnpu.current_na(np.zeros((3, 6)))
    with pytest.raises(ValueError, match="finite"):
        dnpu.current_na(np.full(7, np.nan))
    with pytest.raises(ValueError, match="gate_coupling"):
        DnpuParams(gate_coupling=1.5)
    with pytest.raises(ValueError, match="electrode_slots"):
        DnpuParams(electrode_slots=(0, 0, 1, 2, 3, 4, 5, 6))


def test_boolean_voltages_follow_the_convention(dnpu: DnpuModel) -> None:
    controls = _random_controls(dnpu, 2, seed=11)
    volts = boolean_voltages(dnpu, controls)
    ranges = np.asarray(dnpu.activation_ranges_v)
    assert volts.shape == (2, 4, 7)
    np.testing.assert_array_equal(volts[:, 0, :2], np.tile(ranges[:2, 0], (2, 1)))
    np.testing.assert_array_equal(volts[:, 1, :2], np.tile([ranges[0, 0], ranges[1, 1]], (2, 1)))
    np.testing.assert_array_equal(volts[:, 2, :2], np.tile([ranges[0, 1], ranges[1, 0]], (2, 1)))
    np.testing.assert_array_equal(volts[:, 3, :2], np.tile(ranges[:2, 1], (2, 1)))
    np.testing.assert_array_equal(volts[:, :, 2:], np.repeat(controls[:, None, :], 4, axis=1))
    with pytest.raises(ValueError, match="electrode 3"):
        boolean_voltages(dnpu, np.array([0.0, 5.0, 0.0, 0.0, 0.0]))


def test_function_codes_are_the_boolean_tasks_codes() -> None:
    # One convention: a column of the function table is the task of that code.
    for name, code in COMMON_GATES.items():
        assert boolean_task(code).name == name
    outputs = boolean_task("A_AND_NOT_B").targets * 10.0  # high only for case (1, 0)
    assert realised_functions(outputs) == {int(GATE_NAMES["A_AND_NOT_B"], 2)}


def test_function_table_criterion() -> None:
    out = np.array(
        [
            [0.0, 5.0, 5.0, 0.0],  # XOR ("0110") with a 5 nA gap
            [0.0, 0.5, 0.5, 0.0],  # XOR pattern, but the gap is below 1 nA
            [1.0, 2.0, 3.0, 9.0],  # AND, OR, "A" ... all hold at once
            [7.0, 7.2, 7.1, 7.3],  # flat: the constant functions
        ]
    )
    names_realised = ("FALSE", "XOR", "AND", "A", "OR", "TRUE")
    table = function_table(out, min_gap_na=1.0)
    assert table[0, COMMON_GATES["XOR"]] and not table[0, COMMON_GATES["XNOR"]]
    assert not table[1, COMMON_GATES["XOR"]]
    assert table[2, COMMON_GATES["AND"]] and table[2, COMMON_GATES["OR"]]
    assert table[2, int(GATE_NAMES["A"], 2)] and not table[2, COMMON_GATES["NAND"]]
    assert table[3, 0] and table[3, 15] and table[3, 1:15].sum() == 0
    assert not table[0, 0]
    assert realised_functions(out) == {int(GATE_NAMES[g], 2) for g in names_realised}


def test_xor_and_xnor_found_quickly(dnpu: DnpuModel) -> None:
    found = realised_functions(boolean_outputs(dnpu, _random_controls(dnpu, 3000, seed=12)))
    assert COMMON_GATES["XOR"] in found and COMMON_GATES["XNOR"] in found
    assert {COMMON_GATES[g] for g in ("AND", "OR", "NAND", "NOR")} <= found


@pytest.mark.slow
def test_default_device_realises_all_16_functions(dnpu: DnpuModel) -> None:
    # Brute force over random control settings of the noise-free seed-0 device.
    found: set[int] = set()
    for chunk in range(6):
        controls = _random_controls(dnpu, 5000, seed=100 + chunk)
        found |= realised_functions(boolean_outputs(dnpu, controls))
        if len(found) == 16:
            break
    assert COMMON_GATES["XOR"] in found and COMMON_GATES["XNOR"] in found
    assert found == set(range(16)), f"missing {sorted(set(range(16)) - found)}"


# ------------------------------------------------------------------------------ surrogate
def test_surrogate_round_trip(tmp_path: Path) -> None:
    model = random_surrogate(seed=1)
    path = tmp_path / "device.npz"
    save_surrogate(path, model.weights, model.biases, model.electrode_ranges, model.amplification)
    loaded = SurrogateModel.load(path)
    v = _random_voltages(DnpuModel(0), 30, seed=13)
    np.testing.assert_array_equal(loaded.current_na(v), model.current_na(v))
    assert loaded.activation_ranges_v == model.activation_ranges_v
    assert len(loaded.weights) == 6 and loaded.weights[0].shape == (90, 7)
    np.testing.assert_array_equal(loaded.current_trace_na(v), model.current_na(v))
    assert boolean_outputs(loaded, _random_controls(DnpuModel(0), 4, seed=14)).shape == (4, 4)


def test_surrogate_gradient_is_exact_backprop() -> None:
    model = random_surrogate(seed=2)
    v = _random_voltages(DnpuModel(0), 10, seed=15)
    grad = model.gradient_na_per_v(v)
    h = 1e-6
    fd = np.stack(
        [
            (model.current_na(v + h * np.eye(7)[k]) - model.current_na(v - h * np.eye(7)[k]))
            / (2 * h)
            for k in range(7)
        ],
        axis=1,
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(path, **arrays)  # type: ignore[arg-type]


def test_surrogate_bad_files_name_the_key(tmp_path: Path) -> None:
    model = random_surrogate(seed=3)
    arrays = {f"W{k}": w for k, w in enumerate(model.weights)}
    arrays |= {f"b{k}": b for k, b in enumerate(model.biases)}
    arrays |= {"electrode_ranges": model.electrode_ranges, "amplification": np.asarray(10.0)}

    missing = dict(arrays)
    del missing["electrode_ranges"]
    _savez(tmp_path / "missing.npz", missing)
    with pytest.raises(SurrogateFileError, match="electrode_ranges"):
        SurrogateModel.load(tmp_path / "missing.npz")

    bad_shape = dict(arrays)
    bad_shape["W2"] = np.zeros((90, 80))
    _savez(tmp_path / "shape.npz", bad_shape)
    with pytest.raises(SurrogateFileError, match=r"W2 has shape \(90, 80\)"):
        SurrogateModel.load(tmp_path / "shape.npz")

    no_bias = dict(arrays)
    del no_bias["b4"]
    _savez(tmp_path / "bias.npz", no_bias)
    with pytest.raises(SurrogateFileError, match="b4"):
        SurrogateModel.load(tmp_path / "bias.npz")

    with pytest.raises(SurrogateFileError, match="electrode_ranges"):
        save_surrogate(tmp_path / "x.npz", model.weights, model.biases, np.zeros((6, 2)), 1.0)
