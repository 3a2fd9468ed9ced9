"""Run records: one folder per run holding ``run.h5`` (HDF5, written with h5py) and checkpoints.

Folder: ``<runs dir>/YYYYmmdd-HHMMSS-<procedure>-<short uid>`` (local time of the start). The runs
dir is, in order: the argument given, the environment variable ``LABRIG_RUNS_DIR``, or
``platformdirs.user_data_dir("labrig")/runs``.

Layout of ``run.h5`` (format 2; JSON is UTF-8 text in scalar string datasets)::

    /                         attrs: labrig_record_format=2, run_uid, procedure, created (ISO 8601)
    /start                    segment 0. attrs: run_uid, procedure, procedure_class, time (Unix s),
                              segment=0, first_seq_num=0. JSON: parameters, parameter_units,
                              station, snapshot, versions, seeds, host, run_start (bluesky
                              RunStart), descriptors (its EventDescriptors), extras such as
                              snapshot_after_startup; text: station_text (TOML)
    /resumes/<k>              resumed segment k, the same, plus previous_stop (JSON) and attr
                              truncated_events
    /events                   attr streams: JSON list of stream names
    /events/seq_num           int64 (n,)  each event's sequence number (0, 1, ...; -1 unwritten)
    /events/time              float64 (n,) Unix time of each event
    /events/segment           int32 (n,)  the segment that wrote it
    /events/stream            int16 (n,)  index of its stream in the streams attr
    /events/data/<key>        (n, *shape) a declared key of fixed shape; the fill value (NaN
                              for floats) in the rows of events of other streams
    /events/ragged/<key>/shape  int64 (n, ndim) a key with an axis of open length, or optional: each
                              event's shape, -1 in rows of events of other streams
    /events/ragged/<key>/values (m,) its values, flattened and concatenated
    /logs/jsonl               uint8 (m,) log documents as UTF-8 JSON lines
    /stop/json                uint8 (m,) the stop document as JSON (labrig's fields and the
                              bluesky RunStop under "document"); empty while running or crashed

Datasets from declarations, SWMR once. Every dataset is created from the run's
EventDescriptors (the procedure's declaration, :mod:`labrig.runs.documents`) before the first
event: the file is built complete under a temporary name, renamed onto ``run.h5`` and opened
straight into HDF5's single-writer/multiple-reader (SWMR) mode, where it stays until the run
ends. Nothing is created, and the file is never reopened, while the run writes; SWMR orders
its writes so that the file is consistent after every flush, and the record flushes after every
event. A resume builds the continued record the same way (a copy truncated at the checkpoint,
with the new segment and its descriptors) and renames it onto the old one.

Crashes. ``kill -9`` at any moment leaves either no ``run.h5`` yet (killed before the procedure
declared its data: the folder holds only the lock file) or a file that a SWMR reader opens at
once (``h5py.File(path, "r", swmr=True)``) holding every event whose append returned. A plain
open (``h5py.File(path, "r")``, ``h5dump``) refuses it while the superblock still says "open
for writing": :meth:`RunRecord.open` (``labrig runs show``) clears those flags when no writer
holds the lock, as HDF5's ``h5clear -s run.h5`` would.

Who is writing: the writer holds an advisory lock (``flock``) on ``.writer.lock`` in the run
folder for as long as it runs; the operating system releases it if the process dies. A record
with no stop document is ``running`` while that lock is held, ``crashed`` otherwise.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import h5py
import numpy as np
import platformdirs
from h5py import h5f, h5p, h5s

from labrig.runs.documents import (
    DescriptorDoc,
    EventDoc,
    LogDoc,
    RunStatus,
    StartDoc,
    StopDoc,
    StreamDeclaration,
    check_name,
    to_json,
    to_jsonable,
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
    "lock_run_dir",
    "new_run_dir",
]

_logger = logging.getLogger(__name__)

RUN_FILE = "run.h5"
#: What a seq_num or array_seq row reads before it has been written.
UNWRITTEN_SEQ = -1
LOCK_FILE = ".writer.lock"
FORMAT_VERSION = 2
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


def lock_run_dir(run_dir: Path) -> _WriterLock:
    """Take the run folder's writer lock (a :class:`RecordError` if a live writer has it).
    Hand it to :meth:`RecordWriter.create` or :meth:`RecordWriter.resume`."""
    lock = _WriterLock(run_dir)
    lock.acquire()
    return lock


def _write_json(group: h5py.Group, name: str, obj: object) -> None:
    if name in group:
        del group[name]
    group.create_dataset(name, data=to_json(obj), dtype=_STR)


def _write_start(
    group: h5py.Group,
    start: StartDoc,
    descriptors: Sequence[DescriptorDoc],
    extras: Mapping[str, object],
) -> None:
    group.attrs["run_uid"] = start.run_uid
    group.attrs["procedure"] = start.procedure
    group.attrs["procedure_class"] = start.procedure_class
    group.attrs["time"] = start.time
    group.attrs["time_iso"] = dt.datetime.fromtimestamp(start.time).astimezone().isoformat()
    group.attrs["segment"] = start.segment
    group.attrs["first_seq_num"] = start.first_seq_num
    for name in _JSON_FIELDS:
        _write_json(group, name, getattr(start, name))
    _write_json(group, "run_start", start.document)
    _write_json(group, "descriptors", [d.document for d in descriptors])
    for name, value in extras.items():
        check_name(name, "start field")
        _write_json(group, name, value)
    group.create_dataset("station_text", data=start.station_text, dtype=_STR)


def _chunk_rows(row_shape: tuple[int, ...], itemsize: int) -> int:
    # Aim for chunks of ~64 KiB: big enough for fast reads, small enough to rewrite per flush.
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * itemsize)
    return int(max(1, min(1024, 65536 // row_bytes)))


def _fill_value(dtype: np.dtype[Any]) -> Any:
    return np.array(math.nan if dtype.kind in "fc" else 0).astype(dtype)[()]


class _Column:
    """A resizable dataset grown along its first axis through h5py's low-level API.

    ``ds.resize(); ds[i] = v`` costs ~55 us per dataset in h5py's high-level layer; this costs
    ~15 us, which matters at one call per data key per event.
    """

    def __init__(self, ds: h5py.Dataset) -> None:
        self._id = ds.id
        self.row_shape: tuple[int, ...] = tuple(ds.shape[1:])
        self.dtype = ds.dtype
        self.rows = int(ds.shape[0])
        self._origin = (0,) * len(self.row_shape)
        self._memory = h5s.create_simple((1, *self.row_shape))
        self._empty = 0 in self.row_shape

    def append(self, value: object | None) -> None:
        """One more row: ``value``, or the fill value if None."""
        k = self.rows
        self._id.set_extent((k + 1, *self.row_shape))
        if value is not None and not self._empty:
            space = self._id.get_space()
            space.select_hyperslab((k, *self._origin), (1, *self.row_shape))
            buffer = np.ascontiguousarray(value, dtype=self.dtype).reshape((1, *self.row_shape))
            self._id.write(self._memory, space, buffer)
        self.rows = k + 1

    def extend(self, values: np.ndarray) -> None:
        """Append the 1-D ``values`` (a ragged key's flattened data)."""
        k, n = self.rows, int(values.size)
        if n:
            self._id.set_extent((k + n,))
            space = self._id.get_space()
            space.select_hyperslab((k,), (n,))
            memory = h5s.create_simple((n,))
            self._id.write(memory, space, np.ascontiguousarray(values, dtype=self.dtype))
        self.rows = k + n


@dataclass
class _KeyStore:
    """Where one data key lives in the file and how its values are checked."""

    name: str
    stream: str
    declared: tuple[int | None, ...]
    dtype: np.dtype[Any]
    ragged: bool


def _per_event_shape(key: Any) -> bool:
    """True if ``key`` (a DataKey) is stored with a shape row per event: an axis of open
    length, or an optional array (the row says whether the event had it; an optional scalar
    reads its fill value, NaN, where absent)."""
    return bool(key.ragged or (key.optional and key.shape))


def _create_key(events: h5py.Group, key: Any, rows: int) -> None:
    """Create the datasets of ``key`` (a DataKey) with ``rows`` rows of fill."""
    dtype = key.numpy_dtype
    if _per_event_shape(key):
        group = events["ragged"].create_group(key.name)
        group.create_dataset(
            "shape",
            data=np.full((rows, len(key.shape)), -1, dtype=np.int64),
            maxshape=(None, len(key.shape)),
            chunks=(1024, max(1, len(key.shape))),
            fillvalue=-1,
        )
        group.create_dataset(
            "values", (0,), maxshape=(None,), dtype=dtype, chunks=(_chunk_rows((), 8) * 16,)
        )
        return
    shape = tuple(int(n) for n in key.shape)
    events["data"].create_dataset(
        key.name,
        (rows, *shape),
        maxshape=(None, *shape),
        dtype=dtype,
        chunks=(_chunk_rows(shape, dtype.itemsize), *shape) if 0 not in shape else None,
        fillvalue=_fill_value(dtype),
    )


def _open_swmr_writer(path: Path) -> h5py.File:
    """Open ``path`` read-write straight into SWMR mode: the superblock is marked for SWMR
    writing in the same step, so there is no moment at which a killed writer leaves a file a
    SWMR reader refuses."""
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5f.LIBVER_LATEST, h5f.LIBVER_LATEST)
    fid = h5f.open(os.fsencode(path), h5f.ACC_RDWR | h5f.ACC_SWMR_WRITE, fapl)
    return h5py.File(fid)


