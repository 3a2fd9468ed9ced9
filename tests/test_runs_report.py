"""Reports (PNG plots) and the run catalogue, including crashed and damaged runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from test_runs_toys import QuadraticDescent, SleepyCounter

from labrig.procedures.characterise import IvSweep
from labrig.procedures.dfa import DfaTraining
from labrig.procedures.hge import HgeTraining
from labrig.procedures.runner import run_procedure
from labrig.runs.catalog import list_runs
from labrig.runs.documents import DataKey, DescriptorDoc, EventDoc, StartDoc, StreamDeclaration
from labrig.runs.record import RecordWriter, RunRecord, lock_run_dir
from labrig.runs.report import EmptyRunError, make_report, report_figures
from labrig.shell import run_on_station

PNG = b"\x89PNG\r\n\x1a\n"


def _figures(run_dir: Path) -> dict[str, Figure]:
    return {stem: fig for stem, _, fig in report_figures(RunRecord.open(run_dir))}


def _legend_texts(ax: Any) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def _legend_outside(ax: Any) -> bool:
    """The legend's box lies right of the axes (not over the data)."""
    legend = ax.get_legend()
    anchor = legend.get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    return bool(anchor.x0 >= 1.0)


@pytest.fixture(scope="module")
def hge_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = run_on_station(
        HgeTraining(task="XOR", max_iterations=3, initializations=1),
        "sim-dnpu",
        runs_dir=tmp_path_factory.mktemp("hge"),
        handle_signals=False,
    )
    assert result.n_events >= 1, result.reason
    return result.run_dir


@pytest.mark.slow
def test_hge_report_has_the_figures_a_scientist_needs(hge_run: Path) -> None:
    figures = _figures(hge_run)
    names = ["electrode 2", "electrode 3", "electrode 4", "electrode 5", "electrode 6"]
    loss = figures["primary-loss"].axes[0]
    assert loss.get_xlabel() == "iteration" and loss.get_ylabel() == "corsig loss"
    # case outputs against the threshold: the four cases by name, coloured by target
    cases = figures["primary-cases"].axes[0]
    assert [t.get_text() for t in cases.get_xticklabels()] == ["00", "01", "10", "11"]
    assert cases.get_ylabel() == "output (nA)"
    assert len(cases.patches) == 4
    assert any(t.startswith("threshold") for t in _legend_texts(cases)) and _legend_outside(cases)
    # controls per electrode by name, a curve each, units on the axis
    controls = figures["primary-history_controls_v"].axes[0]
    assert controls.get_ylabel() == "control (V)" and controls.get_xlabel() == "iteration"
    assert len(controls.get_lines()) == 5 and _legend_texts(controls) == names
    assert _legend_outside(controls)
    # gradients: newest as bars named by electrode, and their history
    bars, history = figures["primary-bars_gradient"].axes[:2]
    assert [t.get_text() for t in bars.get_xticklabels()] == names
    assert bars.get_ylabel() == "dL/dV (1/V)" and len(bars.patches) == 5
    assert len(history.get_lines()) == 5
    # the TIA trace on its time axis: trace_t_s is the x axis, not a signal of its own
    trace = figures["primary-trace_trace_na"].axes[0]
    assert trace.get_xlabel() == "time (s)" and trace.get_ylabel() == "TIA output current (nA)"
    (line,) = trace.get_lines()
    record = RunRecord.open(hge_run)
    np.testing.assert_array_equal(line.get_xdata(), record.events.last("trace_t_s"))
    assert not any("trace_t_s" in stem for stem in figures)
    # bookkeeping is not drawn
    assert not any(k in stem for stem in figures for k in ("device_time", "restart", "found"))
    for stem, fig in figures.items():  # units or a unitless description on every y axis
        for ax in fig.axes:
            if ax.get_label() != "<colorbar>":
                assert ax.get_ylabel() and ax.get_xlabel(), stem


@pytest.mark.slow
def test_report_page_holds_parameters_station_result_and_figures(hge_run: Path) -> None:
    paths = make_report(hge_run)
    page = paths[0]
    assert page.name == "index.html" and page.parent == hge_run / "report"
    text = page.read_text()
    assert "<h2>Parameters</h2>" in text and "plateau_s" in text and "0.05 s" in text
    assert "<h2>Station</h2>" in text and "sim-dnpu" in text
    assert "<h2>Result</h2>" in text and "device time" in text
    for png in paths[1:]:
        assert png.read_bytes()[:8] == PNG and f'src="{png.name}"' in text


def test_iv_report_draws_the_spread_as_error_bars(tmp_path: Path) -> None:
    result = run_on_station(
        IvSweep(points=6, settle_s=0.001, acquisition_s=0.001),
        "sim-dnpu",
        runs_dir=tmp_path,
        handle_signals=False,
    )
    assert result.status == "success", result.reason
    figures = _figures(result.run_dir)
    assert list(figures) == ["primary-xy_current_na"]
    ax = figures["primary-xy_current_na"].axes[0]
    assert ax.get_xlabel() == "electrode 3 voltage (V)"
    assert ax.get_ylabel() == "output current (nA)"
    (errorbars,) = ax.containers
    record = RunRecord.open(result.run_dir)
    _, _, (bars,) = errorbars.lines
    spans = [seg[1, 1] - seg[0, 1] for seg in bars.get_segments()]
    np.testing.assert_allclose(spans, 2 * record.events.scalars["current_std_na"])


