"""Helpers shared by the labrig drivers.

- :func:`format_number`: numbers on the wire round-trip exactly (never ``%f``, which turns
  ``1e-7`` into ``0.000000``).
- :class:`ErrorCheckingMixin`: PyMeasure's ``check_set_errors`` / ``check_get_errors`` hooks that
  *raise* :class:`~instruments.errors.InstrumentReportedError` (PyMeasure's default only logs).
  Each driver says how its model reports errors by implementing ``read_error_entries``;
  :func:`parse_scpi_errors` reads the SCPI ``<code>,"<text>"`` form.
- :func:`query_binary_block` / :func:`query_binary_values`: read an IEEE 488.2 definite-length
  block through the instrument's adapter, so that wire tests see every byte.
- :func:`write_binary_values`: send ``command`` followed by an IEEE 488.2 block of
  little-endian numbers.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pymeasure.instruments import Instrument
from pyvisa.resources import MessageBasedResource

from instruments.errors import InstrumentConnectionError, InstrumentReportedError

_SCPI_ERROR = re.compile(r'\s*([+-]?\d+)\s*,\s*"([^"]*)"\s*,?')


def format_number(value: float) -> str:
    """Format ``value`` for a command so that the instrument receives it exactly.

    Uses Python's shortest round-trip representation (``0.1``, ``1e-07``, ``250000000``), drops
    a trailing ``.0`` and spells infinity ``INF``. NaN is refused: no instrument setting is NaN.
    """
    number = float(value)
    if math.isnan(number):
        raise ValueError("NaN cannot be sent to an instrument")
    if math.isinf(number):
        return "INF" if number > 0 else "-INF"
    text = repr(number)
    return text[:-2] if text.endswith(".0") else text


def parse_scpi_errors(reply: str) -> list[tuple[int, str]]:
    """Parse one or more SCPI error entries ``<code>,"<text>"[, <code>,"<text>" ...]``.

    Entries with code 0 ("No error") are left out, so an empty list means no error.
    A reply that does not parse is itself reported as an error entry (code -1).
    """
    entries: list[tuple[int, str]] = []
    position = 0
    text = reply.strip()
    while position < len(text):
        match = _SCPI_ERROR.match(text, position)
        if match is None:
            return [*entries, (-1, f"unparsable error reply {reply!r}")]
        code = int(match.group(1))
        if code != 0:
            entries.append((code, match.group(2)))
        position = match.end()
    return entries


def jsonable(value: Any) -> Any:
    """Make a setting JSON-serialisable: infinities become ``"inf"``/``"-inf"``, tuples lists."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def strip_quotes(text: str) -> str:
    """``'"NAME"'`` -> ``'NAME'`` (replies that carry quoted strings)."""
    return text.strip().strip('"')


def parse_bool(reply: Any) -> bool:
    """``"1"``, ``1.0``, ``"ON"`` -> True; ``"0"``, ``"OFF"`` -> False."""
    if isinstance(reply, str):
        word = reply.strip().upper()
        if word in ("ON", "OFF"):
            return word == "ON"
        return bool(int(float(word)))
    return bool(int(reply))


def bool_validator(value: Any, values: Any) -> bool:
    """PyMeasure validator accepting True/False (and 0/1); anything else raises."""
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return bool(value)
    raise ValueError(f"{value!r} is not a boolean")


def strict_int_range(value: Any, values: Sequence[int]) -> int:
    """PyMeasure validator: ``value`` must be an integer within ``[min(values), max(values)]``."""
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{value!r} is not an integer")
    low, high = min(values), max(values)
    if not low <= number <= high:
        raise ValueError(f"{value!r} is not in range [{low}, {high}]")
    return int(number)


def strict_float_range(value: Any, values: Sequence[float]) -> float:
    """PyMeasure validator: finite ``value`` within ``[min(values), max(values)]``, else raise."""
    number = float(value)
    low, high = min(values), max(values)
    if not low <= number <= high:  # also refuses NaN
        raise ValueError(f"{value!r} is not in range [{low:g}, {high:g}]")
    return number