def _streams_of(descriptors: Sequence[DescriptorDoc]) -> dict[str, StreamDeclaration]:
    return {d.stream.name: d.stream for d in descriptors}


class RecordWriter:
    """Append a run's documents to ``run.h5``, flushing every event (see the module docstring).

    Not thread-safe: the runner calls it from one thread at a time. :meth:`create` starts a new
    record, :meth:`resume` continues a crashed or aborted one; both take the descriptors, so the
    file holds every dataset before its first event.
    """

    def __init__(self, run_dir: Path, lock: _WriterLock) -> None:
        self.run_dir = run_dir
        self.path = run_dir / RUN_FILE
        self._lock = lock
        self._file: h5py.File | None = None
        self._n = 0
        self._last_seq = -1
        self._segment = 0
        self._log_bytes = 0
        self._stream_index: dict[str, int] = {}
        self._keys: dict[str, _KeyStore] = {}
        self._streams: dict[str, StreamDeclaration] = {}
        self._columns: dict[str, _Column] = {}
        self._events_per_stream: dict[str, int] = {}

    # ---- opening ----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        lock: _WriterLock,
        start: StartDoc,
        descriptors: Sequence[DescriptorDoc],
        *,
        logs: Sequence[LogDoc] = (),
        extras: Mapping[str, object] | None = None,
    ) -> RecordWriter:
        """Write a new record in the locked, empty run folder and open it in SWMR mode.

        ``logs``: log documents published before the record existed (during ``startup()``).
        ``extras``: more JSON for the start group (``snapshot_after_startup``).
        """
        writer = cls(lock.path.parent, lock)
        tmp = writer.path.with_name(RUN_FILE + ".new")
        try:
            with h5py.File(tmp, "w", libver="latest") as f:
                f.attrs["labrig_record_format"] = FORMAT_VERSION
                f.attrs["run_uid"] = start.run_uid
                f.attrs["procedure"] = start.procedure
                f.attrs["created"] = dt.datetime.fromtimestamp(start.time).astimezone().isoformat()
                _write_start(f.create_group("start"), start, descriptors, extras or {})
                _layout(f, _streams_of(descriptors), rows=0)
                f.create_group("logs").create_dataset(
                    "jsonl", data=_log_bytes(logs), maxshape=(None,), chunks=(4096,)
                )
                f.create_group("stop").create_dataset(
                    "json", (0,), maxshape=(None,), dtype=np.uint8, chunks=(4096,)
                )
            os.replace(tmp, writer.path)
            writer._open(start.segment)
        except Exception as exc:
            writer._close_file()
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise RecordError(f"{writer.path}: cannot create run record ({exc})") from exc
        return writer

    @classmethod
    def resume(
        cls,
        lock: _WriterLock,
        start: StartDoc,
        descriptors: Sequence[DescriptorDoc],
        keep_through_seq: int,
        *,
        logs: Sequence[LogDoc] = (),
        extras: Mapping[str, object] | None = None,
    ) -> tuple[RecordWriter, int]:
        """Continue the record in the locked run folder as segment ``start.segment``.

        The continued record is built beside the old one: its events up to
        ``keep_through_seq`` (the checkpoint; later ones are written again by the resumed
        run), its logs, every earlier segment, and the new segment with its descriptors; then
        it replaces the old file and opens in SWMR mode. Returns the writer and the number of
        events dropped.
        """
        writer = cls(lock.path.parent, lock)
        tmp = writer.path.with_name(RUN_FILE + ".new")
        try:
            with (
                h5py.File(writer.path, "r", swmr=True) as src,
                h5py.File(tmp, "w", libver="latest") as dst,
            ):
                removed = _copy_resumed(
                    src, dst, start, descriptors, keep_through_seq, extras, logs
                )
            os.replace(tmp, writer.path)
            writer._open(start.segment)
        except Exception as exc:
            writer._close_file()
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, RecordError):
                raise
            raise RecordError(f"{writer.path}: cannot resume run record ({exc})") from exc
        return writer, removed

    def _open(self, segment: int) -> None:
        """Open the finished file in SWMR mode and bind the columns (once per run)."""
        f = _open_swmr_writer(self.path)
        self._file = f
        self._segment = segment
        events = cast(h5py.Group, f["events"])
        names = json.loads(_attr(events.attrs["streams"]))
        self._stream_index = {name: i for i, name in enumerate(names)}
        self._streams = {}
        for group in _segment_groups(f):
            for doc in _read_json(group, "descriptors", []):
                d = DescriptorDoc.from_document(str(_attr(f.attrs["run_uid"])), doc)
                self._streams[d.stream.name] = d.stream
        self._keys = {}
        for stream in self._streams.values():
            for key in stream.keys:
                self._keys[key.name] = _KeyStore(
                    key.name, stream.name, key.shape, key.numpy_dtype, _per_event_shape(key)
                )
        # A key of an earlier segment no stream declares now: filled in every new event.
        for name in events["data"]:
            if name not in self._keys:
                ds = events["data"][name]
                self._keys[name] = _KeyStore(name, "", tuple(ds.shape[1:]), ds.dtype, False)
        for name in events["ragged"]:
            if name not in self._keys:
                ds = events["ragged"][name]["values"]
                ndim = int(events["ragged"][name]["shape"].shape[1])
                self._keys[name] = _KeyStore(name, "", (None,) * ndim, ds.dtype, True)
        columns = {name: _Column(events[name]) for name in _EVENT_COLUMNS}
        for name, store in self._keys.items():
            if store.ragged:
                columns[f"{name}/shape"] = _Column(events["ragged"][name]["shape"])
                columns[f"{name}/values"] = _Column(events["ragged"][name]["values"])
            else:
                columns[name] = _Column(events["data"][name])
        self._columns = columns
        self._n = columns["seq_num"].rows
        self._last_seq = int(events["seq_num"][self._n - 1]) if self._n else -1
        self._log_bytes = int(f["logs/jsonl"].shape[0])
        stream_rows = events["stream"][: self._n]
        self._events_per_stream = {
            name: int(np.count_nonzero(stream_rows == i)) for name, i in self._stream_index.items()
        }

    # ---- writing ----------------------------------------------------------------------------

    @property
    def n_events(self) -> int:
        """Events in the record."""
        return self._n

    @property
    def streams(self) -> dict[str, StreamDeclaration]:
        """The declared streams, by name."""
        return dict(self._streams)

    def events_in(self, stream: str) -> int:
        """Events of ``stream`` in the record (also those of earlier segments)."""
        return self._events_per_stream.get(stream, 0)

    def _require_file(self) -> h5py.File:
        if self._file is None:
            raise RecordError(f"{self.path}: the record is closed")
        return self._file

    def check_event(self, stream: str, values: Mapping[str, np.ndarray]) -> None:
        """Raise ``ValueError`` naming the key if ``values`` do not fit ``stream``'s
        declaration (missing or extra keys, a wrong number of axes or a wrong length)."""
        declared = self._streams.get(stream)
        if declared is None:
            raise ValueError(f"event of undeclared stream {stream!r}")
        missing = sorted(declared.required() - set(values))
        extra = sorted(set(values) - declared.names())
        if missing or extra:
            raise ValueError(
                f"event of stream {stream!r}: missing {missing}, undeclared {extra} "
                f"(declared: {sorted(declared.names())})"
            )
        for name, value in values.items():
            store = self._keys[name]
            shape = np.shape(value)
            if len(shape) != len(store.declared) or any(
                d is not None and d != n for d, n in zip(store.declared, shape, strict=True)
            ):
                want = tuple("any" if d is None else d for d in store.declared)
                raise ValueError(
                    f"data key {name!r}: shape {shape} does not match the declared {want}"
                )

    def append_event(self, doc: EventDoc) -> None:
        """Append ``doc`` (checked with :meth:`check_event`) and flush. ``doc.seq_num`` must
        follow the previous event's."""
        if doc.seq_num <= self._last_seq:
            raise RecordError(
                f"{self.path}: event seq_num {doc.seq_num} does not follow {self._last_seq}"
            )
        values: dict[str, Any] = {**doc.scalars, **doc.arrays}
        self.check_event(doc.stream, values)
        f = self._require_file()
        columns = self._columns
        for name, store in self._keys.items():
            value = values.get(name)
            if store.ragged:
                if value is None:
                    columns[f"{name}/shape"].append(None)
                else:
                    array = np.asarray(value)
                    columns[f"{name}/values"].extend(array.ravel())
                    columns[f"{name}/shape"].append(np.asarray(array.shape, dtype=np.int64))
            else:
                columns[name].append(value)
        # seq_num last: a reader counts an event as complete when every per-event dataset has
        # its row (see _complete_rows), whatever order a crash left them in.
        columns["stream"].append(self._stream_index[doc.stream])
        columns["segment"].append(self._segment)
        columns["time"].append(doc.time)
        columns["seq_num"].append(doc.seq_num)
        f.flush()
        self._n += 1
        self._last_seq = doc.seq_num
        self._events_per_stream[doc.stream] = self._events_per_stream.get(doc.stream, 0) + 1

    def append_log(self, doc: LogDoc) -> None:
        """Append ``doc`` to ``/logs/jsonl`` and flush."""
        data = _log_bytes([doc])
        f = self._require_file()
        ds = f["logs/jsonl"]
        start = self._log_bytes
        ds.resize((start + data.size,))
        ds[start:] = data
        f.flush()
        self._log_bytes = start + data.size

    def write_stop(self, doc: StopDoc) -> None:
        """Write the stop document into ``/stop/json``. The record stays open until
        :meth:`close`."""
        data = np.frombuffer(to_json(_stop_json(doc)).encode("utf-8"), dtype=np.uint8)
        f = self._require_file()
        ds = f["stop/json"]
        ds.resize((data.size,))
        ds[:] = data
        f.flush()

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