def test_report_of_a_run_without_events_says_so_and_exits_non_zero(tmp_path: Path) -> None:
    class Idle(SleepyCounter):
        name = "test-idle"

        def execute(self) -> None:
            return None

    result = run_procedure(Idle(), runs_dir=tmp_path, echo=False, handle_signals=False)
    with pytest.raises(EmptyRunError, match="no events"):
        make_report(result.run_dir)
    out = subprocess.run(
        [sys.executable, "-m", "labrig.cli", "report", str(result.run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "no events" in out.stderr


def test_undeclared_keys_still_get_labelled_figures(tmp_path: Path) -> None:
    result = run_procedure(QuadraticDescent(n_iterations=30), runs_dir=tmp_path)
    figures = _figures(result.run_dir)
    assert set(figures) == {
        "primary-scalar_loss",
        "primary-controls",
        "primary-gradient",
        "primary-trace",
    }
    ax = figures["primary-controls"].axes[0]
    assert ax.get_xlabel() == "iteration" and len(ax.get_lines()) == 4
    paths = make_report(result.run_dir)
    assert paths[0].name == "index.html"


def test_catalog_lists_finished_crashed_and_unreadable_runs(tmp_path: Path) -> None:
    ok = run_procedure(QuadraticDescent(n_iterations=5), runs_dir=tmp_path)
    crashed_dir = tmp_path / "20200101-000000-crashy-00000000"
    crashed_dir.mkdir()
    start = StartDoc("c" * 32, "crashy", "m:c", {}, {}, "", {}, {}, {}, {}, {}, 1.0)
    declared = StreamDeclaration((DataKey("loss"),))
    writer = RecordWriter.create(
        lock_run_dir(crashed_dir), start, [DescriptorDoc.compose(start, declared, "test")]
    )
    for i in range(3):
        writer.append_event(EventDoc(start.run_uid, i, 1.0 + i, {"loss": 1.0 / (i + 1)}))
    writer.close()  # no stop document: looks like a crash
    garbage = tmp_path / "20200101-000001-garbage-11111111"
    garbage.mkdir()
    (garbage / "run.h5").write_bytes(b"not an hdf5 file")
    (tmp_path / "stray.txt").write_text("ignored")

    runs = {r.run_dir.name: r for r in list_runs(tmp_path)}
    assert len(runs) == 3
    crashed = runs[crashed_dir.name]
    assert crashed.status == "crashed" and crashed.n_events == 3
    assert crashed.last_loss == np.float64(1.0 / 3)
    assert runs[garbage.name].status == "unreadable" and runs[garbage.name].error
    finished = runs[ok.run_dir.name]
    assert finished.status == "success" and finished.n_events == 5
    assert finished.last_loss == ok.summary["final_loss"]
    assert finished.procedure == "toy-quadratic" and finished.start_time is not None
    assert list_runs(tmp_path / "missing") == []


@pytest.mark.slow
def test_dfa_report_has_learning_curves_confusion_and_per_layer_views(tmp_path: Path) -> None:
    result = run_on_station(
        DfaTraining(nodes=20, epochs=2, train_samples=64, test_samples=64, layers=2),
        "sim-reservoir",
        runs_dir=tmp_path,
        handle_signals=False,
    )
    assert result.status == "success", result.reason
    figures = _figures(result.run_dir)
    curves = figures["primary-accuracy"].axes[0]
    assert curves.get_xlabel() == "epoch" and len(curves.get_lines()) == 2
    assert _legend_texts(curves) == ["train accuracy", "test accuracy"]
    confusion = figures["primary-image_confusion"].axes[0]
    assert confusion.get_xlabel() == "predicted class" and confusion.get_ylabel() == "true class"
    assert [t.get_text() for t in confusion.get_yticklabels()] == [str(c) for c in range(10)]
    image = confusion.get_images()[0].get_array()
    assert image.shape == (10, 10) and int(image.sum()) == 64  # every test sample counted once
    drives = figures["primary-histogram_drive"].axes[0]
    assert drives.get_xlabel() == "AWG drive (V)" and len(drives.get_lines()) == 2
    assert _legend_texts(drives) == ["layer 1", "layer 2"] and _legend_outside(drives)
    states = [ax for ax in figures["primary-image_layer_states"].axes if ax.get_images()]
    assert [ax.get_title() for ax in states] == ["layer 1", "layer 2"]
    assert all(ax.get_xlabel() == "node" and ax.get_ylabel() == "sample" for ax in states)
    assert not any("device_time" in stem for stem in figures)
