"""Run records: one folder per run holding ``run.h5`` (HDF5, written with h5py) and checkpoints.

Folder: ``<runs dir>/YYYYmmdd-HHMMSS-<procedure>-<short uid>`` (local time of the start). The runs
dir is, in order: the argument given, the environment variable ``LABRIG_RUNS_DIR``, or
``platformdirs.user_data_dir("labrig")/runs``.

Layout of ``run.h5`` (all names fixed; JSON is UTF-8 text in scalar string datasets)::

    /                       attrs: labrig_record_format=1, run_uid, procedure, created (ISO 8601)
    /start                  the start document. attrs: run_uid, procedure, procedure_class,
                            time (Unix s), segment=0, first_seq_num=0. JSON datasets: parameters,
                            parameter_units, station, snapshot, versions, seeds, host, plus any
                            extra ones (snapshot_after_startup); text dataset station_text (TOML)
    /resumes/<k>            the start document of resumed segment k (same layout), plus
                            previous_stop (JSON) and attr truncated_events
    /events/seq_num         int64 (n,)     sequence number of each event (0, 1, 2, ...)
    /events/time            float64 (n,)   Unix time of each event
    /events/segment         int32 (n,)     which segment (0 = first start) wrote the event
    /events/scalars/<name>  float64 (n,)   NaN where an event did not carry that scalar
    /events/arrays/<name>   (k, *shape)    the rows of an array; dtype as emitted
    /events/array_seq/<name> int64 (k,)    the seq_num of each row (arrays may skip events)
    /logs/jsonl             uint8 (m,)     log documents as UTF-8 JSON lines
    /stop                   attrs: status, reason, n_events, device_time_s, wall_time_s, time;
                            JSON datasets: summary, safe_state. Absent while running or crashed.

An array whose shape (or dtype) changes during a run gets one dataset per shape:
``/events/arrays/<name>`` for the first, ``<name>~1``, ``<name>~2``, ... for later ones, each with
attrs ``array_name`` and ``part`` and its own ``array_seq``. :class:`RunRecord` merges them.

Crash safety. The file is written in HDF5's single-writer/multiple-reader (SWMR) mode and
flushed after every event. SWMR orders its writes so that the file on disk is consistent after
every flush; a writer killed at any instant leaves a file that plain h5py opens with
``h5py.File(path, "r", swmr=True)`` and that holds every event whose append returned. (Opened
without ``swmr=True``, HDF5 refuses a crashed file because its "open for writing" flag is still
set.) New datasets (a scalar first seen mid-run, a shape change, the stop group) are created
after briefly closing and reopening the file outside SWMR mode, because SWMR does not support
creating objects while readers may be looking; that costs about 0.1 ms and happens rarely.
Readers see datasets created after they opened the file only when they reopen it. A writer
killed in that window leaves the plain "open for writing" flag, which no h5py open accepts:
:meth:`RunRecord.open` and a resume then clear it (as ``h5clear -s`` would, and only when no
writer holds the lock) and read every event flushed before.

Who is writing: the writer holds an advisory lock (``flock``) on ``.writer.lock`` in the run
folder for as long as it runs; the operating system releases it if the process dies. A record
with no stop group is ``running`` while that lock is held, ``crashed`` otherwise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import h5py
import numpy as np
import platformdirs
from h5py import h5s

from labrig.runs.documents import (
    EventDoc,
    LogDoc,
    RunStatus,
    StartDoc,
    StopDoc,
    check_name,
    to_json,
)

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; 'running' cannot be told from 'crashed'
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "RUN_FILE",
    "RecordError",
    "RecordWriter",
    "RecordedEvents",
    "RunRecord",
    "default_runs_dir",
    "is_being_written",
    "new_run_dir",
]

_logger = logging.getLogger(__name__)

RUN_FILE = "run.h5"
#: What a seq_num or array_seq row reads before it has been written.
UNWRITTEN_SEQ = -1
LOCK_FILE = ".writer.lock"
FORMAT_VERSION = 1
_JSON_FIELDS = ("parameters", "parameter_units", "station", "snapshot", "versions", "seeds", "host")
_STR = h5py.string_dtype("utf-8")


class RecordError(RuntimeError):
    """A run record could not be written, opened or resumed; the message names the file."""


# ------------------------------------------------------------------------------ locations


def default_runs_dir(runs_dir: str | os.PathLike[str] | None = None) -> Path:
    """The runs directory: ``runs_dir`` if given, else ``$LABRIG_RUNS_DIR``, else the user's
    data directory (``platformdirs.user_data_dir("labrig")/runs``)."""
    if runs_dir is not None:
        return Path(runs_dir)
    env = os.environ.get("LABRIG_RUNS_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("labrig")) / "runs"


def new_run_dir(
    runs_dir: str | os.PathLike[str] | None, procedure: str, run_uid: str, when: float
) -> Path:
    """Create and return ``<runs dir>/YYYYmmdd-HHMMSS-<procedure>-<uid[:8]>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", procedure).strip("._") or "procedure"
    folder = default_runs_dir(runs_dir) / f"{stamp}-{safe}-{run_uid.replace('-', '')[:8]}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def _record_path(path: str | os.PathLike[str]) -> Path:
    candidate = Path(path)
    return candidate / RUN_FILE if candidate.is_dir() else candidate