_EVENT_COLUMNS = ("seq_num", "time", "segment", "stream")


def _log_bytes(logs: Sequence[LogDoc]) -> np.ndarray:
    lines = "".join(
        json.dumps({"time": d.time, "level": d.level, "message": d.message, "seq_num": d.seq_num})
        + "\n"
        for d in logs
    )
    return np.frombuffer(lines.encode("utf-8"), dtype=np.uint8)


def _stop_json(doc: StopDoc) -> dict[str, Any]:
    return {
        "status": doc.status,
        "reason": doc.reason,
        "n_events": doc.n_events,
        "device_time_s": doc.device_time_s,
        "wall_time_s": doc.wall_time_s,
        "time": doc.time,
        "summary": to_jsonable(doc.summary),
        "safe_state": doc.safe_state,
        "document": doc.document,
    }


def _layout(f: h5py.File, streams: Mapping[str, StreamDeclaration], rows: int) -> h5py.Group:
    """The /events group: bookkeeping columns and every declared key, ``rows`` rows long."""
    events = f.create_group("events")
    events.attrs["streams"] = json.dumps(list(streams))
    for name, dtype in (
        ("seq_num", np.int64),
        ("time", np.float64),
        ("segment", np.int32),
        ("stream", np.int16),
    ):
        # seq_num rows read -1 until written: a row extended but never written (an interrupt
        # between the two) is then told from event 0.
        events.create_dataset(
            name,
            (rows,),
            maxshape=(None,),
            dtype=dtype,
            chunks=(1024,),
            fillvalue=UNWRITTEN_SEQ if name == "seq_num" else 0,
        )
    events.create_group("data")
    events.create_group("ragged")
    for stream in streams.values():
        for key in stream.keys:
            _create_key(events, key, rows)
    return events


