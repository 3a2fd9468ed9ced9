"""HGE trainer on an analytic toy device: finds XOR, stays in range, resumes exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from labrig.algorithms.hge import AUTHORS_PLAN, build_case_waveforms
from labrig.algorithms.hge_trainer import (
    HgeConfig,
    HgeTrainer,
    Measurement,
    parallel_measurement,
)
from labrig.algorithms.tasks import boolean_task, input_voltages, separable

# Toy device: 2 inputs (normalised, 0..1 V) + 5 controls (-1..1 V) -> current in nA.
#   I = Σ_k a_k cos(z_k),  z = [π(x0 + x1) + φ0, π x0 + φ1, π x1 + φ2, φ3],  φ = M c.
# On the Boolean cube cos(π x) = ±1, so the four terms set the coefficients of s0·s1, s0, s1
# and 1 (s = cos(π x)): every gate is reachable, the output is non-monotonic in every
# electrode, and XOR needs the s0·s1 term to dominate, which random controls rarely give.
_M = np.random.default_rng(3).uniform(-2.0, 2.0, size=(4, 5))
_A = np.array([25.0, 40.0, 40.0, 20.0])
CONTROL_RANGES = ((-1.0, 1.0),) * 5


def toy_current(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``v`` (..., 7) -> current (...) nA and exact ∂I/∂controls (..., 5) nA/V."""
    x0, x1, c = v[..., 0], v[..., 1], v[..., 2:]
    phi = c @ _M.T
    inputs = np.stack([np.pi * (x0 + x1), np.pi * x0, np.pi * x1, 0.0 * x0], axis=-1)
    z = inputs + phi
    return np.sum(_A * np.cos(z), axis=-1), -(_A * np.sin(z)) @ _M


def exact_measure(gate: str, clip_na: float = 1e9):
    vin = input_voltages(boolean_task(gate).case_inputs01, [(0.0, 1.0), (0.0, 1.0)])

    def measure(controls_v: np.ndarray) -> Measurement:
        v = np.concatenate([vin, np.tile(controls_v, (vin.shape[0], 1))], axis=1)
        current, grad = toy_current(v)
        return Measurement(current, grad, clipped=bool(np.abs(current).max() >= clip_na))

    return measure


def test_xor_is_rare_for_random_controls() -> None:
    # The reason the trainer tests below mean something: random search rarely finds XOR.
    rng = np.random.default_rng(0)
    c = rng.uniform(-1.0, 1.0, size=(5000, 5))
    vin = boolean_task("XOR").case_inputs01
    v = np.concatenate([np.broadcast_to(vin, (5000, 4, 2)), np.repeat(c[:, None], 4, 1)], 2)
    current, _ = toy_current(v)
    rate = np.mean([separable(i, boolean_task("XOR").targets)[0] for i in current])
    assert rate < 0.01


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_trainer_finds_xor_and_stays_in_range(optimizer: str) -> None:
    task = boolean_task("XOR")
    lr = 0.02 if optimizer == "sgd" else 0.05
    cfg = HgeConfig(
        control_ranges_v=CONTROL_RANGES, optimizer=optimizer, learning_rate=lr, probes_per_start=0
    )
    for seed in range(4):
        records: list[dict] = []
        trainer = HgeTrainer(
            exact_measure("XOR"), task.targets, cfg, seed=seed, on_iteration=records.append
        )
        result = trainer.run()
        assert result.found, f"seed {seed}"
        assert separable(result.best_outputs, task.targets)[0]
        assert records[-1]["done"] and records[-1]["found"]
        assert result.n_measurements == len(records) <= 300
        losses = [r["loss"] for r in records if r["init"] == result.best_init]
        assert result.best_loss < losses[0]
        for r in records:
            assert np.all(np.abs(r["controls_v"]) <= 1.0)
        # The reported best really is what the device gives there.
        np.testing.assert_allclose(
            exact_measure("XOR")(result.best_controls_v).outputs, result.best_outputs
        )


def test_trainer_descends_the_chain_rule_gradient() -> None:
    # One SGD step must equal controls - lr * Σ_c dL/dI_c dI_c/dV (before clipping).
    from labrig.algorithms.losses import corsig

    task = boolean_task("XOR")
    cfg = HgeConfig(control_ranges_v=((-10.0, 10.0),) * 5, learning_rate=1e-3, probes_per_start=0)
    records: list[dict] = []
    trainer = HgeTrainer(
        exact_measure("XOR"), task.targets, cfg, seed=5, on_iteration=records.append
    )
    trainer.step()
    m = exact_measure("XOR")(records[0]["controls_v"])
    _, dl = corsig(m.outputs, task.targets)
    expected = records[0]["controls_v"] - 1e-3 * dl @ m.dI_dV
    np.testing.assert_allclose(np.asarray(trainer.controls_v), expected, rtol=1e-12)
    np.testing.assert_allclose(records[0]["gradient"], dl @ m.dI_dV)


