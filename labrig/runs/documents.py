"""The documents a run produces, in bluesky's event model: RunStart, EventDescriptor, Event,
RunStop (the ``event-model`` package), plus labrig's log documents.

A procedure *declares* its data before its first event (:meth:`Procedure.describe_data`): one
:class:`StreamDeclaration` per kind of event ("primary", and e.g. "impulse"), each a list of
:class:`DataKey` (name, dtype, shape, units, what every axis is indexed by) and
:class:`PlotHint` (which panel, what its x axis and its error bars are). The runner turns the
declaration into EventDescriptor documents (``event_model.compose_run`` /
``compose_descriptor``); the record creates its datasets from them, and the dashboard and the
report draw from them, guessing nothing from names.

Subscribers receive labrig's typed views of the documents (:class:`StartDoc`,
:class:`DescriptorDoc`, :class:`EventDoc`, :class:`LogDoc`, :class:`StopDoc`); each of the first
four kinds but logs carries the bluesky document it stands for, and :class:`BlueskyAdapter`
turns a stream of them into the ``(name, document)`` pairs bluesky callbacks take::

    stream.subscribe(BlueskyAdapter(bluesky_callback))

Arrays in an :class:`EventDoc` are private read-only copies, so a subscriber can keep them.
A resumed run publishes a new RunStart (segment 1, 2, ...: a new bluesky run whose metadata
names the run it continues) with its own descriptors; labrig's ``seq_num`` runs on across
segments, the bluesky events' ``seq_num`` counts per stream from 1.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Literal

import event_model
import numpy as np

__all__ = [
    "NAME_PATTERN",
    "BlueskyAdapter",
    "DataKey",
    "DescriptorDoc",
    "Document",
    "EventDoc",
    "LogDoc",
    "PlotHint",
    "RunStatus",
    "StartDoc",
    "StopDoc",
    "StopStatus",
    "StreamDeclaration",
    "check_declaration",
    "check_name",
    "declaration_from_event",
    "to_json",
    "to_jsonable",
    "validate_bluesky",
]

StopStatus = Literal["success", "aborted", "failed"]
RunStatus = Literal["running", "crashed", "success", "aborted", "failed"]
LogLevel = Literal["debug", "info", "warning", "error"]
PlotKind = Literal["lines", "xy", "history", "bars", "cases", "trace", "image", "histogram"]

# Data key names become HDF5 dataset names: no '/', no leading '.'.
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
#: bluesky's exit_status for each labrig stop status.
EXIT_STATUS: dict[str, Literal["success", "abort", "fail"]] = {
    "success": "success",
    "aborted": "abort",
    "failed": "fail",
}
_BLUESKY_DTYPES = ("number", "integer", "boolean", "array", "string")


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it may name a data key, else raise ``ValueError``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            f"{what} name {name!r} is not allowed: use letters, digits, '_', '.', '-' "
            "(starting with a letter or '_', at most 128 characters)"
        )
    return name


# ------------------------------------------------------------------------------ declarations


@dataclass(frozen=True)
class DataKey:
    """One declared quantity of an event.

    ``shape`` is () for a scalar; ``None`` marks an axis whose length is only known when the
    data arrive (a digitiser record) or varies from event to event. ``dims`` names every
    axis ("electrode", "case", "time", "node", ...) and ``coords`` gives the labels an axis is
    indexed by (electrode names, case labels), where it has labels. ``dtype`` is numpy's
    (float64, int64, bool, ...). ``optional``: events of the stream may leave the
    key out (a trace recorded every tenth iteration); the record then holds its fill value
    (NaN) or no row, and the bluesky Event carries NaN.
    """

    name: str
    units: str = ""
    shape: tuple[int | None, ...] = ()
    dims: tuple[str, ...] = ()
    coords: Mapping[str, Sequence[str | float]] = field(default_factory=dict)
    dtype: str = "float64"
    description: str = ""
    optional: bool = False

    def __post_init__(self) -> None:
        check_name(self.name, "data key")
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "dims", tuple(self.dims))
        object.__setattr__(self, "coords", {str(k): tuple(v) for k, v in dict(self.coords).items()})
        for n in self.shape:
            if n is not None and (not isinstance(n, int) or n < 0):
                raise ValueError(f"data key {self.name!r}: shape {self.shape} has a bad length")
        if self.dims and len(self.dims) != len(self.shape):
            raise ValueError(
                f"data key {self.name!r}: {len(self.dims)} dims {self.dims} for shape {self.shape}"
            )
        try:
            kind = np.dtype(self.dtype).kind
        except TypeError as exc:
            raise ValueError(f"data key {self.name!r}: dtype {self.dtype!r} unknown") from exc
        if kind not in "biufc":
            raise ValueError(f"data key {self.name!r}: dtype {self.dtype!r} is not numeric")
        for dim, labels in self.coords.items():
            if dim not in self.dims:
                raise ValueError(f"data key {self.name!r}: coords for unknown dim {dim!r}")
            n = self.shape[self.dims.index(dim)]
            if n is not None and len(labels) != n:
                raise ValueError(
                    f"data key {self.name!r}: {len(labels)} labels for dim {dim!r} of length {n}"
                )

    @property
    def is_scalar(self) -> bool:
        return self.shape == ()

    @property
    def ragged(self) -> bool:
        """True if an axis length is not declared (stored per event with its shape)."""
        return any(n is None for n in self.shape)

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return np.dtype(self.dtype)

    def labels(self, dim_index: int) -> tuple[str, ...] | None:
        """The labels of axis ``dim_index`` as text, if it has any."""
        if dim_index >= len(self.dims):
            return None
        found = self.coords.get(self.dims[dim_index])
        return None if found is None else tuple(_label(v) for v in found)

    def label(self) -> str:
        """``name (units)`` for an axis label."""
        return (
            f"{self.description or self.name} ({self.units})"
            if self.units
            else (self.description or self.name)
        )

    def to_bluesky(self, source: str) -> dict[str, Any]:
        """The event-model DataKey (labrig's ``coords`` and ``description`` ride along)."""
        kind = self.numpy_dtype.kind
        broad = (
            "array"
            if self.shape
            else ("boolean" if kind == "b" else "integer" if kind in "iu" else "number")
        )
        doc: dict[str, Any] = {
            "source": source,
            "dtype": broad,
            "dtype_numpy": self.numpy_dtype.str,
            "shape": list(self.shape),
            "units": self.units,
            "dims": list(self.dims),
        }
        if self.coords:
            doc["coords"] = {k: [_plain(v) for v in vals] for k, vals in self.coords.items()}
        if self.description:
            doc["description"] = self.description
        if self.optional:
            doc["optional"] = True
        return doc

    @classmethod
    def from_bluesky(cls, name: str, doc: Mapping[str, Any]) -> DataKey:
        dtype = np.dtype(doc["dtype_numpy"]).name if doc.get("dtype_numpy") else "float64"
        return cls(
            name=name,
            units=str(doc.get("units") or ""),
            shape=tuple(doc.get("shape") or ()),
            dims=tuple(doc.get("dims") or ()),
            coords=dict(doc.get("coords") or {}),
            dtype=dtype,
            description=str(doc.get("description") or ""),
            optional=bool(doc.get("optional", False)),
        )


def _label(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class PlotHint:
    """A panel the data deserve, for the dashboard and the report.

    ``kind``: ``lines`` (scalars ``y`` against the stream's x axis), ``xy`` (scalar ``y[0]``
    against scalar ``x``, one point per event, ``error`` as error bars), ``history`` (every
    element of a small array against the x axis, one curve per labelled element), ``bars``
    (the newest array, one bar per labelled element), ``cases`` (newest case outputs ``y[0]``,
    coloured by ``targets``, with the decision ``threshold``), ``trace`` (newest array ``y[0]``
    against the array ``x``: a time axis, say), ``image`` (newest 2-D array) and ``histogram``
    (the distribution of the newest array's values). ``log_y`` offers a log axis.
    """

    panel: str
    kind: PlotKind
    y: tuple[str, ...]
    title: str = ""
    x: str = ""
    error: str = ""
    targets: str = ""
    threshold: str = ""
    log_y: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "y", tuple(self.y))
        if not self.y:
            raise ValueError(f"plot hint {self.panel!r} names no data key")

    def names(self) -> tuple[str, ...]:
        """Every data key the panel draws."""
        return tuple(k for k in (*self.y, self.x, self.error, self.targets, self.threshold) if k)

    def to_json(self) -> dict[str, Any]:
        return {
            "panel": self.panel,
            "kind": self.kind,
            "y": list(self.y),
            "title": self.title,
            "x": self.x,
            "error": self.error,
            "targets": self.targets,
            "threshold": self.threshold,
            "log_y": self.log_y,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PlotHint:
        return cls(
            panel=str(doc["panel"]),
            kind=doc["kind"],
            y=tuple(doc["y"]),
            title=str(doc.get("title", "")),
            x=str(doc.get("x", "")),
            error=str(doc.get("error", "")),
            targets=str(doc.get("targets", "")),
            threshold=str(doc.get("threshold", "")),
            log_y=bool(doc.get("log_y", False)),
        )


@dataclass(frozen=True)
class StreamDeclaration:
    """The data keys of one kind of event (a bluesky stream), with its plots.

    ``x``: the scalar that orders the stream's events on plots (``iteration``, ``epoch``; ""
    for the event number). ``status``: bookkeeping keys (device time, restarts) the dashboard
    shows in its status bar rather than as plots.
    """

    keys: tuple[DataKey, ...]
    plots: tuple[PlotHint, ...] = ()
    name: str = "primary"
    x: str = ""
    status: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))
        object.__setattr__(self, "plots", tuple(self.plots))
        object.__setattr__(self, "status", tuple(self.status))
        check_name(self.name, "stream")
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ValueError(f"stream {self.name!r} declares a data key twice: {names}")
        known = set(names)
        for hint in self.plots:
            missing = [k for k in hint.names() if k not in known]
            if missing:
                raise ValueError(
                    f"stream {self.name!r}: plot {hint.panel!r} uses undeclared keys {missing}"
                )
        for key in (*self.status, *([self.x] if self.x else [])):
            if key not in known:
                raise ValueError(f"stream {self.name!r}: {key!r} is not a declared data key")

    def key(self, name: str) -> DataKey:
        for k in self.keys:
            if k.name == name:
                return k
        raise KeyError(name)

    def names(self) -> frozenset[str]:
        return frozenset(k.name for k in self.keys)

    def required(self) -> frozenset[str]:
        return frozenset(k.name for k in self.keys if not k.optional)

    def accepts(self, names: frozenset[str]) -> bool:
        """True if an event carrying exactly ``names`` belongs to this stream."""
        return self.required() <= names <= self.names()


