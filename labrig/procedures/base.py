"""The procedure contract: declared parameters, a lifecycle, and a way to report each iteration.

A procedure is a class. Its parameters are class attributes; each validates strictly and reads
units at the edge ("10 mV" for a parameter in volts). The runner
(:func:`labrig.procedures.runner.run_procedure`) calls ``startup()``, then ``execute()``, then
``shutdown()``, and brings every instrument in ``self.instruments`` to its safe state on every
exit path. A sketch::

    @register_procedure
    class IVSweep(Procedure):
        name = "iv-sweep"
        start_v = FloatParameter("Start", units="V", default=-0.5, minimum=-1.2, maximum=0.6)
        stop_v = FloatParameter("Stop", units="V", default=0.5, minimum=-1.2, maximum=0.6)
        points = IntegerParameter("Points", default=51, minimum=2, maximum=10_001)

        def startup(self) -> None:
            self.instruments = {"dac": self.dac, "lockin": self.lockin}   # given by the caller

        def execute(self) -> None:
            for v in np.linspace(self.start_v, self.stop_v, self.points):
                if self.should_stop():
                    return
                self.dac.ramp_to({3: v})
                self.emit_event({"voltage_v": v, "current_a": self.lockin.read_xy()[0]}, {})

    run_procedure(IVSweep(start_v="-200 mV", points=11))

``emit_event`` marks the end of an iteration: the runner appends the event to the run record,
flushes it, then saves ``checkpoint_state()``. So call it when the procedure's state reflects the
finished iteration, and make ``execute()`` continue from whatever ``restore_state`` set, so that a
resumed run carries on where the checkpoint left off.

Lifecycle order: ``__init__`` (parameters) -> ``startup()`` -> ``restore_state(state)`` (only when
resuming) -> ``execute()`` -> ``shutdown()`` -> runner's ``safe_state()`` on every instrument.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar, overload

import numpy as np

from instruments.roles import Instrument
from labrig.errors import ProcedureError
from labrig.procedures.retry import RunAborted, retry
from labrig.units import UnitError, parse_quantity

if TYPE_CHECKING:
    from labrig.runs.documents import StreamDeclaration

__all__ = [
    "BoolParameter",
    "ChoiceParameter",
    "FloatParameter",
    "IntegerParameter",
    "LogLevel",
    "Parameter",
    "ParameterError",
    "Procedure",
    "RunAborted",
    "StrParameter",
    "get_procedure_class",
    "procedure_registry",
    "register_procedure",
]

T = TypeVar("T")
LogLevel = Literal["debug", "info", "warning", "error"]
_logger = logging.getLogger("labrig.procedures")


class ParameterError(ValueError):
    """A parameter value was refused; the message names the parameter, the value and the rule."""

    def __init__(self, parameter: str, value: object, problem: str, source: str = "") -> None:
        self.parameter = parameter
        self.value = value
        self.problem = problem
        self.source = source
        where = f" ({source})" if source else ""
        super().__init__(f"parameter {parameter!r}: {value!r} {problem}{where}")


# ---------------------------------------------------------------------------------- parameters


class Parameter(Generic[T]):
    """A declared procedure parameter. Subclasses define :meth:`validate`.

    Declared on the class, read on the instance: ``self.points`` is the validated value. The
    class attribute (``MyProcedure.points``) is the declaration, which GUI forms and the CLI use
    for the label, units, default, bounds and help.
    """

    kind: ClassVar[str] = "any"

    def __init__(self, label: str, *, units: str = "", default: T | None = None, help: str = ""):
        self.label = label
        self.units = units
        self.help = help
        self.name = ""  # set by __set_name__
        self._default_raw = default
        self.default: T | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        if self._default_raw is not None:
            # A bad default is a programming error in the declaration: fail at class creation.
            self.default = self.validate(self._default_raw, source=f"default of {owner.__name__}")

    @property
    def required(self) -> bool:
        """True if the parameter has no default and must be given."""
        return self.default is None

    def validate(self, value: object, source: str = "") -> T:
        """Return ``value`` converted to this parameter's type, or raise :class:`ParameterError`."""
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        """A JSON-able description (kind, label, units, default, bounds, help) for forms."""
        return {
            "name": self.name,
            "kind": self.kind,
            "label": self.label,
            "units": self.units,
            "default": self.default,
            "help": self.help,
        }

    def _error(self, value: object, problem: str, source: str) -> ParameterError:
        return ParameterError(self.name or self.label, value, problem, source)

    @overload
    def __get__(self, instance: None, owner: type) -> Parameter[T]: ...

    @overload
    def __get__(self, instance: object, owner: type) -> T: ...

    def __get__(self, instance: object | None, owner: type) -> Parameter[T] | T:
        if instance is None:
            return self
        values: dict[str, Any] = instance.__dict__["_parameter_values"]
        return values[self.name]  # type: ignore[no-any-return]

    def __set__(self, instance: object, value: object) -> None:
        instance.__dict__["_parameter_values"][self.name] = self.validate(value)


