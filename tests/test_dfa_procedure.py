"""The ``dfa`` procedure: the reservoir rig in the loop, through the real drivers and the bench."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from labrig.cli import main
from labrig.errors import ProcedureError
from labrig.procedures.dfa import DfaTraining, load_task
from labrig.procedures.runner import RunController
from labrig.rig import open_rig
from labrig.runs.documents import EventDoc
from labrig.runs.record import RunRecord
from labrig.shell import resume_on_station, run_on_station, station_for
from labrig.station import builtin_station_path


def _started(**values: object) -> DfaTraining:
    proc = DfaTraining(**values)
    proc.bind_rig(open_rig("sim-reservoir"))
    proc.startup()
    return proc


def _close(proc: DfaTraining) -> None:
    rig = proc.require_rig()
    assert not rig.close()  # safe state, then closed


def _twin_states(proc: DfaTraining, a: np.ndarray) -> np.ndarray:
    """Noise-free twin of what the rig should return for pre-activations ``a``."""
    full, _ = proc._twin_drive(a)
    x = proc.require_rig().twin.layer_nodes(full, periods=proc.settle_periods)
    return np.asarray(x[:, : proc.nodes])


@pytest.mark.parametrize("nodes", [100, 30])
def test_physical_layer_recovers_the_twins_node_states(nodes: int) -> None:
    proc = _started(nodes=nodes, train_samples=8)
    try:
        a = np.random.default_rng(5).uniform(-1.8, 1.8, size=(40, nodes))
        h_learner = proc.physical_layer(0, a)
        # The learner sees states centred and scaled to the calibrated range (raw states are
        # light intensities, all positive); back to volts to compare with the twin.
        assert float(h_learner.min()) < -0.5 and float(h_learner.max()) > 0.5
        assert float(np.abs(h_learner).max()) <= 1.2
        h = h_learner * proc._state_half + proc._state_mid
        # One waveform for the whole batch: the instrument I/O is amortised over samples.
        assert proc._layer.stats.waveforms == 1
        ref = _twin_states(proc, a)
        err = h - ref
        # 5 mV of PD noise circulating in the loop plus the scope's quantisation: ~6 mV rms.
        assert float(np.sqrt(np.mean(err**2))) < 0.012
        assert float(np.abs(err).max()) < 0.08
        assert float(np.corrcoef(h.ravel(), ref.ravel())[0, 1]) > 0.998
        # The loop's feedback matters: a read of the first held period (no feedback yet)
        # would be far from the twin's third period.
        first_period = _first_period_states(proc, a)
        assert float(np.sqrt(np.mean((first_period - ref) ** 2))) > 0.05
        traces = proc._layer.event_traces()
        assert traces["awg_drive_v"].shape == traces["pd_trace_v"].shape
        assert traces["pd_trace_v"].max() > 0.9  # the bright calibration plateau is in view
    finally:
        _close(proc)


def _first_period_states(proc: DfaTraining, a: np.ndarray) -> np.ndarray:
    full, _ = proc._twin_drive(a)
    x = proc.require_rig().twin.layer_nodes(full, periods=1)
    return np.asarray(x[:, : proc.nodes])


def test_cli_train_dfa_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "train", "dfa", "--layers", "2", "--nodes", "20", "--epochs", "2",
            "--train-samples", "64", "--json",
        ]
    )  # fmt: skip
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, out
    assert out["status"] == "success"
    assert out["epochs"] == 2 and out["layers"] == 2 and out["method"] == "aug-dfa"
    for key in ("test_accuracy", "train_accuracy"):
        assert 0.0 <= out[key] <= 1.0
    assert out["device_time_s"] > 0 and out["wall_time_s"] > 0
    assert out["projection_device_time_s"] == 0.0
    record = RunRecord.open(Path(out["run_dir"]))
    events = record.events
    assert list(np.asarray(events.scalars["epoch"])) == [1.0, 2.0]
    assert np.asarray(events.last("node_states")).shape[1] == 20
    assert np.asarray(events.last("readout_error")).shape == (10,)
    assert np.asarray(events.last("awg_drive_v")).size == np.asarray(events.last("pd_trace_v")).size


def test_dfa_method_needs_the_twin_the_station_supplies() -> None:
    """The in-process bench supplies a twin (the very parameters it simulates); a station
    without one (real hardware, a served bench: tests/test_calibration.py) is refused."""
    proc = _started(method="dfa", nodes=10, train_samples=8)
    try:
        twin = proc.twin()
        assert twin is not None and twin is not proc.require_rig().twin  # a fresh one per ask
        bench_model = proc.require_rig().built.device.model
        assert twin.params.v_pi == bench_model.params.v_pi
        assert twin.params.bias_v == proc.require_rig().station.reservoir.bias_v
    finally:
        _close(proc)
    aug = _started(method="aug-dfa", nodes=10, train_samples=8)
    try:
        assert aug.twin() is None  # aug-DFA never holds a model of the rig
    finally:
        _close(aug)


def test_dfa_method_is_refused_on_real_hardware_before_connecting(tmp_path: Path) -> None:
    text = builtin_station_path("sim-reservoir").read_text().replace('"@labrig"', '"@py"')
    text = text[: text.index("[bench]")]
    station = tmp_path / "lab.toml"
    station.write_text(text)
    proc = DfaTraining(method="dfa")
    with pytest.raises(ProcedureError, match="only the digital twin of a simulated station"):
        run_on_station(proc, station, runs_dir=tmp_path / "runs")
    assert proc.rig is None  # nothing was opened
    assert not (tmp_path / "runs").exists()  # and no run folder made
    with pytest.raises(ProcedureError, match="only the digital twin"):
        station_for(proc, station)


def test_physical_projection_costs_device_time_and_is_reported() -> None:
    result = run_on_station(
        DfaTraining(nodes=20, epochs=1, train_samples=64, physical_projection=True),
        "sim-reservoir",
        echo=False,
        handle_signals=False,
    )
    assert result.status == "success", result.reason
    s = result.summary
    assert 0.0 < s["projection_device_time_s"] < result.device_time_s
    assert np.isfinite(s["loss"]) and 0.0 <= s["test_accuracy"] <= 1.0


def test_narma10_windows_and_targets_line_up() -> None:
    task = load_task("narma10", seed=0, narma_window=12)
    assert task.regression and task.n_out == 1
    # A held-out series of 2000 steps (the standard task asks for >= 2000).
    assert task.x_train.shape == (2000, 12) and task.x_test.shape == (2000, 12)
    # Standardised training windows, raw test targets (NMSE in the task's own units).
    assert abs(float(task.x_train.mean())) < 1e-9
    assert 0.0 < float(task.y_test.mean()) < 1.0


def test_inputs_are_centred_and_share_one_scale() -> None:
    task = load_task("digits", seed=0)
    # Per-input centring, one deviation for all pixels: rarely lit pixels are not blown up to
    # tens of deviations (per-pixel scaling gives |x| up to ~37 on this split).
    assert np.allclose(task.x_train.mean(axis=0), 0.0, atol=1e-9)
    assert float(np.abs(task.x_train).max()) < 4.0
    col_sd = task.x_train.std(axis=0)
    assert float(col_sd.max() / np.median(col_sd[col_sd > 0])) > 1.5  # relative scale kept


def test_cosine_schedule_is_a_function_of_the_epoch() -> None:
    proc = DfaTraining(epochs=4, learning_rate=0.01)
    lrs = [proc.epoch_learning_rate(e) for e in range(4)]
    assert lrs[0] == 0.01
    assert all(b < a for a, b in itertools.pairwise(lrs)) and lrs[-1] > 0.0
    assert lrs[2] == pytest.approx(0.005)
    const = DfaTraining(epochs=4, learning_rate=0.01, lr_schedule="constant")
    assert [const.epoch_learning_rate(e) for e in range(4)] == [0.01] * 4


@pytest.mark.slow
def test_aug_dfa_beats_readout_only_on_digits() -> None:
    common = {"train_samples": 600, "nodes": 60, "seed": 1}
    aug = run_on_station(
        DfaTraining(method="aug-dfa", epochs=8, **common),
        "sim-reservoir",
        echo=False,
        handle_signals=False,
    )
    ro = run_on_station(
        DfaTraining(method="readout", **common), "sim-reservoir", echo=False, handle_signals=False
    )
    assert aug.status == "success" and ro.status == "success"
    assert aug.summary["test_accuracy"] >= ro.summary["test_accuracy"] + 0.03, (
        aug.summary["test_accuracy"],
        ro.summary["test_accuracy"],
    )


@pytest.mark.slow
def test_stopped_run_resumes_from_its_epoch_checkpoint(tmp_path: Path) -> None:
    values = {"nodes": 20, "epochs": 3, "train_samples": 64}
    straight = run_on_station(
        DfaTraining(**values),
        "sim-reservoir",
        runs_dir=tmp_path / "a",
        echo=False,
        handle_signals=False,
    )
    controller = RunController()

    def stop_after_first_epoch(doc: object) -> None:
        if isinstance(doc, EventDoc):
            controller.request_stop("test: stop after epoch 1")

    stopped = run_on_station(
        DfaTraining(**values),
        "sim-reservoir",
        runs_dir=tmp_path / "b",
        subscribers=[stop_after_first_epoch],
        controller=controller,
        echo=False,
        handle_signals=False,
    )
    assert stopped.status != "success"
    import labrig.procedures.dfa  # noqa: F401  (registers the procedure for resume)

    resumed = resume_on_station(stopped.run_dir, echo=False, handle_signals=False)
    assert resumed.status == "success", resumed.reason
    assert resumed.summary["epochs"] == 3
    epochs = np.asarray(RunRecord.open(stopped.run_dir).events.scalars["epoch"])
    assert list(epochs) == [1.0, 2.0, 3.0]
    # The checkpoint carries the bench clock, on which the bench's noise is keyed, and every
    # epoch starts from the same instrument set-up: the resumed run repeats the uninterrupted
    # one bit for bit, epoch 1 (before the stop) and epochs 2-3 (after the resume) alike.
    straight_events = RunRecord.open(straight.run_dir).events.scalars
    resumed_events = RunRecord.open(stopped.run_dir).events.scalars
    for key in ("loss", "train_accuracy", "test_accuracy", "clipped_fraction"):
        assert list(np.asarray(resumed_events[key])) == list(np.asarray(straight_events[key])), key
    assert resumed.summary["test_accuracy"] == straight.summary["test_accuracy"]
    assert resumed.summary["loss"] == straight.summary["loss"]


def test_temporal_layer_reads_every_period_like_the_twin() -> None:
    """mnist1d is presented in time: one step per loop period, all 40 periods read."""
    proc = _started(task="mnist1d", layers=1, nodes=30, train_samples=8, test_samples=8)
    try:
        assert proc._temporal and proc._spec.settle_periods == 40
        assert proc._task.x_train.shape[1:] == (40, 1)
        a = proc._net.weights[0][:, :-1] @ proc._task.x_train[:3, :, :].transpose(0, 2, 1)
        a = a.transpose(0, 2, 1)  # (3, 40, 30)
        h = proc.physical_layer(0, a)
        assert h.shape == (3, 40, 30)
        full, _ = proc._twin_drive(a.reshape(-1, 30))
        x = proc.require_rig().twin.layer_nodes(full.reshape(3, 40, -1))[..., :30]
        twin = (x - proc._state_mid) / proc._state_half
        assert np.corrcoef(h.ravel(), twin.ravel())[0, 1] > 0.98
    finally:
        _close(proc)


@pytest.mark.slow
def test_temporal_mode_beats_static_on_mnist1d() -> None:
    """Readout-only, 400 training samples: the loop's memory over the sequence is what helps."""
    common = dict(task="mnist1d", method="readout", layers=1, train_samples=400, test_samples=300)
    common["ridge_lambda"] = 1.0
    acc = {
        mode: run_on_station(
            DfaTraining(sequence_mode=mode, **common), "sim-reservoir", echo=False
        ).summary["test_accuracy"]
        for mode in ("static", "temporal")
    }
    assert acc["temporal"] > acc["static"] + 0.15, acc


def test_temporal_mode_refuses_twin_methods() -> None:
    with pytest.raises(ProcedureError, match="temporal"):
        DfaTraining(task="mnist1d", method="bp-twin").startup()
