"""The DNPU bench's noise, measured as a lab would: through the DAC, the TIA and the scope.

The current noise is one process on the bench clock (``labrig.physics.noise.ClockedCurrentNoise``).
These tests read it with the instruments' drivers: a long scope record's Welch PSD against the
configured spectrum, an Allan deviation of repeated DC readings against the one the configured
spectrum predicts (the drift shows as a rise at long averaging times), and the replay that makes a
resumed run see the noise the uninterrupted one saw.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import integrate, signal

from labrig.errors import StationError
from labrig.physics.noise import ClockedCurrentNoise
from labrig.rig import Rig, open_rig
from labrig.sim.keysight_infiniivision import ADC_HALF_SPAN, V_DIVISIONS
from labrig.station import builtin_station_path, load_station


def _dnpu_rig() -> tuple[Rig, Any]:
    rig = open_rig("sim-dnpu")
    assert rig.built is not None
    return rig, rig.built


def _dc_level_v(rig: Rig) -> float:
    """Electrodes at 0 V; one coarse record gives the TIA's DC level (V)."""
    dnpu = rig.station.dnpu
    assert dnpu is not None
    rig.dac.ramp_to({ch: 0.0 for ch in dnpu.electrode_channels})
    rig.digitizer.configure_acquisition(
        dnpu.digitizer_channel, volts_range=8.0, offset_v=0.0, duration_s=0.01, trigger="immediate"
    )
    return float(np.mean(rig.digitizer.acquire(dnpu.digitizer_channel).volts))


def _scope_floor_na2_per_hz(built: Any, range_v: float, fs: float, gain: float) -> float:
    """The scope's own white floor (input noise + ADC rounding) in the current's units."""
    scope = built.emulators["scope"]
    scale = range_v / V_DIVISIONS
    step = V_DIVISIONS * scale / (2 * ADC_HALF_SPAN)
    var_v = (scope.noise_divisions * scale) ** 2 + step**2 / 12
    return 2 * var_v / fs * gain**2


def _tia_psd(noise: ClockedCurrentNoise, f: np.ndarray) -> np.ndarray:
    """The process's PSD after the TIA's first-order low-pass (nA²/Hz)."""
    return noise.psd_na2_per_hz(f) / (1 + (f / noise.params.bandwidth_hz) ** 2)


def _aliased(noise: ClockedCurrentNoise, f: np.ndarray, fs: float) -> np.ndarray:
    """:func:`_tia_psd` sampled at ``fs``: images up to the process grid's Nyquist fold onto f."""
    total = np.zeros_like(f)
    for k in range(-int(noise.rate_hz / fs), int(noise.rate_hz / fs) + 1):
        g = np.abs(f + k * fs)
        inside = (g > 0) & (g < noise.rate_hz / 2)
        total += np.where(inside, _tia_psd(noise, np.where(inside, g, 1.0)), 0.0)
    return total


@pytest.mark.slow
def test_psd_through_the_scope_matches_the_configured_spectrum() -> None:
    """100 s at 20 kSa/s through the scope: Welch PSD within ±1.5 dB of the configured
    spectrum (white + 1/f below the corner + drift, through the TIA, plus the scope's floor)
    in bands from 1 Hz to 3 kHz."""
    rig, built = _dnpu_rig()
    try:
        dnpu = rig.station.dnpu
        assert dnpu is not None
        level = _dc_level_v(rig)
        range_v = 0.32  # 40 mV/div: the noise (a few nA = tens of mV) fills the screen
        duration, points = 100.0, 2_000_000
        rig.digitizer.configure_acquisition(
            dnpu.digitizer_channel,
            volts_range=range_v,
            offset_v=level,
            duration_s=duration,
            trigger="immediate",
        )
        rig.digitizer.set_points(points)
        record = rig.digitizer.acquire(dnpu.digitizer_channel, timeout_s=120.0)
        fs = 1.0 / float(record.times_s[1] - record.times_s[0])
        current = np.asarray(record.volts) * dnpu.tia_gain_na_per_v
        noise = built.device.readout.noise
        assert isinstance(noise, ClockedCurrentNoise)
        f, pxx = signal.welch(current, fs=fs, nperseg=round(8 * fs))
        expected = _aliased(noise, f, fs) + _scope_floor_na2_per_hz(
            built, range_v, fs, dnpu.tia_gain_na_per_v
        )
        errors = {}
        for lo in np.logspace(0, math.log10(3000 / 1.4), 16):
            band = (f >= lo) & (f < lo * 1.4)
            errors[round(float(lo), 1)] = 10 * np.log10(pxx[band].mean() / expected[band].mean())
        assert all(abs(e) < 1.5 for e in errors.values()), errors
        # the 1/f part is really there: at 1-2 Hz the PSD is ~50x the white level
        low = (f >= 1) & (f < 2)
        assert pxx[low].mean() > 20 * noise.params.current_noise_psd_na2_per_hz
    finally:
        rig.close()


