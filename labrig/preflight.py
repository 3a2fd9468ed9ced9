"""Checks a shell runs before a run folder exists: the station, its rig kind, the plan's limits.

::

    station = check_station_for("sim-dnpu", HgeTraining)     # StationError if wrong
    plan = procedure.plan(station)                           # ParameterError if a value is bad
    problems = check_plan(plan, station)                     # [] when every extreme is allowed
    if problems:
        raise PlanError(plan, problems)

These are the shell's half of "nothing moves before the plan is known to be safe": the DAC
drivers still refuse any single value outside the limits at the instrument (the last line); the
plan check refuses a run that would reach such a value, before it starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labrig.errors import StationError
from labrig.procedures.plan import ChannelPlan, RunPlan
from labrig.station import MODELS, Station, load_station

if TYPE_CHECKING:
    from labrig.procedures.base import Procedure

__all__ = ["LimitCrossing", "PlanError", "check_plan", "check_station_for"]


def check_station_for(
    station: str | os.PathLike[str] | Station, procedure_cls: type[Procedure]
) -> Station:
    """Load ``station`` (a built-in name, a file, or an already loaded :class:`Station`) and
    check it is of the rig kind ``procedure_cls`` runs on (``rig_kind``).

    Raises :class:`StationError` naming the file and the problem.
    """
    loaded = station if isinstance(station, Station) else load_station(os.fspath(station))
    kind = getattr(procedure_cls, "rig_kind", None)
    if kind is not None and loaded.rig != kind:
        raise StationError(
            loaded.source,
            "station.rig",
            f"is a {loaded.rig} station; procedure {procedure_cls.name!r} needs a {kind} station "
            f"(the built-in one is sim-{'dnpu' if kind == 'dnpu' else 'reservoir'})",
        )
    return loaded


@dataclass(frozen=True)
class LimitCrossing:
    """A planned extreme beyond what the station allows on that output."""

    channel: ChannelPlan
    limit_min_v: float
    limit_max_v: float
    source: str

    def __str__(self) -> str:
        c = self.channel
        side = []
        if c.min_v < self.limit_min_v:
            side.append(f"down to {c.min_v:+.4g} V")
        if c.max_v > self.limit_max_v:
            side.append(f"up to {c.max_v:+.4g} V")
        return (
            f"{c.instrument}:{c.channel} ({c.role}) would go {' and '.join(side)}, outside "
            f"[{self.limit_min_v:+.4g}, {self.limit_max_v:+.4g}] V ({self.source})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.channel.as_dict(),
            "limit_min_v": self.limit_min_v,
            "limit_max_v": self.limit_max_v,
            "limit_source": self.source,
        }


def channel_limits(station: Station, instrument: str, channel: int) -> tuple[float, float, str]:
    """The range allowed on an output: the station's ``[[channels]]`` limits, else the
    instrument model's hardware range; with where it comes from."""
    limits = station.limits_for(instrument, channel)
    if limits is not None:
        return limits.min_v, limits.max_v, limits.source or station.source
    spec = station.instruments.get(instrument)
    if spec is None:
        return -math.inf, math.inf, f"{station.source}: no instrument {instrument!r}"
    info = MODELS[spec.model]
    return info.hardware_min_v, info.hardware_max_v, f"{info.key} hardware range"


def check_plan(plan: RunPlan, station: Station) -> list[LimitCrossing]:
    """Every planned channel whose extremes leave the station's limits (empty: all safe)."""
    crossings: list[LimitCrossing] = []
    for c in plan.channels:
        low, high, source = channel_limits(station, c.instrument, c.channel)
        if not (low <= c.min_v and c.max_v <= high):  # NaN extremes count as crossing
            crossings.append(LimitCrossing(c, low, high, source))
    return crossings


class PlanError(ValueError):
    """A plan would cross the station's limits; nothing was started."""

    def __init__(self, plan: RunPlan, crossings: list[LimitCrossing]) -> None:
        self.plan = plan
        self.crossings = crossings
        super().__init__(
            f"the {plan.procedure} plan crosses the station's limits: "
            + "; ".join(str(c) for c in crossings)
        )