# ---------------------------------------------------------------------------------- locking


class _WriterLock:
    """An exclusive advisory lock on the run folder's lock file, held while a writer runs."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                handle.close()
                raise RecordError(
                    f"{self.path.parent}: the record is being written by another writer"
                ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            if fcntl is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def is_being_written(run_dir: str | os.PathLike[str]) -> bool:
    """True if a live writer (in any process) holds the run folder's lock."""
    lock_path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not lock_path.exists():
        return False
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


# ----------------------------------------------------------------------------------- writer


def _write_json(group: h5py.Group, name: str, obj: object) -> None:
    if name in group:
        del group[name]
    group.create_dataset(name, data=to_json(obj), dtype=_STR)


def _write_start(group: h5py.Group, start: StartDoc) -> None:
    group.attrs["run_uid"] = start.run_uid
    group.attrs["procedure"] = start.procedure
    group.attrs["procedure_class"] = start.procedure_class
    group.attrs["time"] = start.time
    group.attrs["time_iso"] = dt.datetime.fromtimestamp(start.time).astimezone().isoformat()
    group.attrs["segment"] = start.segment
    group.attrs["first_seq_num"] = start.first_seq_num
    for name in _JSON_FIELDS:
        _write_json(group, name, getattr(start, name))
    group.create_dataset("station_text", data=start.station_text, dtype=_STR)