def _expected_adev(
    noise: ClockedCurrentNoise, window_s: float, spacing_s: float, ms: list[int]
) -> list[float]:
    """Allan deviation of readings that are ``window_s`` means taken every ``spacing_s``,
    averaged ``m`` at a time, from the configured PSD: the readings' covariance
    ``C(lag) = ∫ S(f) sinc²(f w) cos(2π f lag) df`` and ``σ²(m) = ½ aᵀ C a`` with
    ``a = (-1/m, ..., -1/m, +1/m, ..., +1/m)``."""
    f = np.logspace(-6, math.log10(noise.rate_hz / 2), 40_000)
    weight = _tia_psd(noise, f) * np.sinc(f * window_s) ** 2
    out = []
    for m in ms:
        lags = np.arange(2 * m) * spacing_s
        cov = np.array(
            [integrate.trapezoid(weight * np.cos(2 * np.pi * f * lag), f) for lag in lags]
        )
        a = np.r_[-np.ones(m), np.ones(m)] / m
        c = cov[np.abs(np.subtract.outer(np.arange(2 * m), np.arange(2 * m)))]
        out.append(math.sqrt(0.5 * a @ c @ a))
    return out


def _overlapping_adev(y: np.ndarray, m: int) -> float:
    means = np.convolve(y, np.ones(m) / m, mode="valid")
    d = means[m:] - means[:-m]
    return float(math.sqrt(0.5 * np.mean(d**2)))


@pytest.mark.slow
def test_repeated_dc_readings_differ_and_the_allan_deviation_shows_the_drift() -> None:
    """500 DC readings (10 ms windows, one every 2 s): they differ by far more than the white
    noise of a window allows, and their Allan deviation follows the configured spectrum —
    flat where the 1/f noise rules, rising as √τ where the drift takes over."""
    rig, built = _dnpu_rig()
    try:
        dnpu = rig.station.dnpu
        assert dnpu is not None
        level = _dc_level_v(rig)
        window, spacing, count = 0.01, 2.0, 500
        rig.digitizer.configure_acquisition(
            dnpu.digitizer_channel,
            volts_range=0.32,
            offset_v=level,
            duration_s=window,
            trigger="immediate",
        )
        rig.digitizer.set_points(1000)
        readings = np.empty(count)
        start = rig.device_time_s()
        for k in range(count):
            # every reading starts on a 2 s grid of bench time (I/O time included)
            rig.wait(start + k * spacing - rig.device_time_s())
            record = rig.digitizer.acquire(dnpu.digitizer_channel)
            readings[k] = float(np.mean(record.volts)) * dnpu.tia_gain_na_per_v
        noise = built.device.readout.noise
        assert isinstance(noise, ClockedCurrentNoise)
        white_only = math.sqrt(noise.params.current_noise_psd_na2_per_hz / (2 * window))
        assert np.std(readings[:8]) > 1.5 * white_only  # DC levels never repeat exactly
        ms = [1, 4, 16, 64]
        measured = [_overlapping_adev(readings, m) for m in ms]
        expected = _expected_adev(noise, window, spacing, ms)
        for m, got, want in zip(ms, measured, expected, strict=True):
            assert 0.6 < got / want < 1.6, (m * spacing, got, want)
        # The drift: without it the configured spectrum would give a lower deviation at 128 s
        # (flat 1/f floor); the readings resolve the difference.
        flat = ClockedCurrentNoise(
            dataclasses.replace(noise.params, drift_na_per_sqrt_s=0.0), rate_hz=noise.rate_hz
        )
        without_drift = _expected_adev(flat, window, spacing, ms)
        assert expected[-1] > 2 * without_drift[-1]
        assert measured[-1] > 2 * without_drift[-1]
        assert measured[-1] > measured[0]  # rising at long averaging times
    finally:
        rig.close()


def test_the_same_instant_reads_the_same_noise_on_a_fresh_bench() -> None:
    """Resume replays the noise: a fresh bench reading a window directly sees exactly what a
    bench that read other windows first saw there."""
    t = 3.7 + np.arange(2000) * 1e-5
    rig_a, built_a = _dnpu_rig()
    rig_b, built_b = _dnpu_rig()
    try:
        built_a.device.output("tia", 0.2 + np.arange(5000) * 1e-4)
        built_a.bench.generation += 1  # a settings change in between: no cached signal reused
        first = built_a.device.output("tia", t)
        second = built_b.device.output("tia", t)
        np.testing.assert_array_equal(first, second)
        # and a later window differs (noise, not a constant)
        assert np.std(built_b.device.output("tia", t + 1.0) - first) > 0
    finally:
        rig_a.close()
        rig_b.close()


def test_noise_keys_come_from_the_station_and_are_checked(tmp_path: Path) -> None:
    text = builtin_station_path("sim-dnpu").read_text(encoding="utf-8")
    assert text.count("flicker_corner_hz = 100.0") == 1
    quiet = tmp_path / "quiet.toml"
    quiet.write_text(text.replace("flicker_corner_hz = 100.0", "flicker_corner_hz = 10.0"), "utf-8")
    rig = open_rig(str(quiet))
    try:
        assert rig.built is not None
        noise = rig.built.device.readout.noise
        assert noise.params.flicker_corner_hz == 10.0
        assert noise.psd_na2_per_hz(np.array([100.0]))[0] == pytest.approx(1.1e-5, rel=0.01)
    finally:
        rig.close()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("flicker_corner_hz = 100.0", "flicker_corner_hz = -1.0"), "utf-8")
    with pytest.raises(StationError, match=r"bench\.flicker_corner_hz.*-1\.0"):
        load_station(str(bad))
