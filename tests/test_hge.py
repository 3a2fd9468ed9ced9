"""HGE core: frequency plans, waveforms, demodulation against analytic signals, baselines."""

from __future__ import annotations

import numpy as np
import pytest

from labrig.algorithms.baselines import central_difference, spsa
from labrig.algorithms.hge import (
    AUTHORS_PLAN,
    FrequencyPlan,
    assign_amplitudes,
    build_case_waveforms,
    case_gradients,
    demodulate,
    first_order_response,
    gradient_from_lockin,
    gradient_from_xy,
    plan_frequencies,
)

# ------------------------------------------------------------------ frequency plans


def test_authors_plan_is_second_order_clean_but_not_third_order() -> None:
    AUTHORS_PLAN.validate()
    assert AUTHORS_PLAN.bins == (10, 18, 26, 38, 46)
    assert AUTHORS_PLAN.n_samples == 500
    assert AUTHORS_PLAN.collisions(2) == []
    third = AUTHORS_PLAN.collisions(3)
    # 2*200 + 360 = 760 Hz lands on f3.
    assert any(c.coefficients == (2, 1, 0, 0, 0) and c.hits == 3 for c in third)
    with pytest.raises(ValueError, match="order-3"):
        AUTHORS_PLAN.validate(third_order=True)


def test_validate_rejects_second_order_collision() -> None:
    plan = FrequencyPlan((200.0, 400.0), (0.01, 0.01), 0.05, 10_000.0)  # 2*200 = 400
    with pytest.raises(ValueError, match="order-2"):
        plan.validate()
    plan = FrequencyPlan((200.0, 300.0, 500.0), (0.01,) * 3, 0.05, 10_000.0)  # 200+300 = 500
    with pytest.raises(ValueError, match="order-2"):
        plan.validate()


def test_validate_rejects_aliased_collision() -> None:
    # 2*3000 = 6000 Hz folds to 10000 - 6000 = 4000 Hz at 10 kHz sampling.
    plan = FrequencyPlan((3000.0, 4000.0), (0.01, 0.01), 0.05, 10_000.0)
    with pytest.raises(ValueError, match="order-2"):
        plan.validate()


@pytest.mark.parametrize(
    ("freqs", "window", "fs", "match"),
    [
        ((210.0, 360.0), 0.05, 10_000.0, "not an integer"),  # 10.5 periods of 210 Hz
        ((200.0, 360.0), 0.05003, 10_000.0, "not an integer"),  # 500.3 samples
        ((200.0, 6000.0), 0.05, 10_000.0, "Nyquist"),
    ],
)
def test_validate_rejects_bad_windows(freqs, window, fs, match) -> None:
    with pytest.raises(ValueError, match=match):
        FrequencyPlan(freqs, (0.01,) * len(freqs), window, fs).validate()


def test_validate_rejects_amplitude_mismatch_and_max_hz() -> None:
    with pytest.raises(ValueError, match="amplitudes"):
        FrequencyPlan((200.0, 360.0), (0.01,), 0.05, 10_000.0).validate()
    with pytest.raises(ValueError, match="max_hz"):
        AUTHORS_PLAN.validate(max_hz=900.0)


@pytest.mark.parametrize(
    ("n", "window", "spacing", "kwargs"),
    [
        (5, 0.05, 80.0, {"base_hz": 200.0, "max_hz": 2500.0}),
        (5, 0.1, 10.0, {}),
        (5, 0.1, 20.0, {"tia_bandwidth_hz": 3000.0}),
        (3, 0.02, 100.0, {}),
    ],
)
def test_plan_frequencies_third_order_free_when_possible(n, window, spacing, kwargs) -> None:
    plan = plan_frequencies(n, 10_000.0, window, spacing, **kwargs)
    plan.validate(third_order=True)
    f = np.array(plan.frequencies_hz)
    assert f.size == n
    assert np.all(np.diff(f) >= spacing - 1e-9)
    assert np.allclose(f * window, np.round(f * window))
    assert f.max() <= kwargs.get("max_hz", 1000.0) + 1e-9
    if "tia_bandwidth_hz" in kwargs:
        assert f.max() <= kwargs["tia_bandwidth_hz"] / 2


