"""Reports (PNG plots) and the run catalogue, including crashed and damaged runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_runs_toys import QuadraticDescent, SleepyCounter

from labrig.procedures.runner import run_procedure
from labrig.runs.catalog import list_runs
from labrig.runs.documents import DataKey, DescriptorDoc, EventDoc, StartDoc, StreamDeclaration
from labrig.runs.record import RecordWriter, lock_run_dir
from labrig.runs.report import make_report

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_draws_what_the_record_holds(tmp_path: Path) -> None:
    result = run_procedure(QuadraticDescent(n_iterations=30), runs_dir=tmp_path)
    paths = make_report(result.run_dir)
    names = sorted(p.name for p in paths)
    # loss (+ 'iteration' scalar), controls trajectory, last trace, gradient
    assert names == ["gradients.png", "loss.png", "scalars.png", "signals.png", "trajectories.png"]
    for path in paths:
        assert path.parent == result.run_dir / "report"
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000


def test_report_skips_what_is_absent(tmp_path: Path) -> None:
    result = run_procedure(SleepyCounter(n_events=5, period_s=0.0), runs_dir=tmp_path)
    names = sorted(p.name for p in make_report(result.run_dir, out_dir=tmp_path / "out"))
    assert names == ["scalars.png", "signals.png"]


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
