"""The sweep's own record: a folder with the sweep, one station file and one run per point, and
one table of every point's status and key results.

Layout of a sweep folder (by default ``<runs dir>/sweeps/<name>``)::

    sweep.toml        the sweep as a sweep file: ``labrig sweep NAME --from sweep.toml`` re-runs it
    sweep.json        what ran: the sweep's uid, the resolved station, labrig's version, the axes
    points.parquet    one row per point (read it with ``pandas.read_parquet``), rewritten
                      atomically as points finish: index, point, one column per axis, status,
                      reason, run_dir (relative to the folder), device_time_s, wall_time_s,
                      worker, started, finished, then the run's scalar results (found,
                      accuracy, iterations, ...; ``last_<name>`` for the last value of each
                      recorded scalar)
    stations/<point>.toml   the point's station (the sweep's, with the point's [bench] settings)
    runs/             every point's run record: ``labrig runs --out SWEEP/runs`` lists them
    report/           ``labrig report SWEEP`` writes its figures here

A point's run is found again after a crash by the marker line its station file starts with, which
the run record stores with the station text.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from labrig.station import Station, dump_toml, parse_station
from labrig.sweep.grid import Point, SweepError, SweepSpec

try:
    import fcntl
except ImportError:  # Windows: no advisory lock; one driver per sweep is then up to the user
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SWEEP_FILE",
    "TABLE_FILE",
    "SweepFolder",
    "is_sweep_dir",
    "read_table",
]

SWEEP_FILE = "sweep.toml"
META_FILE = "sweep.json"
TABLE_FILE = "points.parquet"
LOCK_FILE = ".driver.lock"
MARKER = "# labrig sweep point"
_MARKER_RE = re.compile(r"^# labrig sweep point (p[0-9a-f]+)\s*$", re.MULTILINE)

FIXED_COLUMNS = (
    "index",
    "point",
    "status",
    "reason",
    "run_dir",
    "device_time_s",
    "wall_time_s",
    "worker",
    "started",
    "finished",
)


def is_sweep_dir(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a sweep folder (it holds ``sweep.json``)."""
    return (Path(path) / META_FILE).is_file()


def read_table(sweep_dir: str | os.PathLike[str]) -> Any:
    """The sweep's table as a pandas DataFrame (one row per point, in the sweep's order)."""
    import pandas as pd

    path = Path(sweep_dir) / TABLE_FILE
    if not path.is_file():
        raise SweepError(f"{sweep_dir}: no {TABLE_FILE}: not a sweep folder, or never started")
    return pd.read_parquet(path)


def station_text_for(base: Station, point: Point) -> str:
    """The point's station file: the sweep's station with the point's ``[bench]`` settings,
    under a marker line naming the point. Validated like any station file."""
    if point.station_settings:
        if base.bench is None:
            keys = ", ".join(point.station_settings)
            raise SweepError(
                f"{base.source} has no [bench] table: it is not simulated by labrig, so "
                f"{keys} cannot be swept on it"
            )
        data = tomllib.loads(base.text)
        data["bench"] = {**data.get("bench", {}), **point.station_settings}
        body = dump_toml(data)
    else:
        body = base.text
    text = f"{MARKER} {point.point_id}\n# derived from {base.source}\n{body}"
    parse_station(text, f"station of sweep point {point.point_id} (from {base.source})")
    return text


def point_of_station_text(text: str) -> str | None:
    match = _MARKER_RE.search(text or "")
    return match[1] if match else None


