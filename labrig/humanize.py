"""Values as a person reads them: units, SI prefixes, no float noise.

``quantity(4.04e-6, "s")`` -> ``"4.04 µs"``; ``value_text(-1.2000000476837158, "V")`` ->
``"-1.2 V"``; ``key_unit("current_max_na")`` -> ``"nA"``. Used by the CLI's summaries, ``runs
show`` and ``resume``; JSON output keeps the raw numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["duration", "key_unit", "quantity", "value_text"]

_PREFIXED = {"V", "s", "Hz", "A", "V/s"}
_PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))

#: Units read from a key's suffix, the repository's naming convention (``settle_s``, ``pd_v``).
_SUFFIX_UNITS = (
    ("_v_per_s", "V/s"),
    ("_na_per_v", "nA/V"),
    ("_na", "nA"),
    ("_hz", "Hz"),
    ("_v", "V"),
    ("_s", "s"),
    ("_ohm", "Ω"),
)


def key_unit(key: str) -> str:
    """The unit a key's name declares by its suffix (``"_v"`` -> V), or ``""``."""
    lower = key.lower()
    for suffix, unit in _SUFFIX_UNITS:
        if lower.endswith(suffix):
            return unit
    if "accuracy" in lower or lower.endswith("fraction"):
        return "%"
    return ""


def number(value: float, digits: int = 4) -> str:
    """``value`` to ``digits`` significant digits, no float noise, no trailing zeros."""
    if not math.isfinite(value):
        return "n/a" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


def quantity(value: float, unit: str, digits: int = 4) -> str:
    """``value`` in ``unit``, with an SI prefix for V, s, Hz and A; ``%`` takes a fraction."""
    if unit == "%":
        return f"{number(100.0 * value, digits)} %" if math.isfinite(value) else "n/a"
    if not math.isfinite(value):
        return number(value)
    if unit in _PREFIXED and value != 0:
        magnitude = abs(value)
        for scale, prefix in _PREFIXES:
            if magnitude >= scale * 0.9995:
                return f"{number(value / scale, digits)} {prefix}{unit}"
        return f"{number(value / 1e-9, digits)} n{unit}"
    return f"{number(value, digits)} {unit}".rstrip()


def duration(seconds: float) -> str:
    """A span of time the way a clock says it: ``"2 min 05 s"``, ``"1 h 02 min"``, ``"3.2 s"``."""
    if not math.isfinite(seconds):
        return "n/a"
    if seconds < 60:
        return quantity(seconds, "s", 3)
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def value_text(value: Any, unit: str = "", *, max_items: int = 8) -> str:
    """Any recorded value as text: numbers with their unit, lists shortened, mappings as
    ``key value`` pairs, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value} {unit}".rstrip() if unit not in ("%",) else quantity(value, unit)
    if isinstance(value, float):
        return quantity(value, unit)
    if isinstance(value, str):
        return value
    if value is None:
        return "—"
    if isinstance(value, Mapping):
        parts = [f"{k} {value_text(v, unit or key_unit(str(k)))}" for k, v in value.items()]
        shown = parts[:max_items]
        more = f", … ({len(parts) - max_items} more)" if len(parts) > max_items else ""
        return ", ".join(shown) + more
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            nums = ", ".join(number(float(v)) for v in value[:max_items])
            more = f", … ({len(value)} values)" if len(value) > max_items else ""
            return f"[{nums}{more}]" + (f" {unit}" if unit and unit != "%" else "")
        return "[" + ", ".join(value_text(v, unit) for v in value[:max_items]) + "]"
    return str(value)