def _range_text(minimum: float | None, maximum: float | None, units: str) -> str:
    low = "-inf" if minimum is None else f"{minimum:g}"
    high = "inf" if maximum is None else f"{maximum:g}"
    return f"[{low}, {high}]" + (f" {units}" if units else "")


class FloatParameter(Parameter[float]):
    """A real number in ``units``; text may carry an SI prefix ("10 mV"). Bounds are inclusive."""

    kind = "float"

    def __init__(
        self,
        label: str,
        *,
        units: str = "",
        default: float | str | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
        help: str = "",
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        super().__init__(label, units=units, default=default, help=help)  # type: ignore[arg-type]

    def validate(self, value: object, source: str = "") -> float:
        if isinstance(value, bool) or not isinstance(value, str | int | float | np.number):
            raise self._error(value, f"is not a number in {self.units or 'plain units'}", source)
        if isinstance(value, np.number):
            if np.iscomplexobj(value):
                raise self._error(value, "is complex; expected a real number", source)
            value = float(value)  # type: ignore[arg-type]
        try:
            number = parse_quantity(value, self.units, source)  # type: ignore[arg-type]
        except UnitError as exc:
            raise self._error(value, f"is not readable: {exc.problem}", source) from exc
        if self.minimum is not None and not number >= self.minimum:
            raise self._error(
                value, f"is outside {_range_text(self.minimum, self.maximum, self.units)}", source
            )
        if self.maximum is not None and not number <= self.maximum:
            raise self._error(
                value, f"is outside {_range_text(self.minimum, self.maximum, self.units)}", source
            )
        return number

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "minimum": self.minimum, "maximum": self.maximum}


class IntegerParameter(Parameter[int]):
    """A whole number; floats are accepted only if integral (3.0), text may carry units."""

    kind = "int"

    def __init__(
        self,
        label: str,
        *,
        units: str = "",
        default: int | str | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
        help: str = "",
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        super().__init__(label, units=units, default=default, help=help)  # type: ignore[arg-type]

    def validate(self, value: object, source: str = "") -> int:
        if isinstance(value, bool | np.bool_):
            raise self._error(value, "is a boolean; expected a whole number", source)
        if isinstance(value, int | np.integer):
            number = int(value)
        elif isinstance(value, float | np.floating | str):
            try:
                real = (
                    parse_quantity(value, self.units, source)
                    if isinstance(value, str)
                    else float(value)
                )
            except UnitError as exc:
                raise self._error(value, f"is not readable: {exc.problem}", source) from exc
            if not (math.isfinite(real) and real == int(real)):
                raise self._error(value, "is not a whole number", source)
            number = int(real)
        else:
            raise self._error(value, "is not a whole number", source)
        if (self.minimum is not None and number < self.minimum) or (
            self.maximum is not None and number > self.maximum
        ):
            raise self._error(
                value, f"is outside {_range_text(self.minimum, self.maximum, self.units)}", source
            )
        return number

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "minimum": self.minimum, "maximum": self.maximum}


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class BoolParameter(Parameter[bool]):
    """True or False; text "true/false/yes/no/on/off/1/0" (any case) and the ints 0 and 1."""

    kind = "bool"

    def __init__(self, label: str, *, default: bool | None = None, help: str = "") -> None:
        super().__init__(label, default=default, help=help)

    def validate(self, value: object, source: str = "") -> bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
        if isinstance(value, int | np.integer) and int(value) in (0, 1):
            return bool(value)
        if isinstance(value, str):
            word = value.strip().lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
        raise self._error(value, "is not one of true/false (yes/no, on/off, 1/0)", source)


