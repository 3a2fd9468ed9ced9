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
from typing import Literal

import numpy as np

from labrig.runs.checkpoint import checkpoint_paths, is_resumable
from labrig.runs.record import RUN_FILE, RecordError, RunRecord, default_runs_dir

__all__ = ["RunSummary", "list_runs", "summarize_run"]

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