def _chunk_rows(row_shape: tuple[int, ...], itemsize: int) -> int:
    # Aim for chunks of ~64 KiB: big enough for fast reads, small enough to rewrite per flush.
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * itemsize)
    return int(max(1, min(1024, 65536 // row_bytes)))


@dataclass
class _ArrayPart:
    dataset: str  # name under /events/arrays and /events/array_seq
    shape: tuple[int, ...]
    dtype: np.dtype[Any]


class _Column:
    """A resizable dataset grown one row at a time through h5py's low-level API.

    ``ds.resize(); ds[i] = v`` costs ~55 us per dataset in h5py's high-level layer; this costs
    ~15 us, which matters at one call per scalar per event.
    """

    def __init__(self, ds: h5py.Dataset) -> None:
        self._id = ds.id
        self.row_shape: tuple[int, ...] = tuple(ds.shape[1:])
        self.dtype = ds.dtype
        self.rows = int(ds.shape[0])
        self._origin = (0,) * len(self.row_shape)
        self._memory = h5s.create_simple((1, *self.row_shape))
        self._empty = 0 in self.row_shape

    def append(self, value: object) -> None:
        k = self.rows
        self._id.set_extent((k + 1, *self.row_shape))
        if not self._empty:
            space = self._id.get_space()
            space.select_hyperslab((k, *self._origin), (1, *self.row_shape))
            buffer = np.ascontiguousarray(value, dtype=self.dtype).reshape((1, *self.row_shape))
            self._id.write(self._memory, space, buffer)
        self.rows = k + 1


#: How long the writer waits for readers to let go of HDF5's file lock before going ahead.
LOCK_WAIT_S = 0.5


def _open_for_writing(path: Path) -> h5py.File:
    """Open the record read-write outside SWMR mode (to create datasets).

    A reader that has the file open (the dashboard's run browser, a person with h5py) holds
    HDF5's advisory lock, which refuses this open. A run must not fail on a reader's account:
    wait a moment for it to let go, then open without the lock. SWMR readers see objects
    created meanwhile when they reopen the file (documented above); the lock on
    ``.writer.lock`` still keeps a second *writer* out.
    """
    deadline = time.monotonic() + LOCK_WAIT_S
    delay = 0.01
    while True:
        try:
            return h5py.File(path, "r+", libver="latest")
        except OSError as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                return h5py.File(path, "r+", libver="latest", locking=False)
            time.sleep(delay)
            delay = min(2 * delay, 0.1)


# ------------------------------------------------------------------ crashed writers' flags

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: HDF5's refusal to open a file whose writer died outside SWMR mode (or in it, for a
#: non-SWMR open): the superblock still says "open for writing".
_OPEN_FOR_WRITE_ERRORS = ("already open for write", "not already open for SWMR writing")


def _lookup3(data: bytes) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` (initval 0): HDF5's metadata checksum."""
    mask = 0xFFFFFFFF

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & mask

    def word(i: int) -> int:
        return int.from_bytes(data[i : i + 4].ljust(4, b"\0"), "little")

    length = len(data)
    a = b = c = (0xDEADBEEF + length) & mask
    k = 0
    while length > 12:
        a, b, c = (a + word(k)) & mask, (b + word(k + 4)) & mask, (c + word(k + 8)) & mask
        a = ((a - c) & mask) ^ rot(c, 4)
        c = (c + b) & mask
        b = ((b - a) & mask) ^ rot(a, 6)
        a = (a + c) & mask
        c = ((c - b) & mask) ^ rot(b, 8)
        b = (b + a) & mask
        a = ((a - c) & mask) ^ rot(c, 16)
        c = (c + b) & mask
        b = ((b - a) & mask) ^ rot(a, 19)
        a = (a + c) & mask
        c = ((c - b) & mask) ^ rot(b, 4)
        b = (b + a) & mask
        length -= 12
        k += 12
    if length == 0:
        return c
    a, b, c = (a + word(k)) & mask, (b + word(k + 4)) & mask, (c + word(k + 8)) & mask
    c = (c ^ b) - rot(b, 14) & mask
    a = (a ^ c) - rot(c, 11) & mask
    b = (b ^ a) - rot(a, 25) & mask
    c = (c ^ b) - rot(b, 16) & mask
    a = (a ^ c) - rot(c, 4) & mask
    b = (b ^ a) - rot(a, 14) & mask
    c = (c ^ b) - rot(b, 24) & mask
    return c


def _clear_write_flags(path: Path) -> bool:
    """Clear the "open for writing" flags a dead writer left in ``path``'s superblock (what
    ``h5clear -s`` does), so the events it flushed can be read. Only for a record no writer
    holds (see :func:`is_being_written`). True if flags were cleared."""
    with open(path, "r+b") as handle:
        head = handle.read(64)
        # Superblock version 2/3: signature, version, offset size, length size, flags, four
        # addresses, then the checksum of everything before it.
        if len(head) < 12 or head[:8] != _HDF5_SIGNATURE or head[8] not in (2, 3):
            return False
        end = 12 + 4 * head[9]
        if head[11] == 0 or len(head) < end + 4:
            return False
        block = head[:11] + b"\0" + head[12:end]
        handle.seek(0)
        handle.write(block + _lookup3(block).to_bytes(4, "little"))
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _is_open_for_write_error(exc: BaseException) -> bool:
    return any(text in str(exc) for text in _OPEN_FOR_WRITE_ERRORS)


class RecordWriter:
    """Append a run's documents to ``run.h5``, flushing every event (see the module docstring).

    Not thread-safe: the runner calls it from one thread at a time. Use :meth:`create` for a new
    run and :meth:`reopen` to continue a crashed or aborted one.
    """

    def __init__(self, run_dir: Path, lock: _WriterLock) -> None:
        self.run_dir = run_dir
        self.path = run_dir / RUN_FILE
        self._lock = lock
        self._file: h5py.File | None = None
        self._n = 0
        self._last_seq = -1
        self._scalars: list[str] = []
        self._parts: dict[str, list[_ArrayPart]] = {}
        self._log_bytes = 0
        self._segment = 0
        self._start_group = "start"
        self._columns: dict[str, _Column] = {}

    # ---- opening ----------------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: Path, start: StartDoc) -> RecordWriter:
        """Start a new record in the (empty) ``run_dir`` with the start document."""
        lock = _WriterLock(run_dir)
        lock.acquire()
        writer = cls(run_dir, lock)
        try:
            f = h5py.File(writer.path, "w", libver="latest")
            f.attrs["labrig_record_format"] = FORMAT_VERSION
            f.attrs["run_uid"] = start.run_uid
            f.attrs["procedure"] = start.procedure
            f.attrs["created"] = dt.datetime.fromtimestamp(start.time).astimezone().isoformat()
            _write_start(f.create_group("start"), start)
            events = f.create_group("events")
            for name, dtype in (("seq_num", np.int64), ("time", np.float64), ("segment", np.int32)):
                # seq_num rows read -1 until written: a row extended but never written (an
                # interrupt between the two) is then told from event 0.
                events.create_dataset(
                    name,
                    (0,),
                    maxshape=(None,),
                    dtype=dtype,
                    chunks=(1024,),
                    fillvalue=UNWRITTEN_SEQ if name == "seq_num" else 0,
                )
            events.create_group("scalars")
            events.create_group("arrays")
            events.create_group("array_seq")
            f.create_group("logs").create_dataset(
                "jsonl", (0,), maxshape=(None,), dtype=np.uint8, chunks=(4096,)
            )
            f.swmr_mode = True
            f.flush()
            writer._file = f
            writer._bind()
        except Exception as exc:
            lock.release()
            raise RecordError(f"{writer.path}: cannot create run record ({exc})") from exc
        return writer

    @classmethod
    def reopen(
        cls, run_dir: Path, start: StartDoc, keep_through_seq: int
    ) -> tuple[RecordWriter, int]:
        """Continue the record in ``run_dir`` as segment ``start.segment``.

        Events after ``keep_through_seq`` (written after the checkpoint) are removed, so the
        resumed run writes them again. A crashed file is first repaired (copied into a clean
        file). Returns the writer and the number of events removed.
        """
        lock = _WriterLock(run_dir)
        lock.acquire()
        writer = cls(run_dir, lock)
        try:
            try:
                f = _open_for_writing(writer.path)
            except OSError:
                _repair(writer.path)
                f = _open_for_writing(writer.path)
            writer._file = f
            previous_stop: dict[str, Any] | None = None
            if "stop" in f:
                previous_stop = {k: _attr(v) for k, v in f["stop"].attrs.items()}
            removed = writer._truncate(keep_through_seq)
            group = f.require_group("resumes").create_group(str(start.segment))
            writer._start_group = group.name
            _write_start(group, start)
            _write_json(group, "previous_stop", previous_stop)
            group.attrs["truncated_events"] = removed
            # Only now that the old stop document is kept in the new segment: a failure before
            # this point leaves the record as it ended, with its stop document.
            if "stop" in f:
                del f["stop"]
            writer._load_layout()
            f.swmr_mode = True
            f.flush()
            writer._bind()
        except Exception as exc:
            writer._close_file()
            lock.release()
            if isinstance(exc, RecordError):
                raise
            raise RecordError(f"{writer.path}: cannot reopen run record ({exc})") from exc
        return writer, removed

    def _truncate(self, keep_through_seq: int) -> int:
        f = self._require_file()
        events = cast(h5py.Group, f["events"])
        n_complete = _complete_rows(events)
        seq = events["seq_num"][:n_complete]
        keep = int(np.count_nonzero(seq <= keep_through_seq))
        removed = int(events["seq_num"].shape[0]) - keep
        for name in ("seq_num", "time", "segment"):
            events[name].resize((keep,))
        for ds in events["scalars"].values():
            ds.resize((keep,))
        last_seq = int(seq[keep - 1]) if keep else -1
        for name, ds in events["arrays"].items():
            seq_ds = events["array_seq"][name]
            rows = min(ds.shape[0], seq_ds.shape[0])
            k = _rows_through(seq_ds[:rows], last_seq)
            ds.resize(k, axis=0)
            seq_ds.resize((k,))
        return removed

    def _load_layout(self) -> None:
        f = self._require_file()
        events = cast(h5py.Group, f["events"])
        self._n = int(events["seq_num"].shape[0])
        self._last_seq = int(events["seq_num"][self._n - 1]) if self._n else -1
        self._scalars = list(events["scalars"].keys())
        self._parts = {}
        for dsname, ds in events["arrays"].items():
            name = str(ds.attrs.get("array_name", dsname))
            part = _ArrayPart(dsname, tuple(ds.shape[1:]), ds.dtype)
            self._parts.setdefault(name, []).append(part)
        self._log_bytes = int(f["logs/jsonl"].shape[0])

    # ---- writing ----------------------------------------------------------------------------

    @property
    def n_events(self) -> int:
        """Events in the record."""
        return self._n

    def _require_file(self) -> h5py.File:
        if self._file is None:
            raise RecordError(f"{self.path}: the record is closed")
        return self._file

    @contextlib.contextmanager
    def _structure(self) -> Iterator[h5py.File]:
        """Leave SWMR mode (close and reopen) to create objects, then re-enter it."""
        self._require_file().close()
        self._file = _open_for_writing(self.path)
        try:
            yield self._file
        finally:
            # With an SWMR reader attached, HDF5 keeps the file marked as in SWMR writing mode
            # across the reopen; switching it on again would fail.
            if not self._file.swmr_mode:
                self._file.swmr_mode = True
            self._bind()

    def add_start_json(self, name: str, obj: object) -> None:
        """Store extra JSON beside the start document (e.g. ``snapshot_after_startup``)."""
        check_name(name, "start field")
        with self._structure() as f:
            _write_json(cast(h5py.Group, f[self._start_group]), name, obj)
        self._require_file().flush()

    def append_event(self, doc: EventDoc) -> None:
        """Append ``doc`` and flush. ``doc.seq_num`` must follow the previous event's."""
        if doc.seq_num <= self._last_seq:
            raise RecordError(
                f"{self.path}: event seq_num {doc.seq_num} does not follow {self._last_seq}"
            )
        arrays = {name: np.asarray(value) for name, value in doc.arrays.items()}
        new_scalars = [name for name in doc.scalars if name not in self._scalars]
        new_parts = [name for name, value in arrays.items() if self._find_part(name, value) is None]
        if new_scalars or new_parts:
            self._create(new_scalars, {name: arrays[name] for name in new_parts})
        f = self._require_file()
        columns = self._columns
        for name in self._scalars:
            columns[f"scalars/{name}"].append(doc.scalars.get(name, math.nan))
        for name, value in arrays.items():
            part = self._find_part(name, value)
            if part is None:  # cannot happen: _create made it; keeps the type checker honest
                raise RecordError(f"{self.path}: no dataset for array {name!r}")
            columns[f"arrays/{part.dataset}"].append(value)
            columns[f"array_seq/{part.dataset}"].append(doc.seq_num)
        # seq_num last: a reader counts an event as complete when every 1-D per-event dataset
        # has its row (see _complete_rows), whatever order a crash left them in.
        columns["segment"].append(self._segment)
        columns["time"].append(doc.time)
        columns["seq_num"].append(doc.seq_num)
        f.flush()
        self._n += 1
        self._last_seq = doc.seq_num

    def _bind(self) -> None:
        """(Re)build the column handles after the file was (re)opened."""
        events = cast(h5py.Group, self._require_file()["events"])
        columns = {name: _Column(events[name]) for name in ("seq_num", "time", "segment")}
        for group in ("scalars", "arrays", "array_seq"):
            for name, ds in events[group].items():
                columns[f"{group}/{name}"] = _Column(ds)
        self._columns = columns

    def set_segment(self, segment: int) -> None:
        """The segment number stored with the following events."""
        self._segment = segment

    def _find_part(self, name: str, value: np.ndarray) -> _ArrayPart | None:
        for part in self._parts.get(name, []):
            if part.shape == value.shape and part.dtype == value.dtype:
                return part
        return None

    def _create(self, scalar_names: list[str], arrays: dict[str, np.ndarray]) -> None:
        with self._structure() as f:
            events = cast(h5py.Group, f["events"])
            for name in scalar_names:
                events["scalars"].create_dataset(
                    name,
                    (self._n,),
                    maxshape=(None,),
                    dtype=np.float64,
                    chunks=(1024,),
                    fillvalue=math.nan,
                )
                self._scalars.append(name)
            for name, value in arrays.items():
                parts = self._parts.setdefault(name, [])
                dsname = name if not parts else f"{name}~{len(parts)}"
                rows = _chunk_rows(value.shape, value.dtype.itemsize)
                ds = events["arrays"].create_dataset(
                    dsname,
                    (0, *value.shape),
                    maxshape=(None, *value.shape),
                    dtype=value.dtype,
                    chunks=(rows, *value.shape) if value.size else None,
                )
                ds.attrs["array_name"] = name
                ds.attrs["part"] = len(parts)
                events["array_seq"].create_dataset(
                    dsname,
                    (0,),
                    maxshape=(None,),
                    dtype=np.int64,
                    chunks=(1024,),
                    fillvalue=UNWRITTEN_SEQ,
                )
                parts.append(_ArrayPart(dsname, tuple(value.shape), value.dtype))

    def append_log(self, doc: LogDoc) -> None:
        """Append ``doc`` to ``/logs/jsonl`` and flush."""
        line = json.dumps(
            {"time": doc.time, "level": doc.level, "message": doc.message, "seq_num": doc.seq_num}
        )
        data = np.frombuffer((line + "\n").encode("utf-8"), dtype=np.uint8)
        f = self._require_file()
        ds = f["logs/jsonl"]
        start = self._log_bytes
        ds.resize((start + data.size,))
        ds[start:] = data
        f.flush()
        self._log_bytes = start + data.size

    def write_stop(self, doc: StopDoc) -> None:
        """Write the stop document. The record stays open until :meth:`close`."""
        with self._structure() as f:
            if "stop" in f:
                del f["stop"]
            group = f.create_group("stop")
            group.attrs["status"] = doc.status
            group.attrs["reason"] = doc.reason
            group.attrs["n_events"] = doc.n_events
            group.attrs["device_time_s"] = doc.device_time_s
            group.attrs["wall_time_s"] = doc.wall_time_s
            group.attrs["time"] = doc.time
            _write_json(group, "summary", doc.summary)
            _write_json(group, "safe_state", doc.safe_state)
        self._require_file().flush()

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception as exc:  # the events flushed before stay readable
                _logger.warning(
                    "%s: closing the record failed: %s: %s", self.path, type(exc).__name__, exc
                )
            self._file = None

    def close(self) -> None:
        """Close the file and release the writer lock. Safe to call twice."""
        self._close_file()
        self._lock.release()


def _repair(path: Path) -> None:
    """Copy a crashed record (its 'open for writing' flag still set) into a clean file."""
    tmp = path.with_name(path.name + ".repair")
    try:
        h5py.File(path, "r", swmr=True).close()
    except OSError as exc:  # died outside SWMR mode: the caller holds the writer lock now
        if not (_is_open_for_write_error(exc) and _clear_write_flags(path)):
            raise
    with h5py.File(path, "r", swmr=True) as src, h5py.File(tmp, "w", libver="latest") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        events = src["events"]
        n = _complete_rows(events)
        for key in src:
            if key != "events":
                src.copy(src[key], dst, name=key)
        dst_events = dst.create_group("events")
        for name in ("seq_num", "time", "segment"):
            data = events[name][:n]
            dst_events.create_dataset(
                name, data=data, maxshape=(None,), chunks=(1024,), dtype=events[name].dtype
            )
        for group_name in ("scalars", "arrays", "array_seq"):
            dst_group = dst_events.create_group(group_name)
            for name, ds in events[group_name].items():
                rows = n if group_name == "scalars" else ds.shape[0]
                if group_name != "scalars":
                    other = "array_seq" if group_name == "arrays" else "arrays"
                    rows = min(rows, events[other][name].shape[0])
                data = ds[:rows]
                new = dst_group.create_dataset(
                    name,
                    data=data,
                    maxshape=(None, *ds.shape[1:]),
                    chunks=ds.chunks,
                    fillvalue=ds.fillvalue,
                    dtype=ds.dtype,
                )
                for key, value in ds.attrs.items():
                    new.attrs[key] = value
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------- reader


def _attr(value: object) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _complete_rows(events: h5py.Group) -> int:
    """Events every 1-D per-event dataset has a row for (a crash may leave one half-written,
    or a seq_num row extended but not yet written)."""
    lengths = [int(events[name].shape[0]) for name in ("seq_num", "time", "segment")]
    lengths += [int(ds.shape[0]) for ds in events["scalars"].values()]
    n = min(lengths)
    while n and int(events["seq_num"][n - 1]) == UNWRITTEN_SEQ:
        n -= 1
    return n


def _rows_through(part_seq: np.ndarray, last_seq: int) -> int:
    """How many leading rows of an array part belong to events up to ``last_seq`` (a row
    extended but never written reads ``UNWRITTEN_SEQ``)."""
    return int(np.count_nonzero((part_seq != UNWRITTEN_SEQ) & (part_seq <= last_seq)))


def _read_json(group: h5py.Group, name: str, default: Any = None) -> Any:
    if name not in group:
        return default
    return json.loads(group[name].asstr()[()])


def _read_start(group: h5py.Group) -> StartDoc:
    attrs = {k: _attr(v) for k, v in group.attrs.items()}
    text = group["station_text"].asstr()[()] if "station_text" in group else ""
    return StartDoc(
        run_uid=str(attrs.get("run_uid", "")),
        procedure=str(attrs.get("procedure", "")),
        procedure_class=str(attrs.get("procedure_class", "")),
        parameters=_read_json(group, "parameters", {}),
        parameter_units=_read_json(group, "parameter_units", {}),
        station_text=text,
        station=_read_json(group, "station", {}),
        snapshot=_read_json(group, "snapshot", {}),
        versions=_read_json(group, "versions", {}),
        seeds=_read_json(group, "seeds", {}),
        host=_read_json(group, "host", {}),
        time=float(attrs.get("time", math.nan)),
        segment=int(attrs.get("segment", 0)),
        first_seq_num=int(attrs.get("first_seq_num", 0)),
    )


@dataclass(frozen=True)
class RecordedEvents:
    """The events of a record, column-wise.

    ``scalars[name]`` is aligned with ``seq_num`` (NaN where an event lacked it).
    ``arrays[name]`` stacks the rows of an array whose shape never changed, shape (k, ...), with
    ``array_seq[name]`` the seq_num of each row; an array whose shape changed is in
    ``ragged_arrays[name]`` (a list of rows) instead, also with ``array_seq``.
    """

    seq_num: np.ndarray
    time: np.ndarray
    segment: np.ndarray
    scalars: dict[str, np.ndarray] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    ragged_arrays: dict[str, list[np.ndarray]] = field(default_factory=dict)
    array_seq: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.seq_num.shape[0])

    def rows(self, name: str) -> list[np.ndarray]:
        """Every row of array ``name`` in event order, whatever its shape history."""
        if name in self.arrays:
            return list(self.arrays[name])
        return list(self.ragged_arrays[name])

    def last(self, name: str) -> np.ndarray:
        """The most recent row of array ``name``."""
        if name in self.arrays:
            return cast(np.ndarray, self.arrays[name][-1])
        return self.ragged_arrays[name][-1]


def _read_events(events: h5py.Group, load_arrays: bool) -> RecordedEvents:
    n = _complete_rows(events)
    seq = events["seq_num"][:n]
    last_seq = int(seq[-1]) if n else -1
    scalars = {name: ds[:n] for name, ds in events["scalars"].items()}
    parts: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for dsname, ds in events["arrays"].items():
        name = str(_attr(ds.attrs.get("array_name", dsname)))
        seq_ds = events["array_seq"][dsname]
        rows = min(int(ds.shape[0]), int(seq_ds.shape[0]))
        part_seq = seq_ds[:rows]
        keep = _rows_through(part_seq, last_seq)
        data = ds[:keep] if load_arrays else np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
        parts.setdefault(name, []).append(
            (int(_attr(ds.attrs.get("part", 0))), part_seq[:keep], data)
        )
    arrays: dict[str, np.ndarray] = {}
    ragged: dict[str, list[np.ndarray]] = {}
    array_seq: dict[str, np.ndarray] = {}
    for name, found in parts.items():
        found.sort(key=lambda item: item[0])
        if len(found) == 1:
            array_seq[name] = found[0][1]
            arrays[name] = found[0][2]
            continue
        merged_seq = np.concatenate([item[1] for item in found])
        order = np.argsort(merged_seq, kind="stable")
        all_rows = [row for item in found for row in item[2]]
        array_seq[name] = merged_seq[order]
        ragged[name] = [all_rows[i] for i in order] if load_arrays else []
    return RecordedEvents(
        seq_num=seq,
        time=events["time"][:n],
        segment=events["segment"][:n],
        scalars=scalars,
        arrays=arrays,
        ragged_arrays=ragged,
        array_seq=array_seq,
    )


def _read_logs(f: h5py.File, run_uid: str) -> list[LogDoc]:
    if "logs/jsonl" not in f:
        return []
    raw = bytes(f["logs/jsonl"][:])
    logs = []
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        logs.append(
            LogDoc(
                run_uid=run_uid,
                time=float(item["time"]),
                level=item["level"],
                message=str(item["message"]),
                seq_num=int(item.get("seq_num", 0)),
            )
        )
    return logs


def _read_stop(f: h5py.File, run_uid: str) -> StopDoc | None:
    if "stop" not in f:
        return None
    group = f["stop"]
    attrs = {k: _attr(v) for k, v in group.attrs.items()}
    return StopDoc(
        run_uid=run_uid,
        time=float(attrs.get("time", math.nan)),
        status=attrs.get("status", "failed"),
        reason=str(attrs.get("reason", "")),
        n_events=int(attrs.get("n_events", 0)),
        device_time_s=float(attrs.get("device_time_s", 0.0)),
        wall_time_s=float(attrs.get("wall_time_s", 0.0)),
        summary=_read_json(group, "summary", {}),
        safe_state=_read_json(group, "safe_state", {}),
    )


@dataclass(frozen=True)
class RunRecord:
    """A run record read back into memory. ``RunRecord.open(run_dir_or_h5_path)``.

    ``status`` is the stop document's status, or ``"running"`` (a live writer holds the lock)
    or ``"crashed"`` (no stop document and no writer). ``segments`` lists the start document and
    one per resume. ``start_extra`` holds extra JSON stored beside the start document.
    """

    run_dir: Path
    start: StartDoc
    segments: list[StartDoc]
    events: RecordedEvents
    logs: list[LogDoc]
    stop: StopDoc | None
    status: RunStatus
    start_extra: dict[str, Any]

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, load_arrays: bool = True, wait_s: float = 2.0
    ) -> RunRecord:
        """Read the record at ``path`` (a run folder or its ``run.h5``), live or finished.

        ``load_arrays=False`` skips array data (``arrays`` then hold empty (0, ...) arrays).
        A live writer briefly locks the file while it adds datasets; opening retries for up to
        ``wait_s``. Raises :class:`RecordError` if the file cannot be read.
        """
        h5_path = _record_path(path)
        run_dir = h5_path.parent
        deadline = time.monotonic() + wait_s
        while True:
            try:
                with h5py.File(h5_path, "r", swmr=True) as f:
                    return cls._from_file(f, run_dir, load_arrays)
            except (OSError, KeyError) as exc:
                # A writer that died while adding datasets left the file flagged "open for
                # writing": with no writer alive, clear the flag and read what it flushed.
                if (
                    _is_open_for_write_error(exc)
                    and not is_being_written(run_dir)
                    and _clear_write_flags(h5_path)
                ):
                    _logger.warning("%s: cleared the flags of a writer that died", h5_path)
                    continue
                if time.monotonic() >= deadline or not h5_path.exists():
                    raise RecordError(f"{h5_path}: cannot read run record ({exc})") from exc
                time.sleep(0.02)

    @classmethod
    def _from_file(cls, f: h5py.File, run_dir: Path, load_arrays: bool) -> RunRecord:
        start = _read_start(f["start"])
        segments = [start]
        if "resumes" in f:
            for key in sorted(f["resumes"], key=int):
                segments.append(_read_start(f["resumes"][key]))
        extra = {
            name: _read_json(f["start"], name)
            for name in f["start"]
            if name not in (*_JSON_FIELDS, "station_text")
        }
        stop = _read_stop(f, start.run_uid)
        status: RunStatus
        if stop is not None:
            status = stop.status
        elif is_being_written(run_dir):
            status = "running"
        else:
            status = "crashed"
        return cls(
            run_dir=run_dir,
            start=start,
            segments=segments,
            events=_read_events(f["events"], load_arrays),
            logs=_read_logs(f, start.run_uid),
            stop=stop,
            status=status,
            start_extra=extra,
        )
