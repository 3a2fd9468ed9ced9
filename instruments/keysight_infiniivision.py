"""Keysight InfiniiVision X-series oscilloscope (DSOX1000/2000/3000/4000, e.g. DSOX3024T).

Implements the :class:`~instruments.roles.Digitizer` role. Waveforms are read as IEEE 488.2
blocks (``:WAVeform:DATA?``) of unsigned bytes or words and converted with the preamble::

    volts[i] = (code[i] - yreference) * yincrement + yorigin
    time[i]  = (i - xreference) * xincrement + xorigin

Example::

    scope = KeysightInfiniiVision("TCPIP0::192.168.1.30::5025::SOCKET", visa_library="@py")
    scope.configure_acquisition(1, volts_range=2.0, offset_v=0.0, duration_s=1e-3,
                                trigger="external", trigger_level_v=1.0)
    scope.arm()
    ...  # start the stimulus
    scope.wait_complete(timeout_s=5.0)
    waveform = scope.read_waveform(1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyvisa
from pymeasure.instruments import Channel, Instrument, SCPIMixin

from instruments.common import (
    ErrorCheckingMixin,
    bool_control,
    choice_control,
    choice_validator,
    format_number,
    jsonable,
    poll_until,
    query_binary_block,
    range_control,
    strict_float_range,
    strict_int_range,
    temporary_timeout,
    visa_kwargs,
)
from instruments.roles import TriggerSource, Waveform

#: ``:OPERegister:CONDition?`` bit 3: the scope is acquiring (running, or armed by :SINGle).
OPER_RUN_BIT = 8

# Setting limits that configure_acquisition also checks before it writes anything.
CHANNEL_RANGE_V = (8e-3, 40e3)  # full screen, probe included
CHANNEL_OFFSET_V = (-1e3, 1e3)
TIMEBASE_RANGE_S = (1e-8, 500.0)
TRIGGER_LEVEL_V = (-1e3, 1e3)
WAVEFORM_POINTS = (100, 8_000_000)  # also checked by set_points

_CHANNELS = (1, 2, 3, 4)


#: Record lengths ``:WAVeform:POINts`` accepts (X-series programmer's guides): NORMal mode
#: transfers the measurement record, RAW the acquisition memory (4 M points on the 3000T).
NORMAL_RECORD_POINTS: tuple[int, ...] = (100, 250, 500, 1000)
RAW_RECORD_POINTS: tuple[int, ...] = (
    *NORMAL_RECORD_POINTS,
    2000,
    5000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    4_000_000,
)


def record_points_for(duration_s: float, sample_rate_hz: float) -> int:
    """The shortest RAW record that samples ``duration_s`` at ``sample_rate_hz`` or faster.

    :raises ValueError: the record would need more points than the largest one.
    """
    needed = duration_s * sample_rate_hz
    for n in RAW_RECORD_POINTS:
        if n >= needed * (1.0 - 1e-9):
            return n
    raise ValueError(
        f"{duration_s:g} s at {sample_rate_hz:g} Sa/s needs {needed:.0f} points; the largest "
        f"record holds {RAW_RECORD_POINTS[-1]}"
    )


@dataclass(frozen=True)
class WaveformPreamble:
    """The ten fields of ``:WAVeform:PREamble?``.

    ``format``: 0 BYTE, 1 WORD, 4 ASCii; ``type``: 0 NORMal, 1 PEAK, 2 AVERage, 3 HRESolution.
    """

    format: int
    type: int
    points: int
    count: int
    x_increment: float
    x_origin: float
    x_reference: float
    y_increment: float
    y_origin: float
    y_reference: float

    @classmethod
    def from_reply(cls, reply: str) -> WaveformPreamble:
        """Parse ``fmt,type,points,count,xinc,xorig,xref,yinc,yorig,yref``."""
        fields = [f.strip() for f in reply.strip().split(",")]
        if len(fields) != 10:
            raise ValueError(f"a waveform preamble has 10 fields, got {len(fields)}: {reply!r}")
        return cls(
            format=int(float(fields[0])),
            type=int(float(fields[1])),
            points=int(float(fields[2])),
            count=int(float(fields[3])),
            x_increment=float(fields[4]),
            x_origin=float(fields[5]),
            x_reference=float(fields[6]),
            y_increment=float(fields[7]),
            y_origin=float(fields[8]),
            y_reference=float(fields[9]),
        )

    def times(self, n: int) -> np.ndarray:
        """Sample times in s of ``n`` points: ``(i - xref) * xinc + xorig``."""
        t = np.arange(n, dtype=float)  # worked in place: records run to millions of points
        t -= self.x_reference
        t *= self.x_increment
        t += self.x_origin
        return t

    def volts(self, codes: np.ndarray) -> np.ndarray:
        """Integer codes to volts: ``(code - yref) * yinc + yorig``."""
        v = codes.astype(float)  # worked in place: the same numbers, no temporaries
        v -= self.y_reference
        v *= self.y_increment
        v += self.y_origin
        return v


def _source_validator(value: Any, values: tuple[str, ...]) -> str:
    """Channel number (1..4) or keyword such as 'CHAN2', 'EXT', 'LINE'."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value in _CHANNELS:
            return f"CHAN{value}"
        raise ValueError(f"channel {value!r}: the scope has channels {list(_CHANNELS)}")
    return choice_validator(value, values)