def _segment_groups(f: h5py.File) -> list[h5py.Group]:
    groups = [f["start"]]
    if "resumes" in f:
        groups += [f["resumes"][k] for k in sorted(f["resumes"], key=int)]
    return groups


def _copy_resumed(
    src: h5py.File,
    dst: h5py.File,
    start: StartDoc,
    descriptors: Sequence[DescriptorDoc],
    keep_through_seq: int,
    extras: Mapping[str, object] | None,
    logs: Sequence[LogDoc],
) -> int:
    """Fill ``dst`` (not yet live) with ``src``, truncated after ``keep_through_seq``, plus the
    new segment, the datasets of keys it declares anew, and ``logs``."""
    if int(_attr(src.attrs.get("labrig_record_format", 1))) != FORMAT_VERSION:
        raise RecordError(
            f"record format {_attr(src.attrs.get('labrig_record_format', 1))} cannot be "
            f"resumed by this labrig (format {FORMAT_VERSION})"
        )
    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name in src:
        if name != "stop":
            src.copy(src[name], dst, name=name)
    events = dst["events"]
    n_complete = _complete_rows(events)
    keep = int(np.count_nonzero(events["seq_num"][:n_complete] <= keep_through_seq))
    removed = int(events["seq_num"].shape[0]) - keep
    for ds in (*(events[n] for n in _EVENT_COLUMNS), *events["data"].values()):
        ds.resize(keep, axis=0)
    for group in events["ragged"].values():
        shapes = group["shape"][:keep]
        sizes = np.where(np.all(shapes >= 0, axis=1), np.prod(np.maximum(shapes, 0), axis=1), 0)
        group["shape"].resize(keep, axis=0)
        group["values"].resize((int(sizes.sum()),))
    # Streams: the earlier ones keep their index (recorded events point at it), new ones follow.
    names = json.loads(_attr(events.attrs["streams"]))
    new = _streams_of(descriptors)
    events.attrs["streams"] = json.dumps([*names, *(n for n in new if n not in names)])
    for stream in new.values():
        for key in stream.keys:
            if key.name in events["data"]:
                recorded: tuple[int | None, ...] = tuple(events["data"][key.name].shape[1:])
            elif key.name in events["ragged"]:
                recorded = (None,) * int(events["ragged"][key.name]["shape"].shape[1])
            else:
                _create_key(events, key, keep)
                continue
            if recorded != ((None,) * len(key.shape) if _per_event_shape(key) else key.shape):
                raise RecordError(
                    f"data key {key.name!r} was recorded with shape {recorded} and is now "
                    f"declared {key.shape}: a resumed run must keep its data layout"
                )
    group = dst.require_group("resumes").create_group(str(start.segment))
    _write_start(group, start, descriptors, extras or {})
    previous = _read_stop(src, start.run_uid)
    _write_json(group, "previous_stop", None if previous is None else _stop_json(previous))
    group.attrs["truncated_events"] = removed
    jsonl = dst["logs/jsonl"]
    added = _log_bytes(logs)
    jsonl.resize((jsonl.shape[0] + added.size,))
    jsonl[jsonl.shape[0] - added.size :] = added
    dst.create_group("stop").create_dataset(
        "json", (0,), maxshape=(None,), dtype=np.uint8, chunks=(4096,)
    )
    return removed


