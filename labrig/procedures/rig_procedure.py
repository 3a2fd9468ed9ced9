"""Procedures that run on a station: open it at startup, safe-state and release it at the end.

:class:`RigProcedure` adds a ``station`` parameter (a built-in name or a station file), opens the
rig in ``startup()``, hands every instrument to the runner (which brings each to its safe state on
every exit path), reports the bench's clock as device time, and closes the connections in
``release()`` — after the runner's safe state, never before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from labrig.errors import ProcedureError
from labrig.procedures.base import Procedure, StrParameter
from labrig.rig import Rig, open_rig

T = TypeVar("T")


class RigProcedure(Procedure):
    """A procedure bound to one station of a given rig kind (``"dnpu"`` or ``"reservoir"``)."""

    rig_kind: ClassVar[str] = "dnpu"
    station = StrParameter(
        "Station",
        default="sim-dnpu",
        help="a built-in station (sim-dnpu, sim-reservoir) or a station file",
    )

    rig: Rig | None = None
    _device_t0_s: float = 0.0

    def startup(self) -> None:
        rig = open_rig(self.station)
        if rig.station.rig != self.rig_kind:
            rig.close()
            raise ProcedureError(
                f"procedure {self.name!r} needs a {self.rig_kind} station; "
                f"{rig.station.source} is a {rig.station.rig} station"
            )
        self.rig = rig
        self.instruments = rig.safe_state_order()  # the runner makes them safe in this order
        self._device_t0_s = rig.device_time_s()
        self.log(f"station {rig.station.name!r} from {rig.station.source}: {rig.identities()}")

    def require_rig(self) -> Rig:
        if self.rig is None:
            raise ProcedureError(f"procedure {self.name!r} has no open station (startup not run)")
        return self.rig

    def release(self) -> None:
        """Close every connection (the runner calls this after the safe state)."""
        if self.rig is not None:
            for problem in self.rig.close():
                self.log(problem, "error")
            self.rig = None

    def reconnect_instrument(self, label: str) -> bool:
        """Reopen ``label``'s connection through the rig (channel limits reinstalled)."""
        if self.rig is None or label not in self.rig.instruments:
            return False
        self.instruments[label] = self.rig.reconnect(label)
        return True

    def with_retry(self, call: Callable[[], T], instruments: Sequence[str], what: str) -> T:
        """Run ``call``; on a timeout, a dropped connection or a garbled reply, reconnect
        ``instruments`` and try again (3 attempts, 0.1 s then 0.2 s back-off), else abort the
        run with the reason. Only for calls that are safe to repeat (a measurement, a
        playback): nothing is ever retried after a limit or an instrument-reported error."""

        def reconnect() -> None:
            rig = self.require_rig()
            for name in instruments:
                self.instruments[name] = rig.reconnect(name)
                self.log(f"reconnected {name}", "warning")

        return self.retry(call, attempts=3, backoff_s=0.1, reconnect=reconnect, what=what)

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` of device time pass (bench clock on a simulated rig)."""
        self.require_rig().wait(seconds, self.should_stop)

    def device_time_s(self) -> float:
        """Device time since this process's startup (the runner adds earlier segments')."""
        if self.rig is None:
            return 0.0
        return self.rig.device_time_s() - self._device_t0_s

    def rig_state(self) -> dict[str, Any]:
        """Checkpoint part of every rig procedure: the rig's clock (bench time when simulated)."""
        return {"rig_clock_s": self.rig.device_time_s() if self.rig is not None else 0.0}

    def restore_rig_state(self, state: dict[str, Any]) -> None:
        """On a simulated rig, set a fresh bench's clock to where the checkpoint was taken, so
        the resumed run sees the same noise as the uninterrupted one would have. Device time
        keeps counting from here (the runner adds the earlier segments' time)."""
        rig = self.require_rig()
        rig.restore_device_clock(float(state.get("rig_clock_s", 0.0)))
        self._device_t0_s = rig.device_time_s()

    def station_info(self) -> dict[str, Any]:
        if self.rig is None:
            return {}
        st = self.rig.station
        return {"name": st.name, "rig": st.rig, "source": st.source, "text": st.text}

    def summary(self) -> dict[str, Any]:
        """Safety evidence, read after the runner's safe state: every limited DAC channel's
        final voltage and, on a simulated rig, the extreme voltage every watched port ever
        saw. Subclasses add their results to ``super().summary()``."""
        if self.rig is None:
            return {}
        out: dict[str, Any] = {}
        try:
            out["final_voltages_v"] = {
                f"{c.instrument}:{c.channel}": self.rig.instruments[c.instrument].get_voltage(
                    c.channel
                )
                for c in self.rig.station.channels
            }
            if self.rig.simulated:
                out["voltage_extremes_v"] = {
                    port: list(extremes) for port, extremes in self.rig.voltage_extremes().items()
                }
        except Exception as exc:  # evidence is best effort; the run's result must still land
            out["safety_evidence_error"] = f"{type(exc).__name__}: {exc}"
        return out