def check_declaration(streams: Sequence[StreamDeclaration]) -> tuple[StreamDeclaration, ...]:
    """Validate a procedure's declaration: distinct stream names and key names across
    streams (each key is one dataset in the record). Returns it as a tuple."""
    streams = tuple(streams)
    seen_streams: set[str] = set()
    owner: dict[str, str] = {}
    for stream in streams:
        if not isinstance(stream, StreamDeclaration):
            raise TypeError(f"describe_data() returned {type(stream).__name__}, not streams")
        if stream.name in seen_streams:
            raise ValueError(f"stream {stream.name!r} is declared twice")
        seen_streams.add(stream.name)
        for key in stream.keys:
            if key.name in owner:
                raise ValueError(
                    f"data key {key.name!r} is declared in streams {owner[key.name]!r} and "
                    f"{stream.name!r}; give each its own name"
                )
            owner[key.name] = stream.name
    return streams


def declaration_from_event(
    scalars: Mapping[str, float], arrays: Mapping[str, np.ndarray]
) -> StreamDeclaration:
    """A declaration taken from a first event, for a procedure that declared none: no units,
    no axis names, every array's axes of open length."""
    keys = [DataKey(name) for name in scalars]
    # Axes left open (None): an undeclared array may change shape, as it always could.
    keys += [
        DataKey(name, shape=(None,) * np.ndim(a), dtype=np.asarray(a).dtype.name)
        for name, a in arrays.items()
    ]
    return StreamDeclaration(tuple(keys))