def test_plan_frequencies_falls_back_to_second_order_clean() -> None:
    # Five frequencies between 200 and 1000 Hz at 80 Hz spacing cannot avoid all third-order
    # products; the plan must still be second-order clean and fewer-collision than consecutive.
    plan = plan_frequencies(5, 10_000.0, 0.05, 80.0, base_hz=200.0)
    plan.validate()
    naive = plan_frequencies(5, 10_000.0, 0.05, 80.0, base_hz=200.0, avoid_third_order=False)
    assert naive.frequencies_hz == (200.0, 280.0, 360.0, 440.0, 520.0)
    assert 0 < len(plan.collisions(3)) < len(naive.collisions(3))


def test_plan_frequencies_rejects_impossible_range() -> None:
    with pytest.raises(ValueError, match="odd multiples"):
        plan_frequencies(10, 10_000.0, 0.05, 200.0, base_hz=200.0, max_hz=1000.0)
    with pytest.raises(ValueError, match="not an integer"):
        plan_frequencies(3, 10_000.0, 0.03333, 20.0)


def test_assign_amplitudes_inverse_to_sensitivity_and_bounded() -> None:
    amps = assign_amplitudes([100.0, -200.0, 1.0, 0.0], 1.0, 0.002, 0.05)
    assert amps[0] == pytest.approx(0.01)
    assert amps[1] == pytest.approx(0.005)  # sign of the sensitivity does not matter
    assert amps[2] == 0.05 and amps[3] == 0.05  # bounded above
    assert assign_amplitudes([1e6], 1.0, 0.002, 0.05) == (0.002,)
    with pytest.raises(ValueError, match="bounds"):
        assign_amplitudes([1.0], 1.0, 0.05, 0.01)


# ------------------------------------------------------------------ waveforms

CASES_V = np.array([[-1.0, -0.5], [-1.0, 0.3], [0.4, -0.5], [0.4, 0.3]])
CONTROLS_V = np.array([0.1, -0.2, 0.3, -0.4, 0.05])


def test_case_waveforms_layout_and_values() -> None:
    plan = AUTHORS_PLAN
    s = build_case_waveforms(CASES_V, CONTROLS_V, plan, ramp_s=0.02)
    fs = plan.sample_rate_hz
    assert s.voltages_v.shape == (7, 4 * 500 + 3 * 200)
    assert s.n_cases == 4 and s.duration_s == pytest.approx(0.26)
    assert s.demod_mask.sum() == 4 * 500
    for c, (plateau, window) in enumerate(zip(s.case_plateaus, s.case_windows, strict=True)):
        assert window == plateau  # no settle time: the whole plateau is demodulated
        block = s.voltages_v[:, plateau]
        assert np.all(block[:2] == CASES_V[c][:, None])
        tau = np.arange(500) / fs
        expect = CONTROLS_V[:, None] + np.array(plan.amplitudes_v)[:, None] * np.sin(
            2 * np.pi * np.array(plan.frequencies_hz)[:, None] * tau
        )
        np.testing.assert_allclose(block[2:], expect, atol=1e-15)
        assert np.all(s.reference_time_s[plateau] == tau)
    # Ramps are masked out, have no phase reference, and move smoothly between the plateaus.
    assert not s.demod_mask[500:700].any() and np.isnan(s.reference_time_s[500:700]).all()
    steps = np.abs(np.diff(s.voltages_v, axis=1)).max(axis=1)
    assert steps[0] <= 1.4 / 201 + 1e-12  # input 0 ramps -1.0 -> 0.4 V in 201 steps
    assert np.all(steps[2:] < 0.03 * 2 * np.pi * 920 / fs + 1e-3)
    with pytest.raises(ValueError):
        s.voltages_v[0, 0] = 1.0  # read-only


