"""A procedure for sweep tests that succeeds, raises, or kills the process it runs in."""

from __future__ import annotations

import os

from labrig.procedures.base import ChoiceParameter, IntegerParameter, register_procedure
from labrig.procedures.rig_procedure import RigProcedure


@register_procedure
class SweepProbe(RigProcedure):
    """On the DNPU bench, emits ``value`` and then does what ``action`` says."""

    name = "sweep-probe"
    rig_kind = "dnpu"
    action = ChoiceParameter("Action", choices=["ok", "raise", "die"], default="ok")
    value = IntegerParameter("Value", default=0)

    def execute(self) -> None:
        self.emit_event({"value": float(self.value)})
        if self.action == "raise":
            raise RuntimeError(f"probe {self.value} raised on purpose")
        if self.action == "die":
            os._exit(3)  # the worker process dies mid-run, as an out-of-memory kill would

    def summary(self) -> dict[str, object]:
        return {**super().summary(), "doubled": 2 * self.value}
