"""Encode -> simulated loop + scope -> decode recovers the twin's node states."""

from __future__ import annotations

import numpy as np
import pytest

from labrig.algorithms.reservoir_io import FrameSpec, chunk, decode, decode_detailed, encode
from labrig.physics.reservoir import DelayReservoir, ReservoirParams

N = 20
BIAS = 1.0
BRIGHT = 2.0


def make(n: int = N) -> tuple[DelayReservoir, FrameSpec]:
    p = ReservoirParams(node_count=n, desync_nodes=1)
    spec = FrameSpec(
        node_count=n,
        node_duration_s=p.node_duration_s,
        desync_nodes=1,
        guard_drive_v=-BIAS,  # modulator null: sin^2(kappa (drive + bias)) = 0
        bright_drive_v=BRIGHT,
        drive_offset_v=0.5,
        volts_per_unit=2.0,
    )
    return DelayReservoir(p), spec


def scope_capture(
    res: DelayReservoir,
    drive: np.ndarray,
    fs_awg: float,
    fs_scope: float,
    duration_s: float,
    rng: np.random.Generator,
    gain: float = 0.8,
    offset: float = 0.05,
) -> tuple[np.ndarray, float]:
    """The PD waveform digitised by a scope that started a random time before the AWG, with its
    own rate, vertical gain/offset error and noise. Returns the trace and the true start."""
    v, fs_int = res.respond_internal(drive, fs_awg, BIAS, rng)
    lead = rng.uniform(0.5e-6, 3e-6)
    n = int((duration_s + lead) * fs_scope) + 50
    t = -lead + np.arange(n) / fs_scope
    trace = gain * np.interp(t, np.arange(v.size) / fs_int, v) + offset
    return trace + rng.normal(0.0, 2e-3, n), lead


def cal_states(res: DelayReservoir) -> tuple[float, float]:
    # First period from a dark loop: no feedback yet, so the cal plateaus are the bare transfer.
    x = res.layer_nodes(
        np.array([[-BIAS] * res.params.node_count, [BRIGHT] * res.params.node_count]),
        periods=1,
        bias_v=BIAS,
    )
    return float(x[0, 0]), float(x[1, 0])


@pytest.mark.parametrize("fs_scope", [640e6, 2.5e9, 100e6])
def test_round_trip_recovers_twin_states(fs_scope: float) -> None:
    res, spec = make()
    rng = np.random.default_rng(int(fs_scope) % 1000)
    J = rng.uniform(-1.75, 1.25, size=(12, N))
    fs_awg = 250e6
    drive, layout = encode(J, spec, fs_awg)
    assert drive.size == layout.n_points == spec.waveform_points(12, fs_awg)
    trace, lead = scope_capture(res, drive, fs_awg, fs_scope, layout.duration_s, rng)
    d = decode_detailed(trace, fs_scope, layout, cal_states=cal_states(res))
    assert d.start_s == pytest.approx(lead, abs=2.0 / fs_scope + 1e-9)
    assert d.sync_quality > 0.8
    expected = res.layer_nodes(0.5 + 2.0 * J, periods=spec.settle_periods, bias_v=BIAS)
    err = d.states - expected
    assert np.sqrt(np.mean(err**2)) < 0.005  # PD noise 5 mV circulates, scope noise 2 mV
    assert np.abs(err).max() < 0.025
    # The states really vary: a decoder returning a constant would fail above.
    assert expected.std() > 0.2


def test_without_calibration_states_are_trace_volts() -> None:
    res, spec = make()
    rng = np.random.default_rng(3)
    J = rng.uniform(-1.75, 1.25, size=(3, N))
    drive, layout = encode(J, spec, 250e6)
    trace, _ = scope_capture(res, drive, 250e6, 1e9, layout.duration_s, rng, gain=0.5, offset=0.2)
    raw = decode(trace, 1e9, layout)
    expected = res.layer_nodes(0.5 + 2.0 * J, periods=spec.settle_periods, bias_v=BIAS)
    np.testing.assert_allclose(raw, 0.2 + 0.5 * expected, atol=0.02)