# --------------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class StartDoc:
    """Everything needed to understand and repeat a run, written before anything moves.

    ``station_text`` is the resolved station file (TOML) as run; ``station`` what the procedure
    reports of it (wiring, limits). ``snapshot`` maps instrument names to their settings.
    ``document`` is the bluesky RunStart (its ``uid`` is ``run_uid`` for segment 0).
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
    document: dict[str, Any] = field(default_factory=dict)

    def with_bluesky(self) -> StartDoc:
        """This start with its RunStart document composed (``event_model.compose_run``)."""
        uid = self.run_uid if self.segment == 0 else uuid.uuid4().hex
        metadata: dict[str, Any] = {
            "labrig_run_uid": self.run_uid,
            "procedure": self.procedure,
            "procedure_class": self.procedure_class,
            "plan_name": self.procedure,
            "parameters": to_jsonable(self.parameters),
            "parameter_units": dict(self.parameter_units),
            "segment": self.segment,
            "first_seq_num": self.first_seq_num,
            "versions": to_jsonable(self.versions),
            "seeds": to_jsonable(self.seeds),
        }
        bundle = event_model.compose_run(uid=uid, time=self.time, metadata=metadata)
        return _replace(self, document=dict(bundle.start_doc))


@dataclass(frozen=True)
class DescriptorDoc:
    """One stream's declaration as a bluesky EventDescriptor (``document``)."""

    run_uid: str
    stream: StreamDeclaration
    uid: str
    time: float
    document: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def compose(
        cls, start: StartDoc, stream: StreamDeclaration, source: str, *, when: float | None = None
    ) -> DescriptorDoc:
        """The EventDescriptor of ``stream`` in ``start``'s bluesky run."""
        run_start = start.document or start.with_bluesky().document
        uid = uuid.uuid4().hex
        when = time.time() if when is None else when
        hints = {
            "fields": [k.name for k in stream.keys if k.name not in stream.status],
            "labrig": {
                "plots": [p.to_json() for p in stream.plots],
                "status": list(stream.status),
                "x": stream.x,
            },
        }
        doc = event_model.ComposeDescriptor(
            start=run_start,  # type: ignore[arg-type]
            streams={},
            event_counters={},
        )(
            name=stream.name,
            data_keys={k.name: k.to_bluesky(source) for k in stream.keys},  # type: ignore[misc]
            hints={source: hints},  # type: ignore[dict-item]
            object_keys={source: [k.name for k in stream.keys]},
            uid=uid,
            time=when,
        ).descriptor_doc
        return cls(start.run_uid, stream, uid, when, dict(doc))

    @classmethod
    def from_document(cls, run_uid: str, doc: Mapping[str, Any]) -> DescriptorDoc:
        """Rebuild the declaration from a stored EventDescriptor."""
        keys = tuple(DataKey.from_bluesky(n, k) for n, k in doc["data_keys"].items())
        extra: dict[str, Any] = {}
        for hint in (doc.get("hints") or {}).values():
            if isinstance(hint, Mapping) and "labrig" in hint:
                extra = dict(hint["labrig"])
        stream = StreamDeclaration(
            keys,
            tuple(PlotHint.from_json(p) for p in extra.get("plots", [])),
            name=str(doc.get("name", "primary")),
            x=str(extra.get("x", "")),
            status=tuple(extra.get("status", [])),
        )
        return cls(run_uid, stream, str(doc["uid"]), float(doc["time"]), dict(doc))


