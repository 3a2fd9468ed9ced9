"""The analytic error model of ``scripts/bench_hge_gradient.py`` (Boon Fig. 3 on the bench):
its noise term against the bench's own clocked noise process, its bias term against an exact
demodulation of a cubic device."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from labrig.algorithms.hge import FrequencyPlan
from labrig.physics.noise import ClockedCurrentNoise, TiaParams


def _load_bench() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_hge_gradient.py"
    spec = importlib.util.spec_from_file_location("bench_hge_gradient", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def test_white_noise_floor_is_psd_over_window() -> None:
    params = TiaParams(
        current_noise_psd_na2_per_hz=2e-5, flicker_corner_hz=0.0, drift_na_per_sqrt_s=0.0
    )
    var = bench.demodulation_noise_variance(200.0, 0.05, lambda f: bench.noise_psd(f, params))
    assert var == pytest.approx(2e-5 / 0.05, rel=1e-3)


def test_flicker_noise_enters_at_the_demodulation_frequency() -> None:
    params = TiaParams(
        current_noise_psd_na2_per_hz=1e-5, flicker_corner_hz=100.0, drift_na_per_sqrt_s=0.0
    )
    psd = lambda f: bench.noise_psd(f, params)  # noqa: E731
    low = bench.demodulation_noise_variance(50.0, 0.1, psd)
    high = bench.demodulation_noise_variance(920.0, 0.1, psd)
    assert low == pytest.approx(1e-5 * 3.0 / 0.1, rel=0.05)  # 1 + 100/50
    assert high == pytest.approx(1e-5 * (1 + 100 / 920) / 0.1, rel=0.05)
    with pytest.raises(ValueError, match="window"):
        bench.demodulation_noise_variance(50.0, 0.0, psd)


def test_model_psd_is_the_bench_process_psd() -> None:
    params = TiaParams()  # the station's defaults: white, 1/f corner, drift
    process = ClockedCurrentNoise(params, seed=3)
    f = np.geomspace(1.0, 3000.0, 25)
    ratio = bench.noise_psd(f, params) / process.psd_na2_per_hz(f)
    np.testing.assert_allclose(ratio, 1.0, rtol=0.1)


def test_noise_variance_matches_the_clocked_process() -> None:
    """Demodulate the bench's own noise (white + 1/f + drift, TIA-filtered) in 200 windows of
    0.1 s at 50 Hz, below the 100 Hz corner: the in-phase variance is the model's."""
    params = TiaParams(flicker_corner_hz=100.0)
    process = ClockedCurrentNoise(params, seed=11)
    fs, window, f0, n_windows = 10_000.0, 0.1, 50.0, 200
    t = np.arange(round(fs * window * n_windows)) / fs
    noise = process.filtered_na(t).reshape(n_windows, -1)
    tt = t[: noise.shape[1]]
    x = 2.0 * np.mean(noise * np.sin(2 * np.pi * f0 * tt), axis=1)
    tia = 1.0 / (1.0 + (f0 / params.bandwidth_hz) ** 2)  # the noise is after the TIA here
    model = tia * bench.demodulation_noise_variance(
        f0, window, lambda f: bench.noise_psd(f, params)
    )
    # 200 windows: the sample variance is within ~10 % (1 sigma) of the true one.
    assert np.var(x) == pytest.approx(model, rel=0.3)
    # ... and 3x the white floor alone, which a model without the 1/f leakage would predict.
    assert np.var(x) > 2.0 * params.current_noise_psd_na2_per_hz / window


@pytest.mark.parametrize("parallel", [True, False])
def test_curvature_bias_matches_an_exact_demodulation(parallel: bool) -> None:
    """A cubic device: the demodulated dI/dV is exactly the gradient plus the model's bias
    (multiples 3, 5, 17 are third-order clean, so no intermodulation lands on a frequency)."""
    rng = np.random.default_rng(0)
    c = rng.normal(size=(3, 3, 3)) * 50.0  # I = sum c_jkl V_j V_k V_l (nA, V)
    c = (
        c
        + c.transpose(0, 2, 1)
        + c.transpose(1, 0, 2)
        + c.transpose(1, 2, 0)
        + c.transpose(2, 0, 1)
        + c.transpose(2, 1, 0)
    ) / 6.0
    b1 = rng.normal(size=3) * 100.0

    def current(v: np.ndarray) -> np.ndarray:  # v: (..., 3)
        return np.einsum("...j,j->...", v, b1) + np.einsum("jkl,...j,...k,...l->...", c, v, v, v)

    def gradient(v: np.ndarray) -> np.ndarray:
        return b1 + 3.0 * np.einsum("jkl,...k,...l->...j", c, v, v)

    v0 = np.array([[0.1, -0.2, 0.05]])
    amps = (0.03, 0.02, 0.04)
    plan = FrequencyPlan((30.0, 50.0, 170.0), amps, 0.1, 10_000.0)
    t = np.arange(1000) / 1e4
    measured = np.empty(3)
    for j in range(3):
        on = range(3) if parallel else [j]
        v = np.repeat(v0, t.size, axis=0)
        for k in on:
            v[:, k] += amps[k] * np.sin(2 * np.pi * plan.frequencies_hz[k] * t)
        i = current(v)
        measured[j] = 2.0 * np.mean(i * np.sin(2 * np.pi * plan.frequencies_hz[j] * t)) / amps[j]
    d3 = bench.third_derivatives(gradient, v0, step_v=1e-2)
    predicted = gradient(v0)[0] + bench.hge_bias(d3, amps, parallel)[0]
    np.testing.assert_allclose(measured, predicted, rtol=1e-6, atol=1e-6)
    assert np.max(np.abs(measured - gradient(v0)[0])) > 1e-3  # the bias is there to be modelled
