"""Role interfaces that procedures program against.

Procedures never see a driver class or a simulator: they see one of these four roles. Each
driver in this package implements exactly one role. All quantities are SI floats (volts,
seconds, hertz, amperes); arrays are numpy float64.

Every role has ``safe_state()``: bring the instrument's outputs to a state that cannot harm the
device under test (ramped to their safe level within slew limits, then off). Procedures call it on
every exit path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
TriggerSource = Literal["immediate", "bus", "external"]


@dataclass(frozen=True)
class Waveform:
    """A digitised trace: sample times (s, relative to the trigger) and values (V)."""

    times_s: FloatArray
    volts: FloatArray

    @property
    def sample_interval_s(self) -> float:
        return float(self.times_s[1] - self.times_s[0]) if self.times_s.size > 1 else 0.0


@runtime_checkable
class Instrument(Protocol):
    """What every role shares."""

    @property
    def identity(self) -> str:
        """The instrument's ``*IDN?`` reply."""
        ...

    def snapshot(self) -> dict[str, object]:
        """Every setting this driver knows, as JSON-serialisable values (stored with each run)."""
        ...

    def check_errors(self) -> None:
        """Read the error queue; raise ``InstrumentReportedError`` if it held an error."""
        ...

    def safe_state(self) -> None:
        """Bring outputs to their safe state (ramped, then off)."""
        ...

    def shutdown(self) -> None:
        """Safe state, then close the connection."""
        ...


@runtime_checkable
class WaveformGenerator(Instrument, Protocol):
    """An arbitrary waveform generator (e.g. Keysight 33500B)."""

    def load_waveform(
        self, channel: int, volts: FloatArray, sample_rate_hz: float, name: str = "LABRIG"
    ) -> None:
        """Upload ``volts`` as the channel's arbitrary waveform (binary block) and select it.

        The driver scales to the DAC range: amplitude and offset are set so that the samples are
        reproduced in volts at the output (into the configured load).
        """
        ...

    def configure_burst(self, channel: int, cycles: int, trigger: TriggerSource) -> None:
        """Play the waveform ``cycles`` times per trigger."""
        ...

    def set_output(self, channel: int, enabled: bool) -> None:
        """Switch the channel's output relay."""
        ...

    def trigger(self) -> None:
        """Send a bus trigger (``*TRG``)."""
        ...


@runtime_checkable
class Digitizer(Instrument, Protocol):
    """An oscilloscope or digitiser (e.g. Keysight InfiniiVision)."""

    def configure_acquisition(
        self,
        channel: int,
        volts_range: float,
        offset_v: float,
        duration_s: float,
        trigger: TriggerSource,
        trigger_level_v: float = 0.0,
    ) -> None:
        """Set vertical range (full screen, V), offset, record duration and trigger source."""
        ...

    def arm(self) -> None:
        """Arm a single acquisition (``:SINGle``); it completes on the next trigger."""
        ...

    def wait_complete(self, timeout_s: float) -> None:
        """Block until the armed acquisition is complete or raise ``TimeoutError``."""
        ...

    def read_waveform(self, channel: int) -> Waveform:
        """Transfer the last acquisition of ``channel`` in volts and seconds."""
        ...

    def acquire(self, channel: int, timeout_s: float = 10.0) -> Waveform:
        """Digitise one record now (``:DIGitize``) and return it."""
        ...

    def record_points_for(self, duration_s: float, sample_rate_hz: float) -> int:
        """The shortest record (points) this model can take that samples ``duration_s`` (s) at
        ``sample_rate_hz`` (Sa/s) or faster. Raises ``ValueError`` naming both if even the
        longest record is too short."""
        ...

    @property
    def max_record_points(self) -> int:
        """The longest record (points) this model can transfer."""
        ...

    def set_points(self, n: int) -> None:
        """Transfer ``n`` points per record (a length :meth:`record_points_for` returned)."""
        ...


@runtime_checkable
class DacBank(Instrument, Protocol):
    """A multi-channel precision DAC (e.g. QDevil QDAC-II).

    Every voltage is checked against the channel's :class:`~instruments.errors.ChannelLimits`
    before anything is written; a refused value raises ``LimitError`` and writes nothing.
    """

    @property
    def channel_count(self) -> int: ...

    def set_limits(self, channel: int, limits: object) -> None:
        """Install the station's safety limits for ``channel`` (``ChannelLimits``)."""
        ...

    def get_voltage(self, channel: int) -> float:
        """The channel's DC set point in volts."""
        ...

    def ramp_to(self, voltages: Mapping[int, float], timeout_s: float = 60.0) -> None:
        """Move several channels to new DC levels at their slew limit and wait until there."""
        ...

    def play_traces(
        self,
        traces: Mapping[int, FloatArray],
        sample_rate_hz: float,
        trigger: TriggerSource = "bus",
        marker_output: int | None = 1,
    ) -> float:
        """Load equal-length voltage sequences on several channels, armed to start together.

        With ``trigger="bus"`` nothing moves until :meth:`trigger`. If ``marker_output`` is given,
        that trigger output pulses when playback starts (wire it to a digitiser). Returns the
        playback duration in seconds.
        """
        ...

    def start_sines(
        self,
        sines: Mapping[int, tuple[float, float]],
        trigger: TriggerSource = "bus",
    ) -> None:
        """Add sines ``{channel: (frequency_hz, amplitude_v)}`` (amplitude = half the span)."""
        ...

    def stop_generators(self, channels: Sequence[int] | None = None) -> None:
        """Abort sines and trace playback on ``channels`` (all if None); DC levels stay."""
        ...

    def trigger(self) -> None:
        """Fire the bus trigger (``*TRG``)."""
        ...


@runtime_checkable
class LockIn(Instrument, Protocol):
    """A lock-in amplifier (e.g. Stanford Research SR860)."""

    def configure(
        self,
        frequency_hz: float,
        time_constant_s: float,
        reference: Literal["internal", "external"] = "internal",
        current_input: bool = False,
        harmonic: int = 1,
        phase_deg: float = 0.0,
    ) -> None:
        """Set the reference, time constant (nearest allowed at or above) and input mode."""
        ...

    def read_xy(self) -> tuple[float, float]:
        """X and Y captured at one instant (``SNAP?``), in V (or A in current mode)."""
        ...

    def read_r_theta(self) -> tuple[float, float]:
        """R (V or A, RMS) and theta (degrees) captured at one instant."""
        ...

    @property
    def time_constant_s(self) -> float: ...