def test_samples_are_independent_of_their_neighbours() -> None:
    # The guard periods reset the loop: a sample decodes the same whatever precedes it.
    res, spec = make()
    rng = np.random.default_rng(4)
    J = rng.uniform(-1.75, 1.25, size=(3, N))
    cal = cal_states(res)
    out = []
    for batch in (J, J[::-1]):
        drive, layout = encode(batch, spec, 250e6)
        v, fs_int = res.respond_internal(drive, 250e6, BIAS)
        trace = np.interp(
            np.arange(int(layout.duration_s * 1e9)) / 1e9, np.arange(v.size) / fs_int, v
        )
        out.append(decode(np.concatenate([np.zeros(100), trace]), 1e9, layout, cal))
    np.testing.assert_allclose(out[0], out[1][::-1], atol=1e-4)


def test_chunk_fits_memories_and_covers_batch() -> None:
    spec = FrameSpec(node_count=100, node_duration_s=40e-9)
    fs_awg, fs_scope = 250e6, 5e9
    slices = chunk(1000, spec, fs_awg, fs_scope, 1_000_000, 4_000_000, scope_margin_s=1e-6)
    covered = np.concatenate([np.arange(1000)[s] for s in slices])
    np.testing.assert_array_equal(covered, np.arange(1000))
    n = slices[0].stop - slices[0].start
    assert spec.waveform_points(n, fs_awg) <= 1_000_000
    assert (spec.duration_s(n) + 1e-6) * fs_scope <= 4_000_000
    # One more sample would not fit the scope.
    assert (spec.duration_s(n + 1) + 1e-6) * fs_scope > 4_000_000
    assert chunk(0, spec, fs_awg, fs_scope) == []
    with pytest.raises(ValueError, match="one sample needs"):
        chunk(10, spec, fs_awg, fs_scope, awg_max_points=1000)


def test_encode_and_spec_errors() -> None:
    _, spec = make()
    with pytest.raises(ValueError, match="AWG window"):
        encode(np.full((1, N), 10.0), spec, 250e6)
    with pytest.raises(ValueError, match="node_count=20"):
        encode(np.zeros((2, N + 1)), spec, 250e6)
    with pytest.raises(ValueError, match="AWG points"):
        encode(np.zeros((2, N)), spec, 10e6)
    with pytest.raises(ValueError, match="two loop delays"):
        FrameSpec(node_count=N, node_duration_s=40e-9, guard_periods=1)
    with pytest.raises(ValueError, match="read_window"):
        FrameSpec(node_count=N, node_duration_s=40e-9, read_window=(0.6, 0.4))


def test_decode_errors() -> None:
    res, spec = make()
    J = np.zeros((2, N))
    drive, layout = encode(J, spec, 250e6)
    rng = np.random.default_rng(5)
    trace, _ = scope_capture(res, drive, 250e6, 1e9, layout.duration_s, rng)
    with pytest.raises(ValueError, match="ends before the waveform"):
        decode(trace[: trace.size // 2], 1e9, layout)
    with pytest.raises(ValueError, match="sync not found"):
        decode(rng.normal(size=trace.size), 1e9, layout)
    with pytest.raises(ValueError, match="NaN"):
        decode(np.full(trace.size, np.nan), 1e9, layout)


def test_sequence_round_trip_matches_twin_periods() -> None:
    """A (batch, T, N) sequence: one drive per period, no dark between steps, all T read; the
    decoded states follow the twin's per-period states of the same sequence."""
    from labrig.physics.reservoir import DelayReservoir, ReservoirParams

    N, T = 20, 4
    params = ReservoirParams(node_count=N, noise_v_rms=0.0)
    spec = FrameSpec(
        node_count=N,
        node_duration_s=params.node_duration_s,
        desync_nodes=params.desync_nodes,
        settle_periods=T,
        guard_periods=3,
        guard_drive_v=-params.bias_v,
        bright_drive_v=params.v_pi - params.bias_v,
    )
    fs = 4.0 / params.node_duration_s
    J = np.random.default_rng(0).uniform(-1.0, 1.0, size=(3, T, N))
    wave, layout = encode(J, spec, fs)
    assert layout.sequence and layout.read_periods == T
    res = DelayReservoir(params)
    trace = res.respond(wave, fs)
    states = decode(trace, fs, layout)
    assert states.shape == (3, T, N)
    twin = res.layer_nodes(J)
    # The waveform and the twin differ at slot edges (the PD low-pass, as in the static
    # tests), more where every period brings a new drive; the per-period pattern must agree.
    np.testing.assert_allclose(states, twin, atol=0.12)
    assert np.corrcoef(states.ravel(), twin.ravel())[0, 1] > 0.99
    # Memory across steps: period 1 differs from what a dark loop would give for its drive.
    assert np.abs(states[:, 1] - res.layer_nodes(J[:, 1], periods=1)).max() > 0.05
