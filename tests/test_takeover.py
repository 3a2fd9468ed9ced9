"""Taking over a rig in whatever state it is found (issue 13, item 3).

A bench is served over TCP; "someone else" (a second connection, as a killed process or another
program would leave things) puts errors in the queues, starts generators, leaves a ramp running
or a channel beyond the station's limits. Then labrig opens the rig and the bench itself is
asked what happened.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyvisa
from served_bench import ServedBench, served_station

from instruments.qdevil_qdac2 import QDac2
from labrig.procedures.characterise import IvSweep
from labrig.rig import open_rig
from labrig.runs.record import RunRecord
from labrig.shell import run_on_station
from labrig.station import parse_station
from labrig.takeover import RAMP_INTO_RANGE_ENV, TakeoverRefused, ramp_into_range_requested


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBench]:
    with served_station("sim-dnpu", tmp_path_factory.mktemp("takeover")) as served:
        yield served


@pytest.fixture
def someone_else(bench: ServedBench) -> Iterator[QDac2]:
    """The DAC as another program sees it: no limits, its own connection."""
    other = QDac2(bench.server.resources()["dac"], name="someone else", visa_library="@py")
    other.safe_state()
    other.read_error_entries()
    bench.reset_evidence()
    yield other
    other.safe_state()
    other.adapter.close()


def _raw(bench: ServedBench, name: str, *commands: str) -> None:
    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(bench.server.resources()[name], read_termination="\n")
    try:
        for command in commands:
            inst.write(command)
        inst.query("*OPC?")
    finally:
        inst.close()  # (not rm.close(): that would close every @py session of this process)


def test_errors_left_by_someone_else_are_recorded_not_blamed_on_the_run(
    bench: ServedBench, someone_else: QDac2, tmp_path: Path
) -> None:
    _raw(bench, "dac", "sour3:volt 20")  # -222, data out of range
    _raw(bench, "lockin1", "SLVL 99")  # execution error
    result = run_on_station(
        IvSweep(electrode=3, points=3),
        bench.station_file,
        runs_dir=tmp_path,
        echo=False,
        handle_signals=False,
    )
    assert result.status == "success", result.reason
    record = RunRecord.open(result.run_dir)
    takeover = record.start_extra["takeover"]
    assert [code for code, _ in takeover["errors"]["dac"]] == [-222]
    assert takeover["errors"]["lockin1"], takeover
    logs = " ".join(doc.message for doc in record.logs)
    assert "takeover: dac: error queue held 1" in logs


def test_running_generators_are_stopped_and_recorded(
    bench: ServedBench, someone_else: QDac2
) -> None:
    # What SIGKILL during `labrig train hge --mode lockin` leaves: sines on channels 3..7.
    someone_else.ramp_to({4: -0.2})
    someone_else.start_sines({ch: (10.0 + ch, 0.01) for ch in range(3, 8)}, trigger="immediate")
    someone_else.ask("*OPC?")  # the trigger has been served
    assert all(bench.running()[ch] == ["sine"] for ch in range(3, 8))
    with open_rig(str(bench.station_file)) as rig:
        assert all(bench.running()[ch] == [] for ch in range(3, 8))
        assert rig.takeover.generators_stopped["dac"] == {ch: ["sine"] for ch in range(3, 8)}
        assert rig.takeover.levels_v["dac:4"] == pytest.approx(-0.2)
        assert bench.dac_levels()[4] == pytest.approx(-0.2)  # held, not moved


def test_a_ramp_in_progress_is_held_where_it_has_got_to(
    bench: ServedBench, someone_else: QDac2
) -> None:
    someone_else.set_slew(5, 0.1)
    someone_else.write("sour5:volt 0.6")  # 6 s of ramp at 0.1 V/s
    someone_else.ask("sour5:volt?")  # served
    bench.built.emulators["bench"].bench.clock.advance(1.0)  # type: ignore[attr-defined]
    with open_rig(str(bench.station_file)) as rig:
        held = rig.takeover.levels_v["dac:5"]
        assert 0.05 < held < 0.2
        rig.wait(2.0)
        assert rig.dac.get_voltage(5) == pytest.approx(held, abs=1e-3)


def test_a_level_outside_the_limits_refuses_the_start_and_moves_nothing(
    bench: ServedBench, someone_else: QDac2
) -> None:
    someone_else.ramp_to({1: 1.0})  # electrode 0's limit is 0.7 V
    with pytest.raises(TakeoverRefused) as info:
        open_rig(str(bench.station_file))
    message = str(info.value)
    for part in ("dac channel 1", "electrode 0", "1 V", "0.7", str(bench.station_file)):
        assert part in message, message
    assert "--ramp-into-range" in message
    assert bench.dac_levels()[1] == pytest.approx(1.0)  # nothing moved
    _, high = bench.extremes("dac.ch1")
    assert high == pytest.approx(1.0)


def test_ramp_into_range_ramps_to_the_nearest_limit_at_the_slew_limit(
    bench: ServedBench, someone_else: QDac2
) -> None:
    someone_else.ramp_to({1: 1.0, 2: -2.0})  # limits [-1.3, 0.7] V, 1000 V/s
    t0 = bench.built.bench.clock.now
    with open_rig(str(bench.station_file), ramp_into_range=True) as rig:
        assert rig.takeover.ramped_into_range == {
            "dac:1": (pytest.approx(1.0), 0.7),
            "dac:2": (pytest.approx(-2.0), -1.3),
        }
        assert bench.dac_levels()[1] == pytest.approx(0.7, abs=1e-4)
        assert bench.dac_levels()[2] == pytest.approx(-1.3, abs=1e-4)
        assert bench.built.bench.clock.now - t0 >= 0.7 / 1000.0  # not a step


def test_the_operator_option_from_the_environment_and_the_station(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(RAMP_INTO_RANGE_ENV, raising=False)
    assert not ramp_into_range_requested()
    assert ramp_into_range_requested(station_setting=True)
    monkeypatch.setenv(RAMP_INTO_RANGE_ENV, "1")
    assert ramp_into_range_requested()
    text = Path("labrig/stations/sim-dnpu.toml").read_text()
    text = text.replace('rig = "dnpu"', 'rig = "dnpu"\nramp_into_range = true', 1)
    assert parse_station(text).ramp_into_range
    assert not parse_station(Path("labrig/stations/sim-dnpu.toml").read_text()).ramp_into_range
    assert os.environ[RAMP_INTO_RANGE_ENV] == "1"


def test_an_error_left_before_a_reconnect_is_not_blamed_on_the_next_command(
    bench: ServedBench, someone_else: QDac2
) -> None:
    with open_rig(str(bench.station_file)) as rig:
        _raw(bench, "dac", "sour3:volt 20")  # what a half-received command could leave
        rig.reconnect("dac")
        rig.dac.set_voltage(1, 0.1)  # no "dac reported error -222 after 'sour1:volt 0.1'"
        assert rig.dac.read_error_entries() == []


def test_the_cli_refuses_then_ramps_into_range_with_the_flag(
    bench: ServedBench,
    someone_else: QDac2,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from labrig.cli import main

    monkeypatch.delenv(RAMP_INTO_RANGE_ENV, raising=False)
    someone_else.ramp_to({1: 1.0})
    argv = ["measure", "iv", "--station", str(bench.station_file), "--out", str(tmp_path)]
    argv += ["--points", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "dac channel 1" in err and "--ramp-into-range" in err
    assert not any(tmp_path.iterdir())  # refused before any run folder exists
    assert bench.dac_levels()[1] == pytest.approx(1.0)
    assert main([*argv, "--ramp-into-range"]) == 0
    (run_dir,) = list(tmp_path.iterdir())
    takeover = RunRecord.open(run_dir).start_extra["takeover"]
    assert takeover["ramped_into_range"] == {"dac:1": [pytest.approx(1.0), 0.7]}
