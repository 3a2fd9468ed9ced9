"""Taking over a rig: whatever state the instruments are in, find it, record it, make it quiet.

Called once when a rig is opened, before any procedure moves anything
(:func:`take_over`). For every instrument, in the rig's safe-state order (DACs last):

1. **Error queues.** Read and clear every instrument's error queue. Errors left there by someone
   else (another program, a run that was killed) are recorded and warned about, and are never
   reported later as errors of labrig's own commands.
2. **Generators.** On a DAC bank: ask which generators, sweeps, lists and traces are running
   (whoever started them), stop them all, and stop every DC ramp at the level it has reached.
   Other instruments (AWG, lock-in sine outputs, digitiser) are brought to their safe state.
3. **Levels.** Read every limited DAC channel's present level. One outside the station's limits
   refuses the start — naming the channel, the value, the limit and the station file — unless
   the operator asked to ramp it into range (``ramp_into_range``: the CLI's
   ``--ramp-into-range``, a station's ``[station] ramp_into_range = true``, or
   ``LABRIG_RAMP_INTO_RANGE=1``): then it is ramped to the nearest limit at its slew limit first.

The findings are a :class:`Takeover`, kept on the rig (``rig.takeover``) and stored by the run
runner in the run's start document (``takeover``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from instruments.errors import LimitError

if TYPE_CHECKING:
    from labrig.rig import Rig

_logger = logging.getLogger("labrig.takeover")

#: Set to 1 (or "true", "yes") to ramp channels found outside their limits into range.
RAMP_INTO_RANGE_ENV = "LABRIG_RAMP_INTO_RANGE"


class TakeoverRefused(LimitError):
    """An output was found outside the station's limits when the rig was opened, and the
    operator did not ask to ramp it into range. Nothing was moved."""

    def __init__(self, found: list[OutOfRange], station_source: str) -> None:
        first = found[0]
        super().__init__(
            first.what, first.value, first.min_v, first.max_v, "V", first.limits_source
        )
        self.found = found
        lines = "; ".join(f.describe() for f in found)
        self.args = (
            f"refusing to start: {lines} (station file {station_source}). Nothing was moved. "
            f"Bring the output(s) into range by hand, or start with --ramp-into-range "
            f"(station: [station] ramp_into_range = true; environment: "
            f"{RAMP_INTO_RANGE_ENV}=1) to ramp them to the nearest limit at the slew limit.",
        )


@dataclass(frozen=True)
class OutOfRange:
    """One channel found outside its limits."""

    instrument: str
    channel: int
    what: str  # e.g. "electrode 2 (QDAC-II channel 3)"
    value: float
    min_v: float
    max_v: float
    max_slew_v_per_s: float
    limits_source: str

    def describe(self) -> str:
        return (
            f"{self.instrument} channel {self.channel} ({self.what}) is at {self.value:.6g} V, "
            f"outside its limits [{self.min_v:.6g}, {self.max_v:.6g}] V ({self.limits_source})"
        )

    @property
    def nearest_v(self) -> float:
        return min(max(self.value, self.min_v), self.max_v)


@dataclass
class Takeover:
    """What was found when the rig was taken over, and what was done about it."""

    errors: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    generators_stopped: dict[str, dict[int, list[str]]] = field(default_factory=dict)
    levels_v: dict[str, float] = field(default_factory=dict)
    ramped_into_range: dict[str, tuple[float, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """One line per finding an operator should know about."""
        out: list[str] = []
        for name, entries in self.errors.items():
            listed = "; ".join(f"{code}, {message!r}" for code, message in entries)
            out.append(
                f"{name}: error queue held {len(entries)} entr(y/ies) left by someone "
                f"else (cleared): {listed}"
            )
        for name, channels in self.generators_stopped.items():
            listed = ", ".join(f"ch{c}: {'+'.join(g)}" for c, g in sorted(channels.items()))
            out.append(f"{name}: stopped generators found running ({listed})")
        for port, (was, now) in self.ramped_into_range.items():
            out.append(f"{port}: found at {was:.6g} V outside its limits, ramped to {now:.6g} V")
        out.extend(self.problems)
        return out

    def as_document(self) -> dict[str, Any]:
        """JSON for the run's start document."""
        return {
            "errors": {n: [[c, m] for c, m in e] for n, e in self.errors.items()},
            "generators_stopped": {
                n: {str(c): g for c, g in chans.items()}
                for n, chans in self.generators_stopped.items()
            },
            "levels_v": dict(self.levels_v),
            "ramped_into_range": {p: list(v) for p, v in self.ramped_into_range.items()},
            "problems": list(self.problems),
            "warnings": self.warnings(),
        }


