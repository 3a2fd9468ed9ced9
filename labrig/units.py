"""Units at the edges: parse "10 mV" into 0.01 (volts), format 0.01 back as "10 mV".

Inside labrig every quantity is an SI float in the base unit its name or declaration states.
Text typed by a person (station files, GUI fields, CLI options) may carry an SI prefix and the
unit; :func:`parse_quantity` checks the unit against the one expected and scales::

    >>> parse_quantity("10 mV", "V")
    0.01
    >>> parse_quantity("2.5kHz", "Hz")
    2500.0
    >>> parse_quantity("50 ms", "s")
    0.05
    >>> parse_quantity(0.3, "V")      # numbers are taken as already in the base unit
    0.3

A bare number in text ("0.3") is taken in the base unit. A unit that does not match ("10 mA"
where volts are expected) raises :class:`UnitError`, which names the text, the expected unit and
where the text came from. The prefix applies to the whole unit, so "10 mV/s" is 0.01 V/s.
"""

from __future__ import annotations

import math
import re

__all__ = ["SI_PREFIXES", "UnitError", "format_quantity", "parse_quantity"]


class UnitError(ValueError):
    """Text could not be read as a quantity in the expected unit."""

    def __init__(self, text: str, units: str, problem: str, source: str = "") -> None:
        self.text = text
        self.units = units
        self.problem = problem
        self.source = source
        where = f" ({source})" if source else ""
        expected = f"a quantity in {units!r}" if units else "a plain number"
        super().__init__(f"{text!r} is not {expected}: {problem}{where}")


# One table of prefixes. Both micro signs (U+00B5 MICRO SIGN and U+03BC GREEK MU) and the ASCII
# "u" are accepted because keyboards produce all three.
SI_PREFIXES: dict[str, float] = {
    "f": 1e-15,
    "p": 1e-12,
    "n": 1e-9,
    "u": 1e-6,
    "µ": 1e-6,
    "μ": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
}

# Other spellings of a base unit, and units that are not a power-of-ten prefix away from it.
_ALIASES: dict[str, dict[str, float]] = {
    "Ohm": {"Ω": 1.0, "ohm": 1.0, "Ohm": 1.0, "R": 1.0},
    "Ω": {"Ω": 1.0, "ohm": 1.0, "Ohm": 1.0, "R": 1.0},
    "s": {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0},
    "deg": {"deg": 1.0, "°": 1.0},
}

_NUMBER = re.compile(
    r"^\s*(?P<num>[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan))\s*(?P<unit>.*?)\s*$",
    re.IGNORECASE,
)


def parse_quantity(value: str | float | int, units: str = "", source: str = "") -> float:
    """Return ``value`` as a float in the base unit ``units``.

    ``value`` may be a number (taken as already in ``units``) or text such as ``"10 mV"``,
    ``"1e-3 V"``, ``"-0.5"``, ``"40 kHz"``, ``"2 min"`` (for seconds). ``source`` names where the
    text came from, for the error message. NaN is refused; infinities pass (callers bound them).

    Raises :class:`UnitError` if the text is not a number followed by an optional SI prefix and
    the expected unit.
    """
    if isinstance(value, bool):
        raise UnitError(str(value), units, "a boolean is not a quantity", source)
    if isinstance(value, int | float):
        number = float(value)
        if math.isnan(number):
            raise UnitError(str(value), units, "NaN is not a value", source)
        return number
    if not isinstance(value, str):
        raise UnitError(
            repr(value), units, f"expected text or a number, got {type(value).__name__}"
        )
    match = _NUMBER.match(value)
    if match is None:
        raise UnitError(value, units, "no number at the start", source)
    number = float(match["num"])
    if math.isnan(number):
        raise UnitError(value, units, "NaN is not a value", source)
    unit_text = match["unit"]
    if not unit_text:
        return number
    return number * _unit_factor(value, unit_text, units, source)


def _unit_factor(text: str, unit_text: str, units: str, source: str) -> float:
    """The factor that turns ``unit_text`` (e.g. "mV") into the base unit ``units`` (e.g. "V")."""
    if not units:
        raise UnitError(text, units, f"unexpected unit {unit_text!r}", source)
    spellings = _ALIASES.get(units, {units: 1.0})
    for spelling, scale in spellings.items():
        if unit_text == spelling:
            return scale
    # Longest spelling first, so that "ms" with units "s" is milli-seconds and "min" stays minutes.
    for spelling, scale in sorted(spellings.items(), key=lambda item: -len(item[0])):
        if unit_text.endswith(spelling):
            prefix = unit_text[: -len(spelling)]
            if prefix in SI_PREFIXES:
                return SI_PREFIXES[prefix] * scale
    raise UnitError(text, units, f"unit {unit_text!r} is not {units!r} with an SI prefix", source)


_FORMAT_PREFIXES = [("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0), ("m", 1e-3)]
_FORMAT_PREFIXES += [("µ", 1e-6), ("n", 1e-9), ("p", 1e-12), ("f", 1e-15)]


def format_quantity(value: float, units: str = "", digits: int = 6) -> str:
    """Format ``value`` (in ``units``) with an engineering prefix: ``0.01, "V"`` -> ``"10 mV"``.

    ``digits`` significant digits, trailing zeros dropped; ``parse_quantity`` reads the result
    back to within that precision. Without ``units`` the plain number is returned.
    """
    if not units or value == 0 or not math.isfinite(value):
        text = f"{value:.{digits}g}"
        return f"{text} {units}".strip()
    magnitude = abs(value)
    for prefix, scale in _FORMAT_PREFIXES:
        if magnitude >= scale * (1 - 1e-12):
            return f"{value / scale:.{digits}g} {prefix}{units}"
    prefix, scale = _FORMAT_PREFIXES[-1]
    return f"{value / scale:.{digits}g} {prefix}{units}"
