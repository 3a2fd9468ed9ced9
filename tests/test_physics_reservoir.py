"""Delay-loop reservoir: delay, feedback, waveform vs twin, low-pass, noise, derivatives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labrig.physics.reservoir import DelayReservoir, ReservoirParams

FS = 250e6  # 10 AWG points per 40 ns node


def node_reads(v: np.ndarray, points_per_node: int, n_slots: int) -> np.ndarray:
    """Mean of the central half of each slot of a trace sampled at an integer rate per node."""
    q = points_per_node // 4
    return v[: n_slots * points_per_node].reshape(n_slots, points_per_node)[:, q:-q].mean(axis=1)


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="node_count"):
        ReservoirParams(node_count=0)
    with pytest.raises(ValueError, match="pd_bandwidth_hz"):
        ReservoirParams(pd_bandwidth_hz=-1.0)
    with pytest.raises(ValueError, match="noise_v_rms"):
        ReservoirParams(noise_v_rms=-1e-3)
    p = ReservoirParams(node_count=10, desync_nodes=2, node_duration_s=1e-8)
    assert p.delay_s == pytest.approx(12e-8)


def test_single_bright_node_echoes_after_one_delay_with_feedback_gain() -> None:
    p = ReservoirParams(node_count=20, desync_nodes=1)
    res = DelayReservoir(p)
    bias = 1.0
    slots = 3 * (p.node_count + p.desync_nodes)
    levels = np.full(slots, -bias)  # modulator at null: dark loop
    levels[0] = 2.0
    v = res.respond(np.repeat(levels, 10), FS, bias_v=bias)
    x = node_reads(v, 10, slots)
    kappa, eta = p.kappa_rad_per_v, p.eta_v
    x0 = eta * math.sin(kappa * (2.0 + bias)) ** 2
    echo = eta * math.sin(p.alpha * x0) ** 2  # fed back once, drive at null
    D = p.node_count + p.desync_nodes
    assert x[0] == pytest.approx(x0, rel=1e-3)  # settled within the read window
    assert x[D] == pytest.approx(echo, rel=1e-2)
    assert echo > 0.1
    # Nothing anywhere else but the second (quadratically weaker) echo.
    others = np.delete(x, [0, D, 2 * D])
    assert np.abs(others).max() < 1e-3
    assert x[2 * D] == pytest.approx(eta * math.sin(p.alpha * echo) ** 2, rel=2e-2)


def test_waveform_plateaus_match_node_level_twin() -> None:
    p = ReservoirParams(node_count=30, desync_nodes=2)
    res = DelayReservoir(p)
    rng = np.random.default_rng(0)
    J = rng.uniform(-3.0, 3.0, size=(3, p.node_count))
    x_twin = res.layer_nodes(J, periods=4)
    for b in range(3):
        v, fs_internal = res.respond_internal(np.repeat(np.tile(J[b], 4), 10), FS)
        ppn = round(fs_internal * p.node_duration_s)
        x_wave = node_reads(v, ppn, 4 * p.node_count)[-p.node_count :]
        np.testing.assert_allclose(x_wave, x_twin[b], atol=5e-4)
    # The loop matters: without feedback the states differ.
    no_fb = DelayReservoir(ReservoirParams(node_count=30, desync_nodes=2, feedback_gain=0.0))
    assert np.abs(no_fb.layer_nodes(J, periods=4) - x_twin).max() > 0.1


def test_photodetector_low_pass_time_constant() -> None:
    f_pd = 20e6
    res = DelayReservoir(ReservoirParams(feedback_gain=0.0, pd_bandwidth_hz=f_pd))
    fs = 1e9
    bias = 1.0
    drive = np.full(2000, -bias)
    drive[200:] = 2.0  # step at t = 200 ns
    v = res.respond(drive, fs, bias_v=bias)
    final = v[-1]
    tau_pd = 1.0 / (2 * np.pi * f_pd)
    k = 200 + round(tau_pd * fs)
    assert v[k] == pytest.approx((1 - np.exp(-1)) * final, rel=0.03)
    # The twin's node-to-node inertia is the same exponential over one node.
    assert res.params.inertia == pytest.approx(np.exp(-res.params.node_duration_s / tau_pd))


def test_noise_is_seeded_and_has_the_stated_rms() -> None:
    p = ReservoirParams(feedback_gain=0.0, noise_v_rms=0.01)
    res = DelayReservoir(p)
    drive = np.zeros(200_000)
    a = res.respond(drive, FS, rng=np.random.default_rng(7))
    b = res.respond(drive, FS, rng=np.random.default_rng(7))
    c = res.respond(drive, FS, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    clean = res.respond(drive, FS)
    assert np.std(a - clean) == pytest.approx(0.01, rel=0.1)
    # Twin noise: same seed, same result; noise-free without rng.
    J = np.zeros((2, p.node_count))
    n1 = res.layer_nodes(J, rng=np.random.default_rng(1))
    n2 = res.layer_nodes(J, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(n1, n2)
    assert np.std(n1 - res.layer_nodes(J)) == pytest.approx(0.01, rel=0.3)


@pytest.mark.parametrize("bandwidth", [100e6, 5e6])
def test_twin_derivatives_match_finite_differences(bandwidth: float) -> None:
    res = DelayReservoir(ReservoirParams(node_count=8, desync_nodes=1, pd_bandwidth_hz=bandwidth))
    rng = np.random.default_rng(2)
    J = rng.uniform(-3, 3, size=(3, 8))
    g = rng.normal(size=(3, 8))
    eps = 1e-6
    fd = np.zeros_like(J)
    fd_jac = np.zeros((3, 8, 8))
    for i in range(8):
        Jp, Jm = J.copy(), J.copy()
        Jp[:, i] += eps
        Jm[:, i] -= eps
        diff = (res.layer_nodes(Jp) - res.layer_nodes(Jm)) / (2 * eps)
        fd_jac[:, :, i] = diff
        fd[:, i] = (diff * g).sum(axis=1)
    np.testing.assert_allclose(res.layer_vjp(J, g), fd, atol=1e-7)
    np.testing.assert_allclose(res.layer_jacobian(J), fd_jac, atol=1e-7)
    np.testing.assert_allclose(
        res.layer_derivative_diag(J), np.diagonal(fd_jac, axis1=1, axis2=2), atol=1e-7
    )
    # The ring couples nodes: off-diagonal sensitivities are not zero.
    assert np.abs(fd_jac - np.einsum("bii->bi", fd_jac)[:, :, None] * np.eye(8)).max() > 1e-2
    # Sequences, one period per step.
    Js = rng.uniform(-3, 3, size=(2, 4, 8))
    gs = rng.normal(size=(2, 4, 8))
    vjp = res.layer_vjp(Js, gs)
    for idx in [(0, 0, 0), (1, 2, 5), (1, 3, 7)]:
        Jp, Jm = Js.copy(), Js.copy()
        Jp[idx] += eps
        Jm[idx] -= eps
        num = ((res.layer_nodes(Jp) - res.layer_nodes(Jm)) * gs).sum() / (2 * eps)
        assert vjp[idx] == pytest.approx(num, abs=1e-7)


def test_input_errors() -> None:
    res = DelayReservoir(ReservoirParams(node_count=10))
    with pytest.raises(ValueError, match="1-D"):
        res.respond(np.zeros((2, 5)), FS)
    with pytest.raises(ValueError, match="NaN"):
        res.respond(np.array([0.0, np.nan]), FS)
    with pytest.raises(ValueError, match="under 2 samples"):
        DelayReservoir(ReservoirParams(node_count=1, internal_rate_hz=0)).respond(np.zeros(10), 1e6)
    with pytest.raises(ValueError, match="node_count=10"):
        res.layer_nodes(np.zeros((2, 9)))
    with pytest.raises(ValueError, match="periods"):
        res.layer_nodes(np.zeros((2, 10)), periods=0)


@pytest.mark.parametrize(
    ("params", "fs"),
    [
        (ReservoirParams(node_duration_s=40e-9, internal_rate_hz=250e6), 25e6),  # m = 10
        (ReservoirParams(), FS),  # 1 GSa/s internal, m = 4
        (ReservoirParams(node_duration_s=37.3e-9, desync_nodes=3, bias_v=2.5), FS),  # fractional
    ],
)
def test_compiled_loop_matches_the_numpy_reference(params: ReservoirParams, fs: float) -> None:
    pytest.importorskip("numba")
    res = DelayReservoir(params)
    # Drives well beyond +-V_pi exercise the kernel's own sin^2 over many half-periods.
    drive = np.random.default_rng(4).uniform(-12.0, 12.0, size=150_000)
    for seed in (None, 7):
        out = {}
        for method in ("kernel", "reference"):
            rng = None if seed is None else np.random.default_rng(seed)
            out[method], _ = res.respond_internal(drive, fs, rng=rng, method=method)
        # Same physics, same noise numbers: equal to rounding.
        np.testing.assert_allclose(out["kernel"], out["reference"], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="method"):
        res.respond(drive, fs, method="fast")  # type: ignore[arg-type]


def test_bench_reads_the_awg_once_per_held_sample_and_matches_the_dense_grid() -> None:
    from labrig.sim.bench import Bench
    from labrig.sim.devices import ReservoirPart
    from labrig.sim.keysight_33500b import Keysight33500BEmulator

    bench = Bench(seed=1)
    awg = Keysight33500BEmulator("awg", bench)
    params = ReservoirParams(node_duration_s=40e-9, internal_rate_hz=250e6, noise_v_rms=0.0)
    part = ReservoirPart(bench, DelayReservoir(params))
    bench.connect("reservoir.rf", "awg.ch1")
    wave = np.random.default_rng(2).uniform(-1.0, 1.0, 4000)  # 160 us at 25 MSa/s
    awg.feed(("SOUR1:DATA:ARB W," + ",".join(f"{v:.6f}" for v in wave) + "\n").encode())
    awg.feed(b"SOUR1:FUNC:ARB W;:SOUR1:FUNC ARB;:SOUR1:FUNC:ARB:SRAT 25e6\n")
    awg.feed(b"SOUR1:VOLT 3;:OUTP1 ON;:SOUR1:BURS:MODE TRIG;:SOUR1:BURS:NCYC 1\n")
    awg.feed(b"TRIG1:SOUR BUS;:SOUR1:BURS:STAT ON\n")
    bench.clock.advance(1e-3)
    t_trg = bench.clock.now
    awg.feed(b"*TRG\n")
    assert awg.held_grid("ch1", t_trg - 1e-4, t_trg + 2e-4) == (pytest.approx(t_trg), 25e6)
    calls: list[int] = []
    awg_output = awg.output

    def counted(port: str, t: np.ndarray) -> np.ndarray:
        calls.append(t.size)
        return awg_output(port, t)

    awg.output = counted  # type: ignore[method-assign]
    # A scope record at 100 MSa/s from the trigger: the dense path's 250 MSa/s grid, which
    # starts a whole number of nodes earlier, then has a step edge on every AWG edge too.
    t = t_trg + np.arange(16_000) / 100e6
    held = part.output("pd", t)
    # The loop's memory (about 3000 nodes) plus the record (4000 nodes): one read per sample.
    assert calls == [pytest.approx(7000, abs=100)]
    part._cache = None
    part._held_grid = lambda t0, t1: None  # type: ignore[method-assign]
    dense = part.output("pd", t)
    assert calls[1] == pytest.approx(10 * calls[0], abs=100)  # every 4 ns step
    np.testing.assert_allclose(held, dense, rtol=0, atol=1e-9)
    assert float(np.ptp(held)) > 0.3  # a live signal, not a dark loop
