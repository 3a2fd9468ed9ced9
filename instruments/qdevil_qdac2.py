"""QDevil (Quantum Machines) QDAC-II: 24-channel precision DAC, +/-10 V, 1 MS/s per channel.

Implements the :class:`~instruments.roles.DacBank` role.

Safety. Each channel may hold :class:`~instruments.errors.ChannelLimits` (:meth:`QDac2.set_limits`).
Every path that can put a voltage on a channel checks it first and raises
:class:`~instruments.errors.LimitError` before anything is written:

- DC level (:meth:`QDac2.set_voltage`, ``channel.voltage = v``, :meth:`QDac2.ramp_to`):
  ``min_v <= v <= max_v``; on a limited channel the DC slew is written as the limit first, so a
  DC step is slew-limited by the hardware.
- DC slew (``channel.slew``): ``0 < slew <= max_slew_v_per_s``.
- Sines (:meth:`QDac2.start_sines`): the channel's DC level (set point and present output)
  +/- amplitude within limits, and the steepest slope ``2*pi*f*amplitude <= max slew``.
- Traces (:meth:`QDac2.play_traces`): DC level + every sample within limits, and every step
  between consecutive 1 us points ``|dv| <= max_slew * 1 us``; the AWG slew is set to the limit.

A check that needs the DC level reads it first (queries only); nothing is written before every
check passed. Channels without limits are held to the hardware range (+/-2 V in the low range,
+/-10 V in the high range).

The sine, square, triangle and AWG generators *add* to the channel's DC level, as on the
instrument.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pymeasure.instruments import Channel, Instrument, SCPIMixin

from instruments.common import (
    ErrorCheckingMixin,
    choice_control,
    choice_validator,
    format_number,
    jsonable,
    lower_reply,
    parse_bool,
    poll_until,
    strict_int_range,
    strip_quotes,
    temporary_timeout,
    visa_kwargs,
    write_binary_values,
)
from instruments.errors import ChannelLimits, GeneratorStateError, LimitError
from instruments.roles import FloatArray, TriggerSource

CHANNEL_COUNT = 24
LOW_RANGE_V = 2.0
HIGH_RANGE_V = 10.0
MIN_SLEW_V_PER_S = 0.01
MAX_SLEW_V_PER_S = 2e7
#: Every generator plays at 1 MS/s: one trace point lasts 1 us.
SAMPLE_RATE_HZ = 1e6
MAX_SINE_FREQUENCY_HZ = 5e5
TRIGGER_OUTPUTS = (1, 2, 3, 4, 5)
INTERNAL_TRIGGERS = range(1, 15)
MAX_REPETITIONS = 2**31 - 1  # trace repetitions and sine periods per trigger
#: ``*RST`` takes seconds on the instrument.
RESET_TIMEOUT_S = 15.0
_GENERATOR_TRIGGERS: dict[str, str] = {"immediate": "bus", "bus": "bus", "external": "ext1"}
#: The generators that add to a channel's DC level, as the instrument names them.
WAVE_GENERATORS = ("sine", "squ", "tri")
ADDING_GENERATORS = (*WAVE_GENERATORS, "awg")
_TRIGGER_SOURCE_WORDS = (
    "imm",
    "bus",
    "hold",
    *(f"int{k}" for k in INTERNAL_TRIGGERS),
    *(f"ext{k}" for k in range(1, 5)),
)


def _generator_trigger(trigger: TriggerSource) -> str:
    try:
        return _GENERATOR_TRIGGERS[trigger]
    except KeyError:
        raise ValueError(f"trigger {trigger!r}: one of {list(_GENERATOR_TRIGGERS)}") from None


def _mode_reply(reply: str) -> str:
    word = reply.strip().lower()
    for mode in ("fix", "swe", "list"):
        if word.startswith(mode):
            return mode
    return word


def _count_reply(reply: Any) -> float | int:
    value = float(reply)
    return value if math.isinf(value) else int(value)


class QDac2Channel(Channel):
    """One output channel ``sour{n}`` of the QDAC-II.

    Settings that move the output (``voltage``, ``slew``) go through the parent's limit checks.
    Sine and AWG amplitudes are read-only here: set them with :meth:`QDac2.start_sines`,
    :meth:`QDac2.configure_sine` or :meth:`QDac2.play_traces`, which check the limits.
    """

    mode = Instrument.measurement(
        "sour{ch}:volt:mode?",
        """Get the DC generator mode: 'fix', 'swe' (sweep) or 'list'. Read-only here: this
        driver writes no sweep or list values, so it cannot check them against the limits.""",
        get_process=_mode_reply,
        cast=str,
    )

    output_range = choice_control(
        "sour{ch}:rang?",
        "sour{ch}:rang %s",
        """Control the output range: 'low' (+/-2 V) or 'high' (+/-10 V). Change it at 0 V.""",
        ("low", "high"),
        reply=lower_reply,
    )

    filter = choice_control(
        "sour{ch}:filt?",
        "sour{ch}:filt %s",
        """Control the output low-pass filter: 'dc' (~10 Hz), 'med' (~10 kHz) or 'high'
        (~300 kHz).""",
        ("dc", "med", "high"),
        reply=lower_reply,
    )

    last_voltage = Instrument.measurement(
        "sour{ch}:volt:last?",
        """Measure the last DC level written, in V (float).""",
    )

    sine_frequency = Instrument.measurement(
        "sour{ch}:sine:freq?", """Get the sine generator frequency in Hz (float)."""
    )
    sine_span = Instrument.measurement(
        "sour{ch}:sine:span?", """Get the sine generator peak-to-peak span in V (float)."""
    )
    sine_offset = Instrument.measurement(
        "sour{ch}:sine:offs?", """Get the sine generator offset in V (float)."""
    )
    sine_count = Instrument.measurement(
        "sour{ch}:sine:coun?",
        """Get the number of sine periods per trigger (int, -1 or inf = forever).""",
        get_process=_count_reply,
    )

    sine_trigger_source = choice_control(
        "sour{ch}:sine:trig:sour?",
        "sour{ch}:sine:trig:sour %s",
        """Control the sine trigger source: 'imm', 'bus', 'hold', 'int1'..'int14',
        'ext1'..'ext4'.""",
        _TRIGGER_SOURCE_WORDS,
        reply=lower_reply,
    )

    sine_continuous = Instrument.measurement(
        "sour{ch}:sine:init:cont?",
        """Get whether the sine re-arms after each run (bool). Read-only here: switching it on
        would start the sine with settings this driver has not checked.""",
        get_process=parse_bool,
        cast=str,
    )

    awg_trace = Instrument.measurement(
        "sour{ch}:awg:def?",
        """Get the name of the trace bound to the channel's AWG (str).""",
        get_process=strip_quotes,
        cast=str,
    )
    awg_scale = Instrument.measurement(
        "sour{ch}:awg:scal?", """Get the AWG scale factor (float)."""
    )
    awg_offset = Instrument.measurement(
        "sour{ch}:awg:offs?", """Get the AWG offset in V (float)."""
    )

    awg_count = Instrument.control(
        "sour{ch}:awg:coun?",
        "sour{ch}:awg:coun %d",
        """Control the repetitions of the trace per trigger (int, 1 to 2**31-1).""",
        validator=strict_int_range,
        values=(1, MAX_REPETITIONS),
        get_process=_count_reply,
        check_set_errors=True,
    )

    awg_trigger_source = choice_control(
        "sour{ch}:awg:trig:sour?",
        "sour{ch}:awg:trig:sour %s",
        """Control the AWG trigger source: 'imm', 'bus', 'hold', 'int1'..'int14',
        'ext1'..'ext4'.""",
        _TRIGGER_SOURCE_WORDS,
        reply=lower_reply,
    )

    @property
    def voltage(self) -> float:
        """Control the DC output in V (float; the present output, mid-ramp if ramping).

        Setting checks the channel's limits (or the hardware range) first, see
        :meth:`QDac2.set_voltage`.
        """
        return float(self.ask("sour{ch}:volt?"))

    @voltage.setter
    def voltage(self, value: float) -> None:
        self.parent.set_voltage(self.id, value)

    @property
    def slew(self) -> float:
        """Control the DC slew rate in V/s (float, 0.01 to 2e7, or ``math.inf``; at most the
        channel's ``max_slew_v_per_s`` when it has limits)."""
        return float(self.ask("sour{ch}:volt:slew?"))

    @slew.setter
    def slew(self, value: float) -> None:
        self.parent.set_slew(self.id, value)

    # Generators are armed only through the parent (start_sines, configure_sine, play_traces),
    # which check what they add to the DC level; stopping one is always allowed.
    def sine_abort(self) -> None:
        """Stop the sine generator (``sour{n}:sine:abor``)."""
        self.write("sour{ch}:sine:abor")
        self.parent._armed.get(self.id, {}).pop("sine", None)
        self.check_set_errors()

    def awg_abort(self) -> None:
        """Stop the AWG (``sour{n}:awg:abor``)."""
        self.write("sour{ch}:awg:abor")
        self.parent._armed.get(self.id, {}).pop("awg", None)
        self.check_set_errors()