def choice_validator(value: Any, values: Sequence[str]) -> str:
    """PyMeasure validator for keywords: case-insensitive match against ``values``, else raise."""
    if isinstance(value, str):
        for allowed in values:
            if value.strip().upper() == allowed.upper():
                return allowed
    raise ValueError(f"{value!r} is not one of {list(values)}")


class ErrorCheckingMixin:
    """Raise the instrument's reported errors instead of logging them.

    Mix in before the PyMeasure ``Instrument`` base. Subclasses implement
    :meth:`read_error_entries`, which drains the model's error queue (or status register) and
    returns ``[(code, message), ...]``, empty when there was no error. Properties declared with
    ``check_set_errors=True`` then raise :class:`InstrumentReportedError` naming the command that
    was written last.

    It also gives every driver the same :meth:`shutdown`: the model's ``safe_state()``, then
    the connection closed, whether or not the safe state could be reached.
    """

    name: str
    _last_command: str = ""

    def shutdown(self) -> None:
        """Safe state, then close the connection (also when the safe state fails)."""
        try:
            self.safe_state()  # type: ignore[attr-defined]
        finally:
            self.adapter.close()  # type: ignore[attr-defined]
            super().shutdown()  # type: ignore[misc]

    def write(self, command: str, **kwargs: Any) -> None:
        self._last_command = command
        super().write(command, **kwargs)  # type: ignore[misc]

    def write_binary_values(self, command: str, values: Any, *args: Any, **kwargs: Any) -> None:
        self._last_command = f"{command}<block>"
        super().write_binary_values(command, values, *args, **kwargs)  # type: ignore[misc]

    #: For instruments with a SCPI error queue: the query that pops entries, and at most how
    #: many times to ask (the queue's depth plus its overflow entry). ``syst:err:all?``-style
    #: queries that return every entry at once use a depth of 1.
    error_query: ClassVar[str] = ""
    error_queue_depth: ClassVar[int] = 32
    #: How error messages name the instrument's channels, e.g. "the QDAC-II has channels 1..24".
    channels_description: ClassVar[str] = ""
    channels: dict[int, Any]

    def read_error_entries(self) -> list[tuple[int, str]]:
        """Drain the instrument's error report; return ``[(code, message), ...]``.

        The default drains a SCPI error queue with :attr:`error_query`; instruments that report
        errors otherwise (status registers) override it."""
        if not self.error_query:
            raise NotImplementedError(f"{type(self).__name__} has no error_query")
        entries: list[tuple[int, str]] = []
        for _ in range(self.error_queue_depth):
            found = parse_scpi_errors(self.ask(self.error_query))  # type: ignore[attr-defined]
            if not found:
                break
            entries.extend(found)
        return entries

    @property
    def identity(self) -> str:
        """Get the ``*IDN?`` reply (str)."""
        return str(self.ask("*IDN?")).strip()  # type: ignore[attr-defined]

    def _channel(self, channel: int) -> Any:
        """The channel object for ``channel``; ``ValueError`` naming the valid ones otherwise."""
        try:
            return self.channels[channel]
        except (KeyError, TypeError):
            raise ValueError(f"channel {channel!r}: {self.channels_description}") from None

    def check_errors(self, context: str | None = None) -> None:
        """Read the instrument's errors; raise ``InstrumentReportedError`` if there were any.

        :param context: what the error is reported "after" (default: the last command written).
        """
        command = context if context is not None else self._last_command
        entries = self.read_error_entries()
        if entries:
            code, message = entries[0]
            if len(entries) > 1:
                rest = "; ".join(f"{c}, {m!r}" for c, m in entries[1:])
                message = f"{message} (then: {rest})"
            raise InstrumentReportedError(self.name, code, message, command)

    def check_set_errors(self) -> list[Any]:
        self.check_errors()
        return []

    def check_get_errors(self) -> list[Any]:
        self.check_errors()
        return []


