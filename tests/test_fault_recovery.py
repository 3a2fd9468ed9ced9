"""A fault injected into a real run ends in recovery or a clean abort, never a hang.

An I-V sweep runs on the in-process DNPU bench; one fault is scheduled on the digitiser through
the bench's own endpoint. Transport faults (a dropped connection, a reply that never comes, a
garbled reply) are retried after reconnecting and the sweep completes with every point; an
error the instrument reports is not retried: the run stops, says why, and leaves the outputs
safe.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from labrig.procedures.characterise import IvSweep
from labrig.runs.record import RunRecord
from labrig.shell import run_on_station


class FaultyIv(IvSweep):
    """The I-V sweep with one fault scheduled on an instrument once the rig is open."""

    fault: tuple[str, float] = ("drop", 0.0)
    target = "scope"
    after_commands = 20  # past the scope's configuration, among the acquisitions

    def execute(self) -> None:
        kind, value = self.fault
        rig = self.require_rig()
        assert rig.bench_client is not None and rig.built is not None
        sent = rig.built.bench.faults.command_counts.get(self.target, 0)
        rig.bench_client.add_fault(
            kind, self.target, at_command=sent + self.after_commands, value=value
        )
        super().execute()


def run_with(
    fault: tuple[str, float], tmp_path: Path, target: str = "scope", after_commands: int = 20
) -> tuple[object, float]:
    proc = FaultyIv(electrode=3, start_v=-0.5, stop_v=0.5, points=8)
    proc.fault = fault
    proc.target = target
    proc.after_commands = after_commands
    t0 = time.monotonic()
    result = run_on_station(proc, "sim-dnpu", runs_dir=tmp_path, echo=False, handle_signals=False)
    return result, time.monotonic() - t0


@pytest.mark.parametrize("kind", ["drop", "silence", "garble"])
def test_transport_faults_are_retried_and_the_sweep_completes(kind: str, tmp_path: Path) -> None:
    result, wall = run_with((kind, 0.0), tmp_path)
    assert result.status == "success", result.reason  # type: ignore[attr-defined]
    assert result.n_events == 8  # type: ignore[attr-defined]
    assert wall < 60
    logs = " ".join(doc.message for doc in RunRecord.open(result.run_dir).logs)  # type: ignore[attr-defined]
    assert "retry" in logs.lower() or "reconnected" in logs.lower(), logs
    assert result.summary["final_voltages_v"]["dac:4"] == 0.0  # type: ignore[attr-defined]


def test_an_instrument_reported_error_aborts_cleanly_with_the_reason(tmp_path: Path) -> None:
    result, wall = run_with(("error", -310.0), tmp_path)
    assert result.status == "failed"  # type: ignore[attr-defined]
    assert "-310" in result.reason  # type: ignore[attr-defined]
    assert result.n_events < 8  # type: ignore[attr-defined]
    assert wall < 60
    # every DAC channel was brought back to its safe voltage all the same
    finals = result.summary["final_voltages_v"]  # type: ignore[attr-defined]
    assert all(v == 0.0 for v in finals.values()), finals


def test_a_dac_connection_dropped_mid_ramp_is_reopened_and_the_sweep_goes_on(
    tmp_path: Path,
) -> None:
    # A ramp to an absolute level is repeatable: the DAC is reopened, the ramp repeated (its
    # limits checked again) and the sweep completes.
    result, _ = run_with(("drop", 0.0), tmp_path, target="dac", after_commands=3)
    assert result.status == "success", result.reason  # type: ignore[attr-defined]
    assert result.n_events == 8  # type: ignore[attr-defined]
    assert result.summary["final_voltages_v"]["dac:4"] == 0.0  # type: ignore[attr-defined]
    logs = " ".join(doc.message for doc in RunRecord.open(result.run_dir).logs)  # type: ignore[attr-defined]
    assert "reconnected dac" in logs


class FailingIv(IvSweep):
    """Fails for a reason of its own, with the DAC's connection dropping on its next command:
    the safe state meets a dead connection."""

    def execute(self) -> None:
        rig = self.require_rig()
        assert rig.bench_client is not None and rig.built is not None
        rig.dac.ramp_to({4: 0.3})
        sent = rig.built.bench.faults.command_counts.get("dac", 0)
        rig.bench_client.add_fault("drop", "dac", at_command=sent + 1)
        raise RuntimeError("the procedure's own failure")


def test_a_safe_state_that_meets_a_dropped_connection_reaches_safety_on_a_fresh_one(
    tmp_path: Path,
) -> None:
    result = run_on_station(
        FailingIv(electrode=3, points=2),
        "sim-dnpu",
        runs_dir=tmp_path,
        echo=False,
        handle_signals=False,
    )
    assert result.status == "failed"
    assert "own failure" in result.reason
    assert result.safe_state["dac"] == "ok after reconnecting"
    assert result.summary["final_voltages_v"]["dac:4"] == 0.0
    logs = " ".join(doc.message for doc in RunRecord.open(result.run_dir).logs)
    assert "needed a reconnect" in logs
