"""``--dry-run``: the plan (channels, voltage extremes incl. perturbations, device time) checked
against the station's limits without opening anything; the same check before a real run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from instruments.errors import ChannelLimits
from labrig.cli import main
from labrig.preflight import check_plan
from labrig.procedures.dfa import AWG_WINDOW_V, DfaTraining
from labrig.procedures.hge import HgeTraining
from labrig.shell import run_on_station
from labrig.station import ChannelSpec, Station, load_station
from tests.test_cli_errors import crossing_dnpu_station


def _json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def tight_awg_station(limit_v: float = 3.0) -> Station:
    """sim-reservoir with the modulator's RF input (AWG channel 1) limited to +/-limit_v.

    A station file cannot say this yet (its [[channels]] limits are DAC channels; the AWG is
    held to its hardware range), so the station is built here: the plan check reads any
    channel's limits from the station, whatever instrument it is on."""
    base = load_station("sim-reservoir")
    rf = ChannelSpec("awg", 1, ChannelLimits(-limit_v, limit_v, 1e9, 0.0, "modulator RF", "test"))
    return dataclasses.replace(base, channels=(*base.channels, rf), source="tight-awg")


def test_hge_dry_run_lists_every_electrode_with_its_sine_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    assert main(["train", "hge", "--dry-run", "--json", "--out", str(runs)]) == 0
    plan = _json(capsys.readouterr().out)
    assert plan["status"] == "ok" and plan["crossings"] == []
    assert plan["steps"] == 300 and plan["step_name"] == "iteration"
    channels = {c["channel"]: c for c in plan["channels"]}
    assert sorted(channels) == [1, 2, 3, 4, 5, 6, 7]
    station = load_station("sim-dnpu")
    assert station.dnpu is not None
    for k, (lo, hi) in enumerate(station.dnpu.activation_ranges_v):
        c = channels[station.dnpu.electrode_channels[k]]
        # inputs reach their case levels and the 0 V DC level; controls their whole range (the
        # DC level stays a sine amplitude inside, and the sine reaches the edge)
        assert (c["min_v"], c["max_v"]) == pytest.approx((min(lo, 0.0), max(hi, 0.0)))
    assert "30 mV sine at 200 Hz" in channels[3]["how"]
    # 300 iterations of one 0.28 s playback plus a DC check each, and a final one
    assert plan["device_time_s"] == pytest.approx(300 * 2 * 0.28 + 0.28, rel=0.01)
    assert not runs.exists()


def test_hge_plan_holds_what_a_run_really_drives(tmp_path: Path) -> None:
    station = load_station("sim-dnpu")
    procedure = HgeTraining(max_iterations=3, initializations=1, task="XNOR")
    plan = procedure.plan(station)
    result = run_on_station(procedure, station, runs_dir=tmp_path)
    assert result.status == "success", result.reason
    seen = result.summary["voltage_extremes_v"]
    for c in plan.channels:
        low, high = seen[f"{c.instrument}.ch{c.channel}"]
        assert c.min_v - 1e-6 <= low and high <= c.max_v + 1e-6, (c, low, high)


def test_hge_dry_run_on_a_station_the_plan_crosses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    station = crossing_dnpu_station(tmp_path)
    code = main(["train", "hge", "--station", str(station), "--dry-run", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 2
    assert "refused: 1 channel(s) would cross the station's limits" in out
    crossing = next(line for line in out.splitlines() if "CROSSES" in line)
    assert "dac:1" in crossing and "[+0, +0.6] V" in crossing and "[+0.05, +0.7] V" in crossing
    assert main(["train", "hge", "--station", str(station), "--dry-run", "--json"]) == 2
    plan = _json(capsys.readouterr().out)
    assert plan["status"] == "refused"
    assert [(c["channel"], c["limit_min_v"]) for c in plan["crossings"]] == [(1, 0.05)]


def test_dfa_dry_run_states_the_awg_window_and_the_bias(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "dfa", "--epochs", "3", "--train-samples", "200", "--dry-run", "--json"]
    assert main([*argv, "--out", str(tmp_path / "runs")]) == 0
    plan = _json(capsys.readouterr().out)
    assert plan["status"] == "ok" and plan["steps"] == 3 and plan["step_name"] == "epoch"
    rf, bias = plan["channels"]
    assert (rf["instrument"], rf["channel"]) == ("awg", 1)
    assert (rf["min_v"], rf["max_v"]) == (-AWG_WINDOW_V, AWG_WINDOW_V)
    assert (bias["instrument"], bias["min_v"], bias["max_v"]) == ("dac", 0.0, 0.0)
    assert plan["limits"][0]["source"] == "keysight_33500b hardware range"
    assert 0 < plan["device_time_s"] < 10
    assert not (tmp_path / "runs").exists()


def test_dfa_plan_on_a_station_the_plan_crosses() -> None:
    plan = DfaTraining(epochs=1, train_samples=50).plan(load_station("sim-reservoir"))
    (crossing,) = check_plan(plan, tight_awg_station(3.0))
    assert crossing.channel.role == "modulator RF drive"
    assert (crossing.limit_min_v, crossing.limit_max_v) == (-3.0, 3.0)
    assert "awg:1 (modulator RF drive) would go down to -4.9 V and up to +4.9 V" in str(crossing)
    assert check_plan(plan, tight_awg_station(5.0)) == []
    assert check_plan(plan, load_station("sim-reservoir")) == []


def test_dfa_plan_is_checked_before_a_real_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import labrig.preflight

    monkeypatch.setattr(
        labrig.preflight, "check_station_for", lambda station, cls: tight_awg_station(3.0)
    )
    runs = tmp_path / "runs"
    assert main(["train", "dfa", "--out", str(runs), "--dry-run"]) == 2
    out = capsys.readouterr().out
    crossing = next(line for line in out.splitlines() if "CROSSES" in line)
    assert "awg:1" in crossing and "[-4.9, +4.9] V" in crossing and "[-3, +3] V" in crossing
    assert main(["train", "dfa", "--out", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "awg:1 (modulator RF drive) would go down to -4.9 V and up to +4.9 V" in err
    assert not runs.exists()


def test_more_epochs_and_samples_plan_more_device_time() -> None:
    station = load_station("sim-reservoir")
    short = DfaTraining(epochs=2, train_samples=100).plan(station)
    longer = DfaTraining(epochs=4, train_samples=100).plan(station)
    more = DfaTraining(epochs=2, train_samples=400).plan(station)
    assert longer.device_time_s == pytest.approx(2 * short.device_time_s)
    assert more.device_time_s > short.device_time_s


@pytest.mark.parametrize("command", [["measure", "iv"], ["measure", "transfer"]])
def test_every_procedure_has_a_dry_run(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--dry-run", "--out", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "ok: every extreme is within the station's limits" in out
    assert "device time for playback and settling at most" in out
    assert not (tmp_path / "runs").exists()