def ramp_into_range_requested(station_setting: bool = False) -> bool:
    """The operator's choice: the station's setting or the environment variable."""
    env = os.environ.get(RAMP_INTO_RANGE_ENV, "").strip().lower()
    return station_setting or env in ("1", "true", "yes", "on")


def take_over(rig: Rig, ramp_into_range: bool | None = None) -> Takeover:
    """Take over every instrument of ``rig`` (see the module docstring).

    :param ramp_into_range: ramp channels found outside their limits to the nearest limit (at
        the slew limit) instead of refusing; None: as the station / environment say.
    :raises TakeoverRefused: a channel is outside its limits and ramping was not asked for
        (nothing was moved).
    """
    if ramp_into_range is None:
        ramp_into_range = ramp_into_range_requested(rig.station.ramp_into_range)
    report = Takeover()
    ordered = rig.safe_state_order()
    # 1. Error queues, before labrig sends anything that could add to them.
    for name, inst in ordered.items():
        entries = _drain(inst, name, report)
        if entries:
            report.errors[name] = entries
    # 2. Generators: quiet every instrument; DAC banks stop their generators and hold.
    out_of_range: list[OutOfRange] = []
    for name, inst in ordered.items():
        if rig.station.instruments[name].info.role == "dac":
            out_of_range += _take_over_dac(rig, name, inst, report)
        else:
            _step(report, f"{name}: safe state at takeover", inst.safe_state)
    # 3. Levels outside the limits: refuse, or ramp into range.
    if out_of_range and not ramp_into_range:
        raise TakeoverRefused(out_of_range, rig.station.source)
    for found in out_of_range:
        inst = rig.instruments[found.instrument]
        timeout = abs(found.value - found.nearest_v) / found.max_slew_v_per_s * 1.5 + 5.0
        inst.ramp_to({found.channel: found.nearest_v}, timeout_s=timeout)
        port = f"{found.instrument}:{found.channel}"
        report.ramped_into_range[port] = (found.value, found.nearest_v)
        report.levels_v[port] = found.nearest_v
    for line in report.warnings():
        _logger.warning("takeover: %s", line)
    return report


def drain_after_reconnect(name: str, inst: Any) -> list[tuple[int, str]]:
    """Read and clear ``inst``'s error queue on a fresh connection (after a dropped one), so
    that an error a half-received command left there is not reported later as an error of the
    next command; what was found is logged as a warning and returned."""
    report = Takeover()
    entries = _drain(inst, name, report)
    for line in report.problems:
        _logger.warning("reconnect: %s", line)
    if entries:
        listed = "; ".join(f"{code}, {message!r}" for code, message in entries)
        _logger.warning("reconnect: %s: error queue held (cleared): %s", name, listed)
    return entries


def _drain(inst: Any, name: str, report: Takeover) -> list[tuple[int, str]]:
    read = getattr(inst, "read_error_entries", None)
    if read is None:
        return []
    try:
        return [(int(c), str(m)) for c, m in read()]
    except Exception as exc:  # an error queue that cannot be read is a finding, not a crash
        report.problems.append(
            f"{name}: could not read its error queue ({type(exc).__name__}: {exc})"
        )
        return []


def _step(report: Takeover, what: str, call: Callable[[], object]) -> None:
    try:
        call()
    except Exception as exc:
        report.problems.append(f"{what} failed ({type(exc).__name__}: {exc})")


def _take_over_dac(rig: Rig, name: str, inst: Any, report: Takeover) -> list[OutOfRange]:
    """Stop everything on the DAC bank, hold every DC level, and read the limited channels'."""
    state = getattr(inst, "generator_state", None)
    if callable(state):
        running = {c: sorted(g) for c, g in state().items() if g}
        if running:
            report.generators_stopped[name] = running
    disarm = getattr(inst, "disarm_all", None)
    if callable(disarm):
        disarm()
    else:
        inst.stop_generators()
    limited = [c for c in rig.station.channels if c.instrument == name]
    hold = getattr(inst, "hold_levels", None)
    if callable(hold):
        levels = hold([c.channel for c in limited])
    else:
        levels = {c.channel: float(inst.get_voltage(c.channel)) for c in limited}
    found: list[OutOfRange] = []
    for spec in limited:
        value = float(levels[spec.channel])
        report.levels_v[f"{name}:{spec.channel}"] = value
        lim = spec.limits
        if not lim.min_v <= value <= lim.max_v:
            found.append(
                OutOfRange(
                    name,
                    spec.channel,
                    lim.label or f"{name} channel {spec.channel}",
                    value,
                    lim.min_v,
                    lim.max_v,
                    lim.max_slew_v_per_s,
                    lim.source,
                )
            )
    return found


__all__ = [
    "RAMP_INTO_RANGE_ENV",
    "OutOfRange",
    "Takeover",
    "TakeoverRefused",
    "drain_after_reconnect",
    "ramp_into_range_requested",
    "take_over",
]
