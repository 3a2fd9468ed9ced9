"""The documents a run produces: one start, many events and logs, one stop (bluesky-like).

Storage (:mod:`labrig.runs.record`), live plots and the console only *subscribe* to these; the
procedure never talks to them directly. Documents are frozen dataclasses; arrays in an
:class:`EventDoc` are private read-only copies, so a subscriber can keep them.

A resumed run publishes a second :class:`StartDoc` with ``segment`` 1, 2, ... and the
``first_seq_num`` at which its events continue.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Literal

import numpy as np

__all__ = [
    "NAME_PATTERN",
    "Document",
    "EventDoc",
    "LogDoc",
    "RunStatus",
    "StartDoc",
    "StopDoc",
    "StopStatus",
    "check_name",
    "to_json",
    "to_jsonable",
]

StopStatus = Literal["success", "aborted", "failed"]
RunStatus = Literal["running", "crashed", "success", "aborted", "failed"]
LogLevel = Literal["debug", "info", "warning", "error"]

# Scalar and array names become HDF5 dataset names: no '/', no leading '.', no '~' (which the
# record uses to mark a shape change).
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it may name a scalar or array, else raise ``ValueError``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            f"{what} name {name!r} is not allowed: use letters, digits, '_', '.', '-' "
            "(starting with a letter or '_', at most 128 characters)"
        )
    return name


@dataclass(frozen=True)
class StartDoc:
    """Everything needed to understand and repeat a run, written before anything moves.

    ``station_text`` is the resolved station file (TOML) as run; ``station`` what the procedure
    reports of it (wiring, limits). ``snapshot`` maps instrument names to their settings.
    """

    run_uid: str
    procedure: str
    procedure_class: str
    parameters: dict[str, Any]
    parameter_units: dict[str, str]
    station_text: str
    station: dict[str, Any]
    snapshot: dict[str, Any]
    versions: dict[str, str]
    seeds: dict[str, Any]
    host: dict[str, Any]
    time: float
    segment: int = 0
    first_seq_num: int = 0


@dataclass(frozen=True)
class EventDoc:
    """One iteration: scalars (float) and arrays (read-only numpy copies)."""

    run_uid: str
    seq_num: int
    time: float
    scalars: dict[str, float]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class LogDoc:
    """A message from the procedure or the runner; ``seq_num`` is the number of events so far."""

    run_uid: str
    time: float
    level: LogLevel
    message: str
    seq_num: int = 0


@dataclass(frozen=True)
class StopDoc:
    """How the run ended. ``safe_state`` maps each instrument to "ok" or the error it raised."""

    run_uid: str
    time: float
    status: StopStatus
    reason: str
    n_events: int
    device_time_s: float
    wall_time_s: float
    summary: dict[str, Any] = field(default_factory=dict)
    safe_state: dict[str, str] = field(default_factory=dict)


Document = StartDoc | EventDoc | LogDoc | StopDoc


def to_jsonable(obj: object) -> Any:
    """Convert numpy scalars and arrays, tuples, sets and paths to plain JSON values.

    Non-finite floats stay floats (Python's JSON writes NaN/Infinity and reads them back). Other
    objects become their ``repr``: a record should hold what the instrument said, not fail.
    """
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, complex):
        return {"real": obj.real, "imag": obj.imag}
    return repr(obj)


def to_json(obj: object) -> str:
    """``json.dumps(to_jsonable(obj))`` with a stable key order."""
    return json.dumps(to_jsonable(obj), sort_keys=False, allow_nan=True)
