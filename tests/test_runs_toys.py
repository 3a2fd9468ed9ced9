"""Toy procedures and a toy instrument for the run-machinery tests (no tests of its own).

Also a command-line entry point so tests can run a toy in a subprocess and kill it::

    python tests/test_runs_toys.py quadratic <runs_dir> n_iterations=200 delay_s=0.01
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from instruments.errors import InstrumentConnectionError, InstrumentReportedError
from labrig.algorithms.optim import Adam
from labrig.procedures.base import (
    BoolParameter,
    ChoiceParameter,
    FloatParameter,
    IntegerParameter,
    Procedure,
    StrParameter,
    register_procedure,
)
from labrig.runs.documents import DataKey, StreamDeclaration


class ToyInstrument:
    """Implements the Instrument role; remembers every safe_state() call (and a marker file)."""

    def __init__(
        self,
        name: str = "toy",
        marker: Path | None = None,
        fail_safe: bool = False,
        safe_delay_s: float = 0.0,
    ) -> None:
        self.name = name
        self.marker = marker
        self.fail_safe = fail_safe
        self.safe_delay_s = safe_delay_s
        self.safe_calls = 0
        self.errors: list[InstrumentReportedError] = []
        self.output_v = 0.0

    @property
    def identity(self) -> str:
        return f"labrig,Toy{self.name},0,1.0"

    def snapshot(self) -> dict[str, object]:
        return {"output_v": self.output_v}

    def check_errors(self) -> None:
        if self.errors:
            raise self.errors.pop(0)

    def _mark(self, text: str) -> None:
        if self.marker is not None:
            with open(self.marker, "a") as handle:
                handle.write(f"{self.name} {text}\n")

    def safe_state(self) -> None:
        self.safe_calls += 1
        self._mark("safe-begin")
        time.sleep(self.safe_delay_s)  # a slow ramp to 0 V
        self._mark("safe-end")
        if self.fail_safe:
            raise InstrumentConnectionError(f"{self.name}: connection lost during safe_state")
        self.output_v = 0.0

    def shutdown(self) -> None:
        self.safe_state()


@register_procedure
class QuadraticDescent(Procedure):
    """Adam on f(x) = |A x - b|^2 with seeded gradient noise; deterministic given the seed."""

    name = "toy-quadratic"
    n_iterations = IntegerParameter("Iterations", default=100, minimum=1, maximum=100_000)
    learning_rate = FloatParameter("Learning rate", default=0.05, minimum=0.0, maximum=1.0)
    noise = FloatParameter("Gradient noise", default=0.1, minimum=0.0)
    seed = IntegerParameter("Seed", default=1234)
    delay_s = FloatParameter("Delay per iteration", units="s", default=0.0, minimum=0.0)
    trace_every = IntegerParameter("Trace every", default=10, minimum=1)
    marker = StrParameter("Marker file", default="")

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        setup = np.random.default_rng(99)  # the problem itself is fixed
        self.a = setup.normal(size=(6, 4))
        self.b = setup.normal(size=6)
        self.rng = np.random.default_rng(self.seed)
        self.x = np.zeros(4)
        self.optimizer = Adam(self.learning_rate)
        self.iteration = 0
        self.first_iteration = 0

    def startup(self) -> None:
        if self.marker:
            self.instruments = {"dac": ToyInstrument("dac", Path(self.marker))}

    def loss(self) -> float:
        r = self.a @ self.x - self.b
        return float(r @ r)

    def execute(self) -> None:
        while self.iteration < self.n_iterations:
            if self.should_stop():
                return
            grad = 2 * self.a.T @ (self.a @ self.x - self.b)
            grad = grad + self.noise * self.rng.normal(size=grad.shape)
            self.x = self.optimizer.step("x", self.x, grad)
            self.iteration += 1
            arrays: dict[str, np.ndarray] = {"controls": self.x, "gradient": grad}
            if self.iteration % self.trace_every == 0:
                arrays["trace"] = np.sin(np.linspace(0, 6, 50) + self.iteration)
            if self.delay_s:
                time.sleep(self.delay_s)
            self.emit_event({"loss": self.loss(), "iteration": self.iteration}, arrays)

    def describe_data(self) -> list[StreamDeclaration]:
        return [
            StreamDeclaration(
                (
                    DataKey("loss"),
                    DataKey("iteration", dtype="int64"),
                    DataKey("controls", shape=(4,), dims=("parameter",)),
                    DataKey("gradient", shape=(4,), dims=("parameter",)),
                    DataKey("trace", shape=(50,), dims=("sample",), optional=True),
                ),
                x="iteration",
            )
        ]

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "x": self.x,
            "iteration": self.iteration,
            "rng": self.rng.bit_generator.state,
            "optimizer": self.optimizer.state_dict(),
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        self.x = state["x"]
        self.iteration = int(state["iteration"])
        self.first_iteration = self.iteration
        self.rng.bit_generator.state = state["rng"]
        self.optimizer.load_state_dict(state["optimizer"])

    def seeds(self) -> dict[str, int]:
        return {"noise": self.seed}

    def device_time_s(self) -> float:
        # 1 ms of "bench time" per iteration, counted since startup in this process, as the
        # contract asks (the runner adds the time of earlier segments when resuming).
        return 0.001 * (self.iteration - self.first_iteration)

    def summary(self) -> dict[str, Any]:
        return {"final_loss": self.loss(), "x": self.x.tolist()}


@register_procedure
class SleepyCounter(Procedure):
    """Emits a counter every ``period_s``; for stop/signal/pause tests. Owns one ToyInstrument."""

    name = "toy-sleepy"
    supports_pause = True
    n_events = IntegerParameter("Events", default=1000, minimum=1)
    period_s = FloatParameter("Period", units="s", default=0.01, minimum=0.0)
    marker = StrParameter("Marker file", default="")
    fail_at = IntegerParameter("Raise at event", default=-1)
    ignore_stop = BoolParameter("Ignore stop requests", default=False)
    mode = ChoiceParameter("Mode", choices=["plain", "wide"], default="plain")
    safe_delay_s = FloatParameter("Safe-state duration", units="s", default=0.0, minimum=0.0)

    def startup(self) -> None:
        marker = Path(self.marker) if self.marker else None
        self.instruments.setdefault(
            "dac", ToyInstrument("dac", marker, safe_delay_s=self.safe_delay_s)
        )

    def execute(self) -> None:
        for i in range(self.n_events):
            if self.should_stop() and not self.ignore_stop:
                return
            self.wait_if_paused()
            if i == self.fail_at:
                raise RuntimeError(f"toy failure at event {i}")
            time.sleep(self.period_s)
            arrays = {"signal": np.full(3 if self.mode == "plain" else 5, float(i))}
            self.emit_event({"count": i}, arrays)
            print(json.dumps({"seq": i}), flush=True)


def spawn_toy(args: list[str]) -> subprocess.Popen[str]:
    """Run this module's command line (``args``: toy, runs dir, ``name=value`` pairs) in a
    subprocess whose output is read line by line as text."""
    here = Path(__file__).resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parents[1]), str(here.parent)])}
    return subprocess.Popen(
        [sys.executable, str(here), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _main(argv: list[str]) -> int:
    from labrig.procedures.runner import run_procedure

    kind, runs_dir, *pairs = argv
    values = dict(pair.split("=", 1) for pair in pairs)
    procedure: Procedure
    if kind == "quadratic":
        procedure = QuadraticDescent(**values)
    elif kind == "sleepy":
        procedure = SleepyCounter(**values)
    else:
        raise SystemExit(f"unknown toy {kind!r}")
    print(json.dumps({"ready": True}), flush=True)
    result = run_procedure(procedure, runs_dir=runs_dir, echo=True)
    print(json.dumps({"status": result.status, "run_dir": str(result.run_dir)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