def test_resume_from_mid_run_state_gives_the_same_result() -> None:
    task = boolean_task("XOR")
    # Adam (optimiser state matters), a tight saturation limit (restarts draw from the rng)
    # and an unreachable found criterion so the run spans several initialisations.
    cfg = HgeConfig(
        control_ranges_v=CONTROL_RANGES,
        optimizer="adam",
        learning_rate=0.05,
        max_iterations=25,
        n_initializations=3,
    )
    measure = exact_measure("XOR", clip_na=80.0)

    def never(out, tgt):
        return False, 0.0

    full = HgeTrainer(measure, task.targets, cfg, seed=11, found_fn=never)
    done = full.run()
    assert done.n_measurements == 75 and done.n_restarts > 0

    first = HgeTrainer(measure, task.targets, cfg, seed=11, found_fn=never)
    first.run(max_steps=37)  # mid-way through the second initialisation
    assert not first.done and first.init_index == 1
    state = copy.deepcopy(first.state_dict())
    resumed = HgeTrainer(measure, task.targets, cfg, seed=999, found_fn=never)
    resumed.load_state_dict(state)
    again = resumed.run()
    np.testing.assert_array_equal(again.best_controls_v, done.best_controls_v)
    assert again.best_loss == done.best_loss
    assert (again.n_measurements, again.n_restarts) == (done.n_measurements, done.n_restarts)
    assert (again.best_init, again.best_iteration) == (done.best_init, done.best_iteration)


def test_clipped_measurement_restarts_at_random() -> None:
    task = boolean_task("AND")
    calls: list[np.ndarray] = []
    inner = exact_measure("AND")

    def measure(c: np.ndarray) -> Measurement:
        calls.append(c)
        m = inner(c)
        return Measurement(m.outputs, m.dI_dV, clipped=len(calls) <= 2)

    records: list[dict] = []
    cfg = HgeConfig(control_ranges_v=CONTROL_RANGES)
    trainer = HgeTrainer(measure, task.targets, cfg, seed=0, on_iteration=records.append)
    trainer.step()
    trainer.step()
    trainer.step()
    assert [r["restart"] for r in records] == [True, True, False]
    assert np.isnan(records[0]["loss"]) and np.isfinite(records[2]["loss"])
    assert trainer.n_restarts == 2
    assert not np.allclose(calls[0], calls[1]) and not np.allclose(calls[1], calls[2])


def test_stops_on_iteration_limit_and_on_loss_threshold() -> None:
    task = boolean_task("XOR")
    cfg = HgeConfig(control_ranges_v=CONTROL_RANGES, max_iterations=7, n_initializations=2)
    trainer = HgeTrainer(
        exact_measure("XOR"), task.targets, cfg, seed=0, found_fn=lambda o, t: (False, 0.0)
    )
    result = trainer.run()
    assert result.n_measurements == 14 and trainer.done and trainer.step() is None
    cfg = HgeConfig(control_ranges_v=CONTROL_RANGES, loss_threshold=1e9, stop_when_found=False)
    result = HgeTrainer(exact_measure("XOR"), task.targets, cfg, seed=0).run()
    assert result.n_measurements == 1


def test_bad_configuration_and_measurement_are_rejected() -> None:
    with pytest.raises(ValueError, match="low < high"):
        HgeConfig(control_ranges_v=((1.0, -1.0),)).validate()
    with pytest.raises(ValueError, match="optimiser"):
        HgeTrainer(
            exact_measure("XOR"),
            [0, 1, 1, 0],
            HgeConfig(control_ranges_v=CONTROL_RANGES, optimizer="lbfgs"),
        )
    bad = HgeTrainer(
        lambda c: Measurement(np.zeros(4), np.zeros((4, 3))),
        [0, 1, 1, 0],
        HgeConfig(control_ranges_v=CONTROL_RANGES),
    )
    with pytest.raises(ValueError, match="dI_dV"):
        bad.step()