def test_case_waveforms_options() -> None:
    plan = AUTHORS_PLAN
    s = build_case_waveforms(
        CASES_V,
        CONTROLS_V,
        plan,
        plateau_s=0.06,
        ramp_s=0.01,
        settle_s=0.005,
        ramp_shape="cosine",
        with_sines=False,
        input_electrodes=[5, 6],
        control_electrodes=[0, 1, 2, 3, 4],
        start_v=np.zeros(7),
    )
    assert s.voltages_v.shape == (7, 100 + 4 * 600 + 3 * 100)
    first = s.case_plateaus[0]
    assert first.start == 100  # after the lead-in ramp
    assert s.case_windows[0] == slice(150, 650)
    np.testing.assert_array_equal(s.voltages_v[5:, first], np.tile(CASES_V[0][:, None], 600))
    np.testing.assert_array_equal(s.voltages_v[:5, first], np.tile(CONTROLS_V[:, None], 600))
    ramp = s.voltages_v[5, :100]  # raised cosine from 0 to -1: flat at both ends
    assert abs(ramp[1] - ramp[0]) < abs(ramp[50] - ramp[49]) / 10
    with pytest.raises(ValueError, match="nothing to demodulate"):
        case_gradients(np.zeros(s.n_samples), s, plan)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"plateau_s": 0.04}, "shorter"),
        ({"ramp_s": 0.00005}, "not an integer"),
        ({"input_electrodes": [0, 0]}, "exactly once"),
        ({"ramp_shape": "step"}, "ramp_shape"),
        ({"sample_rate_hz": 20_000.0}, "differs"),
    ],
)
def test_case_waveforms_reject_bad_settings(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        build_case_waveforms(CASES_V, CONTROLS_V, AUTHORS_PLAN, **kwargs)


def test_case_waveforms_reject_wrong_control_count() -> None:
    with pytest.raises(ValueError, match="control voltages"):
        build_case_waveforms(CASES_V, CONTROLS_V[:4], AUTHORS_PLAN)


# ------------------------------------------------------------------ demodulation


def _synthetic(plan, g, lag, gain, noise, rng, second_order=0.0):
    """I(t) = I0 + Σ g_j gain_j A_j sin(2π f_j t - lag_j) + second-order products + noise."""
    t = np.arange(plan.n_samples) / plan.sample_rate_hz
    f = np.array(plan.frequencies_hz)[:, None]
    a = np.array(plan.amplitudes_v)[:, None]
    dv = a * np.sin(2 * np.pi * f * t)
    trace = 37.0 + np.sum(
        np.asarray(g)[:, None] * gain[:, None] * a * np.sin(2 * np.pi * f * t - lag[:, None]),
        axis=0,
    )
    if second_order:
        h = rng.normal(size=(len(g), len(g)))
        trace += second_order * np.einsum("it,ij,jt->t", dv, h + h.T, dv)
    return trace + noise * rng.normal(size=t.size)


@pytest.mark.parametrize("projection", [False, True])
def test_demodulation_recovers_signed_gradients_with_readout_lag(projection) -> None:
    rng = np.random.default_rng(1)
    plan = AUTHORS_PLAN
    g = np.array([120.0, -80.0, 45.0, -200.0, 60.0])  # nA/V
    gain, lag = first_order_response(plan.frequencies_hz, 3000.0)
    trace = _synthetic(plan, g, lag, gain, noise=0.01, rng=rng, second_order=500.0)
    x, y = demodulate(trace, plan.sample_rate_hz, plan)
    est = gradient_from_xy(x, y, plan.amplitudes_v, lag, readout_gain=gain, projection=projection)
    np.testing.assert_allclose(est, g, rtol=0.01)
    # Rotating the references by the lag instead gives the same answer.
    x2, y2 = demodulate(trace, plan.sample_rate_hz, plan, phase_lag_rad=lag)
    np.testing.assert_allclose(
        gradient_from_xy(x2, y2, plan.amplitudes_v, readout_gain=gain), g, rtol=0.01
    )
    assert np.all(np.abs(y2) < 0.01 * np.abs(x2))


def test_uncorrected_large_lag_flips_the_sign() -> None:
    plan = AUTHORS_PLAN
    g = np.array([120.0, -80.0, 45.0, -200.0, 60.0])
    lag = np.full(5, np.deg2rad(120.0))
    trace = _synthetic(plan, g, lag, np.ones(5), 0.0, np.random.default_rng(0))
    x, y = demodulate(trace, plan.sample_rate_hz, plan)
    np.testing.assert_allclose(gradient_from_xy(x, y, plan.amplitudes_v), -g, rtol=1e-9)
    np.testing.assert_allclose(gradient_from_xy(x, y, plan.amplitudes_v, lag), g, rtol=1e-9)


def test_demodulate_rejects_non_integer_periods() -> None:
    with pytest.raises(ValueError, match="periods"):
        demodulate(np.zeros(499), 10_000.0, AUTHORS_PLAN)


def test_lockin_reading_to_gradient() -> None:
    amp, lag_deg = 0.01, 15.0
    for g in (150.0, -150.0):
        r_rms = abs(g) * amp / np.sqrt(2)
        theta = -lag_deg + (0.0 if g > 0 else 180.0)
        est = gradient_from_lockin(r_rms, theta, amp, phase_correction_deg=lag_deg)
        assert float(est) == pytest.approx(g)


def _quadratic(v0, grad, hess):
    def f(v):  # v: (n, samples)
        d = v - v0[:, None]
        return 10.0 + grad @ d + 0.5 * np.einsum("it,ij,jt->t", d, hess, d)

    return f


def test_quadratic_intermodulation_does_not_bias_authors_plan() -> None:
    rng = np.random.default_rng(4)
    v0 = np.zeros(5)
    grad = np.array([50.0, -30.0, 80.0, -120.0, 20.0])
    h = rng.normal(scale=2000.0, size=(5, 5))
    hess = h + h.T  # curvature large enough that any collision would show
    f = _quadratic(v0, grad, hess)

    def estimate(plan):
        # Built by hand: build_case_waveforms refuses the colliding plan below.
        t = np.arange(plan.n_samples) / plan.sample_rate_hz
        amps = np.array(plan.amplitudes_v)[:, None]
        v = v0[:, None] + amps * np.sin(2 * np.pi * np.array(plan.frequencies_hz)[:, None] * t)
        x, y = demodulate(f(v), plan.sample_rate_hz, plan)
        return gradient_from_xy(x, y, plan.amplitudes_v)

    s = build_case_waveforms(np.zeros((1, 0)), v0, AUTHORS_PLAN, ramp_s=0.0)
    np.testing.assert_allclose(case_gradients(f(s.voltages_v), s, AUTHORS_PLAN).dI_dV[0], grad)

    np.testing.assert_allclose(estimate(AUTHORS_PLAN), grad, rtol=0.01)
    # The same device with a colliding plan (2*200 = 400 Hz; 200+320=520 Hz) is biased:
    # the test can fail.
    bad = FrequencyPlan((200.0, 400.0, 320.0, 520.0, 760.0), AUTHORS_PLAN.amplitudes_v, 0.05, 1e4)
    assert np.max(np.abs(estimate(bad) - grad) / np.abs(grad)) > 0.05


def test_third_order_product_leaks_into_authors_plan_but_not_a_clean_plan() -> None:
    # I = k V0² V1: the product 2 f0 + f1 = f3 in the authors' plan gives a spurious
    # gradient on control 3, whose true gradient is 0.
    k = 1000.0
    v0 = np.array([0.1, 0.1, 0.0, 0.0, 0.0])

    def est(plan):
        s = build_case_waveforms(np.zeros((1, 0)), v0, plan, ramp_s=0.0)
        v = s.voltages_v
        return case_gradients(k * v[0] ** 2 * v[1], s, plan).dI_dV[0]

    leaky = est(AUTHORS_PLAN)
    assert abs(leaky[3]) > 0.2  # ≈ k A0² A1 / (2 A3) = 0.45 nA/V
    clean_plan = plan_frequencies(
        5, 1e4, 0.05, 80.0, base_hz=200.0, max_hz=2500.0, amplitudes_v=AUTHORS_PLAN.amplitudes_v
    )
    clean_plan.validate(third_order=True)
    clean = est(clean_plan)
    assert np.all(np.abs(clean[2:]) < 1e-9)
    # The true gradients (2 k V0 V1, k V0²), the second with its inherent self-curvature term:
    # the slope in V1 averaged over V0's perturbation is k (V0² + A0²/2).
    a0 = clean_plan.amplitudes_v[0]
    np.testing.assert_allclose(clean[:2], [20.0, k * (0.01 + a0**2 / 2)], rtol=1e-9)


def test_case_gradients_of_a_nonlinear_device_per_case() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(scale=1.5, size=(3, 7))

    def device(v):  # (7, samples) -> nA, with exact gradient at DC points (7,)
        return 100.0 * np.sum(np.cos(w @ v + 0.3), axis=0)

    def exact(v):
        return -100.0 * np.sin(w @ v + 0.3) @ w

    plan = AUTHORS_PLAN
    s = build_case_waveforms(CASES_V * 0.3, CONTROLS_V, plan, ramp_s=0.02, settle_s=0.0)
    res = case_gradients(device(s.voltages_v), s, plan)
    assert res.dI_dV.shape == (4, 5)
    for c in range(4):
        v_dc = np.concatenate([CASES_V[c] * 0.3, CONTROLS_V])
        g = exact(v_dc)[2:]
        np.testing.assert_allclose(res.dI_dV[c], g, atol=0.01 * float(np.linalg.norm(g)))
    with pytest.raises(ValueError, match="samples"):
        case_gradients(np.zeros(10), s, plan)


# ------------------------------------------------------------------ baselines


def test_central_difference_and_spsa_on_a_quadratic() -> None:
    rng = np.random.default_rng(0)
    n = 5
    a = rng.normal(size=(n, n))
    hess = a @ a.T
    b = rng.normal(size=n)
    x0 = rng.normal(size=n)

    def f(x):
        return float(0.5 * x @ hess @ x + b @ x)

    true = hess @ x0 + b
    cd = central_difference(x0, 1e-3, f)
    assert cd.n_measurements == 2 * n
    np.testing.assert_allclose(cd.gradient, true, rtol=1e-6, atol=1e-9)  # exact for quadratics

    def f_batch(points):
        return np.array([[f(p), 2 * f(p)] for p in points])  # two "cases"

    cdb = central_difference(x0, 1e-3, measure_batch=f_batch)
    assert cdb.gradient.shape == (2, n)
    np.testing.assert_allclose(cdb.gradient, [true, 2 * true], rtol=1e-6)

    one = spsa(x0, 1e-3, np.random.default_rng(1), f)
    assert one.n_measurements == 2
    # One draw on a quadratic: ĝ = (Δ·g) Δ exactly, so every |ĝ_j| is |Δ·g| with Δ = ±sign(ĝ).
    delta = np.sign(one.gradient)
    np.testing.assert_allclose(np.abs(one.gradient), abs(delta @ true), rtol=1e-6)
    # Many draws: unbiased, E[Δ Δᵀ] = I.
    many = spsa(x0, 1e-3, np.random.default_rng(2), f, n_draws=4000)
    assert many.n_measurements == 8000
    np.testing.assert_allclose(many.gradient, true, atol=0.1 * float(np.linalg.norm(true)))
    assert np.linalg.norm(one.gradient - true) > 1e-3  # a single draw is not the gradient
    manyb = spsa(x0, 1e-3, np.random.default_rng(2), measure_batch=f_batch, n_draws=4000)
    np.testing.assert_allclose(manyb.gradient[0], many.gradient, rtol=1e-9)
    with pytest.raises(ValueError, match="exactly one"):
        central_difference(x0, 1e-3)
    with pytest.raises(ValueError, match="step_v"):
        spsa(x0, 0.0, rng, f)