class ChoiceParameter(Parameter[Any]):
    """One of a fixed list of values. Text matches a string choice ignoring case and surrounding
    spaces; the canonical spelling from ``choices`` is what the procedure sees."""

    kind = "choice"

    def __init__(
        self,
        label: str,
        *,
        choices: Sequence[str | int | float],
        default: str | int | float | None = None,
        units: str = "",
        help: str = "",
    ) -> None:
        if not choices:
            raise ValueError(f"ChoiceParameter {label!r} needs at least one choice")
        self.choices: tuple[str | int | float, ...] = tuple(choices)
        super().__init__(label, units=units, default=default, help=help)

    def validate(self, value: object, source: str = "") -> str | int | float:
        for choice in self.choices:
            if isinstance(choice, str):
                if isinstance(value, str) and value.strip().lower() == choice.lower():
                    return choice
            else:
                same = not isinstance(value, bool) and type(value) is type(choice)
                if (same and value == choice) or (
                    isinstance(value, str) and str(choice) == value.strip()
                ):
                    return choice
        allowed = ", ".join(repr(c) for c in self.choices)
        raise self._error(value, f"is not one of {allowed}", source)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "choices": list(self.choices)}


class StrParameter(Parameter[str]):
    """Free text (a file name, a label). ``max_length`` bounds it."""

    kind = "str"

    def __init__(
        self, label: str, *, default: str | None = None, max_length: int = 4096, help: str = ""
    ) -> None:
        self.max_length = max_length
        super().__init__(label, default=default, help=help)

    def validate(self, value: object, source: str = "") -> str:
        if not isinstance(value, str):
            raise self._error(value, f"is not text (got {type(value).__name__})", source)
        if len(value) > self.max_length:
            raise self._error(value, f"is longer than {self.max_length} characters", source)
        return value

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "max_length": self.max_length}


# ------------------------------------------------------------------------------ run context


class RunContext(Protocol):
    """What a procedure talks to while it runs. The runner provides one; see ``_DetachedContext``
    for the stand-in used when a procedure is driven directly (in a unit test, say)."""

    def emit_event(self, scalars: Mapping[str, float], arrays: Mapping[str, np.ndarray]) -> int: ...

    def log(self, message: str, level: LogLevel) -> None: ...

    def should_stop(self) -> bool: ...

    def wait_if_paused(self, timeout_s: float | None) -> bool: ...


@dataclass
class DetachedEvent:
    """An event emitted by a procedure that runs without a runner."""

    seq_num: int
    scalars: dict[str, float]
    arrays: dict[str, np.ndarray]


class _DetachedContext:
    """Collects events in memory and sends logs to :mod:`logging`; never stops or pauses."""

    def __init__(self) -> None:
        self.events: list[DetachedEvent] = []

    def emit_event(self, scalars: Mapping[str, float], arrays: Mapping[str, np.ndarray]) -> int:
        seq = len(self.events)
        copied = {k: np.array(v, copy=True) for k, v in arrays.items()}
        self.events.append(DetachedEvent(seq, {k: float(v) for k, v in scalars.items()}, copied))
        return seq

    def log(self, message: str, level: LogLevel) -> None:
        _logger.log(logging.getLevelNamesMapping()[level.upper()], message)

    def should_stop(self) -> bool:
        return False

    def wait_if_paused(self, timeout_s: float | None) -> bool:
        return False


def drain_errors(instrument: Any, limit: int = 32) -> list[Exception]:
    """Read ``instrument``'s error queue until it reports none (at most ``limit`` entries: a
    queue holds a few dozen on real models); the errors, oldest first."""
    from instruments.errors import InstrumentReportedError

    found: list[Exception] = []
    for _ in range(limit):
        try:
            instrument.check_errors()
            return found
        except InstrumentReportedError as exc:
            found.append(exc)
    return found


# -------------------------------------------------------------------------------- procedure