class QDac2(ErrorCheckingMixin, SCPIMixin, Instrument):
    """QDevil QDAC-II, 24 channels.

    :param adapter: VISA resource name or PyMeasure adapter.
    :param name: name used in logs and error messages.
    :param kwargs: passed to the VISA adapter (e.g. ``visa_library="@py"``, ``timeout``).
    """

    channels = Instrument.MultiChannelCreator(QDac2Channel, tuple(range(1, CHANNEL_COUNT + 1)))

    error_query = "syst:err:all?"
    error_queue_depth = 1  # syst:err:all? returns (and clears) every entry at once
    channels_description = "the QDAC-II has channels 1..24"

    def __init__(self, adapter: Any, name: str = "QDAC-II", **kwargs: Any) -> None:
        super().__init__(adapter, name, **visa_kwargs(kwargs, timeout_ms=5_000))
        self._limits: dict[int, ChannelLimits] = {}
        # What play_traces last uploaded and armed (None: nothing known to be loaded).
        self._uploaded: tuple[object, ...] | None = None
        # What this driver armed on each channel: generator ("sine"/"awg") -> the (low, high)
        # it adds to the DC level. Armed counts as running until stop_generators(): a bus-armed
        # trace plays on top of whatever DC level the channel has when the trigger comes.
        self._armed: dict[int, dict[str, tuple[float, float]]] = {}

    # ------------------------------------------------------------------ basics
    @property
    def channel_count(self) -> int:
        """Get the number of output channels (24)."""
        return CHANNEL_COUNT

    def check_errors(self, context: str | None = None) -> None:
        """Read ``syst:err:all?``; raise ``InstrumentReportedError`` if it held an error."""
        super().check_errors(context)

    def reset(self) -> None:
        """Reset (``*RST``) and wait until the instrument answers ``*OPC?`` again.

        ``*RST`` steps every output to 0 V at once: limited channels are first ramped to 0 V
        at their slew limit (``LimitError``, nothing written, if 0 V is outside a channel's
        limits).
        """
        for channel in self._limits:
            # generators are stopped before the ramp to 0 V: only the level counts here
            self._check_level(channel, 0.0, "reset level", generators={})
        if self._limits:
            self.stop_generators()
            self.ramp_to(dict.fromkeys(self._limits, 0.0))
        self._uploaded = None
        self._armed.clear()
        self.write("*RST")
        with temporary_timeout(self, RESET_TIMEOUT_S):
            self.ask("*OPC?")

    def channel(self, channel: int) -> QDac2Channel:
        """The channel object for output ``channel`` (1..24); raise ``ValueError`` otherwise."""
        return self._channel(channel)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ limits
    def set_limits(self, channel: int, limits: object) -> None:
        """Install the safety limits of ``channel`` (a ``ChannelLimits``, or None to remove).

        Nothing is written to the instrument. The limits must fit the hardware (+/-10 V,
        0.01 V/s <= max slew) and ``safe_v`` must lie within them.
        """
        self.channel(channel)
        if limits is None:
            self._limits.pop(channel, None)
            return
        if not isinstance(limits, ChannelLimits):
            raise TypeError(f"limits for channel {channel}: expected ChannelLimits, got {limits!r}")
        if not -HIGH_RANGE_V <= limits.min_v <= limits.max_v <= HIGH_RANGE_V:
            raise ValueError(
                f"limits for channel {channel}: [{limits.min_v}, {limits.max_v}] V must be an "
                f"interval within +/-{HIGH_RANGE_V:g} V"
            )
        if not limits.max_slew_v_per_s >= MIN_SLEW_V_PER_S:
            raise ValueError(
                f"limits for channel {channel}: max slew {limits.max_slew_v_per_s} V/s is below "
                f"the QDAC-II minimum {MIN_SLEW_V_PER_S} V/s"
            )
        limits.check(limits.safe_v, "safe voltage")
        self._limits[channel] = limits

    def limits(self, channel: int) -> ChannelLimits | None:
        """The limits installed for ``channel``, or None."""
        self.channel(channel)
        return self._limits.get(channel)

    def _label(self, channel: int) -> str:
        limits = self._limits.get(channel)
        label = f"QDAC-II channel {channel}"
        return f"{limits.label} ({label})" if limits is not None and limits.label else label

    def _check_hardware_level(self, channel: int, low: float, high: float, what: str) -> None:
        """Levels in ``[low, high]`` must fit the output range (queried only if it matters)."""
        for value in (low, high):
            if not -HIGH_RANGE_V <= value <= HIGH_RANGE_V:  # also NaN
                raise LimitError(
                    f"{self._label(channel)} {what}",
                    value,
                    -HIGH_RANGE_V,
                    HIGH_RANGE_V,
                    "V",
                    "QDAC-II high range",
                )
        if max(abs(low), abs(high)) > LOW_RANGE_V and self.channel(channel).output_range == "low":
            bad = high if abs(high) > abs(low) else low
            raise LimitError(
                f"{self._label(channel)} {what}",
                bad,
                -LOW_RANGE_V,
                LOW_RANGE_V,
                "V",
                "QDAC-II low range",
            )

    def generator_state(
        self,
        channels: Sequence[int] | None = None,
        known: Mapping[int, Mapping[str, tuple[float, float]]] | None = None,
    ) -> dict[int, dict[str, tuple[float, float]]]:
        """Ask the instrument what drives each of ``channels`` (default all 24) besides its DC
        level: ``{channel: {generator: (low, high)}}`` for every sine, square, triangle or AWG
        that is playing (cycles left) or continuously armed, with what it adds to the DC level
        at worst (from the generator's own settings). A DC generator in sweep or list mode
        appears as ``"swe"``/``"list"`` with ``(nan, nan)``: its levels are not known here.

        One compound query for the state, and one more per generator found running (but those
        in ``known``, whose excursion is taken from there); nothing is written. Generators
        started by another process (or before a crash) are found too.
        """
        numbers = list(range(1, CHANNEL_COUNT + 1)) if channels is None else list(channels)
        for channel in numbers:
            self.channel(channel)
        if not numbers:
            return {}
        where = f"(@{','.join(str(c) for c in numbers)})"
        queries = [f"sour:volt:mode? {where}"]
        queries += [f"sour:{g}:ncl? {where}" for g in ADDING_GENERATORS]
        queries += [f"sour:{g}:init:cont? {where}" for g in ADDING_GENERATORS]
        reply = str(self.ask(";:".join(queries))).strip()
        parts = [part.split(",") for part in reply.split(";")]
        if len(parts) != len(queries) or any(len(p) != len(numbers) for p in parts):
            raise GeneratorStateError(
                f"{self.name}: unexpected generator state reply {reply!r} for {where}"
            )
        kinds = len(ADDING_GENERATORS)
        state: dict[int, dict[str, tuple[float, float]]] = {}
        for i, channel in enumerate(numbers):
            found: dict[str, tuple[float, float]] = {}
            mode = _mode_reply(parts[0][i])
            if mode != "fix":
                found[mode] = (math.nan, math.nan)
            for k, generator in enumerate(ADDING_GENERATORS):
                cycles = float(parts[1 + k][i])
                continuous = parse_bool(parts[1 + kinds + k][i])
                if cycles != 0 or continuous:
                    given = (known or {}).get(channel, {}).get(generator)
                    if given is None:
                        given = self._generator_excursion(channel, generator)
                    found[generator] = given
            state[channel] = found
        return state

    def _generator_excursion(self, channel: int, generator: str) -> tuple[float, float]:
        """What ``generator`` of ``channel`` adds to the DC level at worst, from its settings
        on the instrument (queries only). Squares and triangles are bounded by offset +/- span
        (whatever their type and polarity), sines by offset +/- span/2."""
        if generator in WAVE_GENERATORS:
            prefix = f"sour{channel}:{generator}"
            span, offset = (
                float(x) for x in str(self.ask(f"{prefix}:span?;:{prefix}:offs?")).split(";")
            )
            half = span / 2.0 if generator == "sine" else span
            return offset - abs(half), offset + abs(half)
        prefix = f"sour{channel}:awg"
        reply = str(self.ask(f"{prefix}:def?;:{prefix}:scal?;:{prefix}:offs?"))
        quoted, scale, shift = reply.split(";")
        name = strip_quotes(quoted)
        if not name:
            return 0.0, 0.0
        values = np.array(
            [float(x) for x in str(self.ask(f'trac:data? "{name}"')).split(",") if x.strip()]
        )
        if values.size == 0:
            return 0.0, 0.0
        ends = float(scale) * np.array([values.min(), values.max()]) + float(shift)
        return float(ends.min()), float(ends.max())

    def _generators(self, channels: Sequence[int]) -> dict[int, dict[str, tuple[float, float]]]:
        """What drives each limited channel of ``channels`` besides its DC level: what this
        driver armed (exact, and counted while armed but not yet triggered), and what the
        instrument says is running that this driver did not start. Channels without limits
        are held to the hardware range only and are not asked about."""
        limited = [c for c in dict.fromkeys(channels) if c in self._limits]
        state = self.generator_state(limited, self._armed) if limited else {}
        merged: dict[int, dict[str, tuple[float, float]]] = {}
        for channel in dict.fromkeys(channels):
            ours = dict(self._armed.get(channel, {}))
            theirs = {g: span for g, span in state.get(channel, {}).items() if g not in ours}
            merged[channel] = {**ours, **theirs}
        return merged

    def _armed_excursion(
        self,
        channel: int,
        leave_out: str = "",
        generators: Mapping[int, Mapping[str, tuple[float, float]]] | None = None,
    ) -> tuple[float, float]:
        """What the generators on ``channel`` (but ``leave_out``) can add to its DC level at
        worst: the sums of their lows and of their highs. ``generators`` is what
        :meth:`_generators` found (default: only what this driver armed)."""
        on_channel = (generators or {}).get(channel, self._armed.get(channel, {}))
        for name in on_channel:
            if name in ("swe", "list") and name != leave_out:
                raise GeneratorStateError(
                    f"{self._label(channel)}: the DC generator is in {name!r} mode, which this "
                    f"driver did not set up, so no limit check can bound the level; stop it "
                    f"first (stop_generators() and 'sour{channel}:volt:mode fix')"
                )
        armed = [span for name, span in on_channel.items() if name != leave_out]
        return sum(low for low, _ in armed), sum(high for _, high in armed)

    def _check_level(
        self,
        channel: int,
        value: float,
        what: str = "voltage",
        generators: Mapping[int, Mapping[str, tuple[float, float]]] | None = None,
    ) -> None:
        """Raise ``LimitError`` unless DC level ``value`` is allowed on ``channel``, with what
        its generators add on top (``generators``: see :meth:`_generators`; default: ask the
        instrument). Queries only, no writes."""
        limits = self._limits.get(channel)
        if limits is not None:
            limits.check(value, f"(QDAC-II channel {channel}) {what}")
        if generators is None:
            generators = self._generators([channel])
        low, high = self._armed_excursion(channel, generators=generators)
        if limits is not None and (low, high) != (0.0, 0.0):
            names = "+".join(generators.get(channel, {}))
            for extreme in (value + low, value + high):
                limits.check(extreme, f"(QDAC-II channel {channel}) {what} + armed {names}")
        self._check_hardware_level(channel, value + low, value + high, what)

    def _check_slew(self, channel: int, slew: float, what: str = "slew rate") -> float:
        """Return the slew to write; raise ``LimitError`` if it is not allowed (no writes)."""
        limits = self._limits.get(channel)
        if limits is not None:
            limits.check_slew(slew, f"(QDAC-II channel {channel}) {what}")
        if math.isinf(slew) and slew > 0:
            return slew
        if not MIN_SLEW_V_PER_S <= slew <= MAX_SLEW_V_PER_S:
            raise LimitError(
                f"{self._label(channel)} {what}",
                slew,
                MIN_SLEW_V_PER_S,
                MAX_SLEW_V_PER_S,
                "V/s",
                "QDAC-II slew range",
            )
        return slew

    def _limit_slew(self, channel: int) -> float | None:
        """The slew a limited channel is held to (its limit, capped at the hardware maximum)."""
        limits = self._limits.get(channel)
        if limits is None:
            return None
        return min(limits.max_slew_v_per_s, MAX_SLEW_V_PER_S)

    def _dc_levels(self, channel: int) -> tuple[float, float]:
        """The DC set point and the present DC output of ``channel`` (queries)."""
        present = float(self.ask(f"sour{channel}:volt?"))
        target = float(self.ask(f"sour{channel}:volt:last?"))
        return present, target

    def _check_added_levels(
        self,
        channel: int,
        low: float,
        high: float,
        what: str,
        generator: str,
        generators: Mapping[int, Mapping[str, tuple[float, float]]] | None = None,
    ) -> None:
        """Check DC + [low, high] (``generator``'s excursion, with whatever the channel's other
        generators add: ``generators``, see :meth:`_generators`; default: ask the instrument)
        against the limits and the range."""
        if generators is None:
            generators = self._generators([channel])
        other_low, other_high = self._armed_excursion(channel, generator, generators)
        low, high = low + other_low, high + other_high
        limits = self._limits.get(channel)
        if limits is None:
            self._check_hardware_level(channel, low, high, what)
            return
        # Without the DC level nothing can pass that could not fit the limits at all.
        if high - low > limits.max_v - limits.min_v:
            raise LimitError(
                f"{self._label(channel)} {what} span",
                high - low,
                0.0,
                limits.max_v - limits.min_v,
                "V",
                limits.source,
            )
        for dc in self._dc_levels(channel):
            limits.check(dc + low, f"(QDAC-II channel {channel}) DC {dc:.6g} V + {what}")
            limits.check(dc + high, f"(QDAC-II channel {channel}) DC {dc:.6g} V + {what}")
            self._check_hardware_level(channel, dc + low, dc + high, f"DC + {what}")

    # ------------------------------------------------------------------ DC
    def set_voltage(self, channel: int, value: float) -> None:
        """Set the DC level of ``channel`` in V after checking it.

        On a limited channel the DC slew is first set to the channel's slew limit.
        """
        self.channel(channel)
        value = float(value)
        self._check_level(channel, value)
        slew = self._limit_slew(channel)
        if slew is not None:
            self.write(f"sour{channel}:volt:slew {format_number(slew)}")
        self.write(f"sour{channel}:volt {format_number(value)}")
        self.check_errors()

    def set_slew(self, channel: int, slew_v_per_s: float) -> None:
        """Set the DC slew of ``channel`` in V/s after checking it (``math.inf`` = no limit)."""
        self.channel(channel)
        slew = self._check_slew(channel, float(slew_v_per_s))
        self.write(f"sour{channel}:volt:slew {format_number(slew).lower()}")
        self.check_errors()

    def get_voltage(self, channel: int) -> float:
        """The channel's present DC output in V (``sour{n}:volt?``)."""
        return self.channel(channel).voltage

    def ramp_to(
        self,
        voltages: Mapping[int, float],
        timeout_s: float = 60.0,
        slew_v_per_s: float | None = None,
        tolerance_v: float = 5e-5,
    ) -> None:
        """Move channels to new DC levels and wait until every one is there.

        Each channel slews at ``min(slew_v_per_s, its slew limit)``; a channel with neither
        keeps the slew the instrument has. All levels and slews are checked before anything is
        written. Then the slews and levels are written and ``*OPC?`` plus ``sour{n}:volt?`` are
        polled until each output is within ``tolerance_v`` of its target.

        :raises LimitError: a level or slew is not allowed (nothing written).
        :raises TimeoutError: not there within ``timeout_s``.
        """
        targets = {int(ch): float(v) for ch, v in voltages.items()}
        slews: dict[int, float] = {}
        for channel, value in targets.items():
            self.channel(channel)
            limits = self._limits.get(channel)
            if limits is not None:  # a bad level is refused before asking the instrument
                limits.check(value, f"(QDAC-II channel {channel}) ramp target")
        generators = self._generators(list(targets))
        for channel, value in targets.items():
            self._check_level(channel, value, "ramp target", generators)
            candidates = [s for s in (slew_v_per_s, self._limit_slew(channel)) if s is not None]
            if candidates:
                slews[channel] = self._check_slew(channel, min(candidates), "ramp slew")
        for channel, value in targets.items():
            if channel in slews:
                self.write(f"sour{channel}:volt:slew {format_number(slews[channel]).lower()}")
            self.write(f"sour{channel}:volt {format_number(value)}")
        self.check_errors(context=f"ramp_to({targets})")
        pending = dict(targets)

        def arrived() -> bool:
            self.ask("*OPC?")
            for channel in list(pending):
                if abs(float(self.ask(f"sour{channel}:volt?")) - pending[channel]) <= tolerance_v:
                    del pending[channel]
            return not pending

        try:
            poll_until(arrived, timeout_s, f"{self.name}: ramp")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; channels not at target: {sorted(pending)}") from None

    # ------------------------------------------------------------------ sines
    def _check_sine(
        self, channel: int, frequency_hz: float, amplitude_v: float, offset_v: float
    ) -> None:
        """Checks of one sine that need no I/O; raise ValueError/LimitError."""
        self.channel(channel)
        if not 0.0 < frequency_hz <= MAX_SINE_FREQUENCY_HZ:
            raise ValueError(
                f"sine on channel {channel}: {frequency_hz!r} Hz is outside "
                f"(0, {MAX_SINE_FREQUENCY_HZ:g}] Hz"
            )
        if not 0.0 <= amplitude_v <= HIGH_RANGE_V:
            raise ValueError(f"sine on channel {channel}: amplitude {amplitude_v!r} V")
        if not math.isfinite(offset_v):
            raise ValueError(f"sine on channel {channel}: offset {offset_v!r} V")
        limits = self._limits.get(channel)
        if limits is not None:
            if 2.0 * amplitude_v > limits.max_v - limits.min_v:  # fits nowhere: no I/O needed
                raise LimitError(
                    f"{self._label(channel)} sine span",
                    2.0 * amplitude_v,
                    0.0,
                    limits.max_v - limits.min_v,
                    "V",
                    limits.source,
                )
            # Steepest slope of A*sin(2*pi*f*t) is 2*pi*f*A.
            limits.check_slew(
                max(2.0 * math.pi * frequency_hz * amplitude_v, 1e-300),
                f"(QDAC-II channel {channel}) sine slope 2*pi*f*A",
            )

    def configure_sine(
        self,
        channel: int,
        frequency_hz: float,
        amplitude_v: float,
        offset_v: float = 0.0,
        count: int = -1,
        trigger: str = "bus",
    ) -> None:
        """Set up (not start) the sine generator of ``channel``, limits checked first.

        :param amplitude_v: half the peak-to-peak span, V.
        :param offset_v: generator offset added to the DC level, V.
        :param count: periods per trigger, -1 forever.
        :param trigger: QDAC trigger source word ('bus', 'imm', 'int3', 'ext1', ...).
        """
        source = choice_validator(trigger, _TRIGGER_SOURCE_WORDS)
        periods = strict_int_range(count, (-1, MAX_REPETITIONS))
        if periods == 0:
            raise ValueError("sine count: -1 (forever) or at least 1 period")
        self._check_sine(channel, frequency_hz, amplitude_v, offset_v)
        excursion = (offset_v - amplitude_v, offset_v + amplitude_v)
        self._check_added_levels(channel, *excursion, "sine excursion", "sine")
        self._write_sine(channel, frequency_hz, amplitude_v, offset_v, periods, source)
        self._armed.setdefault(channel, {})["sine"] = excursion
        self.check_errors(context=f"configure_sine(channel={channel})")

    def _write_sine(
        self,
        channel: int,
        frequency_hz: float,
        amplitude_v: float,
        offset_v: float,
        count: int,
        source: str,
    ) -> None:
        prefix = f"sour{channel}:sine"
        self.write(f"{prefix}:abor")
        self.write(f"{prefix}:freq {format_number(frequency_hz)}")
        self.write(f"{prefix}:span {format_number(2.0 * amplitude_v)}")
        self.write(f"{prefix}:offs {format_number(offset_v)}")
        slew = self._limit_slew(channel)
        if slew is not None:
            self.write(f"{prefix}:slew {format_number(slew)}")
        self.write(f"{prefix}:coun {count}")
        self.write(f"{prefix}:trig:sour {source}")

    def start_sines(
        self,
        sines: Mapping[int, tuple[float, float]],
        trigger: TriggerSource = "bus",
    ) -> None:
        """Add sines ``{channel: (frequency_hz, amplitude_v)}`` on top of the DC levels.

        Every sine is checked before anything is written. Sines run forever (count -1), start
        at phase 0 and are armed on the bus trigger; ``trigger="immediate"`` fires ``*trg``
        at once (so all start together), ``"bus"`` waits for :meth:`trigger`, ``"external"``
        starts on external trigger input 1.
        """
        source = _generator_trigger(trigger)
        plan = {int(ch): (float(f), float(a)) for ch, (f, a) in sines.items()}
        for channel, (frequency, amplitude) in plan.items():
            self._check_sine(channel, frequency, amplitude, 0.0)
        generators = self._generators(list(plan))
        for channel, (_, amplitude) in plan.items():
            self._check_added_levels(
                channel, -amplitude, amplitude, "sine excursion", "sine", generators
            )
        for channel, (frequency, amplitude) in plan.items():
            self._write_sine(channel, frequency, amplitude, 0.0, -1, source)
            self._armed.setdefault(channel, {})["sine"] = (-amplitude, amplitude)
            self.write(f"sour{channel}:sine:init")
        self.check_errors(context=f"start_sines({sorted(plan)})")
        if trigger == "immediate":
            self.trigger()

    # ------------------------------------------------------------------ traces
    def _checked_trace(self, trace: npt.ArrayLike, channel: int) -> FloatArray:
        data = np.asarray(trace, dtype=float)
        if data.ndim != 1 or data.size == 0:
            raise ValueError(f"trace for channel {channel}: a non-empty 1-D array")
        if not np.all(np.isfinite(data)):
            raise ValueError(f"trace for channel {channel}: samples must be finite")
        return data

    @staticmethod
    def _upsample(data: FloatArray, sample_rate_hz: float) -> FloatArray:
        # Linear interpolation onto the 1 us grid: a trace given at a lower rate describes a
        # smooth signal, and interpolating keeps its real slope (sample-and-hold would turn a
        # gentle ramp into steps far steeper than any slew limit). The last sample is held for
        # its own sample period.
        repeat = round(SAMPLE_RATE_HZ / sample_rate_hz)
        if repeat == 1:
            return data
        fine = np.arange(data.size * repeat) / repeat
        return np.interp(fine, np.arange(data.size), data)

    def play_traces(
        self,
        traces: Mapping[int, FloatArray],
        sample_rate_hz: float,
        trigger: TriggerSource = "bus",
        marker_output: int | None = 1,
    ) -> float:
        """Load equal-length voltage sequences on several channels, armed to start together.

        The QDAC-II plays every trace at 1 MS/s: a lower ``sample_rate_hz`` must divide 1 MHz
        exactly, and the trace is interpolated linearly onto the 1 us grid (the last sample held
        for its period).
        The traces add to the channels' DC levels. With ``marker_output`` the first channel's
        AWG emits internal trigger 1 at start, routed to that trigger output (1..5).

        :returns: the playback duration in s.
        :raises LimitError: a sample or a step between samples is not allowed (nothing written).
        """
        if not traces:
            raise ValueError("play_traces: no traces given")
        if not 0.0 < sample_rate_hz <= SAMPLE_RATE_HZ:
            raise ValueError(f"sample rate {sample_rate_hz!r} Hz: at most 1 MHz")
        repeat = SAMPLE_RATE_HZ / sample_rate_hz
        if abs(repeat - round(repeat)) > 1e-9 * repeat:
            raise ValueError(
                f"sample rate {sample_rate_hz:g} Hz does not divide the QDAC-II's 1 MHz"
            )
        source = _generator_trigger(trigger)
        if marker_output is not None and marker_output not in TRIGGER_OUTPUTS:
            raise ValueError(f"marker output {marker_output!r}: one of {list(TRIGGER_OUTPUTS)}")
        # Checks and the upload key work on the traces as given: linear interpolation onto
        # the 1 us grid keeps every value inside the samples' range and the steepest slope
        # (a step dv per given sample is dv * rate per second either way). Upsampling waits
        # until an upload is really needed.
        given: dict[int, FloatArray] = {}
        for ch, trace in traces.items():
            channel = int(ch)
            self.channel(channel)
            given[channel] = self._checked_trace(trace, channel)
        lengths = {data.size * round(repeat) for data in given.values()}
        if len(lengths) != 1:
            raise ValueError(f"play_traces: traces differ in length {sorted(lengths)}")
        for channel, data in given.items():
            limits = self._limits.get(channel)
            if limits is not None and data.size > 1:
                steepest = float(np.max(np.abs(np.diff(data)))) * sample_rate_hz
                # Tolerate float rounding of the differences (1e-9 relative), nothing more.
                if steepest > limits.max_slew_v_per_s * (1 + 1e-9):
                    limits.check_slew(steepest, f"(QDAC-II channel {channel}) trace step per 1 us")
        generators = self._generators(list(given))
        for channel, data in given.items():
            self._check_added_levels(
                channel, float(data.min()), float(data.max()), "trace", "awg", generators
            )
        for channel, data in given.items():
            self._armed.setdefault(channel, {})["awg"] = (float(data.min()), float(data.max()))

        points = next(iter(lengths))
        # The same traces as last time, with the same trigger set-up: they are still in the
        # instrument's memory, bound to their channels; only re-arm them. (Limits were checked
        # above against today's DC levels all the same.) Uploading 1 MS/s traces is what costs
        # time on a real link.
        upload_key = (
            sample_rate_hz,
            tuple(
                (channel, hashlib.sha1(data.tobytes()).hexdigest())
                for channel, data in given.items()
            ),
            source,
            marker_output,
            tuple(self._limit_slew(channel) for channel in given),
        )
        if upload_key == self._uploaded:
            for channel in given:
                self.write(f"sour{channel}:awg:init")
            self.check_errors(context=f"play_traces({sorted(given)}) re-armed")
            if trigger == "immediate":
                self.trigger()
            return points / SAMPLE_RATE_HZ
        self._uploaded = None
        played = {channel: self._upsample(data, sample_rate_hz) for channel, data in given.items()}
        for channel in played:
            self.write(f"sour{channel}:awg:abor")
        self.write("trac:rem:all")
        for channel, data in played.items():
            name = f'"lr{channel}"'
            self.write(f"trac:def {name},{points}")
            write_binary_values(self, f"trac:data {name},", data.astype(np.float32), "f")
            prefix = f"sour{channel}:awg"
            self.write(f"{prefix}:def {name}")
            self.write(f"{prefix}:scal 1")
            self.write(f"{prefix}:offs 0")
            slew = self._limit_slew(channel)
            if slew is not None:
                self.write(f"{prefix}:slew {format_number(slew)}")
            self.write(f"{prefix}:coun 1")
            self.write(f"{prefix}:trig:sour {source}")
        if marker_output is not None:
            first = next(iter(played))
            self.write(f"sour{first}:awg:mark:star 1")
            self.write(f"outp:trig{marker_output}:sour int1")
        for channel in played:
            self.write(f"sour{channel}:awg:init")
        self.check_errors(context=f"play_traces({sorted(played)})")
        self._uploaded = upload_key
        if trigger == "immediate":
            self.trigger()
        return points / SAMPLE_RATE_HZ

    # ------------------------------------------------------------------ generators, triggers
    def stop_generators(self, channels: Sequence[int] | None = None) -> None:
        """Abort sines and trace playback on ``channels`` (all: ``abor``); DC levels stay."""
        if channels is None:
            self.write("abor")
            self._armed.clear()
        else:
            for channel in channels:
                self.channel(channel)
            for channel in channels:
                self.write(f"sour{channel}:sine:abor")
                self.write(f"sour{channel}:awg:abor")
                self._armed.pop(channel, None)
        self.check_errors(context="stop_generators")

    def trigger(self) -> None:
        """Fire the bus trigger (``*trg``)."""
        self.write("*trg")

    def fire_internal_trigger(self, k: int) -> None:
        """Fire internal trigger ``k`` (1..14, ``tint k``)."""
        self.write(f"tint {strict_int_range(k, (INTERNAL_TRIGGERS[0], INTERNAL_TRIGGERS[-1]))}")
        self.check_errors()

    def route_trigger_output(self, output: int, source: str) -> None:
        """Route ``source`` ('hold', 'bus', 'int1'..'int14', 'ext1'..'ext4') to trigger
        output ``output`` (1..5)."""
        number = strict_int_range(output, (TRIGGER_OUTPUTS[0], TRIGGER_OUTPUTS[-1]))
        self._uploaded = None  # the traces' marker routing may change
        word = choice_validator(source, tuple(w for w in _TRIGGER_SOURCE_WORDS if w != "imm"))
        self.write(f"outp:trig{number}:sour {word}")
        self.check_errors()

    # ------------------------------------------------------------------ role: safety, records
    def disarm_all(self) -> None:
        """Stop every generator on every channel, whoever started it: continuous re-arming off
        (a continuously armed generator survives ``abor`` and would start again on the next
        trigger), then ``abor``, and every DC generator back to fixed mode (a sweep or list
        stops where it is). DC levels stay where they are now."""
        everywhere = f"(@1:{CHANNEL_COUNT})"
        for generator in (*ADDING_GENERATORS, "dc"):
            self.write(f"sour:{generator}:init:cont off,{everywhere}")
        self.write("abor")
        self.write(f"sour:volt:mode fix,{everywhere}")
        self._armed.clear()

    def hold_levels(self, channels: Sequence[int] | None = None) -> dict[int, float]:
        """Stop every DC ramp on ``channels`` (default all) where it is now, and return the
        present levels ``{channel: V}``. A channel still slewing towards a level someone else
        set gets its present level as the new target: nothing moves, so nothing is checked
        against the limits (a level outside them is for the caller to judge)."""
        numbers = list(range(1, CHANNEL_COUNT + 1)) if channels is None else list(channels)
        levels: dict[int, float] = {}
        for channel in numbers:
            self.channel(channel)
            present, target = self._dc_levels(channel)
            if present != target:
                self.write(f"sour{channel}:volt {format_number(present)}")
            levels[channel] = present
        self.check_errors(context="hold_levels")
        return levels

    def safe_state(self) -> None:
        """Stop every generator (:meth:`disarm_all`), ramp each limited channel to its
        ``safe_v`` at its slew limit, and wait until there."""
        self.disarm_all()
        targets = {channel: limits.safe_v for channel, limits in self._limits.items()}
        if not targets:
            self.check_errors(context="safe_state")
            return
        # Worst case: a full sweep of the limit window at the slew limit, plus margin.
        timeout = max(
            (lim.max_v - lim.min_v) / lim.max_slew_v_per_s for lim in self._limits.values()
        )
        self.ramp_to(targets, timeout_s=1.5 * timeout + 5.0)

    def snapshot(self) -> dict[str, object]:
        """Every setting this driver knows (per channel: DC level, slew, range, filter, limits)."""
        settings: dict[str, object] = {"identity": self.identity}
        for number, ch in self.channels.items():
            limits = self._limits.get(number)
            settings[f"ch{number}"] = {
                "voltage": ch.voltage,
                "slew": ch.slew,
                "output_range": ch.output_range,
                "filter": ch.filter,
                "limits": None
                if limits is None
                else {
                    "min_v": limits.min_v,
                    "max_v": limits.max_v,
                    "max_slew_v_per_s": limits.max_slew_v_per_s,
                    "safe_v": limits.safe_v,
                    "label": limits.label,
                    "source": limits.source,
                },
            }
        return jsonable(settings)  # type: ignore[no-any-return]