# pyvisa reads a block in pieces of this size; one large piece means few Python-level calls.
_BLOCK_CHUNK_BYTES = 1 << 20


def _read_exact(instrument: Any, count: int, **read_kwargs: Any) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = instrument.read_bytes(count - len(data), **read_kwargs)
        if not chunk:
            raise InstrumentConnectionError(
                f"{instrument.name}: binary block ended after {len(data)} of {count} bytes"
            )
        data += chunk
    return bytes(data)


def _visa_resource(instrument: Any) -> MessageBasedResource | None:
    """The PyVISA resource under ``instrument``'s adapter, or None (e.g. a test adapter)."""
    connection = getattr(getattr(instrument, "adapter", None), "connection", None)
    return connection if isinstance(connection, MessageBasedResource) else None


def _read_payload(instrument: Any, count: int) -> bytes:
    """Read exactly ``count`` payload bytes of a block whose header has been read.

    With a read termination character set, VISA ends a low-level read at every byte that equals
    it, and binary data holds a line feed about every 256 bytes: a 4 MB block would cost some
    16,000 reads. The header has already told us the length, so the termination character is
    switched off for the payload (and restored after, on every path) and the bytes are read in
    large pieces. Other adapters (PyMeasure's ``ProtocolAdapter`` in wire tests) have no
    termination to switch off and are read as they are.
    """
    resource = _visa_resource(instrument)
    if resource is None or count == 0:
        return _read_exact(instrument, count)
    saved = resource.read_termination
    resource.read_termination = None  # pyvisa turns VI_ATTR_TERMCHAR_EN off
    try:
        return _read_exact(instrument, count, chunk_size=max(count, _BLOCK_CHUNK_BYTES))
    finally:
        resource.read_termination = saved


def read_binary_block(instrument: Any, terminated: bool = True) -> bytes:
    """Read one IEEE 488.2 definite-length block (``#<n><length><bytes>``); return the bytes.

    The payload is read with the VISA termination character disabled, in large pieces (see
    :func:`_read_payload`), so a block costs a handful of reads whatever bytes it holds.

    :param terminated: the instrument sends a line feed after the block; it is read and dropped.
    """
    head = _read_exact(instrument, 2)
    if head[:1] != b"#" or not head[1:2].isdigit() or head[1:2] == b"0":
        raise InstrumentConnectionError(
            f"{instrument.name}: expected a definite-length block '#<n>...', got {head!r}"
        )
    digits = int(head[1:2])
    length_text = _read_exact(instrument, digits)
    if not length_text.isdigit():
        raise InstrumentConnectionError(f"{instrument.name}: bad block length {length_text!r}")
    payload = _read_payload(instrument, int(length_text))
    if terminated:
        end = _read_exact(instrument, 1)
        if end != b"\n":
            raise InstrumentConnectionError(
                f"{instrument.name}: expected a line feed after the block, got {end!r}"
            )
    return payload


def query_binary_block(instrument: Any, command: str, terminated: bool = True) -> bytes:
    """Write ``command`` and read the IEEE 488.2 block it answers with."""
    instrument.write(command)
    return read_binary_block(instrument, terminated=terminated)


def query_binary_values(
    instrument: Any,
    command: str,
    dtype: npt.DTypeLike,
    terminated: bool = True,
) -> npt.NDArray[Any]:
    """Write ``command``; return its IEEE 488.2 block as a numpy array of ``dtype``.

    ``dtype`` carries the byte order, e.g. ``"<f4"`` (float32 little-endian), ``">u2"``.
    """
    payload = query_binary_block(instrument, command, terminated=terminated)
    item = np.dtype(dtype)
    if len(payload) % item.itemsize:
        raise InstrumentConnectionError(
            f"{instrument.name}: block of {len(payload)} bytes is not a whole number of "
            f"{item.itemsize}-byte values"
        )
    return np.frombuffer(payload, dtype=item).copy()