@dataclass(frozen=True)
class EventDoc:
    """One iteration: scalars (float) and arrays (read-only numpy copies) of one stream.

    ``seq_num`` counts a run's events from 0 across streams and segments; ``stream_seq`` counts
    this stream's events from 1 (bluesky's ``seq_num``).
    """

    run_uid: str
    seq_num: int
    time: float
    scalars: dict[str, float]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    stream: str = "primary"
    descriptor: str = ""
    stream_seq: int = 0

    def to_bluesky(self, optional: Sequence[str] = ()) -> dict[str, Any]:
        """The bluesky Event (arrays stay numpy arrays; ``event_model`` accepts them).
        ``optional``: the stream's optional keys; those this event lacks read NaN."""
        data: dict[str, Any] = {**dict.fromkeys(optional, math.nan), **self.scalars}
        data.update(self.arrays)
        return {
            "uid": f"{self.descriptor}-{self.stream_seq}",
            "time": self.time,
            "descriptor": self.descriptor,
            "seq_num": self.stream_seq,
            "data": data,
            "timestamps": dict.fromkeys(data, self.time),
            "filled": {},
        }


@dataclass(frozen=True)
class LogDoc:
    """A message from the procedure or the runner; ``seq_num`` is the number of events so far.
    (Not a bluesky document: :class:`BlueskyAdapter` passes it over.)"""

    run_uid: str
    time: float
    level: LogLevel
    message: str
    seq_num: int = 0