# ------------------------------------------------------------------ crashed writers' flags

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


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
    """Clear the "open for writing" flags (and SWMR's) a dead writer left in ``path``'s
    superblock (what ``h5clear -s`` does), so plain h5py and HDF5's tools open it. Only for a
    record no writer holds (see :func:`is_being_written`). True if flags were cleared."""
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


# ----------------------------------------------------------------------------------- reader


def _attr(value: object) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _per_event(events: h5py.Group) -> list[h5py.Dataset]:
    found = [events[name] for name in _EVENT_COLUMNS]
    found += list(events["data"].values())
    found += [group["shape"] for group in events["ragged"].values()]
    return found


def _complete_rows(events: h5py.Group) -> int:
    """Events every per-event dataset has a row for (a crash may leave one half-written, or a
    seq_num row extended but not yet written)."""
    n = min(int(ds.shape[0]) for ds in _per_event(events))
    while n and int(events["seq_num"][n - 1]) == UNWRITTEN_SEQ:
        n -= 1
    return n


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
        document=_read_json(group, "run_start", {}) or {},
    )


@dataclass(frozen=True)
class RecordedEvents:
    """The events of a record, column-wise.

    ``scalars[name]`` is aligned with ``seq_num`` (NaN where an event, of another stream, lacks
    it). ``arrays[name]`` stacks the rows of an array whose shape never changed, shape (k, ...),
    with ``array_seq[name]`` the seq_num of each row; an array whose shape changed (declared
    with an open axis) is in ``ragged_arrays[name]`` (a list of rows) instead, also with
    ``array_seq``. ``stream[i]`` is the stream of event i.
    """

    seq_num: np.ndarray
    time: np.ndarray
    segment: np.ndarray
    scalars: dict[str, np.ndarray] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    ragged_arrays: dict[str, list[np.ndarray]] = field(default_factory=dict)
    array_seq: dict[str, np.ndarray] = field(default_factory=dict)
    stream: tuple[str, ...] = ()

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

    def has_array(self, name: str) -> bool:
        return name in self.arrays or name in self.ragged_arrays


