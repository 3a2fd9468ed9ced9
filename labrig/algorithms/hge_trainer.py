"""The HGE training loop, pure and hardware-agnostic: the device is an injected callable.

Each iteration measures the device at the current control voltages — one output and one
gradient row ``∂I_c/∂V`` per input case (from HGE, or from any other estimator) — and takes a
gradient step on the loss by the chain rule over cases,

    ∂L/∂V_j = Σ_c ∂L/∂I_c · ∂I_c/∂V_j ,

then projects the controls back into their ranges (projected gradient descent: the box is part
of the problem, not an input error). When the read-out saturates (``Measurement.clipped``) the
gradient is meaningless, so the controls are redrawn at random ("random restart"). Training
stops when the gate is found (one threshold separates the cases), when the loss falls to a
threshold, or after ``max_iterations`` in each of ``n_initializations`` random starts; the best
point seen is kept (found beats not found, then lower loss).

Typical use by a procedure::

    measure = <a MeasureFn: the hge procedure plays the schedule and calls parallel_measurement>
    trainer = HgeTrainer(measure, task.targets, HgeConfig(control_ranges_v=ranges), seed=7,
                         on_iteration=record.append_iteration)
    result = trainer.run()

Checkpoint and resume: :meth:`HgeTrainer.state_dict` (call it from ``on_iteration``: it is the
state *after* that iteration) and :meth:`HgeTrainer.load_state_dict` on a trainer built with the
same measure, targets and config; the resumed run continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from labrig.algorithms.hge import CaseSchedule, FrequencyPlan, case_gradients
from labrig.algorithms.losses import LossFn, get_loss
from labrig.algorithms.optim import Optimizer, make_optimizer
from labrig.algorithms.tasks import separable

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Measurement:
    """What one device measurement returns to the trainer.

    ``outputs`` ``(C,)`` — output per input case (nA for ``corsig``); ``dI_dV`` ``(C, n_controls)``
    — ``∂I_c/∂V_j`` per case; ``clipped`` — the read-out saturated somewhere in the measurement.
    """

    outputs: FloatArray
    dI_dV: FloatArray
    clipped: bool = False


MeasureFn = Callable[[FloatArray], Measurement]
FoundFn = Callable[[FloatArray, FloatArray], tuple[bool, float]]


@dataclass(frozen=True)
class HgeConfig:
    """Settings of an HGE training run (defaults: the authors' 2020 settings, except
    ``probes_per_start``: 20, where the authors' plan is 0 — see ``bench_hge_gates.py
    --model-study``: on 8 devices it raises the realisable functions found from 76 % to 92 %).

    ``control_ranges_v``: ``(low, high)`` per control — give the station's range shrunk by the
    perturbation amplitude so ``V ± A`` stays inside. ``optimizer``: ``"sgd"`` or ``"adam"``.
    ``loss``: a name from :mod:`labrig.algorithms.losses`. ``loss_threshold``: stop when the
    loss is at or below it (None: never). ``stop_when_found``: stop when the found criterion
    holds (default :func:`~labrig.algorithms.tasks.separable` with ``min_gap``).
    ``stall_iterations``: 0 (the authors' plan) runs every start for ``max_iterations``; N > 0
    ends a start early when its best loss has not improved by 1 % in N iterations and spends
    the rest of the budget — ``max_iterations × n_initializations`` measurements in all — on
    fresh random starts (a stalled start sits in a basin where the inputs barely move the
    output; another start is cheaper than waiting there). ``probes_per_start``: each start
    first measures this many random control sets (at most a quarter of ``max_iterations``;
    iterations of the start, judged by the found criterion like any other) and descends from
    the one with the lowest loss: a rare function occupies ~1 % of the control box on many
    devices, and a start in the wrong basin never leaves it.
    """

    control_ranges_v: tuple[tuple[float, float], ...]
    learning_rate: float = 0.02
    optimizer: str = "sgd"
    max_iterations: int = 100
    n_initializations: int = 3
    loss: str = "corsig"
    loss_threshold: float | None = None
    stop_when_found: bool = True
    min_gap: float = 0.0
    stall_iterations: int = 0
    probes_per_start: int = 20

    def validate(self) -> None:
        """Raise ValueError on an unusable setting."""
        if not self.control_ranges_v:
            raise ValueError("HgeConfig.control_ranges_v is empty")
        for j, (lo, hi) in enumerate(self.control_ranges_v):
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"HgeConfig.control_ranges_v[{j}] = ({lo}, {hi}) needs low < high")
        if not self.learning_rate > 0:
            raise ValueError(f"HgeConfig.learning_rate={self.learning_rate!r} must be > 0")
        if self.probes_per_start < 0:
            raise ValueError(f"HgeConfig.probes_per_start={self.probes_per_start!r} must be >= 0")
        if self.stall_iterations < 0:
            raise ValueError(f"HgeConfig.stall_iterations={self.stall_iterations!r} must be >= 0")
        if self.max_iterations < 1 or self.n_initializations < 1:
            raise ValueError(
                f"HgeConfig.max_iterations={self.max_iterations} and n_initializations="
                f"{self.n_initializations} must be >= 1"
            )
        make_optimizer(self.optimizer, self.learning_rate)
        get_loss(self.loss)


@dataclass(frozen=True, eq=False)
class TrainResult:
    """Outcome of a run: the best point seen and what it cost.

    ``best_controls_v`` is where the best measurement was taken; ``found`` / ``threshold`` the
    found criterion there; ``best_init`` / ``best_iteration`` when; ``n_measurements`` all
    device measurements made (including those that clipped); ``n_restarts`` saturation restarts.
    """

    best_controls_v: FloatArray
    best_loss: float
    best_outputs: FloatArray
    found: bool
    threshold: float
    best_init: int
    best_iteration: int
    n_measurements: int
    n_restarts: int


class HgeTrainer:
    """Gradient descent on control voltages with a measured gradient. See the module docstring.

    ``measure(controls_v) -> Measurement``; ``targets`` ``(C,)``; ``seed`` an int or a
    ``np.random.Generator`` (used for initialisations and restarts only); ``loss_fn`` overrides
    ``config.loss``; ``found_fn(outputs, targets) -> (found, threshold)`` overrides the default
    criterion; ``on_iteration(record)`` is called after every iteration with a dict (keys:
    ``init``, ``iteration``, ``controls_v``, ``clipped``, ``restart``, ``loss``, ``outputs``,
    ``gradient``, ``found``, ``threshold``, ``best_loss``, ``done``).
    """

    def __init__(
        self,
        measure: MeasureFn,
        targets: npt.ArrayLike,
        config: HgeConfig,
        seed: int | np.random.Generator = 0,
        *,
        loss_fn: LossFn | None = None,
        found_fn: FoundFn | None = None,
        on_iteration: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        config.validate()
        self.measure = measure
        self.targets = np.asarray(targets, dtype=float).reshape(-1)
        self.config = config
        ranges = np.asarray(config.control_ranges_v, dtype=float)
        self._low, self._high = ranges[:, 0], ranges[:, 1]
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.loss_fn = loss_fn if loss_fn is not None else get_loss(config.loss)
        self.found_fn: FoundFn = (
            found_fn
            if found_fn is not None
            else (lambda out, tgt: separable(out, tgt, config.min_gap))
        )
        self.on_iteration = on_iteration
        self._optimizer: Optimizer = make_optimizer(config.optimizer, config.learning_rate)
        self.controls_v: FloatArray | None = None  # None: the next step starts an initialisation
        self.init_index = 0
        self.iteration = 0
        self.done = False
        self.n_measurements = 0
        self.n_restarts = 0
        self.best: dict[str, Any] | None = None
        self._start_best = math.inf  # this start's best loss, for the stall test
        self._since_improved = 0
        self._probes_left = 0  # random probes still to measure in this start
        self._probe_best: tuple[float, FloatArray, FloatArray] | None = None

    @property
    def n_controls(self) -> int:
        return int(self._low.size)

    def _random_controls(self) -> FloatArray:
        return self.rng.uniform(self._low, self._high)

    def _fresh_start(self) -> None:
        self.controls_v = self._random_controls()
        self._start_best, self._since_improved = math.inf, 0
        self._probes_left = min(self.config.probes_per_start, self.config.max_iterations // 4)
        self._probe_best = None
        self._optimizer = make_optimizer(self.config.optimizer, self.config.learning_rate)

    def _check_measurement(self, m: Measurement) -> tuple[FloatArray, FloatArray]:
        out = np.asarray(m.outputs, dtype=float).reshape(-1)
        jac = np.asarray(m.dI_dV, dtype=float)
        c = self.targets.size
        if out.shape != (c,) or jac.shape != (c, self.n_controls):
            raise ValueError(
                f"measurement has outputs {out.shape} and dI_dV {jac.shape}; expected ({c},) "
                f"and ({c}, {self.n_controls}) for {c} cases and {self.n_controls} controls"
            )
        return out, jac

    def step(self) -> dict[str, Any] | None:
        """Run one iteration (one device measurement). Returns its record, or None if done."""
        if self.done:
            return None
        cfg = self.config
        if self.controls_v is None:
            self._fresh_start()
            self.iteration = 0
        controls = np.array(self.controls_v, dtype=float)
        m = self.measure(controls.copy())
        self.n_measurements += 1
        record: dict[str, Any] = {
            "init": self.init_index,
            "iteration": self.iteration,
            "controls_v": controls,
            "clipped": bool(m.clipped),
            "restart": False,
            "loss": float("nan"),
            "outputs": np.asarray(m.outputs, dtype=float).copy(),
            "gradient": np.full(self.n_controls, np.nan),
            "found": False,
            "threshold": float("nan"),
        }
        if m.clipped and self._probes_left > 0:
            # A probe that saturates is a probe that lost.
            self.n_restarts += 1
            record["restart"] = True
            self._after_probe(math.inf, controls, np.zeros(self.n_controls))
        elif m.clipped:
            # Saturated read-out: outputs and gradients are wrong; redraw the controls.
            self._fresh_start()
            self._probes_left = 0  # a restart after saturation goes straight to descent
            self.n_restarts += 1
            record["restart"] = True
        else:
            outputs, jac = self._check_measurement(m)
            loss, dloss_doutput = self.loss_fn(outputs, self.targets)
            grad = dloss_doutput @ jac  # Σ_c ∂L/∂I_c ∂I_c/∂V_j
            found, threshold = self.found_fn(outputs, self.targets)
            record.update(loss=loss, gradient=grad, found=found, threshold=threshold)
            if self.best is None or (found, -loss) > (self.best["found"], -self.best["loss"]):
                self.best = {
                    "controls_v": controls,
                    "loss": float(loss),
                    "outputs": outputs.copy(),
                    "found": bool(found),
                    "threshold": float(threshold),
                    "init": self.init_index,
                    "iteration": self.iteration,
                }
            stop = (cfg.stop_when_found and found) or (
                cfg.loss_threshold is not None and loss <= cfg.loss_threshold
            )
            if stop:
                self.done = True
            elif self._probes_left > 0:
                self._after_probe(float(loss), controls, grad)
            else:
                stepped = self._optimizer.step("controls", controls, grad)
                self.controls_v = np.clip(stepped, self._low, self._high)
        self.iteration += 1
        loss_now = float(record["loss"])
        if np.isfinite(loss_now) and loss_now < self._start_best - 0.01 * abs(self._start_best):
            self._start_best, self._since_improved = loss_now, 0
        else:
            self._since_improved += 1
        budget = cfg.max_iterations * cfg.n_initializations
        if not self.done and cfg.stall_iterations > 0:
            stalled = self._since_improved >= cfg.stall_iterations
            if self.n_measurements >= budget:
                self.done = True
            elif stalled or self.iteration >= cfg.max_iterations:
                self.init_index += 1
                self.controls_v = None
        elif not self.done and self.iteration >= cfg.max_iterations:
            self.init_index += 1
            self.controls_v = None
            self.done = self.init_index >= cfg.n_initializations
        record["best_loss"] = float(self.best["loss"]) if self.best else float("nan")
        record["done"] = self.done
        if self.on_iteration is not None:
            self.on_iteration(record)
        return record

    def _after_probe(self, loss: float, controls: FloatArray, grad: FloatArray) -> None:
        """Count one random probe; after the last, step from the best one."""
        self._probes_left -= 1
        if self._probe_best is None or loss < self._probe_best[0]:
            self._probe_best = (loss, controls, grad)
        best = self._probe_best
        if self._probes_left > 0 or not math.isfinite(best[0]):
            self._probes_left = max(self._probes_left, 0)
            self.controls_v = self._random_controls()
            return
        self._probe_best = None
        stepped = self._optimizer.step("controls", best[1], best[2])
        self.controls_v = np.clip(stepped, self._low, self._high)

    def run(self, max_steps: int | None = None) -> TrainResult:
        """Iterate until done (or for at most ``max_steps`` more iterations); return the best."""
        steps = 0
        while not self.done and (max_steps is None or steps < max_steps):
            self.step()
            steps += 1
        return self.result()

    def result(self) -> TrainResult:
        """The best point so far. Raises ValueError if nothing valid was measured yet."""
        if self.best is None:
            raise ValueError("no unclipped measurement yet: nothing to report")
        b = self.best
        return TrainResult(
            best_controls_v=np.array(b["controls_v"]),
            best_loss=float(b["loss"]),
            best_outputs=np.array(b["outputs"]),
            found=bool(b["found"]),
            threshold=float(b["threshold"]),
            best_init=int(b["init"]),
            best_iteration=int(b["iteration"]),
            n_measurements=self.n_measurements,
            n_restarts=self.n_restarts,
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: plain numpy arrays, numbers, dicts (no callables)."""
        return {
            "controls_v": None if self.controls_v is None else np.array(self.controls_v),
            "optimizer": self._optimizer.state_dict(),
            "rng_state": self.rng.bit_generator.state,
            "iteration": self.iteration,
            "init_index": self.init_index,
            "done": self.done,
            "n_measurements": self.n_measurements,
            "n_restarts": self.n_restarts,
            "best": None if self.best is None else dict(self.best),
            "start_best": self._start_best,
            "since_improved": self._since_improved,
            "probes_left": self._probes_left,
            "probe_best": None
            if self._probe_best is None
            else {
                "loss": self._probe_best[0],
                "controls_v": np.array(self._probe_best[1]),
                "gradient": np.array(self._probe_best[2]),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (from a trainer with the same measure/targets/config)."""
        controls = state["controls_v"]
        if controls is not None:
            controls = np.asarray(controls, dtype=float).reshape(-1)
            if controls.size != self.n_controls:
                raise ValueError(
                    f"checkpoint has {controls.size} controls; this trainer has {self.n_controls}"
                )
        self.controls_v = controls
        self._optimizer = make_optimizer(self.config.optimizer, self.config.learning_rate)
        self._optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng_state"]
        self.iteration = int(state["iteration"])
        self.init_index = int(state["init_index"])
        self.done = bool(state["done"])
        self.n_measurements = int(state["n_measurements"])
        self.n_restarts = int(state["n_restarts"])
        best = state["best"]
        self.best = None if best is None else dict(best)
        self._start_best = float(state.get("start_best", math.inf))
        self._since_improved = int(state.get("since_improved", 0))
        self._probes_left = int(state.get("probes_left", 0))
        probe = state.get("probe_best")
        self._probe_best = (
            None
            if probe is None
            else (
                float(probe["loss"]),
                np.asarray(probe["controls_v"], dtype=float),
                np.asarray(probe["gradient"], dtype=float),
            )
        )


def parallel_measurement(
    trace: npt.ArrayLike,
    schedule: CaseSchedule,
    plan: FrequencyPlan,
    *,
    phase_correction_rad: float | Sequence[float] | FloatArray = 0.0,
    readout_gain: float | Sequence[float] | FloatArray = 1.0,
    clipped: bool = False,
) -> Measurement:
    """The trainer's :class:`Measurement` from one recorded playback of ``schedule`` with all
    controls perturbed at once (parallel HGE): the only way labrig turns a trace into case
    outputs and gradients — the ``hge`` procedure, its tests and the benchmarks all call it.

    ``trace`` is the output current on the schedule's sample grid (nA for ``corsig``); outputs
    are the case means over the demodulation windows, ``dI_dV`` the demodulated gradients
    (phase and gain of the read-out corrected per frequency); ``clipped`` says the read-out
    saturated somewhere in the playback.
    """
    grads = case_gradients(
        np.asarray(trace, dtype=float).reshape(-1),
        schedule,
        plan,
        phase_correction_rad=phase_correction_rad,
        readout_gain=readout_gain,
    )
    return Measurement(outputs=grads.mean_output, dI_dV=grads.dI_dV, clipped=bool(clipped))