def test_parallel_hge_through_waveforms_trains_xor() -> None:
    # End to end on the toy: perturbation waveforms with the authors' plan, the toy evaluated
    # sample by sample, demodulated gradients — no exact gradient anywhere.
    task = boolean_task("XOR")
    vin = input_voltages(task.case_inputs01, [(0.0, 1.0), (0.0, 1.0)])
    rng = np.random.default_rng(0)

    def play_clean(schedule) -> np.ndarray:
        return toy_current(schedule.voltages_v.T)[0]

    def play(schedule) -> np.ndarray:
        # White read-out noise of 0.2 nA rms: about 1e-5 nA²/Hz over a 5 kHz bandwidth.
        current = play_clean(schedule)
        return current + 0.2 * rng.normal(size=current.size)

    def hge_measure(play, saturation_limit: float | None = None):  # type: ignore[no-untyped-def]
        # The procedure's path: build the schedule, play it, parallel_measurement on the trace.
        def measure(controls_v: np.ndarray) -> Measurement:
            schedule = build_case_waveforms(vin, controls_v, AUTHORS_PLAN, ramp_s=0.02)
            trace = play(schedule)
            clipped = saturation_limit is not None and np.max(np.abs(trace)) >= saturation_limit
            return parallel_measurement(trace, schedule, AUTHORS_PLAN, clipped=bool(clipped))

        return measure

    at = np.full(5, 0.2)
    exact = exact_measure("XOR")(at)
    clean = hge_measure(play_clean)(at)
    np.testing.assert_allclose(clean.dI_dV, exact.dI_dV, atol=0.002 * np.abs(exact.dI_dV).max())
    np.testing.assert_allclose(clean.outputs, exact.outputs, atol=0.05)  # ≈ ¼ Σ I'' A² bias
    measure = hge_measure(play, saturation_limit=350.0)
    # The authors' amplitudes are ≤ 30 mV: keep V ± A inside the ±1 V range.
    cfg = HgeConfig(control_ranges_v=((-0.97, 0.97),) * 5)
    found = [HgeTrainer(measure, task.targets, cfg, seed=s).run().found for s in range(3)]
    assert all(found)


def _linear_probe_trainer(**cfg_kw: object) -> tuple[HgeTrainer, list[np.ndarray]]:
    """A device whose loss is -c0 (higher control 0 is better), never 'found'."""
    seen: list[np.ndarray] = []

    def measure(c: np.ndarray) -> Measurement:
        seen.append(c.copy())
        jac = np.zeros((2, 3))
        jac[1, 0] = 1.0
        return Measurement(np.array([0.0, c[0]]), jac)

    def loss(out: np.ndarray, tgt: np.ndarray) -> tuple[float, np.ndarray]:
        return float(-out[1]), np.array([0.0, -1.0])

    settings: dict[str, object] = {"learning_rate": 0.01, "max_iterations": 20, **cfg_kw}
    cfg = HgeConfig(
        control_ranges_v=((-1.0, 1.0),) * 3,
        optimizer="sgd",
        n_initializations=2,
        **settings,  # type: ignore[arg-type]
    )
    trainer = HgeTrainer(
        measure, [0, 1], cfg, seed=4, loss_fn=loss, found_fn=lambda o, t: (False, 0.0)
    )
    return trainer, seen


def test_probes_start_descent_from_the_best_random_probe() -> None:
    trainer, seen = _linear_probe_trainer(probes_per_start=6, max_iterations=24)
    for _ in range(7):
        trainer.step()
    probes = np.array(seen[:6])
    assert len({tuple(p) for p in probes}) == 6  # six distinct random points
    best = probes[np.argmax(probes[:, 0])]
    np.testing.assert_allclose(
        seen[6], best + np.array([0.01, 0.0, 0.0])
    )  # one SGD step from the best
    # state round trip in the middle of probing gives the same continuation
    t2, _ = _linear_probe_trainer(probes_per_start=6, max_iterations=24)
    for _ in range(3):
        t2.step()
    state = copy.deepcopy(t2.state_dict())
    t3, seen3 = _linear_probe_trainer(probes_per_start=6, max_iterations=24)
    t3.load_state_dict(state)
    for _ in range(4):
        t3.step()
    np.testing.assert_allclose(seen3[-1], seen[6])
    with pytest.raises(ValueError, match="probes_per_start"):
        HgeConfig(control_ranges_v=((0.0, 1.0),), probes_per_start=-1).validate()


def test_stalled_starts_end_early_within_the_same_budget() -> None:
    trainer, _ = _linear_probe_trainer(stall_iterations=4, learning_rate=0.5, probes_per_start=0)
    # Control 0 reaches its bound (loss -1) in a few steps and the loss stops improving: each
    # start ends 4 iterations later and a new one begins; the budget stays 2 x 20 measurements.
    trainer.run()
    assert trainer.n_measurements == 40
    assert trainer.init_index > 2  # more starts than the two the plan gives
