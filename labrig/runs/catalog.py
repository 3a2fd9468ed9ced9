"""List the runs in a runs directory: ``list_runs()`` -> one :class:`RunSummary` per run folder.

Robust to what a lab leaves behind: crashed runs, runs still being written, folders whose
``run.h5`` is missing or unreadable (reported with status ``"unreadable"`` and the error), and
stray files (ignored).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from labrig.runs.checkpoint import checkpoint_paths, is_resumable
from labrig.runs.record import RUN_FILE, RecordError, RunRecord, default_runs_dir

__all__ = [
    "RunNotFoundError",
    "RunSummary",
    "list_runs",
    "resolve_run",
    "result_text",
    "summarize_run",
]

CatalogStatus = Literal["running", "crashed", "success", "aborted", "failed", "unreadable"]


@dataclass(frozen=True)
class RunSummary:
    """One line of the catalogue."""

    run_dir: Path
    procedure: str
    status: CatalogStatus
    start_time: dt.datetime | None
    n_events: int
    last_loss: float | None
    run_uid: str = ""
    reason: str = ""
    resumable: bool = False
    error: str = ""
    task: str = ""
    result: str = ""

    @property
    def name(self) -> str:
        """The run's folder name (``YYYYmmdd-HHMMSS-<procedure>-<uid8>``): what commands take."""
        return self.run_dir.name


def _pct(value: object) -> str:
    return f"{100.0 * float(value):.1f} %" if isinstance(value, int | float) else "?"


def result_text(procedure: str, summary: dict[str, Any]) -> str:
    """The one figure a person looks for in a run's stop summary, as short text."""
    if not summary:
        return ""
    if "found" in summary and "task" in summary:  # hge
        if "outputs_na" not in summary:
            return "stopped before the final check"
        found = "found" if summary.get("found") else "not found"
        acc = summary.get("accuracy")
        acc_text = f", accuracy {_pct(acc)}" if isinstance(acc, int | float) and acc == acc else ""
        return found + acc_text
    if "test_accuracy" in summary:
        return f"test {_pct(summary['test_accuracy'])}"
    if "test_nmse" in summary:
        return f"test NMSE {float(summary['test_nmse']):.4g}"
    if "current_min_na" in summary:
        return (
            f"{summary.get('points', '?')} points, {float(summary['current_min_na']):.4g} to "
            f"{float(summary['current_max_na']):.4g} nA"
        )
    if "loop_delay_s" in summary:
        return f"loop delay {float(summary['loop_delay_s']) * 1e6:.4g} us"
    if "points" in summary:
        return f"{summary['points']} points"
    return ""


def _last_loss(scalars: dict[str, np.ndarray]) -> float | None:
    names = ["loss"] if "loss" in scalars else sorted(n for n in scalars if "loss" in n.lower())
    if not names:
        return None
    values = scalars[names[0]]
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else None


def summarize_run(run_dir: str | os.PathLike[str]) -> RunSummary:
    """Summarise one run folder; never raises for a damaged record."""
    folder = Path(run_dir)
    resumable = bool(checkpoint_paths(folder))
    try:
        record = RunRecord.open(folder, load_arrays=False, wait_s=0.5)
    except (RecordError, OSError, KeyError, ValueError) as exc:
        return RunSummary(
            run_dir=folder,
            procedure="",
            status="unreadable",
            start_time=None,
            n_events=0,
            last_loss=None,
            resumable=resumable,
            error=str(exc),
        )
    task = record.start.parameters.get("task", "")
    start_time = (
        dt.datetime.fromtimestamp(record.start.time).astimezone()
        if math.isfinite(record.start.time)
        else None
    )
    return RunSummary(
        run_dir=folder,
        procedure=record.start.procedure,
        status=record.status,
        start_time=start_time,
        n_events=len(record.events),
        last_loss=_last_loss(record.events.scalars),
        run_uid=record.start.run_uid,
        reason=record.stop.reason if record.stop is not None else "",
        resumable=is_resumable(folder, record.status),
        task=str(task) if task is not None else "",
        result=result_text(
            record.start.procedure, record.stop.summary if record.stop is not None else {}
        ),
    )


def list_runs(runs_dir: str | os.PathLike[str] | None = None) -> list[RunSummary]:
    """Every run folder (a folder holding ``run.h5``) in the runs directory, oldest first.

    ``runs_dir`` defaults to :func:`labrig.runs.record.default_runs_dir`. A missing directory
    gives an empty list.
    """
    root = default_runs_dir(runs_dir)
    if not root.is_dir():
        return []
    summaries = [
        summarize_run(child)
        for child in root.iterdir()
        if child.is_dir() and (child / RUN_FILE).exists()
    ]

    def key(summary: RunSummary) -> tuple[float, str]:
        stamp = summary.start_time.timestamp() if summary.start_time else math.inf
        return (stamp, summary.run_dir.name)

    return sorted(summaries, key=key)


class RunNotFoundError(LookupError):
    """No run, or more than one, matches what was asked for; the message says which."""


def resolve_run(
    ref: str | os.PathLike[str], runs_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The run folder ``ref`` names: a path to a run folder (or its ``run.h5``), else a run
    name in the runs directory, else a unique prefix of one (``20261208-0029``), else a unique
    part of one (its uid, ``b3ac0074``).

    Raises :class:`RunNotFoundError` naming the runs directory when nothing matches, or listing
    the candidates when several do.
    """
    text = str(ref)
    path = Path(text)
    if path.name == RUN_FILE and path.is_file():
        return path.parent
    if path.is_dir() and (path / RUN_FILE).exists():
        return path
    root = default_runs_dir(runs_dir)
    if path.is_dir():
        raise RunNotFoundError(f"{text}: a folder, but not a run (no {RUN_FILE} in it)")
    names = (
        sorted(c.name for c in root.iterdir() if c.is_dir() and (c / RUN_FILE).exists())
        if root.is_dir()
        else []
    )
    if text in names:
        return root / text
    for matches in (
        [n for n in names if n.startswith(text)],
        [n for n in names if text in n] if len(text) >= 4 else [],
    ):
        if len(matches) == 1:
            return root / matches[0]
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (
                f" and {len(matches) - 5} more" if len(matches) > 5 else ""
            )
            raise RunNotFoundError(f"{text!r} matches {len(matches)} runs in {root}: {shown}")
    if os.sep in text or text.endswith(RUN_FILE):
        raise RunNotFoundError(f"{text}: no such run folder")
    raise RunNotFoundError(
        f"no run named {text!r} in {root} ('labrig runs list' shows them; "
        "'--out DIR' looks elsewhere)"
    )