@dataclass(frozen=True)
class StopDoc:
    """How the run ended. ``safe_state`` maps each instrument to "ok" or the error it raised.
    ``document`` is the bluesky RunStop of the segment that ended."""

    run_uid: str
    time: float
    status: StopStatus
    reason: str
    n_events: int
    device_time_s: float
    wall_time_s: float
    summary: dict[str, Any] = field(default_factory=dict)
    safe_state: dict[str, str] = field(default_factory=dict)
    document: dict[str, Any] = field(default_factory=dict)

    def with_bluesky(self, start: StartDoc, events_per_stream: Mapping[str, int]) -> StopDoc:
        """This stop with its RunStop composed for ``start``'s bluesky run."""
        run_start = start.document or start.with_bluesky().document
        counters = {name: n + 1 for name, n in events_per_stream.items()}
        compose = event_model.ComposeStop(
            start=run_start,  # type: ignore[arg-type]
            event_counters=counters,
            poison_pill=[],
        )
        doc = compose(exit_status=EXIT_STATUS[self.status], reason=self.reason, time=self.time)
        return _replace(self, document=dict(doc))


Document = StartDoc | DescriptorDoc | EventDoc | LogDoc | StopDoc


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


class BlueskyAdapter:
    """A labrig subscriber that calls ``callback(name, doc)`` with bluesky documents
    ("start", "descriptor", "event", "stop"), as a RunEngine would; log documents are skipped."""

    def __init__(self, callback: Callable[[str, dict[str, Any]], object]) -> None:
        self.callback = callback
        self._optional: dict[str, tuple[str, ...]] = {}

    def __call__(self, doc: Document) -> None:
        if isinstance(doc, StartDoc) and doc.document:
            self.callback("start", doc.document)
        elif isinstance(doc, DescriptorDoc):
            self._optional[doc.uid] = tuple(k.name for k in doc.stream.keys if k.optional)
            self.callback("descriptor", doc.document)
        elif isinstance(doc, EventDoc) and doc.descriptor:
            self.callback("event", doc.to_bluesky(self._optional.get(doc.descriptor, ())))
        elif isinstance(doc, StopDoc) and doc.document:
            self.callback("stop", doc.document)


def validate_bluesky(name: str, doc: Mapping[str, Any]) -> None:
    """Validate ``doc`` against event-model's JSON schema for ``name`` (raises
    ``jsonschema.ValidationError``); arrays are checked as the lists they serialise to."""
    plain = json.loads(to_json(doc))
    event_model.schema_validators[event_model.DocumentNames(name)].validate(plain)


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