class InfiniiVisionChannel(Channel):
    """One analogue input ``:CHANnel{n}``."""

    scale = range_control(
        ":CHAN{ch}:SCAL?",
        ":CHAN{ch}:SCAL %s",
        """Control the vertical scale in V/div (float, 1 mV to 5 kV per division incl. probe;
        full screen is 8 divisions).""",
        1e-3,
        5e3,
    )

    range = range_control(
        ":CHAN{ch}:RANG?",
        ":CHAN{ch}:RANG %s",
        """Control the full-screen vertical range in V (float, 8 mV to 40 kV incl. probe).""",
        *CHANNEL_RANGE_V,
    )

    offset = range_control(
        ":CHAN{ch}:OFFS?",
        ":CHAN{ch}:OFFS %s",
        """Control the voltage at screen centre in V (float, -1 kV to 1 kV; the scope limits it
        further by range and probe).""",
        *CHANNEL_OFFSET_V,
    )

    display = bool_control(
        ":CHAN{ch}:DISP?",
        ":CHAN{ch}:DISP %s",
        """Control whether the channel is on (bool).""",
    )

    coupling = choice_control(
        ":CHAN{ch}:COUP?",
        ":CHAN{ch}:COUP %s",
        """Control the input coupling: 'AC' or 'DC' (str).""",
        ("AC", "DC"),
    )

    probe = range_control(
        ":CHAN{ch}:PROB?",
        ":CHAN{ch}:PROB %s",
        """Control the probe attenuation ratio (float, 0.001 to 10000).""",
        1e-3,
        1e4,
    )

    impedance = choice_control(
        ":CHAN{ch}:IMP?",
        ":CHAN{ch}:IMP %s",
        """Control the input impedance: 'ONEM' (1 MOhm) or 'FIFT' (50 Ohm, not on every model).""",
        ("ONEM", "FIFT"),
    )

    bandwidth_limit = bool_control(
        ":CHAN{ch}:BWL?",
        ":CHAN{ch}:BWL %s",
        """Control the bandwidth-limit filter (bool).""",
    )


