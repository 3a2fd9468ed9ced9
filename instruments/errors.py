"""Typed errors raised by the drivers, and the per-channel safety limits they enforce."""

from __future__ import annotations

from dataclasses import dataclass


class InstrumentReportedError(RuntimeError):
    """The instrument put an entry in its error queue (or status register) after a command."""

    def __init__(self, instrument: str, code: int, message: str, command: str = "") -> None:
        self.instrument = instrument
        self.code = code
        self.message = message
        self.command = command
        after = f" after {command!r}" if command else ""
        super().__init__(f"{instrument} reported error {code}, {message!r}{after}")


class InstrumentConnectionError(ConnectionError):
    """The connection to an instrument failed, timed out or was dropped."""


class LimitError(ValueError):
    """A value was refused because it lies outside a safety or hardware limit.

    The message names the value, the limit and where the limit came from, e.g.
    ``electrode 3 (QDAC-II channel 4): 1.8 V is outside [-1.2, 0.6] V (station 'sim-dnpu')``.
    """

    def __init__(self, what: str, value: float, low: float, high: float, unit: str, source: str):
        self.what = what
        self.value = value
        self.low = low
        self.high = high
        self.unit = unit
        self.source = source
        super().__init__(
            f"{what}: {value:.6g} {unit} is outside [{low:.6g}, {high:.6g}] {unit} ({source})"
        )


@dataclass(frozen=True)
class ChannelLimits:
    """Safety limits of one output channel, as resolved from a station file.

    ``min_v``/``max_v`` bound every voltage the channel may ever output (DC level, sine
    offset +/- half span, every trace sample); ``max_slew_v_per_s`` bounds the rate of every DC
    move and the steepest step of any trace or sine. ``safe_v`` is where the channel is ramped on
    every exit path. ``source`` says where the limits came from, for error messages.
    """

    min_v: float
    max_v: float
    max_slew_v_per_s: float
    safe_v: float = 0.0
    label: str = ""
    source: str = ""

    def check(self, value: float, what: str = "voltage") -> None:
        """Raise :class:`LimitError` unless ``min_v <= value <= max_v``."""
        if not (self.min_v <= value <= self.max_v):  # also catches NaN
            name = f"{self.label} {what}".strip()
            raise LimitError(name, value, self.min_v, self.max_v, "V", self.source)

    def check_slew(self, slew_v_per_s: float, what: str = "slew rate") -> None:
        """Raise :class:`LimitError` unless ``0 < slew <= max_slew_v_per_s``."""
        if not (0.0 < slew_v_per_s <= self.max_slew_v_per_s):
            name = f"{self.label} {what}".strip()
            raise LimitError(name, slew_v_per_s, 0.0, self.max_slew_v_per_s, "V/s", self.source)


class GeneratorStateError(RuntimeError):
    """An output is driven by something the driver cannot bound: e.g. a DC sweep or list this
    driver did not set up, so no limit check can say where the channel will go."""
