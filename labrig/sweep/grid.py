"""What a sweep is: a procedure, a station, fixed parameters and the points to run.

A sweep is given on the command line (``--task AND,OR,XOR --device-seed 0:20``) or in a TOML
sweep file; both become one :class:`SweepSpec`. Its points are the Cartesian product of the
``grid`` axes plus any explicitly listed ``points``, each merged with the ``fixed`` values::

    [sweep]
    procedure = "hge"            # hge, dfa, iv, transfer (any registered procedure)
    station = "sim-dnpu"         # optional: the procedure's built-in station by default
    name = "gates-20-devices"    # optional: the sweep folder's name

    [fixed]                      # the same for every point
    max_iterations = 40
    initializations = 1

    [grid]                       # every combination
    task = ["AND", "OR", "XOR"]  # a list, or a string in the command-line syntax below
    device_seed = "0:20"
    seed = "0:3"

    [[points]]                   # and/or an explicit list of points
    task = "XNOR"
    device_seed = 7

Axis values, as written on the command line or as a string in the file: a comma-separated list
whose items are single values (``AND``, ``0.02``, ``10 mV``) or ranges: ``START:STOP[:STEP]``
(integers, STOP excluded, as Python's ``range``), ``lin:START:STOP:N`` and ``log:START:STOP:N``
(N numbers, ends included, evenly or geometrically spaced).

An axis is a parameter of the procedure (validated by its declaration: bounds, units, choices)
or a setting of the simulated station: ``device_seed`` (which device instance the bench
simulates, ``[bench] device_seed``) and ``bench_seed`` (the bench's noise, ``[bench] seed``).
Every point gets its own station file, derived from the sweep's station, never by changing
shared state.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labrig.procedures.base import ParameterError, Procedure, get_procedure_class

__all__ = [
    "STATION_AXES",
    "Point",
    "SweepError",
    "SweepSpec",
    "load_sweep_file",
    "parse_axis",
    "procedure_class",
]

#: Sweep axes that set the simulated station's ``[bench]`` table rather than a parameter.
STATION_AXES: dict[str, str] = {"device_seed": "device_seed", "bench_seed": "seed"}
#: Axes that repeat an experiment rather than change it: the report spreads results over them.
SEED_AXES = ("seed", "device_seed", "bench_seed")
MAX_POINTS = 1_000_000
_SEED_MAX = 2**31 - 1

_INT_RANGE = re.compile(r"^\s*(-?\d+)\s*:\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?$")
_SPACED = re.compile(r"^\s*(lin|log)\s*:([^:]+):([^:]+):\s*(\d+)\s*$", re.IGNORECASE)


class SweepError(ValueError):
    """A sweep could not be understood or run: names the value, the rule and where it came
    from (a command-line option, a sweep file and key, a sweep folder)."""


def _procedures_loaded() -> None:
    # The built-in procedures register themselves when their modules are imported.
    import labrig.procedures.characterise
    import labrig.procedures.dfa
    import labrig.procedures.hge  # noqa: F401


def procedure_class(name: str) -> type[Procedure]:
    """The registered procedure called ``name`` (``hge``, ``dfa``, ``iv``, ``transfer``, ...)."""
    _procedures_loaded()
    try:
        return get_procedure_class(name)
    except Exception as exc:
        raise SweepError(f"sweep: {exc}") from None


def default_station(cls: type[Procedure]) -> str:
    """The built-in station a procedure uses when none is given (by its rig kind)."""
    return "sim-reservoir" if getattr(cls, "rig_kind", "dnpu") == "reservoir" else "sim-dnpu"


# ------------------------------------------------------------------------------ axis values


def parse_axis(name: str, text: str, source: str) -> list[Any]:
    """The values of axis ``name`` written as ``text`` (see the module docstring), unvalidated.

    Raises :class:`SweepError` naming ``source`` for a malformed range or an empty list.
    """
    values: list[Any] = []
    for item in _split(text):
        if not item:
            raise SweepError(f"{source}: axis {name!r}: empty item in {text!r}")
        ranged = _INT_RANGE.match(item)
        spaced = _SPACED.match(item)
        if ranged:
            start, stop = int(ranged[1]), int(ranged[2])
            step = int(ranged[3]) if ranged[3] is not None else 1
            if step == 0:
                raise SweepError(f"{source}: axis {name!r}: range {item!r} has step 0")
            span = range(start, stop, step)
            if len(span) == 0:
                raise SweepError(
                    f"{source}: axis {name!r}: range {item!r} is empty (STOP is excluded)"
                )
            values.extend(span)
        elif spaced:
            kind, n = spaced[1].lower(), int(spaced[4])
            try:
                lo, hi = float(spaced[2]), float(spaced[3])
            except ValueError:
                raise SweepError(
                    f"{source}: axis {name!r}: {item!r}: START and STOP must be plain numbers"
                ) from None
            if n < 1:
                raise SweepError(f"{source}: axis {name!r}: {item!r} asks for {n} values")
            if kind == "log":
                if lo <= 0 or hi <= 0:
                    raise SweepError(
                        f"{source}: axis {name!r}: {item!r}: log spacing needs START, STOP > 0"
                    )
                values.extend(float(v) for v in np.geomspace(lo, hi, n))
            else:
                values.extend(float(v) for v in np.linspace(lo, hi, n))
        else:
            values.append(item)
    if not values:
        raise SweepError(f"{source}: axis {name!r} has no values ({text!r})")
    return values


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


def _file_axis(name: str, value: object, source: str) -> list[Any]:
    if isinstance(value, str):
        return parse_axis(name, value, source)
    if isinstance(value, list):
        if not value:
            raise SweepError(f"{source}: axis {name!r} is an empty list")
        for v in value:
            if isinstance(v, list | dict):
                raise SweepError(f"{source}: axis {name!r}: {v!r} is not a single value")
        return list(value)
    if isinstance(value, dict):
        raise SweepError(f"{source}: axis {name!r} must be a value or a list, not a table")
    return [value]


# ------------------------------------------------------------------------------------ points


@dataclass(frozen=True)
class Point:
    """One point of a sweep: validated procedure parameters and station settings."""

    index: int  # position in the sweep's order (grid first, then the listed points)
    point_id: str  # content hash: the same values give the same id in any sweep of this folder
    coordinates: dict[str, Any]  # the swept values (axes), as validated
    parameters: dict[str, Any]  # every procedure parameter given (fixed + swept), validated
    station_settings: dict[str, int]  # [bench] key -> value


@dataclass(frozen=True)
class SweepSpec:
    """A sweep as given: see the module docstring. :meth:`points` validates and expands it."""

    procedure: str
    station: str | None = None
    name: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    listed: tuple[dict[str, Any], ...] = ()
    source: str = "command line"

    # ---- identity -------------------------------------------------------------------------

    def to_document(self) -> dict[str, Any]:
        """A JSON-able document of the spec (written to the sweep folder as ``sweep.json``)."""
        return {
            "procedure": self.procedure,
            "station": self.station,
            "name": self.name,
            "fixed": self.fixed,
            "grid": self.grid,
            "points": list(self.listed),
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], source: str) -> SweepSpec:
        return cls(
            procedure=str(doc["procedure"]),
            station=doc.get("station"),
            name=doc.get("name"),
            fixed=dict(doc.get("fixed", {})),
            grid={k: list(v) for k, v in dict(doc.get("grid", {})).items()},
            listed=tuple(dict(p) for p in doc.get("points", [])),
            source=source,
        )

    def station_name(self) -> str:
        return self.station or default_station(procedure_class(self.procedure))

    def digest(self) -> str:
        """A short hash of what the sweep runs (not of its name): its default folder name."""
        doc = self.to_document()
        doc.pop("name")
        doc["station"] = self.station_name()
        return _hash(doc)[:8]

    def default_name(self) -> str:
        return f"{self.procedure}-{self.digest()}"

    def canonical(self) -> SweepSpec:
        """The same sweep with every value validated (``"0:3"`` -> ``[0, 1, 2]``, ``"10 mV"`` ->
        ``0.01``), so that a sweep file and the command line that mean one sweep are one."""
        cls = procedure_class(self.procedure)
        declared = cls.parameters()
        for where, names in (("fixed", self.fixed), ("grid", self.grid)):
            for name in names:
                self._check_name(cls, declared, name, where)

        def check(name: str, value: object, where: str) -> Any:
            self._check_name(cls, declared, name, where)
            return self._validate(cls, declared, name, value, where)

        return SweepSpec(
            procedure=self.procedure,
            station=self.station,
            name=self.name,
            fixed={n: check(n, v, "fixed") for n, v in self.fixed.items()},
            grid={n: [check(n, v, "grid") for v in vs] for n, vs in self.grid.items()},
            listed=tuple(
                {n: check(n, v, f"points[{k}]") for n, v in p.items()}
                for k, p in enumerate(self.listed)
            ),
            source=self.source,
        )

    # ---- expansion ------------------------------------------------------------------------

    def axes(self) -> list[str]:
        """The swept names, grid axes first, then those only in listed points."""
        names = list(self.grid)
        for point in self.listed:
            names.extend(k for k in point if k not in names)
        return names

    def points(self, base_station_text: str = "") -> list[Point]:
        """Every point, validated; ``base_station_text`` enters each point's id.

        Raises :class:`SweepError` for an unknown axis, a value the procedure refuses (with
        the parameter's own message), a duplicate point or no point at all.
        """
        cls = procedure_class(self.procedure)
        declared = cls.parameters()
        for where, names in (("fixed", self.fixed), ("grid", self.grid)):
            for name in names:
                self._check_name(cls, declared, name, where)
        for k, listed in enumerate(self.listed):
            for name in listed:
                self._check_name(cls, declared, name, f"points[{k}]")
        n_grid = math.prod(len(v) for v in self.grid.values()) if self.grid else 0
        if n_grid + len(self.listed) > MAX_POINTS:
            raise SweepError(
                f"{self.source}: {n_grid + len(self.listed)} points is more than {MAX_POINTS}"
            )
        raw: list[tuple[str, dict[str, Any]]] = []
        if self.grid:
            axes = list(self.grid)
            for combo in itertools.product(*(self.grid[n] for n in axes)):
                raw.append(("grid", dict(zip(axes, combo, strict=True))))
        raw.extend((f"points[{k}]", dict(p)) for k, p in enumerate(self.listed))
        if not raw:
            raw.append(("fixed", {}))  # no axis: one point with the fixed values
        fixed = {n: self._validate(cls, declared, n, v, "fixed") for n, v in self.fixed.items()}
        points: list[Point] = []
        seen: dict[str, int] = {}
        station_digest = _hash(base_station_text)[:16]
        for index, (where, coords) in enumerate(raw):
            checked = {n: self._validate(cls, declared, n, v, where) for n, v in coords.items()}
            merged = {**fixed, **checked}
            parameters = {n: v for n, v in merged.items() if n not in STATION_AXES}
            settings = {STATION_AXES[n]: int(v) for n, v in merged.items() if n in STATION_AXES}
            # The id covers every value the run depends on, so a re-run (or a grown grid)
            # recognises a point it has already run, and nothing else.
            point_id = _hash(
                {
                    "procedure": self.procedure,
                    "parameters": _resolved(cls, parameters),
                    "bench": settings,
                    "station": station_digest,
                }
            )[:12]
            if point_id in seen:
                raise SweepError(
                    f"{self.source}: {where}: point {coords} repeats point {seen[point_id]} "
                    "(the same values twice)"
                )
            seen[point_id] = index
            points.append(Point(index, f"p{point_id}", checked, parameters, settings))
        return points

    def _check_name(
        self, cls: type[Procedure], declared: Mapping[str, Any], name: str, where: str
    ) -> None:
        if name == "station":
            raise SweepError(
                f"{self.source}: {where}: 'station' is a setting of the whole sweep "
                "([sweep] station or --station), not an axis"
            )
        if name not in declared and name not in STATION_AXES:
            known = ", ".join(n for n in declared if n != "station")
            raise SweepError(
                f"{self.source}: {where}: {name!r} is neither a parameter of {self.procedure} "
                f"({known}) nor a station setting ({', '.join(STATION_AXES)})"
            )

    def _validate(
        self,
        cls: type[Procedure],
        declared: Mapping[str, Any],
        name: str,
        value: object,
        where: str,
    ) -> Any:
        if name in STATION_AXES:
            if isinstance(value, str):
                try:
                    value = int(value.strip())
                except ValueError:
                    raise SweepError(
                        f"{self.source}: {where}: {name} = {value!r} is not a whole number"
                    ) from None
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise SweepError(f"{self.source}: {where}: {name} = {value!r} is not an integer")
            if not 0 <= int(value) <= _SEED_MAX:
                raise SweepError(
                    f"{self.source}: {where}: {name} = {value!r} is outside 0..{_SEED_MAX}"
                )
            return int(value)
        try:
            return _plain(declared[name].validate(value, source=f"{self.source}, {where}"))
        except ParameterError as exc:
            raise SweepError(f"{self.procedure} sweep: {exc}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _resolved(cls: type[Procedure], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter's value, defaults filled in (``station`` left out: the sweep sets it)."""
    out: dict[str, Any] = {}
    for name, declaration in cls.parameters().items():
        if name == "station":
            continue
        out[name] = _plain(parameters.get(name, declaration.default))
    return out


def _hash(obj: object) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ sweep files

_FILE_TABLES = {"sweep", "fixed", "grid", "points"}
_SWEEP_KEYS = {"procedure", "station", "name"}


def load_sweep_file(path: str | Path, procedure: str | None = None) -> SweepSpec:
    """Read a TOML sweep file (see the module docstring). ``procedure``, when given (the
    command line's), must agree with the file's ``[sweep] procedure`` if it names one."""
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SweepError(f"{source}: cannot read the sweep file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - _FILE_TABLES)
    if unknown:
        raise SweepError(f"{source}: unknown table(s) {unknown}; allowed: {sorted(_FILE_TABLES)}")
    head = data.get("sweep", {})
    if not isinstance(head, dict):
        raise SweepError(f"{source}: [sweep] must be a table")
    bad = sorted(set(head) - _SWEEP_KEYS)
    if bad:
        raise SweepError(f"{source}: [sweep]: unknown key(s) {bad}; allowed: {sorted(_SWEEP_KEYS)}")
    named = head.get("procedure")
    if named is not None and procedure is not None and named != procedure:
        raise SweepError(
            f"{source}: [sweep] procedure = {named!r}, but the command asks for {procedure!r}"
        )
    name = named or procedure
    if not name:
        raise SweepError(f"{source}: [sweep] procedure is missing (hge, dfa, iv, transfer)")
    for key in ("station", "name"):
        if key in head and not isinstance(head[key], str):
            raise SweepError(f"{source}: [sweep] {key} must be text, got {head[key]!r}")
    fixed = data.get("fixed", {})
    grid = data.get("grid", {})
    listed = data.get("points", [])
    if not isinstance(fixed, dict) or not isinstance(grid, dict):
        raise SweepError(f"{source}: [fixed] and [grid] must be tables")
    if not isinstance(listed, list) or not all(isinstance(p, dict) for p in listed):
        raise SweepError(f"{source}: points must be an array of tables ([[points]])")
    for key, value in fixed.items():
        if isinstance(value, list | dict):
            raise SweepError(
                f"{source}: [fixed] {key} = {value!r} is not one value (sweep it in [grid])"
            )
    return SweepSpec(
        procedure=str(name),
        station=head.get("station"),
        name=head.get("name"),
        fixed=dict(fixed),
        grid={k: _file_axis(k, v, f"{source}: [grid]") for k, v in grid.items()},
        listed=tuple(dict(p) for p in listed),
        source=source,
    )


def merge_specs(
    base: SweepSpec | None,
    procedure: str,
    *,
    station: str | None = None,
    name: str | None = None,
    axes: Iterable[tuple[str, Sequence[Any]]] = (),
    source: str = "command line",
) -> SweepSpec:
    """``base`` (a sweep file, or None) with command-line axes and settings on top: an axis of
    one value becomes a fixed value; an axis given on both replaces the file's."""
    fixed = dict(base.fixed) if base else {}
    grid = dict(base.grid) if base else {}
    for axis, values in axes:
        fixed.pop(axis, None)
        grid.pop(axis, None)
        if len(values) == 1:
            fixed[axis] = values[0]
        else:
            grid[axis] = list(values)
    return SweepSpec(
        procedure=procedure,
        station=station if station is not None else (base.station if base else None),
        name=name if name is not None else (base.name if base else None),
        fixed=fixed,
        grid=grid,
        listed=base.listed if base else (),
        source=f"{base.source} + {source}" if base else source,
    )
