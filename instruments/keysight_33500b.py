"""Keysight (Agilent) 33500B series waveform generator, e.g. the two-channel 33522B.

Implements the :class:`~instruments.roles.WaveformGenerator` role. Arbitrary waveforms travel as
IEEE 488.2 binary blocks (float32 ``DATA:ARB`` or int16 ``DATA:ARB:DAC``, little-endian after
``FORM:BORD SWAP``), never as ASCII lists. Settings that the instrument can refuse or clamp are
followed by ``SYST:ERR?``; an error raises :class:`~instruments.errors.InstrumentReportedError`.

Example::

    awg = Keysight33500B("TCPIP0::192.168.1.20::5025::SOCKET", visa_library="@py")
    awg.load_waveform(1, volts, sample_rate_hz=1e6)
    awg.configure_burst(1, cycles=1, trigger="bus")
    awg.set_output(1, True)
    awg.trigger()
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import numpy.typing as npt
from pymeasure.instruments import Channel, Instrument, SCPIMixin

from instruments.common import (
    ErrorCheckingMixin,
    bool_control,
    choice_control,
    format_number,
    jsonable,
    range_control,
    strict_float_range,
    strict_int_range,
    strip_quotes,
    visa_kwargs,
    write_binary_values,
)
from instruments.roles import FloatArray, TriggerSource

#: The instrument answers 9.9E+37 for "infinity" (load, burst count).
SCPI_INFINITY = 9.9e37
#: Points per arbitrary waveform without option MEM.
ARB_MIN_POINTS = 8
ARB_MAX_POINTS = 1_000_000
#: Largest DAC code emitted (the instrument may accept -32768; full scale is symmetric).
DAC_FULL_SCALE = 32767
# Setting limits that load_waveform and configure_burst also check before they write anything.
AMPLITUDE_VPP = (1e-3, 20.0)  # 10 Vpp into 50 Ohm, twice that into high impedance
OFFSET_V = (-10.0, 10.0)
ARB_SAMPLE_RATE_HZ = (1e-6, 250e6)
BURST_CYCLES = (1, 100_000_000)
_ARB_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,11}$")
_TRIGGER_SOURCES: dict[str, str] = {"immediate": "IMM", "bus": "BUS", "external": "EXT"}


def _infinity_or_float(reply: Any) -> float:
    value = float(reply)
    return math.inf if value >= SCPI_INFINITY else value


def _check_arb_name(name: str) -> str:
    if not _ARB_NAME.match(name):
        raise ValueError(
            f"arbitrary waveform name {name!r}: 1-12 letters, digits or '_', starting with a letter"
        )
    return name.upper()


def _load_validator(value: Any, values: tuple[float, float]) -> str:
    """Load in ohms (1..10 kOhm) or ``math.inf`` / ``"INF"`` for high impedance."""
    if isinstance(value, str) and value.strip().upper() in ("INF", "INFINITY"):
        return "INF"
    number = float(value)
    if math.isinf(number) and number > 0:
        return "INF"
    return format_number(strict_float_range(number, values))


def _ncycles_validator(value: Any, values: tuple[int, int]) -> str:
    """Burst count 1..1e8, or ``math.inf`` / ``"INF"`` for an infinite burst."""
    if isinstance(value, str) and value.strip().upper() in ("INF", "INFINITY"):
        return "INF"
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return "INF"
    return str(strict_int_range(value, values))


def _ncycles_reply(reply: Any) -> float | int:
    value = _infinity_or_float(reply)
    return value if math.isinf(value) else int(value)


class Keysight33500BChannel(Channel):
    """One output channel (``SOURce{n}``, ``OUTPut{n}``, ``TRIGger{n}``) of a 33500B."""

    function = choice_control(
        "SOUR{ch}:FUNC?",
        "SOUR{ch}:FUNC %s",
        """Control the output function: 'SIN', 'SQU', 'TRI', 'RAMP', 'PULS', 'PRBS', 'NOIS',
        'ARB' or 'DC' (str).""",
        ("SIN", "SQU", "TRI", "RAMP", "PULS", "PRBS", "NOIS", "ARB", "DC"),
    )

    frequency = range_control(
        "SOUR{ch}:FREQ?",
        "SOUR{ch}:FREQ %s",
        """Control the frequency of the standard functions in Hz (float, 1 uHz to 30 MHz;
        the function sets the real ceiling). Arbitrary waveforms use :attr:`arb_sample_rate`.""",
        1e-6,
        30e6,
    )

    amplitude = range_control(
        "SOUR{ch}:VOLT?",
        "SOUR{ch}:VOLT %s",
        """Control the amplitude in :attr:`amplitude_unit` (float; 1 mVpp to 10 Vpp into 50 Ohm,
        twice that into high impedance; the instrument refuses what the load does not allow).""",
        *AMPLITUDE_VPP,
    )

    amplitude_unit = choice_control(
        "SOUR{ch}:VOLT:UNIT?",
        "SOUR{ch}:VOLT:UNIT %s",
        """Control the unit of :attr:`amplitude`: 'VPP', 'VRMS' or 'DBM' (str).""",
        ("VPP", "VRMS", "DBM"),
    )

    offset = range_control(
        "SOUR{ch}:VOLT:OFFS?",
        "SOUR{ch}:VOLT:OFFS %s",
        """Control the DC offset in V (float, -10 to 10 V; |offset| + Vpp/2 must stay within
        5 V into 50 Ohm or 10 V into high impedance, which the instrument checks).""",
        *OFFSET_V,
    )

    output_enabled = bool_control(
        "OUTP{ch}?",
        "OUTP{ch} %s",
        """Control the output relay (bool).""",
    )

    load = Instrument.control(
        "OUTP{ch}:LOAD?",
        "OUTP{ch}:LOAD %s",
        """Control the expected load in Ohm (float, 1 to 10000, or ``math.inf`` for high
        impedance). Only rescales the displayed and programmed amplitude and offset.""",
        validator=_load_validator,
        values=(1.0, 10e3),
        get_process=_infinity_or_float,
        check_set_errors=True,
    )

    phase = range_control(
        "SOUR{ch}:PHAS?",
        "SOUR{ch}:PHAS %s",
        """Control the phase offset in degrees (float, -360 to 360).""",
        -360.0,
        360.0,
    )

    arb_name = Instrument.control(
        "SOUR{ch}:FUNC:ARB?",
        "SOUR{ch}:FUNC:ARB %s",
        """Control which arbitrary waveform the ARB function plays (str, a name in volatile
        memory, up to 12 characters; the reply is upper-case).""",
        validator=lambda v, _: _check_arb_name(v),
        get_process=strip_quotes,
        cast=str,
        check_set_errors=True,
    )

    arb_sample_rate = range_control(
        "SOUR{ch}:FUNC:ARB:SRAT?",
        "SOUR{ch}:FUNC:ARB:SRAT %s",
        """Control the arbitrary-waveform sample rate in Sa/s (float, 1 uSa/s to 250 MSa/s;
        62.5 MSa/s with the filter off).""",
        *ARB_SAMPLE_RATE_HZ,
    )

    arb_filter = choice_control(
        "SOUR{ch}:FUNC:ARB:FILT?",
        "SOUR{ch}:FUNC:ARB:FILT %s",
        """Control the arbitrary-waveform interpolation filter: 'NORM', 'STEP' or 'OFF'.""",
        ("NORM", "STEP", "OFF"),
    )

    burst_enabled = bool_control(
        "SOUR{ch}:BURS:STAT?",
        "SOUR{ch}:BURS:STAT %s",
        """Control burst mode (bool). Enable it after the other burst settings.""",
    )

    burst_mode = choice_control(
        "SOUR{ch}:BURS:MODE?",
        "SOUR{ch}:BURS:MODE %s",
        """Control the burst mode: 'TRIG' (N cycles per trigger) or 'GAT' (gated).""",
        ("TRIG", "GAT"),
    )

    burst_ncycles = Instrument.control(
        "SOUR{ch}:BURS:NCYC?",
        "SOUR{ch}:BURS:NCYC %s",
        """Control the cycles per burst (int, 1 to 100000000, or ``math.inf``).""",
        validator=_ncycles_validator,
        values=BURST_CYCLES,
        get_process=_ncycles_reply,
        check_set_errors=True,
    )

    burst_period = range_control(
        "SOUR{ch}:BURS:INT:PER?",
        "SOUR{ch}:BURS:INT:PER %s",
        """Control the internal burst period in s (float, 1 us to 8000 s; used with trigger
        source 'IMM').""",
        1e-6,
        8000.0,
    )

    trigger_source = choice_control(
        "TRIG{ch}:SOUR?",
        "TRIG{ch}:SOUR %s",
        """Control the trigger source: 'IMM', 'EXT', 'TIM' or 'BUS' (str).""",
        ("IMM", "EXT", "TIM", "BUS"),
    )

    trigger_timer = range_control(
        "TRIG{ch}:TIM?",
        "TRIG{ch}:TIM %s",
        """Control the trigger timer period in s for trigger source 'TIM' (float, 1 us to
        8000 s).""",
        1e-6,
        8000.0,
    )

    sync_mode = choice_control(
        "OUTP{ch}:SYNC:MODE?",
        "OUTP{ch}:SYNC:MODE %s",
        """Control what the Sync output shows for this channel: 'NORM', 'CARR' or 'MARK'.""",
        ("NORM", "CARR", "MARK"),
    )

    def volatile_catalog(self) -> list[str]:
        """Get the names of the waveforms in this channel's volatile memory (``DATA:VOL:CAT?``)."""
        reply = self.ask("SOUR{ch}:DATA:VOL:CAT?").strip()
        return [strip_quotes(item) for item in reply.split(",") if strip_quotes(item)]

    def clear_volatile(self) -> None:
        """Erase the channel's volatile arbitrary waveforms (``DATA:VOL:CLE``)."""
        self.write("SOUR{ch}:DATA:VOL:CLE")
        self.check_set_errors()

    def upload_arb(self, name: str, samples: npt.ArrayLike) -> None:
        """Upload normalised samples (-1..+1, float32 block) as arbitrary waveform ``name``.

        The name must not exist in volatile memory yet (see :meth:`clear_volatile`).
        """
        data = _checked_samples(samples)
        if np.max(np.abs(data)) > 1.0:
            raise ValueError("normalised arbitrary-waveform samples must lie within [-1, 1]")
        label = _check_arb_name(name)
        self.parent.write("FORM:BORD SWAP")
        write_binary_values(self, f"SOUR{{ch}}:DATA:ARB {label},", data.astype(np.float32), "f")
        self.check_set_errors()

    def upload_arb_dac(self, name: str, codes: npt.ArrayLike) -> None:
        """Upload DAC codes (int16, -32767..32767) as arbitrary waveform ``name``."""
        data = np.asarray(codes)
        if data.ndim != 1 or not np.issubdtype(data.dtype, np.integer):
            raise ValueError("DAC codes must be a 1-D integer array")
        if not ARB_MIN_POINTS <= data.size <= ARB_MAX_POINTS:
            raise ValueError(f"{data.size} points: need {ARB_MIN_POINTS}..{ARB_MAX_POINTS}")
        if np.max(np.abs(data)) > DAC_FULL_SCALE:
            raise ValueError(f"DAC codes must lie within [-{DAC_FULL_SCALE}, {DAC_FULL_SCALE}]")
        label = _check_arb_name(name)
        self.parent.write("FORM:BORD SWAP")
        write_binary_values(self, f"SOUR{{ch}}:DATA:ARB:DAC {label},", data.astype(np.int16), "h")
        self.check_set_errors()