class KeysightInfiniiVision(ErrorCheckingMixin, SCPIMixin, Instrument):
    """Keysight InfiniiVision X-series oscilloscope with four analogue channels.

    :param adapter: VISA resource name or PyMeasure adapter.
    :param name: name used in logs and error messages.
    :param kwargs: passed to the VISA adapter (e.g. ``visa_library="@py"``, ``timeout``).
    """

    channels = Instrument.MultiChannelCreator(InfiniiVisionChannel, _CHANNELS)
    #: Format used by :meth:`read_waveform`: 'WORD' (16 bit) or 'BYTE' (8 bit).
    transfer_format = "WORD"

    # --------------------------------------------------------------- timebase
    timebase_scale = range_control(
        ":TIM:SCAL?",
        ":TIM:SCAL %s",
        """Control the horizontal scale in s/div (float, 1 ns to 50 s; full screen is 10
        divisions).""",
        1e-9,
        50.0,
    )

    timebase_range = range_control(
        ":TIM:RANG?",
        ":TIM:RANG %s",
        """Control the full-screen time range in s (float, 10 ns to 500 s).""",
        *TIMEBASE_RANGE_S,
    )

    timebase_position = range_control(
        ":TIM:POS?",
        ":TIM:POS %s",
        """Control the time from the trigger to the reference point in s (float, -500 to
        500 s; the scope limits it further).""",
        -500.0,
        500.0,
    )

    timebase_reference = choice_control(
        ":TIM:REF?",
        ":TIM:REF %s",
        """Control where the trigger sits on screen: 'LEFT', 'CENT' or 'RIGH'.""",
        ("LEFT", "CENT", "RIGH"),
    )

    timebase_mode = choice_control(
        ":TIM:MODE?",
        ":TIM:MODE %s",
        """Control the timebase mode: 'MAIN', 'WIND' (zoom), 'XY' or 'ROLL'.""",
        ("MAIN", "WIND", "XY", "ROLL"),
    )

    # --------------------------------------------------------------- trigger
    trigger_source = Instrument.control(
        ":TRIG:EDGE:SOUR?",
        ":TRIG:EDGE:SOUR %s",
        """Control the edge-trigger source: a channel number 1..4 or 'CHAN1'..'CHAN4', 'EXT',
        'LINE' (reply: 'CHAN1', 'EXT', ...).""",
        validator=_source_validator,
        values=("CHAN1", "CHAN2", "CHAN3", "CHAN4", "EXT", "LINE"),
        get_process=str.strip,
        cast=str,
        check_set_errors=True,
    )

    trigger_level = range_control(
        ":TRIG:EDGE:LEV?",
        ":TRIG:EDGE:LEV %s",
        """Control the edge-trigger level of the current source in V (float, -1 kV to 1 kV;
        the scope limits it to its screen range).""",
        *TRIGGER_LEVEL_V,
    )

    trigger_slope = choice_control(
        ":TRIG:EDGE:SLOP?",
        ":TRIG:EDGE:SLOP %s",
        """Control the edge-trigger slope: 'POS', 'NEG', 'EITH' or 'ALT'.""",
        ("POS", "NEG", "EITH", "ALT"),
    )

    trigger_sweep = choice_control(
        ":TRIG:SWE?",
        ":TRIG:SWE %s",
        """Control the sweep: 'AUTO' (free-runs without trigger) or 'NORM' (waits).""",
        ("AUTO", "NORM"),
    )

    # --------------------------------------------------------------- acquisition
    acquisition_type = choice_control(
        ":ACQ:TYPE?",
        ":ACQ:TYPE %s",
        """Control the acquisition type: 'NORM', 'AVER', 'HRES' or 'PEAK'.""",
        ("NORM", "AVER", "HRES", "PEAK"),
    )

    acquisition_count = range_control(
        ":ACQ:COUN?",
        ":ACQ:COUN %d",
        """Control the number of averages for type 'AVER' (int, 1 to 65536).""",
        1,
        65536,
        integer=True,
    )

    acquisition_mode = choice_control(
        ":ACQ:MODE?",
        ":ACQ:MODE %s",
        """Control the acquisition mode: 'RTIM' (real time) or 'SEGM' (segmented).""",
        ("RTIM", "SEGM"),
    )

    sample_rate = Instrument.measurement(
        ":ACQ:SRAT?",
        """Measure the current sample rate in Sa/s (float).""",
    )

    # --------------------------------------------------------------- waveform transfer
    waveform_source = Instrument.control(
        ":WAV:SOUR?",
        ":WAV:SOUR %s",
        """Control the waveform-transfer source: a channel number 1..4 or 'CHAN1'..'CHAN4',
        'FUNC', 'MATH' (reply: 'CHAN1', ...).""",
        validator=_source_validator,
        values=("CHAN1", "CHAN2", "CHAN3", "CHAN4", "FUNC", "MATH"),
        get_process=str.strip,
        cast=str,
        check_set_errors=True,
    )

    waveform_format = choice_control(
        ":WAV:FORM?",
        ":WAV:FORM %s",
        """Control the transfer format: 'BYTE', 'WORD' or 'ASC' (ASCii).""",
        ("BYTE", "WORD", "ASC"),
    )

    waveform_byte_order = choice_control(
        ":WAV:BYT?",
        ":WAV:BYT %s",
        """Control the byte order of WORD data: 'LSBF' or 'MSBF'.""",
        ("LSBF", "MSBF"),
    )

    waveform_unsigned = bool_control(
        ":WAV:UNS?",
        ":WAV:UNS %s",
        """Control whether BYTE/WORD codes are unsigned (bool).""",
    )

    waveform_points_mode = choice_control(
        ":WAV:POIN:MODE?",
        ":WAV:POIN:MODE %s",
        """Control which record is transferred: 'NORM' (screen record, <= 1000 points), 'MAX'
        or 'RAW' (acquisition memory, scope stopped).""",
        ("NORM", "MAX", "RAW"),
    )

    waveform_points = range_control(
        ":WAV:POIN?",
        ":WAV:POIN %d",
        """Control the number of points :meth:`read_waveform` transfers (int, 100 to 8000000;
        the reply is what the next transfer will hold).""",
        *WAVEFORM_POINTS,
        integer=True,
    )

    error_query = ":SYST:ERR?"
    channels_description = "the scope has channels 1..4"

    def __init__(self, adapter: Any, name: str = "Keysight InfiniiVision", **kwargs: Any) -> None:
        super().__init__(adapter, name, **visa_kwargs(kwargs, timeout_ms=10_000))

    # --------------------------------------------------------------- errors, identity
    def channel(self, channel: int) -> InfiniiVisionChannel:
        """The channel object for input ``channel`` (1..4); raise ``ValueError`` otherwise."""
        return self._channel(channel)  # type: ignore[no-any-return]

    # --------------------------------------------------------------- run control
    def run(self) -> None:
        """Acquire continuously (``:RUN``)."""
        self.write(":RUN")

    def stop(self) -> None:
        """Stop acquiring (``:STOP``); the last record stays readable."""
        self.write(":STOP")

    def single(self) -> None:
        """Arm one acquisition (``:SINGle``)."""
        self.write(":SING")

    def digitize(self, channel: int | None = None) -> None:
        """Acquire one record now (``:DIGitize [CHANnel<n>]``); follow with :meth:`complete`."""
        if channel is None:
            self.write(":DIG")
        else:
            self.channel(channel)
            self.write(f":DIG CHAN{channel}")

    def operation_complete(self) -> bool:
        """Wait (up to the VISA timeout) until pending operations are done (``*OPC?``)."""
        return bool(int(float(self.ask("*OPC?"))))

    @property
    def operation_condition(self) -> int:
        """Get the operation status condition register (``:OPER:COND?``, int; bit 3 = run)."""
        return int(float(self.ask(":OPER:COND?")))

    # --------------------------------------------------------------- waveform transfer
    def read_preamble(self) -> WaveformPreamble:
        """Get the preamble of the current waveform source (``:WAV:PRE?``)."""
        return WaveformPreamble.from_reply(self.ask(":WAV:PRE?"))

    def fetch_waveform(self, source: int | str, transfer_format: str = "WORD") -> Waveform:
        """Transfer ``source`` (channel number or keyword) in volts and seconds.

        Sets the transfer format (``WORD`` little-endian unsigned, ``BYTE`` unsigned, or
        ``ASC``), reads the preamble and the data block, checks the error queue.
        """
        form = choice_validator(transfer_format, ("BYTE", "WORD", "ASC"))
        self.waveform_source = source
        self.write(f":WAV:FORM {form}")
        if form == "WORD":
            self.write(":WAV:BYT LSBF")
        if form != "ASC":
            self.write(":WAV:UNS 1")
        preamble = self.read_preamble()
        payload = query_binary_block(self, ":WAV:DATA?")
        self.check_errors(context=":WAV:DATA?")
        if form == "ASC":
            text = payload.decode("ascii").strip().strip(",")
            volts = np.array([float(v) for v in text.split(",")] if text else [], dtype=float)
        elif form == "WORD":
            volts = preamble.volts(np.frombuffer(payload, dtype="<u2"))
        else:
            volts = preamble.volts(np.frombuffer(payload, dtype="u1"))
        return Waveform(times_s=preamble.times(volts.size), volts=volts)

    def set_points(self, n: int) -> None:
        """Transfer ``n`` points per record from acquisition memory (points mode RAW)."""
        points = strict_int_range(n, WAVEFORM_POINTS)
        self.write(":WAV:POIN:MODE RAW")
        self.write(f":WAV:POIN {points}")
        self.check_errors(context=f"set_points({points})")

    # --------------------------------------------------------------- role methods
    def record_points_for(self, duration_s: float, sample_rate_hz: float) -> int:
        """The shortest RAW record that samples ``duration_s`` at ``sample_rate_hz`` or faster
        (see :func:`record_points_for`)."""
        return record_points_for(duration_s, sample_rate_hz)

    @property
    def max_record_points(self) -> int:
        """The longest RAW record, points."""
        return RAW_RECORD_POINTS[-1]

    def configure_acquisition(
        self,
        channel: int,
        volts_range: float,
        offset_v: float,
        duration_s: float,
        trigger: TriggerSource,
        trigger_level_v: float = 0.0,
    ) -> None:
        """Set the channel's full-screen range and offset, a record of ``duration_s`` that
        starts at the trigger (reference LEFT, delayed one division) and the edge trigger.

        ``trigger="immediate"``: edge on the channel itself, sweep AUTO (acquires even without
        an edge). ``"external"``: rising edge on the EXT input, sweep NORM. The InfiniiVision
        has no bus trigger: ``"bus"`` raises ``ValueError``.
        """
        self.channel(channel)
        # Every value is checked before the first write, against the limits of its setting.
        strict_float_range(volts_range, CHANNEL_RANGE_V)
        strict_float_range(offset_v, CHANNEL_OFFSET_V)
        strict_float_range(duration_s, TIMEBASE_RANGE_S)
        strict_float_range(trigger_level_v, TRIGGER_LEVEL_V)
        if trigger == "immediate":
            source, sweep = f"CHAN{channel}", "AUTO"
        elif trigger == "external":
            source, sweep = "EXT", "NORM"
        else:
            raise ValueError(
                f"trigger {trigger!r}: the InfiniiVision triggers 'immediate' or 'external'"
            )
        self.write(f":CHAN{channel}:DISP 1")
        self.write(f":CHAN{channel}:RANG {format_number(volts_range)}")
        self.write(f":CHAN{channel}:OFFS {format_number(offset_v)}")
        self.write(":TIM:MODE MAIN")
        self.write(":TIM:REF LEFT")
        self.write(f":TIM:RANG {format_number(duration_s)}")
        # REF LEFT puts the reference one division (a tenth of the range) in from the left
        # edge; delaying it by that much makes the record start at the trigger.
        self.write(f":TIM:POS {format_number(duration_s / 10.0)}")
        self.write(":TRIG:MODE EDGE")
        self.write(f":TRIG:EDGE:SOUR {source}")
        self.write(f":TRIG:EDGE:LEV {format_number(trigger_level_v)}")
        self.write(":TRIG:EDGE:SLOP POS")
        self.write(f":TRIG:SWE {sweep}")
        self.check_errors(context=f"configure_acquisition(channel={channel})")

    def arm(self) -> None:
        """Arm a single acquisition (``:SINGle``); it completes on the next trigger.

        Returns once the scope has processed the arm (a query answered after it): writes to
        different instruments are not ordered, so a trigger sent to another instrument right
        after an unconfirmed ``:SING`` can reach its target first and be missed.
        """
        self.single()
        _ = self.operation_condition

    def wait_complete(self, timeout_s: float) -> None:
        """Poll ``:OPER:COND?`` until the run bit clears; ``TimeoutError`` after ``timeout_s``."""
        poll_until(
            lambda: not self.operation_condition & OPER_RUN_BIT,
            timeout_s,
            f"{self.name}: acquisition",
        )

    def read_waveform(self, channel: int) -> Waveform:
        """Transfer the last record of ``channel`` in volts and seconds."""
        self.channel(channel)
        return self.fetch_waveform(channel, self.transfer_format)

    def acquire(self, channel: int, timeout_s: float = 10.0) -> Waveform:
        """Digitise one record of ``channel`` now (``:DIGitize``, ``*OPC?``) and return it."""
        self.digitize(channel)
        try:
            with temporary_timeout(self, timeout_s):
                self.operation_complete()
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise TimeoutError(f"{self.name}: :DIGitize not done in {timeout_s:g} s") from exc
            raise
        return self.read_waveform(channel)

    def snapshot(self) -> dict[str, object]:
        """Every setting this driver knows, JSON-serialisable."""
        names = (
            "timebase_scale",
            "timebase_range",
            "timebase_position",
            "timebase_reference",
            "timebase_mode",
            "trigger_source",
            "trigger_level",
            "trigger_slope",
            "trigger_sweep",
            "acquisition_type",
            "acquisition_count",
            "acquisition_mode",
            "waveform_source",
            "waveform_format",
            "waveform_points_mode",
            "waveform_points",
        )
        settings: dict[str, object] = {"identity": self.identity}
        settings.update({name: getattr(self, name) for name in names})
        channel_names = ("display", "scale", "range", "offset", "coupling", "probe")
        for number, ch in self.channels.items():
            settings[f"ch{number}"] = {name: getattr(ch, name) for name in channel_names}
        return jsonable(settings)  # type: ignore[no-any-return]

    def check_errors(self, context: str | None = None) -> None:
        """Read ``:SYST:ERR?`` until empty; raise ``InstrumentReportedError`` on any error."""
        super().check_errors(context)

    def safe_state(self) -> None:
        """The scope drives nothing: stop acquiring."""
        self.stop()


__all__ = ["InfiniiVisionChannel", "KeysightInfiniiVision", "WaveformPreamble"]
