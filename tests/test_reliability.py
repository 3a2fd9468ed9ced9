"""Reliability over TCP: faults injected with the bench's ``SIM:FAULt`` into every instrument a
procedure uses, as the outside harness of issue 13 did.

Part 1 (issue 13, item 1): a dropped connection — to the DAC, the scope, a lock-in, the AWG —
in HGE (digital, lock-in, sequential), aug-DFA and the characterisation sweeps is reconnected,
the interrupted measurement repeated, and the run goes on. Afterwards the bench itself says:
every DAC channel at its safe level, no generator running, no voltage ever outside the limits.

Part 2 (the reliability suite): each fault kind into each instrument for HGE and aug-DFA; every
run must succeed or end with its reason, leave a readable record and a safe bench. The counts
(faults injected, survived, safe) are printed at the end (``pytest -s``).

Runs are short (two or three iterations); benches are built once per module and served by a
:class:`BenchServer` in this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from served_bench import ServedBench, inject, safety_problems, served_station

from labrig.procedures.characterise import IvSweep, TransferCurve
from labrig.procedures.dfa import DfaTraining
from labrig.procedures.hge import HgeTraining
from labrig.procedures.runner import RunResult
from labrig.runs.record import RunRecord
from labrig.shell import run_on_station

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dnpu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBench]:
    with served_station("sim-dnpu", tmp_path_factory.mktemp("dnpu")) as served:
        yield served


@pytest.fixture(scope="module")
def reservoir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBench]:
    with served_station("sim-reservoir", tmp_path_factory.mktemp("reservoir")) as served:
        yield served


def hge(mode: str) -> HgeTraining:
    return HgeTraining(
        task="NAND",
        mode=mode,
        max_iterations=2,
        initializations=1,
    )


def dfa() -> DfaTraining:
    return DfaTraining(epochs=2, train_samples=64, test_samples=32)


def run_faulted(
    served: ServedBench,
    procedure: Any,
    kind: str,
    instrument: str,
    after_s: float,
    runs_dir: Path,
    value: float = 0.0,
) -> tuple[RunResult, Any, RunRecord]:
    served.reset_evidence()
    fault = inject(served, kind, instrument, after_s, value) if kind else None
    result = run_on_station(
        procedure, served.station_file, runs_dir=runs_dir, echo=False, handle_signals=False
    )
    served.built.bench.faults.faults.clear()
    return result, fault, RunRecord.open(result.run_dir)


def logs(record: RunRecord) -> str:
    return "\n".join(doc.message for doc in record.logs)


# ------------------------------------------------------------------ part 1: dropped connections
DROPS = [
    ("digital", "dac"),
    ("digital", "scope"),
    ("sequential", "dac"),
    ("lockin", "dac"),
    ("lockin", "lockin2"),
    ("lockin", "scope"),
]


@pytest.mark.parametrize(("mode", "instrument"), DROPS)
def test_hge_survives_a_dropped_connection(
    dnpu: ServedBench, mode: str, instrument: str, tmp_path: Path
) -> None:
    result, fault, record = run_faulted(dnpu, hge(mode), "drop", instrument, 1.9, tmp_path)
    assert fault.fired
    assert result.status == "success", result.reason
    assert f"reconnected {instrument}" in logs(record)
    # the interrupted measurement itself was repeated (not only a start-up query)
    assert "measurement: attempt 1/3" in logs(record) or "playback: attempt 1/3" in logs(record)
    assert record.stop is not None and record.stop.status == "success"
    assert len(record.events) == result.n_events > 0
    assert all(state == "ok" for state in result.safe_state.values()), result.safe_state
    assert safety_problems(dnpu) == []


@pytest.mark.parametrize("instrument", ["awg", "scope"])
def test_aug_dfa_survives_a_dropped_connection(
    reservoir: ServedBench, instrument: str, tmp_path: Path
) -> None:
    result, fault, record = run_faulted(reservoir, dfa(), "drop", instrument, 0.4, tmp_path)
    assert fault.fired
    assert result.status == "success", result.reason
    assert f"reconnected {instrument}" in logs(record)
    assert "reservoir pass: attempt 1/3" in logs(record)
    assert len(record.events) == result.n_events > 0
    assert safety_problems(reservoir) == []


def test_aug_dfa_reaches_safety_on_a_fresh_dac_connection(
    reservoir: ServedBench, tmp_path: Path
) -> None:
    # The bias DAC is idle during training: its dropped connection is met by the safe state,
    # which reopens it.
    result, fault, record = run_faulted(reservoir, dfa(), "drop", "dac", 0.4, tmp_path)
    assert fault.fired
    assert result.status == "success", result.reason
    assert result.safe_state["dac"] == "ok after reconnecting"
    assert "needed a reconnect" in logs(record)
    assert safety_problems(reservoir) == []


class DropInExecute:
    """Schedules the drop once the procedure executes (its start-up takes bench time that
    depends on what the takeover met): ``drop_after_s`` of bench time from there."""

    drop: tuple[str, float] = ("dac", 0.0)

    def execute(self) -> None:
        rig: Any = self.require_rig()  # type: ignore[attr-defined]
        instrument, after_s = self.drop
        rig.bench_client.add_fault("drop", instrument, at_time_s=rig.device_time_s() + after_s)
        super().execute()  # type: ignore[misc]


class DropInIv(DropInExecute, IvSweep):
    pass


class DropInTransfer(DropInExecute, TransferCurve):
    pass


def test_the_iv_sweep_survives_a_dropped_dac_connection_over_tcp(
    dnpu: ServedBench, tmp_path: Path
) -> None:
    proc = DropInIv(electrode=3, points=6, settle_s=0.05)
    proc.drop = ("dac", 0.1)
    result, _, record = run_faulted(dnpu, proc, "", "", 0.0, tmp_path)
    assert result.status == "success", result.reason
    assert result.n_events == 6
    assert "reconnected dac" in logs(record)
    assert "acquisition at point" in logs(record)  # the sweep's own point was repeated
    assert safety_problems(dnpu) == []


def test_the_transfer_sweep_survives_a_dropped_awg_connection_over_tcp(
    reservoir: ServedBench, tmp_path: Path
) -> None:
    proc = DropInTransfer(points=8)
    proc.drop = ("awg", 0.0)
    result, _, record = run_faulted(reservoir, proc, "", "", 0.0, tmp_path)
    assert result.status == "success", result.reason
    assert "reconnected awg" in logs(record)
    assert "transfer playback" in logs(record)  # the playback itself was repeated
    assert safety_problems(reservoir) == []


# ------------------------------------------------------------------ part 2: the suite
KINDS: list[tuple[str, float]] = [
    ("drop", 0.0),
    ("delay", 0.5),
    ("garble", 0.0),
    ("silence", 0.0),
    ("error", -300.0),
    ("drift", 0.05),
]
TALLY: dict[str, int] = {"runs": 0, "injected": 0, "survived": 0, "ended_with_reason": 0}
TALLY.update(safe=0)


@pytest.fixture(scope="module")
def tally() -> Iterator[dict[str, int]]:
    yield TALLY
    print(
        f"\nreliability suite: {TALLY['runs']} runs, faults injected {TALLY['injected']}, "
        f"survived {TALLY['survived']}, ended with their reason {TALLY['ended_with_reason']}, "
        f"safe afterwards {TALLY['safe']}"
    )


def _check(
    result: RunResult, fault: Any, record: RunRecord, served: ServedBench, tally: dict[str, int]
) -> None:
    tally["runs"] += 1
    tally["injected"] += int(fault.fired)
    assert record.stop is not None  # the record is readable and complete
    assert len(record.events) == result.n_events
    if result.status == "success":
        tally["survived"] += 1
    else:
        assert result.status in ("aborted", "failed") and result.reason, result
        tally["ended_with_reason"] += 1
        if fault.kind == "error":
            assert f"{fault.instrument} reported error" in result.reason, result.reason
    assert all(s.startswith("ok") for s in result.safe_state.values()), result.safe_state
    assert safety_problems(served) == []
    tally["safe"] += 1


SUITE_HGE = [(k, v, i) for k, v in KINDS for i in ("dac", "scope", "lockin1")]
SUITE_DFA = [(k, v, i) for k, v in KINDS for i in ("awg", "scope", "dac")]


@pytest.mark.parametrize(("kind", "value", "instrument"), SUITE_HGE)
def test_suite_hge(
    dnpu: ServedBench,
    tally: dict[str, int],
    kind: str,
    value: float,
    instrument: str,
    tmp_path: Path,
) -> None:
    # The lock-in mode uses every instrument of the DNPU station.
    mode = "lockin" if instrument == "lockin1" else "digital"
    result, fault, record = run_faulted(dnpu, hge(mode), kind, instrument, 1.9, tmp_path, value)
    assert fault.fired, "the fault must hit the run"
    _check(result, fault, record, dnpu, tally)
    if kind in ("drop", "silence", "delay", "drift"):
        assert result.status == "success", result.reason


@pytest.mark.parametrize(("kind", "value", "instrument"), SUITE_DFA)
def test_suite_aug_dfa(
    reservoir: ServedBench,
    tally: dict[str, int],
    kind: str,
    value: float,
    instrument: str,
    tmp_path: Path,
) -> None:
    result, fault, record = run_faulted(reservoir, dfa(), kind, instrument, 0.4, tmp_path, value)
    assert fault.fired, "the fault must hit the run"
    _check(result, fault, record, reservoir, tally)
    if kind in ("drop", "silence", "delay", "drift"):
        assert result.status == "success", result.reason