class Procedure:
    """Base class of every measurement or training procedure. See the module docstring.

    Subclasses set ``name`` (unique, used for run folders and for resuming), declare parameters
    as class attributes, and override ``execute()`` (and, as needed, ``startup()``,
    ``shutdown()``, ``checkpoint_state()``/``restore_state()``, ``seeds()``, ``station_info()``,
    ``device_time_s()``, ``summary()``).
    """

    name: ClassVar[str] = ""
    supports_pause: ClassVar[bool] = False
    _parameters: ClassVar[dict[str, Parameter[Any]]] = {}

    instruments: dict[str, Instrument]
    resumed: bool

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Parents' parameters first, then this class's in declaration order (dicts keep it).
        collected: dict[str, Parameter[Any]] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if isinstance(value, Parameter):
                    collected[attr] = value
        cls._parameters = collected

    @classmethod
    def parameters(cls) -> dict[str, Parameter[Any]]:
        """Declared parameters, name -> declaration, in declaration order (for forms and CLI)."""
        return dict(cls._parameters)

    def __init__(self, **values: object) -> None:
        """Validate and set the parameters. Unknown names and missing required values raise
        :class:`ParameterError`; text values may carry units ("10 mV")."""
        declared = type(self)._parameters
        unknown = sorted(set(values) - set(declared))
        if unknown:
            raise ParameterError(
                unknown[0],
                values[unknown[0]],
                f"is not a parameter of {type(self).__name__}; known: {', '.join(declared)}",
            )
        resolved: dict[str, Any] = {}
        for pname, declaration in declared.items():
            if pname in values:
                resolved[pname] = declaration.validate(values[pname])
            elif declaration.default is not None:
                resolved[pname] = declaration.default
            else:
                raise ParameterError(pname, None, "is required (no default)")
        self.__dict__["_parameter_values"] = resolved
        self.instruments = {}
        self.resumed = False
        self._context: RunContext = _DetachedContext()

    # ---- values --------------------------------------------------------------------------

    def parameter_values(self) -> dict[str, Any]:
        """The validated parameter values, name -> value (SI floats, ints, bools, strings)."""
        return dict(self.__dict__["_parameter_values"])

    @classmethod
    def import_path(cls) -> str:
        """``"module:QualName"``, stored in the run record so a resume can import the class."""
        return f"{cls.__module__}:{cls.__qualname__}"

    # ---- lifecycle (override) -------------------------------------------------------------

    def startup(self) -> None:
        """Connect and configure instruments; fill ``self.instruments`` (name -> role object).

        Add each instrument to ``self.instruments`` as soon as it is connected: if a later step
        of ``startup()`` fails, the runner still brings the ones already there to safe state.
        """

    def execute(self) -> None:
        """The measurement or training loop. Check ``should_stop()`` at least once per step."""
        raise NotImplementedError(f"{type(self).__name__} does not implement execute()")

    def shutdown(self) -> None:
        """Procedure-specific tidy-up. The runner safe-states ``self.instruments`` afterwards."""

    def release(self) -> None:
        """Close connections. The runner calls this last, after every instrument's safe state
        and after reading the device time for the stop document."""

    def reconnect_instrument(self, label: str) -> bool:
        """Reopen the connection of ``self.instruments[label]`` after it dropped, replacing the
        driver there; True if it did. The runner calls this when a safe state fails on a lost
        connection, then tries the safe state once more. The base class cannot reconnect."""
        return False

    def describe_data(self) -> Sequence[StreamDeclaration] | None:
        """Declare the data of this procedure's events: one
        :class:`~labrig.runs.documents.StreamDeclaration` per kind of event, each naming every
        key with its dtype, shape, units and axes, plus plot hints. Called after ``startup()``
        before the first event; the record
        creates its datasets from it. None: the keys of the first event are taken, without
        units (kept for quick scripts; declare in anything that lasts)."""
        return None

    def checkpoint_state(self) -> dict[str, Any] | None:
        """State to resume from after the last emitted event, or None if not resumable.

        A nested dict of numpy arrays, numpy scalars, ints (any size), floats, strings, bools,
        None, bytes and lists/tuples of these. Include every random generator's state
        (``rng.bit_generator.state``) and optimiser state (``opt.state_dict()``) so that a
        resumed run is bit-for-bit the uninterrupted one.
        """
        return None

    def restore_state(self, state: dict[str, Any]) -> None:
        """Load what :meth:`checkpoint_state` returned. Called after ``startup()`` on resume."""
        raise ProcedureError(f"procedure {self.name!r} does not support resuming")

    def seeds(self) -> dict[str, int]:
        """Seeds of the random generators this run uses (stored in the start document)."""
        return {}

    def station_info(self) -> dict[str, Any]:
        """What the procedure knows of the station (wiring, limits), for the start document."""
        return {}

    def device_time_s(self) -> float:
        """Time the hardware needed since ``startup()`` in this process (bench time on the
        simulator); 0.0 if unknown. On resume the runner adds the earlier segments' time."""
        return 0.0

    def summary(self) -> dict[str, Any]:
        """Final figures for the stop document (e.g. best loss, final accuracy). JSON-able."""
        return {}

    # ---- services (call from execute) -------------------------------------------------------

    def should_stop(self) -> bool:
        """True once a stop was requested (Ctrl-C, GUI stop button, ``RunController``)."""
        return self._context.should_stop()

    def wait_if_paused(self, timeout_s: float | None = None) -> bool:
        """Block while the run is paused (returns early on stop); True if it did wait.

        Only procedures with ``supports_pause = True`` can be paused; call this at a point
        where the instruments may sit idle.
        """
        return self._context.wait_if_paused(timeout_s)

    def sleep(self, seconds: float, poll_s: float = 0.05) -> bool:
        """Wait ``seconds`` unless a stop is requested; True if the full time passed."""
        deadline = time.monotonic() + seconds
        while not self.should_stop():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            time.sleep(min(poll_s, remaining))
        return False

    def emit_event(
        self,
        scalars: Mapping[str, float] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
    ) -> int:
        """Record one iteration: scalars (loss, accuracy, ...) and arrays (controls, traces, ...).

        Names are letters, digits, ``_ . -``; arrays are copied, so the procedure may reuse its
        buffers. Returns the event's sequence number. Ends the iteration: the runner flushes
        the event to the record and then saves ``checkpoint_state()``.
        """
        return self._context.emit_event(scalars or {}, arrays or {})

    def log(self, message: str, level: LogLevel = "info") -> None:
        """Add a log document to the run (shown live, stored in the record)."""
        self._context.log(message, level)

    def check_instruments(self) -> list[Exception]:
        """Drain every instrument's error queue; log each entry as a warning and return them.

        Instrument errors are never swallowed: they land in the run record. Raise (or
        ``RunAborted``) from the procedure if an entry means the measurement is invalid.
        """
        found: list[Exception] = []
        for label, instrument in self.instruments.items():
            for exc in drain_errors(instrument):
                found.append(exc)
                self.log(f"instrument {label!r}: {exc}", "warning")
        return found

    def retry(
        self,
        call: Callable[[], T],
        *,
        attempts: int = 3,
        backoff_s: float = 0.1,
        reconnect: Callable[[], None] | None = None,
        what: str = "",
    ) -> T:
        """:func:`labrig.procedures.retry.retry` with this run's logging and stop flag."""
        return retry(
            call,
            attempts=attempts,
            backoff_s=backoff_s,
            reconnect=reconnect,
            should_stop=self.should_stop,
            log=lambda message: self.log(message, "warning"),
            what=what,
        )

    @property
    def detached_events(self) -> list[DetachedEvent]:
        """Events emitted while no runner was attached (for driving a procedure in a test)."""
        if isinstance(self._context, _DetachedContext):
            return self._context.events
        return []

    def _attach(self, context: RunContext | None) -> None:
        """Bind to a runner's context (None: detach). Used by the runner only."""
        self._context = context if context is not None else _DetachedContext()


