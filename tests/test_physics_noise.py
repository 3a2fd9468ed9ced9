"""Tests of the noise generators and the TIA read-out chain."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from labrig.physics.noise import (
    ClockedCurrentNoise,
    DacNoiseParams,
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


# ------------------------------------------------------------------ the clocked process
def _clocked(**kw: float) -> ClockedCurrentNoise:
    return ClockedCurrentNoise(TiaParams(**kw), seed=[3, 4])


def test_clocked_flicker_components_sum_to_one_over_f() -> None:
    p = TiaParams(drift_na_per_sqrt_s=0.0)
    noise = ClockedCurrentNoise(p)
    f = np.logspace(-2, math.log10(3000), 120)
    flicker = noise.psd_na2_per_hz(f) - p.current_noise_psd_na2_per_hz
    ratio_db = 10 * np.log10(flicker / (p.current_noise_psd_na2_per_hz * p.flicker_corner_hz / f))
    assert np.all(np.abs(ratio_db) < 0.1), ratio_db


def test_clocked_noise_is_a_function_of_time_alone() -> None:
    """Same instants, same values: whatever the grouping, the order, or the object's history."""
    a = _clocked()
    t = np.array([7.25, 0.5, 3.0000125, 3.0, 12.9999999, -0.5])
    first = a.filtered_na(t)
    # read a lot in between (evicts the block cache), then again, and on a fresh object
    a.filtered_na(np.arange(20.0, 30.0, 1e-3))
    np.testing.assert_array_equal(a.filtered_na(t), first)
    b = _clocked()
    np.testing.assert_array_equal(b.filtered_na(t[::-1]), first[::-1])
    # one request vs many: a long window equals its pieces
    window = 2.9 + np.arange(30_000) * 1e-5  # straddles the block edge at 3 s
    whole = b.filtered_na(window)
    pieces = np.concatenate([_clocked().filtered_na(w) for w in np.array_split(window, 7)])
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-12)
    # another seed is another process
    other = ClockedCurrentNoise(TiaParams(), seed=[3, 5]).filtered_na(t)
    assert not np.allclose(other, first)


def test_clocked_noise_refuses_times_before_it_starts() -> None:
    with pytest.raises(ValueError, match="before the process starts"):
        _clocked().filtered_na(np.array([-10.0]))


@pytest.mark.slow
def test_clocked_noise_spectrum_matches_the_model_across_blocks() -> None:
    """Welch PSD of 120 s read at 10 kHz (120 blocks of 1 s): the block edges and bridges
    leave no trace from 1 Hz to 3 kHz (the model's PSD through the TIA, aliased at 10 kHz)."""
    noise = _clocked()
    fs = 10e3
    x = noise.filtered_na(np.arange(0, 120.0, 1 / fs))
    f, pxx = signal.welch(x, fs=fs, nperseg=100_000)
    expected = _aliased_tia_psd(noise, f, fs)
    errors = {}
    for lo in np.logspace(0, math.log10(2000), 12):
        band = (f >= lo) & (f < lo * 1.5)
        errors[round(lo, 2)] = 10 * np.log10(pxx[band].mean() / expected[band].mean())
    assert all(abs(e) < 1.0 for e in errors.values()), errors


def _aliased_tia_psd(noise: ClockedCurrentNoise, f: np.ndarray, fs: float) -> np.ndarray:
    """The process's PSD after the TIA's low-pass, sampled at ``fs``: every image below the
    process grid's Nyquist frequency folds onto ``f``."""
    bw = noise.params.bandwidth_hz
    total = np.zeros_like(f)
    for k in range(-int(noise.rate_hz / fs), int(noise.rate_hz / fs) + 1):
        g = np.abs(f + k * fs)
        inside = (g > 0) & (g < noise.rate_hz / 2)
        g = np.where(inside, g, 1.0)
        total += np.where(inside, noise.psd_na2_per_hz(g) / (1 + (g / bw) ** 2), 0.0)
    return total


def test_dac_noise_quantises_and_adds_its_density() -> None:
    dac = DacNoiseParams(lsb_v=1e-3, noise_v_per_sqrt_hz=0.0)
    np.testing.assert_allclose(
        dac.apply(np.array([0.0104, -0.0006]), 1e3, np.random.default_rng(0)), [0.010, -0.001]
    )
    noisy = DacNoiseParams(lsb_v=0.0, noise_v_per_sqrt_hz=1e-6)
    v = noisy.apply(np.zeros(200_000), 20e3, np.random.default_rng(1))
    _f, pxx = signal.welch(v, fs=20e3, nperseg=4096)
    assert abs(np.mean(pxx[1:]) / 1e-12 - 1) < 0.05
    with pytest.raises(ValueError, match="lsb_v"):
        DacNoiseParams(lsb_v=-1.0)