def _checked_samples(samples: npt.ArrayLike) -> FloatArray:
    data = np.asarray(samples, dtype=float)
    if data.ndim != 1:
        raise ValueError("a waveform is a 1-D array of samples")
    if not ARB_MIN_POINTS <= data.size <= ARB_MAX_POINTS:
        raise ValueError(
            f"{data.size} points: an arbitrary waveform has {ARB_MIN_POINTS}..{ARB_MAX_POINTS}"
        )
    if not np.all(np.isfinite(data)):
        raise ValueError("waveform samples must be finite")
    return data


class Keysight33500B(ErrorCheckingMixin, SCPIMixin, Instrument):
    """Keysight 33500B series arbitrary waveform generator (33522B: two channels).

    :param adapter: VISA resource name or PyMeasure adapter.
    :param name: name used in logs and error messages.
    :param kwargs: passed to the VISA adapter (e.g. ``visa_library="@py"``, ``timeout``).
    """

    channels = Instrument.MultiChannelCreator(Keysight33500BChannel, (1, 2))
    channel_count = 2

    byte_order = choice_control(
        "FORM:BORD?",
        "FORM:BORD %s",
        """Control the byte order of binary blocks: 'NORM' (big-endian) or 'SWAP'
        (little-endian, what this driver uploads).""",
        ("NORM", "SWAP"),
    )

    sync_enabled = bool_control(
        "OUTP:SYNC?",
        "OUTP:SYNC %s",
        """Control the Sync connector (bool).""",
    )

    sync_source = choice_control(
        "OUTP:SYNC:SOUR?",
        "OUTP:SYNC:SOUR %s",
        """Control which channel drives the Sync connector: 'CH1' or 'CH2'.""",
        ("CH1", "CH2"),
    )

    error_query = "SYST:ERR?"
    error_queue_depth = 21  # 20 queued plus the overflow entry
    channels_description = "the 33500B has channels 1 and 2"

    def __init__(self, adapter: Any, name: str = "Keysight 33500B", **kwargs: Any) -> None:
        # 10 s: a 1 M-point float32 upload is 4 MB.
        super().__init__(adapter, name, **visa_kwargs(kwargs, timeout_ms=10_000))

    # ------------------------------------------------------------------ errors, identity
    def channel(self, channel: int) -> Keysight33500BChannel:
        """The channel object for output ``channel`` (1 or 2); raise ``ValueError`` otherwise."""
        return self._channel(channel)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ role methods
    def load_waveform(
        self, channel: int, volts: FloatArray, sample_rate_hz: float, name: str = "LABRIG"
    ) -> None:
        """Upload ``volts`` as ``name`` on ``channel``, select it and scale it to reproduce volts.

        Clears the channel's volatile memory, normalises the samples to +/-1 by the waveform's
        own peak-to-peak and mid level, uploads them as a float32 block, selects the waveform,
        sets the sample rate, then ``VOLT = peak-to-peak`` (unit VPP) and ``VOLT:OFFS = mid``
        so that the output (into the configured load) follows ``volts``. A constant waveform
        is played at the minimum amplitude (1 mVpp) around its level.
        """
        ch = self.channel(channel)
        data = _checked_samples(volts)
        label = _check_arb_name(name)
        strict_float_range(sample_rate_hz, ARB_SAMPLE_RATE_HZ)
        high, low = float(np.max(data)), float(np.min(data))
        peak_to_peak = high - low
        mid = 0.5 * (high + low)
        if peak_to_peak > 0:
            normalised = (data - mid) / (0.5 * peak_to_peak)
            # (x - mid) / half-span is within +/-1 up to rounding; keep the block in range.
            normalised = np.clip(normalised, -1.0, 1.0)
        else:
            normalised = np.zeros_like(data)
        amplitude = max(peak_to_peak, 1e-3)
        strict_float_range(amplitude, AMPLITUDE_VPP)
        strict_float_range(mid, OFFSET_V)
        ch.write("SOUR{ch}:DATA:VOL:CLE")
        self.write("FORM:BORD SWAP")
        write_binary_values(ch, f"SOUR{{ch}}:DATA:ARB {label},", normalised.astype(np.float32), "f")
        ch.write(f"SOUR{{ch}}:FUNC:ARB {label}")
        ch.write("SOUR{ch}:FUNC ARB")
        ch.write(f"SOUR{{ch}}:FUNC:ARB:SRAT {format_number(sample_rate_hz)}")
        ch.write("SOUR{ch}:VOLT:UNIT VPP")
        # Offset 0 first: the new amplitude is then legal whatever the old offset was.
        ch.write("SOUR{ch}:VOLT:OFFS 0")
        ch.write(f"SOUR{{ch}}:VOLT {format_number(amplitude)}")
        ch.write(f"SOUR{{ch}}:VOLT:OFFS {format_number(mid)}")
        self.check_errors(context=f"load_waveform(channel={channel}, name={label!r})")

    def configure_burst(self, channel: int, cycles: int, trigger: TriggerSource) -> None:
        """Play the selected waveform ``cycles`` times per trigger (triggered burst)."""
        ch = self.channel(channel)
        count = strict_int_range(cycles, BURST_CYCLES)
        try:
            source = _TRIGGER_SOURCES[trigger]
        except KeyError:
            raise ValueError(f"trigger {trigger!r}: one of {list(_TRIGGER_SOURCES)}") from None
        ch.write("SOUR{ch}:BURS:MODE TRIG")
        ch.write(f"SOUR{{ch}}:BURS:NCYC {count}")
        ch.write(f"TRIG{{ch}}:SOUR {source}")
        ch.write("SOUR{ch}:BURS:STAT 1")
        self.check_errors(context=f"configure_burst(channel={channel})")

    def set_output(self, channel: int, enabled: bool) -> None:
        """Switch the output relay of ``channel``."""
        self.channel(channel).output_enabled = enabled

    def trigger(self) -> None:
        """Send a bus trigger (``*TRG``) to every channel whose trigger source is BUS."""
        self.write("*TRG")

    def wait_complete(self) -> None:
        """Block until pending operations (e.g. a running burst) are done (``*OPC?``)."""
        self.ask("*OPC?")

    def check_errors(self, context: str | None = None) -> None:
        """Read ``SYST:ERR?`` until empty; raise ``InstrumentReportedError`` on any error."""
        super().check_errors(context)

    def snapshot(self) -> dict[str, object]:
        """Every setting this driver knows, JSON-serialisable."""
        settings: dict[str, object] = {
            "identity": self.identity,
            "byte_order": self.byte_order,
            "sync_enabled": self.sync_enabled,
            "sync_source": self.sync_source,
        }
        names = (
            "function",
            "frequency",
            "amplitude",
            "amplitude_unit",
            "offset",
            "output_enabled",
            "load",
            "phase",
            "arb_name",
            "arb_sample_rate",
            "arb_filter",
            "burst_enabled",
            "burst_mode",
            "burst_ncycles",
            "burst_period",
            "trigger_source",
        )
        for number, ch in self.channels.items():
            settings[f"ch{number}"] = {name: getattr(ch, name) for name in names}
        return jsonable(settings)  # type: ignore[no-any-return]

    def safe_state(self) -> None:
        """Switch both outputs off."""
        for ch in self.channels.values():
            ch.write("OUTP{ch} 0")
        self.check_errors(context="safe_state")
