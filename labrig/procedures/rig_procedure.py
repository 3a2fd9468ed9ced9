"""Procedures that run on a rig the shell opened and handed to them.

The shell (``labrig.shell.run_on_station``: the CLI, the GUI, the sweep runner) loads the station,
opens the rig and binds it to the procedure with :meth:`RigProcedure.bind_rig` before the run
starts. A procedure sees the rig only through :class:`RigRoles`: typed role objects
(:class:`~instruments.roles.DacBank`, :class:`~instruments.roles.Digitizer`,
:class:`~instruments.roles.WaveformGenerator`, :class:`~instruments.roles.LockIn`), the station's
wiring and limits, and a clock. It never loads a station, never imports a driver, and never asks
whether it runs on a simulator: the same code drives the bench and the lab.

The runner brings every instrument to its safe state on every exit path; the shell, which opened
the rig, closes it afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, cast

from instruments.roles import DacBank, Digitizer, Instrument, LockIn, WaveformGenerator
from labrig.errors import ProcedureError
from labrig.procedures.base import Procedure

if TYPE_CHECKING:
    from labrig.calibration import ReservoirCalibration, ReservoirTwin
    from labrig.station import Station

T = TypeVar("T")


class RigRoles(Protocol):
    """What the shell hands a rig procedure (:class:`labrig.rig.Rig` is one).

    Role properties raise ``KeyError`` naming the station when it has no such role.
    """

    @property
    def station(self) -> Station:
        """The station as loaded: name, source file, wiring (``dnpu`` / ``reservoir``), limits."""
        ...

    @property
    def dac(self) -> DacBank: ...

    @property
    def digitizer(self) -> Digitizer: ...

    @property
    def awg(self) -> WaveformGenerator: ...

    @property
    def lockins(self) -> Sequence[LockIn]: ...

    def wait(self, seconds: float, should_stop: Callable[[], bool] | None = None) -> None:
        """Let ``seconds`` of device time pass (checking ``should_stop``)."""
        ...

    def device_time_s(self) -> float:
        """Device time so far, s (the bench clock on a simulated rig; 0 on hardware)."""
        ...

    def restore_device_clock(self, t: float) -> None:
        """Move a simulated rig's clock forward to ``t`` s (resume); nothing on hardware."""
        ...

    def voltage_extremes(self) -> Mapping[str, tuple[float, float]]:
        """The extreme voltage every watched output ever reached, V, where the rig logs it
        (a simulated bench does); empty where it cannot."""
        ...

    def identities(self) -> Mapping[str, str]:
        """Each instrument's ``*IDN?`` reply."""
        ...

    def safe_state_order(self) -> dict[str, Instrument]:
        """Every instrument, in the order to make them safe (DAC banks last)."""
        ...

    def reconnect(self, name: str) -> Instrument:
        """Reopen instrument ``name`` after a dropped connection (limits reinstalled)."""
        ...

    @property
    def calibration(self) -> ReservoirCalibration | None:
        """The reservoir calibration the station references (measured by ``labrig
        calibrate``), or None: the procedure then measures what it needs."""
        ...

    @property
    def twin(self) -> ReservoirTwin | None:
        """A digital twin of the reservoir, which only a simulated station supplies."""
        ...


class RigProcedure(Procedure):
    """A procedure bound to one station of a given rig kind (``"dnpu"`` or ``"reservoir"``)."""

    rig_kind: ClassVar[str] = "dnpu"

    rig: RigRoles | None = None
    _device_t0_s: float = 0.0

    def check_station(self, station: Station) -> None:
        """Refuse, with a :class:`ProcedureError` naming the station file, a station this run
        cannot use. The shell calls it before anything is connected or any run folder exists;
        subclasses extend it (a node count the loop does not have, a method that needs a twin
        on real hardware)."""
        if station.rig != self.rig_kind:
            raise ProcedureError(
                f"procedure {self.name!r} needs a {self.rig_kind} station; "
                f"{station.source} is a {station.rig} station"
            )

    def bind_rig(self, rig: RigRoles) -> None:
        """Hand the procedure the rig it runs on (the shell calls this before the run starts).

        Raises :class:`ProcedureError` if :meth:`check_station` refuses the rig's station.
        """
        self.check_station(rig.station)
        self.rig = rig
        self.instruments = rig.safe_state_order()  # the runner makes them safe in this order
        self._device_t0_s = rig.device_time_s()

    def startup(self) -> None:
        rig = self.require_rig()
        self._device_t0_s = rig.device_time_s()
        identities = self.with_retry(rig.identities, list(self.instruments), "identities")
        self.log(f"station {rig.station.name!r} from {rig.station.source}: {identities}")

    def require_rig(self) -> RigRoles:
        if self.rig is None:
            raise ProcedureError(
                f"procedure {self.name!r} has no rig: run it with labrig.shell.run_on_station "
                "(or bind_rig() an open rig first)"
            )
        return self.rig

    def reconnect_instrument(self, label: str) -> bool:
        """Reopen ``label``'s connection through the rig (channel limits reinstalled)."""
        if self.rig is None or label not in self.instruments:
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
        final voltage and, where the rig logs them (a simulated bench does), the extreme voltage
        every watched port ever saw. Subclasses add their results to ``super().summary()``."""
        if self.rig is None:
            return {}
        out: dict[str, Any] = {}
        try:
            final: dict[str, float] = {}
            for c in self.rig.station.channels:
                # A station's [[channels]] are DAC channels (the station loader checks it).
                dac = cast(DacBank, self.instruments[c.instrument])
                final[f"{c.instrument}:{c.channel}"] = dac.get_voltage(c.channel)
            out["final_voltages_v"] = final
            extremes = self.rig.voltage_extremes()
            if extremes:
                out["voltage_extremes_v"] = {port: list(ex) for port, ex in extremes.items()}
        except Exception as exc:  # evidence is best effort; the run's result must still land
            out["safety_evidence_error"] = f"{type(exc).__name__}: {exc}"
        return out