# -------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Procedure]] = {}
_REGISTRY_LOCK = threading.Lock()
P = TypeVar("P", bound=type[Procedure])


def register_procedure(cls: P) -> P:
    """Class decorator: make ``cls`` findable by its ``name`` (for the CLI, GUI and resume).

    Registering a second, different class under one name raises ``ValueError``; registering the
    same class again (a module reloaded) replaces it.
    """
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} needs a non-empty class attribute 'name'")
    with _REGISTRY_LOCK:
        existing = _REGISTRY.get(cls.name)
        if existing is not None and existing.import_path() != cls.import_path():
            raise ValueError(
                f"procedure name {cls.name!r} is taken by {existing.import_path()}; "
                f"cannot register {cls.import_path()}"
            )
        _REGISTRY[cls.name] = cls
    return cls


def procedure_registry() -> Iterator[tuple[str, type[Procedure]]]:
    """Registered procedures as (name, class), sorted by name."""
    with _REGISTRY_LOCK:
        items = sorted(_REGISTRY.items())
    return iter(items)


def get_procedure_class(name: str, import_path: str = "") -> type[Procedure]:
    """The procedure class registered as ``name``; failing that, import ``"module:QualName"``.

    Raises :class:`ProcedureError` naming the procedure if neither works.
    """
    with _REGISTRY_LOCK:
        found = _REGISTRY.get(name)
    if found is not None:
        return found
    if import_path:
        module_name, _, qualname = import_path.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ProcedureError(
                f"procedure {name!r}: cannot import {import_path!r} ({exc})"
            ) from exc
        if isinstance(obj, type) and issubclass(obj, Procedure):
            return obj
        raise ProcedureError(f"procedure {name!r}: {import_path!r} is not a Procedure class")
    known = ", ".join(n for n, _ in procedure_registry()) or "none"
    raise ProcedureError(f"no procedure registered as {name!r} (registered: {known})")