class SweepFolder:
    """A sweep folder on disk: its files, its lock and its table."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs_dir = path / "runs"
        self.stations_dir = path / "stations"
        self.table_path = path / TABLE_FILE
        self._lock: IO[str] | None = None

    # ---- creation and identity --------------------------------------------------------------

    def prepare(self, spec: SweepSpec, meta: Mapping[str, Any]) -> dict[str, Any]:
        """Create the folder for ``spec``, or check that an existing one holds the same sweep
        (raises :class:`SweepError` otherwise). Returns the stored metadata."""
        meta_path = self.path / META_FILE
        if meta_path.is_file():
            stored = json.loads(meta_path.read_text(encoding="utf-8"))
            old = SweepSpec.from_document(stored["spec"], str(meta_path))
            if old.digest() != spec.digest():
                changed = sorted(
                    k
                    for k, v in spec.to_document().items()
                    if k != "name" and old.to_document().get(k) != v
                )
                raise SweepError(
                    f"{self.path} holds a different sweep (differs in: {', '.join(changed)}); "
                    "give another --name, or remove the folder to start over"
                )
            return dict(stored)
        if self.path.exists() and any(self.path.iterdir()):
            raise SweepError(f"{self.path} exists and is not a sweep folder")
        self.path.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(exist_ok=True)
        self.stations_dir.mkdir(exist_ok=True)
        stored = {**meta, "spec": spec.to_document()}
        _atomic_write(meta_path, json.dumps(stored, indent=2, default=str))
        _atomic_write(self.path / SWEEP_FILE, sweep_file_text(spec))
        return stored

    def lock(self) -> None:
        """Hold the folder's driver lock (one driver per sweep); raises if another holds it."""
        if fcntl is None:
            return
        handle = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 - held while the sweep runs
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise SweepError(f"{self.path}: another 'labrig sweep' is running this sweep") from None
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # ---- stations and runs ------------------------------------------------------------------

    def station_file(self, base: Station, point: Point) -> Path:
        path = self.stations_dir / f"{point.point_id}.toml"
        text = station_text_for(base, point)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            _atomic_write(path, text)
        return path

    def relative(self, run_dir: str | os.PathLike[str]) -> str:
        if not run_dir:
            return ""
        with contextlib.suppress(ValueError):
            return str(Path(run_dir).resolve().relative_to(self.path.resolve()))
        return str(run_dir)

    def absolute(self, run_dir: str) -> Path:
        path = Path(run_dir)
        return path if path.is_absolute() else self.path / path

    def find_runs(self, wanted: Iterable[str], known: Iterable[str] = ()) -> dict[str, Path]:
        """Run folders under ``runs/`` that belong to the ``wanted`` points, found by the marker
        in their station text; folders in ``known`` (relative paths) are not opened."""
        from labrig.runs.record import RUN_FILE, RunRecord

        wanted_set = set(wanted)
        skip = set(known)
        found: dict[str, tuple[float, Path]] = {}
        if not wanted_set or not self.runs_dir.is_dir():
            return {}
        for child in sorted(self.runs_dir.iterdir()):
            if not (child / RUN_FILE).exists() or self.relative(child) in skip:
                continue
            try:
                record = RunRecord.open(child, load_arrays=False, wait_s=0.5)
            except Exception:
                continue
            station = record.start_extra.get("station")
            texts = [record.start.station_text]
            if isinstance(station, Mapping):
                texts.append(str(station.get("text", "")))
            point_id = next(filter(None, map(point_of_station_text, texts)), None)
            if point_id in wanted_set:
                # Two runs of one point (a retried task): the later one is the point's.
                stamp = record.start.time
                if point_id not in found or stamp > found[point_id][0]:
                    found[point_id] = (stamp, child)
        return {k: v for k, (_, v) in found.items()}

    # ---- table ------------------------------------------------------------------------------

    def read_rows(self) -> dict[str, dict[str, Any]]:
        """The stored table's rows by point id (empty if there is none yet)."""
        if not self.table_path.is_file():
            return {}
        frame = read_table(self.path)
        rows: dict[str, dict[str, Any]] = {}
        for row in frame.to_dict(orient="records"):
            rows[str(row["point"])] = {k: _from_cell(v) for k, v in row.items()}
        return rows

    def write_table(self, rows: Sequence[Mapping[str, Any]], axes: Sequence[str]) -> None:
        """Write every row (atomically: readers see the old table or the new one)."""
        import pandas as pd

        results = sorted(
            {k for row in rows for k in row} - set(FIXED_COLUMNS) - set(axes),
        )
        columns = ["index", "point", *axes, *FIXED_COLUMNS[2:], *results]
        data = {c: _column([row.get(c) for row in rows]) for c in columns}
        frame = pd.DataFrame(data, columns=columns)
        tmp = self.table_path.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, self.table_path)


def sweep_file_text(spec: SweepSpec) -> str:
    """``spec`` as a sweep file (TOML) that reproduces it."""
    head: dict[str, Any] = {"procedure": spec.procedure}
    if spec.station:
        head["station"] = spec.station
    if spec.name:
        head["name"] = spec.name
    data: dict[str, Any] = {"sweep": head}
    if spec.fixed:
        data["fixed"] = dict(spec.fixed)
    if spec.grid:
        data["grid"] = {k: list(v) for k, v in spec.grid.items()}
    if spec.listed:
        data["points"] = [dict(p) for p in spec.listed]
    return f"# labrig sweep file, written by 'labrig sweep' ({spec.source})\n" + dump_toml(data)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _from_cell(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _column(values: list[Any]) -> Any:
    """One typed column: numbers as float64 (NaN where missing; integers stay integers when
    none is missing), booleans as a nullable boolean, anything else as text."""
    import numpy as np
    import pandas as pd

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool | np.bool_) for v in present):
        return pd.array(values, dtype="boolean")
    if present and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in present
    ):
        if len(present) == len(values) and all(isinstance(v, int | np.integer) for v in present):
            return np.asarray(values, dtype=np.int64)
        return np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return pd.array([None if v is None else str(v) for v in values], dtype="string")