def _read_events(
    events: h5py.Group, streams: Mapping[str, StreamDeclaration], load_arrays: bool
) -> RecordedEvents:
    n = _complete_rows(events)
    seq = events["seq_num"][:n]
    names = json.loads(_attr(events.attrs["streams"]))
    stream_rows = events["stream"][:n]
    owner = {key.name: name for name, stream in streams.items() for key in stream.keys}
    scalars: dict[str, np.ndarray] = {}
    arrays: dict[str, np.ndarray] = {}
    ragged: dict[str, list[np.ndarray]] = {}
    array_seq: dict[str, np.ndarray] = {}

    def rows_of(name: str) -> np.ndarray:
        stream = owner.get(name)
        if stream is None or stream not in names:
            return np.zeros(n, dtype=bool)
        return cast(np.ndarray, stream_rows == names.index(stream))

    for name, ds in events["data"].items():
        mask = rows_of(name)
        if ds.ndim == 1:
            column = np.asarray(ds[:n], dtype=np.float64)
            column[~mask] = math.nan
            scalars[name] = column
            continue
        array_seq[name] = seq[mask]
        arrays[name] = ds[:n][mask] if load_arrays else np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
    for name, group in events["ragged"].items():
        shapes = group["shape"][:n]
        present = np.all(shapes >= 0, axis=1) & rows_of(name)
        array_seq[name] = seq[present]
        if not load_arrays:
            arrays[name] = np.empty((0,), dtype=group["values"].dtype)
            continue
        sizes = np.where(np.all(shapes >= 0, axis=1), np.prod(np.maximum(shapes, 0), axis=1), 0)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        flat = group["values"][: int(offsets[-1])]
        rows = [
            flat[offsets[i] : offsets[i + 1]].reshape(tuple(shapes[i]))
            for i in np.flatnonzero(present)
        ]
        if rows and all(r.shape == rows[0].shape for r in rows):
            arrays[name] = np.stack(rows)
        elif rows:
            ragged[name] = rows
        else:
            arrays[name] = np.empty((0,), dtype=flat.dtype)
    return RecordedEvents(
        seq_num=seq,
        time=events["time"][:n],
        segment=events["segment"][:n],
        scalars=scalars,
        arrays=arrays,
        ragged_arrays=ragged,
        array_seq=array_seq,
        stream=tuple(names[i] if 0 <= i < len(names) else "" for i in stream_rows),
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
    if "stop/json" not in f or f["stop/json"].shape[0] == 0:
        return None
    try:
        item = json.loads(bytes(f["stop/json"][:]))
    except ValueError:
        return None  # cut short by a crash: the run did not finish writing its stop
    return StopDoc(
        run_uid=run_uid,
        time=float(item.get("time", math.nan)),
        status=item.get("status", "failed"),
        reason=str(item.get("reason", "")),
        n_events=int(item.get("n_events", 0)),
        device_time_s=float(item.get("device_time_s", 0.0)),
        wall_time_s=float(item.get("wall_time_s", 0.0)),
        summary=item.get("summary") or {},
        safe_state=item.get("safe_state") or {},
        document=item.get("document") or {},
    )


@dataclass(frozen=True)
class RunRecord:
    """A run record read back into memory. ``RunRecord.open(run_dir_or_h5_path)``.

    ``status`` is the stop document's status, or ``"running"`` (a live writer holds the lock)
    or ``"crashed"`` (no stop document and no writer). ``segments`` lists the start document and
    one per resume. ``descriptors`` holds each stream's latest declaration (its EventDescriptor).
    ``start_extra`` holds extra JSON stored beside the start document.
    """

    run_dir: Path
    start: StartDoc
    segments: list[StartDoc]
    events: RecordedEvents
    logs: list[LogDoc]
    stop: StopDoc | None
    status: RunStatus
    start_extra: dict[str, Any]
    descriptors: dict[str, DescriptorDoc] = field(default_factory=dict)

    @property
    def streams(self) -> dict[str, StreamDeclaration]:
        """The declared streams, by name."""
        return {name: d.stream for name, d in self.descriptors.items()}

    def data_key(self, name: str) -> Any:
        """The declaration (:class:`~labrig.runs.documents.DataKey`) of data key ``name``."""
        for stream in self.streams.values():
            if name in stream.names():
                return stream.key(name)
        raise KeyError(f"{self.run_dir}: no data key {name!r}")

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, load_arrays: bool = True, wait_s: float = 2.0
    ) -> RunRecord:
        """Read the record at ``path`` (a run folder or its ``run.h5``), live or finished.

        ``load_arrays=False`` skips array data (``arrays`` then hold empty arrays). A record
        whose writer died is repaired on the way: its "open for writing" flags are cleared, so
        plain h5py and HDF5's tools open it afterwards. Raises :class:`RecordError` if the file
        cannot be read (``wait_s`` bounds retries of a transient failure).
        """
        h5_path = _record_path(path)
        run_dir = h5_path.parent
        if not h5_path.exists():
            if run_dir.is_dir() and (run_dir / LOCK_FILE).exists():
                state = "is starting" if is_being_written(run_dir) else "ended"
                raise RecordError(
                    f"{h5_path}: no record yet: the run {state} before its procedure declared "
                    "its data"
                )
            raise RecordError(f"{h5_path}: no such run record")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                with h5py.File(h5_path, "r", swmr=True) as f:
                    if int(_attr(f.attrs.get("labrig_record_format", 1))) != FORMAT_VERSION:
                        raise RecordError(
                            f"{h5_path}: record format "
                            f"{_attr(f.attrs.get('labrig_record_format', 1))}; this labrig "
                            f"reads format {FORMAT_VERSION}"
                        )
                    record = cls._from_file(f, run_dir, load_arrays)
                break
            except (OSError, KeyError) as exc:
                if time.monotonic() >= deadline:
                    raise RecordError(f"{h5_path}: cannot read run record ({exc})") from exc
                time.sleep(0.02)
        if record.status == "crashed":
            # The writer died in SWMR mode: its flags keep plain (non-SWMR) opens out.
            with contextlib.suppress(OSError):
                if _clear_write_flags(h5_path):
                    _logger.warning("%s: cleared the flags of a writer that died", h5_path)
        return record

    @classmethod
    def _from_file(cls, f: h5py.File, run_dir: Path, load_arrays: bool) -> RunRecord:
        start = _read_start(f["start"])
        groups = _segment_groups(f)
        segments = [_read_start(g) for g in groups]
        descriptors: dict[str, DescriptorDoc] = {}
        for group in groups:
            for doc in _read_json(group, "descriptors", []):
                d = DescriptorDoc.from_document(start.run_uid, doc)
                descriptors[d.stream.name] = d
        known = (*_JSON_FIELDS, "station_text", "run_start", "descriptors")
        extra = {name: _read_json(f["start"], name) for name in f["start"] if name not in known}
        stop = _read_stop(f, start.run_uid)
        status: RunStatus
        if stop is not None:
            status = stop.status
        elif is_being_written(run_dir):
            status = "running"
        else:
            status = "crashed"
        streams = {name: d.stream for name, d in descriptors.items()}
        return cls(
            run_dir=run_dir,
            start=start,
            segments=segments,
            events=_read_events(f["events"], streams, load_arrays),
            logs=_read_logs(f, start.run_uid),
            stop=stop,
            status=status,
            start_extra=extra,
            descriptors=descriptors,
        )
