"""What a procedure will do, stated before anything moves: :class:`RunPlan`.

Each rig procedure's ``plan(station)`` computes one from its parameters and the station's wiring
alone (no instrument is opened): the channels it will drive, each channel's voltage extremes
including perturbations, how many steps it takes and an estimate of the device time. The shell
(``labrig.preflight.check_plan``) holds the extremes against the station's limits before a run
folder exists, and ``labrig ... --dry-run`` prints the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChannelPlan", "RunPlan"]


@dataclass(frozen=True)
class ChannelPlan:
    """One output the procedure drives and the voltage range it will span there (V).

    ``instrument`` and ``channel`` name the output as the station does (``[[channels]]``);
    ``role`` says what it is in the lab's words ("electrode 3 (control)", "modulator RF
    drive"); ``how`` says where the extremes come from ("activation range, incl. 30 mV sine").
    """

    instrument: str
    channel: int
    role: str
    min_v: float
    max_v: float
    how: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "channel": self.channel,
            "role": self.role,
            "min_v": self.min_v,
            "max_v": self.max_v,
            "how": self.how,
        }


@dataclass(frozen=True)
class RunPlan:
    """A procedure's plan: ``steps`` units of ``step_name`` (at most), the channels it drives,
    and ``device_time_s``, the time the hardware spends playing, settling and acquiring over
    those steps (instrument transfers, which depend on the link, come on top). ``details`` are
    lines a person reads ("4 cases x (50 ms + 20 ms)")."""

    procedure: str
    step_name: str
    steps: int
    channels: tuple[ChannelPlan, ...]
    device_time_s: float
    details: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "procedure": self.procedure,
            "step_name": self.step_name,
            "steps": self.steps,
            "channels": [c.as_dict() for c in self.channels],
            "device_time_s": self.device_time_s,
            "details": list(self.details),
        }
