"""Tests of the noise generators and the TIA read-out chain."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from labrig.physics.noise import (
    ReadoutChain,
    TiaParams,
    first_order_lowpass,
    ou_drift,
    quantise,
    white_plus_flicker,
)


def _amplitude_phase(x: np.ndarray, f: float, fs: float) -> tuple[float, float]:
    """Amplitude and phase of the ``f`` component of ``x`` (integer number of periods)."""
    t = np.arange(x.size) / fs
    c = 2 * np.mean(x * np.cos(2 * np.pi * f * t))
    s = 2 * np.mean(x * np.sin(2 * np.pi * f * t))
    # x = A sin(ωt + φ) = A cos φ sin ωt + A sin φ cos ωt
    return math.hypot(c, s), math.atan2(c, s)


def test_white_noise_psd_matches_level() -> None:
    fs, level = 10e3, 1e-5
    x = white_plus_flicker(np.random.default_rng(0), 200_000, fs, level)
    f, pxx = signal.welch(x, fs=fs, nperseg=4096)
    band = (f > 50) & (f < 4500)
    assert abs(np.mean(pxx[band]) / level - 1) < 0.05
    assert np.all(np.abs(pxx[band] / level - 1) < 0.5)


def test_flicker_noise_rises_as_one_over_f_below_the_corner() -> None:
    fs, level, corner = 10e3, 1e-5, 200.0
    rng = np.random.default_rng(1)
    x = white_plus_flicker(rng, 400_000, fs, level, corner_hz=corner)
    f, pxx = signal.welch(x, fs=fs, nperseg=1 << 14)
    expected = level * (1 + corner / f[1:])
    ratio = pxx[1:] / expected
    high = f[1:] > 2000
    low = (f[1:] > 5) & (f[1:] < 50)
    assert abs(np.mean(ratio[high]) - 1) < 0.2
    assert abs(np.mean(ratio[low]) - 1) < 0.2
    assert np.mean(pxx[1:][low]) > 4 * level  # really above the white floor


def test_noise_is_seeded() -> None:
    a = white_plus_flicker(np.random.default_rng(5), 1000, 1e3, 1.0, 10.0)
    b = white_plus_flicker(np.random.default_rng(5), 1000, 1e3, 1.0, 10.0)
    np.testing.assert_array_equal(a, b)


def test_random_walk_variance_grows_as_d2_t() -> None:
    d, fs, n = 0.5, 100.0, 401
    rng = np.random.default_rng(2)
    finals = np.array([ou_drift(rng, n, fs, d)[-1] for _ in range(2000)])
    t_end = (n - 1) / fs
    assert abs(np.var(finals) / (d**2 * t_end) - 1) < 0.1


def test_ou_drift_relaxes_to_stationary_spread() -> None:
    d, tau, fs = 1.0, 0.5, 100.0
    x = ou_drift(np.random.default_rng(3), 400_000, fs, d, tau_s=tau, x0=0.0)
    assert abs(np.std(x[1000:]) / (d * math.sqrt(tau / 2)) - 1) < 0.05
    assert ou_drift(np.random.default_rng(3), 5, fs, d, tau, x0=2.5)[0] == 2.5


def test_quantise() -> None:
    np.testing.assert_allclose(quantise([0.0, 0.24, 0.26, -0.74], 0.5), [0.0, 0.0, 0.5, -0.5])
    with pytest.raises(ValueError, match="lsb"):
        quantise([1.0], 0.0)


def test_lowpass_gain_and_phase_lag_match_first_order_response() -> None:
    fs, fc = 200e3, 3000.0
    tau = 1 / (2 * math.pi * fc)
    for f in (300.0, 1000.0, 3000.0):
        t = np.arange(int(fs)) / fs  # 1 s: integer number of periods
        y = first_order_lowpass(np.sin(2 * np.pi * f * t), fs, tau)
        amp, phase = _amplitude_phase(y[2000:], f, fs)
        assert amp == pytest.approx(1 / math.sqrt(1 + (f / fc) ** 2), rel=1e-3)
        assert -phase == pytest.approx(math.atan(f / fc), abs=math.radians(0.2))


def test_lowpass_starts_settled_and_follows_a_step() -> None:
    fs, tau = 1e5, 1e-3
    x = np.ones(1000)
    np.testing.assert_allclose(first_order_lowpass(x, fs, tau), 1.0)
    step = np.r_[np.zeros(10), np.ones(500)]
    y = first_order_lowpass(step, fs, tau)
    dt = 1 / fs
    # Input ramps 0 → 1 over one interval, then holds: y(dt) = 1 - (τ/dt)(1 - e^{-dt/τ}),
    # then relaxes as 1 - (1 - y(dt)) e^{-(t - dt)/τ}.
    y_ramp = 1 - (tau / dt) * (1 - math.exp(-dt / tau))
    k = np.arange(10, 510)
    expected = 1 - (1 - y_ramp) * np.exp(-(k - 10) * dt / tau)
    np.testing.assert_allclose(y[10:], expected, rtol=1e-9, atol=1e-12)
    assert np.all(y[:10] == 0.0)


def test_readout_clips_at_the_rails_with_positive_sign() -> None:
    chain = ReadoutChain(TiaParams(current_noise_psd_na2_per_hz=0.0, drift_na_per_sqrt_s=0.0))
    current = np.r_[np.full(2000, 100.0), np.full(2000, 1000.0), np.full(2000, -1000.0)]
    v = chain.output_v(current, fs=10e3, rng=np.random.default_rng(0))
    assert v[1900] == pytest.approx(1.0, rel=1e-9)  # +100 nA / (100 nA/V) = +1 V
    assert v[3900] == pytest.approx(3.5)
    assert v[5900] == pytest.approx(-3.5)
    assert np.max(np.abs(v)) <= 3.5


def test_readout_phase_lag_is_atan_f_over_fc() -> None:
    params = TiaParams(bandwidth_hz=3000.0)
    chain = ReadoutChain(params)
    fs = 100e3
    t = np.arange(int(fs)) / fs
    for f in (500.0, 920.0, 2000.0):
        v = chain.ideal_output_v(50.0 * np.sin(2 * np.pi * f * t), fs)
        amp, phase = _amplitude_phase(v[10_000:], f, fs)  # whole periods from t = 0.1 s
        assert -phase == pytest.approx(float(params.phase_lag_rad(f)), abs=math.radians(0.3))
        assert amp == pytest.approx(0.5 / math.sqrt(1 + (f / 3000.0) ** 2), rel=2e-3)


def test_readout_noise_level_in_volts() -> None:
    params = TiaParams(flicker_corner_hz=0.0, drift_na_per_sqrt_s=0.0, bandwidth_hz=1e6)
    chain = ReadoutChain(params)
    fs = 10e3
    v = chain.output_v(np.zeros(100_000), fs, np.random.default_rng(4))
    f, pxx = signal.welch(v, fs=fs, nperseg=2048)
    band = (f > 100) & (f < 4000)
    expected = params.current_noise_psd_na2_per_hz / params.gain_na_per_v**2
    assert abs(np.mean(pxx[band]) / expected - 1) < 0.2


def test_tia_params_validate() -> None:
    with pytest.raises(ValueError, match="bandwidth_hz"):
        TiaParams(bandwidth_hz=0.0)
    with pytest.raises(ValueError, match="1-D"):
        ReadoutChain().output_v(np.zeros((2, 2)), 1e3, np.random.default_rng(0))