def write_binary_values(
    instrument: Any, command: str, values: npt.ArrayLike, datatype: str
) -> None:
    """Write ``command`` immediately followed by an IEEE 488.2 block of little-endian values.

    ``datatype`` is a ``struct`` code: ``"f"`` float32, ``"h"`` int16. The message ends with a
    line feed (the block itself can contain line-feed bytes; its length header delimits it).
    """
    array = np.ascontiguousarray(values)
    instrument.write_binary_values(
        command, array, datatype=datatype, is_big_endian=False, termination="\n"
    )


@contextmanager
def temporary_timeout(instrument: Any, seconds: float) -> Iterator[None]:
    """Raise the connection timeout to at least ``seconds`` for a slow operation."""
    connection = getattr(instrument.adapter, "connection", None)
    old = getattr(connection, "timeout", None)
    if connection is None or not isinstance(old, (int, float)):
        yield
        return
    connection.timeout = max(float(old), seconds * 1000.0)
    try:
        yield
    finally:
        connection.timeout = old


def poll_until(
    done: Callable[[], bool],
    timeout_s: float,
    what: str,
    interval_s: float = 0.01,
    max_interval_s: float = 0.2,
) -> None:
    """Call ``done()`` until it returns True; raise ``TimeoutError`` after ``timeout_s``.

    The first call is immediate; the interval then grows geometrically up to ``max_interval_s``.
    """
    deadline = time.monotonic() + timeout_s
    interval = interval_s
    while True:
        if done():
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{what}: not done within {timeout_s:g} s")
        time.sleep(min(interval, remaining))
        interval = min(interval * 2.0, max_interval_s)


VISA_DEFAULTS: dict[str, Any] = {"read_termination": "\n", "write_termination": "\n"}


def visa_kwargs(kwargs: dict[str, Any], timeout_ms: int) -> dict[str, Any]:
    """Default connection settings (LF terminations, ``timeout_ms``) under the caller's own."""
    merged = {**VISA_DEFAULTS, "timeout": timeout_ms}
    merged.update(kwargs)
    return merged


# ------------------------------------------------------------------ property declarations
def bool_control(
    get_command: str, set_command: str, docs: str, on: str = "1", off: str = "0"
) -> Any:
    """A boolean setting: written as ``on``/``off``, read back as any of the usual forms;
    errors checked after setting."""
    return Instrument.control(
        get_command,
        set_command,
        docs,
        validator=bool_validator,
        set_process=lambda v: on if v else off,
        get_process=parse_bool,
        cast=str,
        check_set_errors=True,
    )


def range_control(
    get_command: str, set_command: str, docs: str, low: float, high: float, *, integer: bool = False
) -> Any:
    """A number within ``[low, high]``: refused outside it before anything is written, written
    round-trip (or, ``integer``, as an integer and read back as one); errors checked after
    setting."""
    number: dict[str, Any] = (
        {"validator": strict_int_range, "get_process": int}
        if integer
        else {"validator": strict_float_range, "set_process": format_number}
    )
    return Instrument.control(
        get_command, set_command, docs, values=(low, high), check_set_errors=True, **number
    )


def choice_control(
    get_command: str,
    set_command: str,
    docs: str,
    values: Any,
    *,
    mapped: bool = False,
    reply: Any = str.strip,
) -> Any:
    """A setting with a fixed set of values: plain strings, or (``mapped``) names mapped to the
    indices the instrument uses; errors checked after setting. ``reply`` turns the query's
    answer into one of ``values`` (default: strip it)."""
    if mapped:
        return Instrument.control(
            get_command,
            set_command,
            docs,
            validator=choice_validator,
            values=values,
            map_values=True,
            check_set_errors=True,
        )
    return Instrument.control(
        get_command,
        set_command,
        docs,
        validator=choice_validator,
        values=values,
        get_process=reply,
        cast=str,
        check_set_errors=True,
    )


def lower_reply(reply: str) -> str:
    """A keyword reply in lower case (how the QDAC-II is written to)."""
    return reply.strip().lower()
