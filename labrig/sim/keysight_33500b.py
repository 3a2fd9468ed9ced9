"""Emulator of a Keysight/Agilent 33522B two-channel function/arbitrary waveform generator.

Use it on a bench like any other part; its output ports are what a cable from the front panel
would carry::

    bench = Bench()
    awg = Keysight33500BEmulator("awg", bench)
    bench.connect("scope.ch1", "awg.ch1")      # the scope sees channel 1's connector
    bench.connect("scope.ext", "awg.sync")     # and triggers on the Sync output
    awg.feed(b"SOUR1:DATA:ARB:DAC PULSE,0,0,32767,32767,0,0,-32767,0\\n")

Command set: the 33500B subset in the project's manual (``SOURce<n>:FUNCtion``, ``FREQuency``,
``VOLTage[:OFFSet|:HIGH|:LOW|:UNIT]``, ``PHASe``, ``FUNCtion:ARBitrary[:SRATe|:FILTer|:POINts?]``,
``DATA:ARBitrary[:DAC]`` with binary blocks or ASCII lists, ``DATA:VOLatile:CLEar|CATalog?|
FREE?``, ``DATA:ATTRibute:POINts?``, ``BURSt:*``, ``TRIGger<n>:*``, ``OUTPut<n>[:LOAD|:POLarity]``,
``OUTPut:SYNC[:SOURce]``, ``FORMat:BORDer``, ``APPLy``), short or long forms, any case, channel
suffix optional (channel 1). Replies follow the instrument: numbers as
``+1.000000000000000E+03``, booleans ``0``/``1``, enumerations in upper-case short form, the
selected arb quoted and upper-case, infinity as ``9.9E+37``.

Out-of-range numbers are clamped to the nearest legal value *and* reported as
``-222,"Data out of range;value clipped to upper limit"`` — what the instrument does. Arb errors
use standard SCPI codes (the 33500B's own +7xx/+8xx numbers are not confirmed): invalid name
-224, name already in use -221, too few/many points -224, sample outside -1..+1 or the DAC range
-222, no such arb -256, volatile memory full -225, malformed block -161.

Physics (what :meth:`output` returns):

- ``ch1``/``ch2``: the voltage at the connector. 0 V while the output relay is off. The amplitude
  and offset are the front-panel values *as displayed for the configured* ``OUTPut:LOAD``: the
  device on the bench is treated as presenting exactly that load, so the displayed voltage is the
  voltage it sees (a real 50 ohm source into a mismatched load would differ).
  ``v(t) = offset ± (Vpp / 2) · w(t)`` with ``w`` the normalised waveform in [-1, 1] (``-`` for
  ``OUTPut:POLarity INVerted``). Shapes: SIN, SQU (duty cycle), TRI, RAMP (symmetry), DC, ARB;
  PULS plays as a square, NOIS and PRBS as the offset only (not modelled).
- ARB playback: sample ``k`` of the selected waveform is held for ``1/SRATe`` seconds
  (zero-order hold) for every ``FUNCtion:ARBitrary:FILTer`` setting. The real NORMal filter
  interpolates smoothly between samples (-3 dB at 27 % of SRATe); at the sample centres both agree.
  ``FUNCtion:ARBitrary:ADVance TRIGger`` is stored but playback always advances at SRATe.
- Continuous mode (burst off): the waveform runs from its *origin*, the bench time at which the
  output was switched on or the function/arb was last selected (``PHASe:SYNChronize`` resets it).
- Burst mode, triggered: ``BURSt:NCYCles`` cycles start at each trigger time plus
  ``TRIGger:DELay`` (source BUS: ``*TRG``; EXTernal: an edge on input port ``ext``;
  ``TRIGger<n>[:IMMediate]`` always). Source IMMediate/TIMer: bursts repeat every
  ``BURSt:INTernal:PERiod`` (or ``TRIGger:TIMer``) from the origin. Between bursts the output
  idles at the waveform's value at the burst start phase (the first sample for an arb). Gated
  bursts are not modelled (the output idles). ``TRIGger:COUNt`` and ``SLOPe`` are stored only.
- ``sync``: a 0 / 3.3 V marker from the ``OUTPut:SYNC:SOURce`` channel: high for the first half of
  every cycle in continuous mode, high for the whole burst in burst mode; 0 V when
  ``OUTPut:SYNC OFF``. Each *triggered* burst of the sync source channel also fires the bench
  trigger event ``<name>.sync`` at the burst start, so a scope whose ``ext`` input is wired to it
  starts its acquisition at that instant.

Timing: triggers happen at the current bench time; ``*OPC?``, ``*OPC`` and ``*WAI`` advance the
bench clock to the end of the last triggered burst that is still playing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from labrig.sim.bench import Bench, FloatArray
from labrig.sim.emulator import ScpiEmulator
from labrig.sim.scpi import Args, Context, ScpiError, WriteHandler, format_nr3

__all__ = [
    "BUILTIN_ARB",
    "IDN",
    "Keysight33500BEmulator",
]

IDN = "Agilent Technologies,33522B,MY52600001,4.03-1.19-2.00-52-00"
CHANNELS = 2

#: The arb selected after *RST and reloaded by DATA:VOL:CLE.
BUILTIN_ARB = "INT:\\BUILTIN\\EXP_RISE.ARB"
BUILTIN_ARB_POINTS = 16384

#: Per-channel volatile arb memory, points (allocated in 128-point blocks). The 33522B has 1 MSa
#: per channel; taken as 2**20 so that one 1,000,000-point arb fits beside the built-in one.
MEMORY_POINTS = 1 << 20
MEMORY_BLOCK = 128
MIN_ARB_POINTS = 8
MAX_ARB_POINTS = 1_000_000
DAC_FULL_SCALE = 32767
NAME_MAX = 12
_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")

SOURCE_IMPEDANCE_OHM = 50.0
#: Output limits into 50 ohm (the displayed values at other loads scale with _display_gain).
MAX_VPP_50 = 10.0
MIN_VPP_50 = 1e-3
MAX_ABS_V_50 = 5.0
MAX_FREQUENCY_HZ = 30e6
MIN_FREQUENCY_HZ = 1e-6
MAX_SRATE = 250e6
MIN_SRATE = 1e-6
SYNC_HIGH_V = 3.3
INFINITY_REPLY = "9.9E+37"
#: Trigger sources whose bursts start on discrete events (the others repeat internally).
_EVENT_SOURCES = ("BUS", "EXT")
CLIPPED_HIGH = "Data out of range;value clipped to upper limit"
CLIPPED_LOW = "Data out of range;value clipped to lower limit"

# Pulse limits of the 33500B (manual, FUNCtion:PULSe subsystem): width >= 16 ns, edge times
# 8.4 ns .. 1 us; the defaults (100 us width, 10 ns edges) and the edge interlock are as widely
# used drivers and the 33500B help describe them (?): the width must leave room for the edges,
# 0.625 * (leading + trailing) <= width <= period - 0.625 * (leading + trailing).
PULSE_MIN_WIDTH_S = 16e-9
PULSE_EDGE_MIN_S = 8.4e-9
PULSE_EDGE_MAX_S = 1e-6
PULSE_EDGE_DEFAULT_S = 10e-9
PULSE_EDGE_FACTOR = 0.625
SETTINGS_CONFLICT = "Settings conflict"

FUNCTIONS = ["SINusoid", "SQUare", "TRIangle", "RAMP", "PULSe", "PRBS", "NOISe", "ARB", "DC"]
_SHORT = {
    "SINusoid": "SIN",
    "SQUare": "SQU",
    "TRIangle": "TRI",
    "RAMP": "RAMP",
    "PULSe": "PULS",
    "PRBS": "PRBS",
    "NOISe": "NOIS",
    "ARB": "ARB",
    "DC": "DC",
}
# Vrms per Vpp of each shape (peak-to-peak of a full-scale waveform is 2 in normalised units).
_RMS_PER_VPP = {
    "SIN": 1.0 / (2.0 * math.sqrt(2.0)),
    "SQU": 0.5,
    "PULS": 0.5,
    "TRI": 1.0 / (2.0 * math.sqrt(3.0)),
    "RAMP": 1.0 / (2.0 * math.sqrt(3.0)),
}


def _short(mnemonic: str) -> str:
    """``"INVerted"`` -> ``"INV"``: the reply form of an enumeration choice."""
    return "".join(c for c in mnemonic if not c.islower())


def _builtin_exp_rise() -> FloatArray:
    """The built-in EXP_RISE arb: ``1 - exp(-5 x)`` over one period, scaled to -1..+1."""
    x = np.arange(BUILTIN_ARB_POINTS) / BUILTIN_ARB_POINTS
    y = (1.0 - np.exp(-5.0 * x)) / (1.0 - math.exp(-5.0))
    return 2.0 * y - 1.0


def _display_gain(load_ohm: float) -> float:
    """Voltage across ``load_ohm`` relative to the 50-ohm-matched value: ``2 R / (R + 50)``."""
    if math.isinf(load_ohm):
        return 2.0
    return 2.0 * load_ohm / (load_ohm + SOURCE_IMPEDANCE_OHM)


def _blocks(points: int) -> int:
    return -(-points // MEMORY_BLOCK) * MEMORY_BLOCK


@dataclass
class AwgChannel:
    """The settings of one output channel (front-panel values, volts as displayed)."""

    function: str = "SIN"
    frequency_hz: float = 1e3
    amplitude_vpp: float = 0.1
    offset_v: float = 0.0
    unit: str = "VPP"
    range_auto: bool = True
    phase_deg: float = 0.0
    square_duty_pct: float = 50.0
    ramp_symmetry_pct: float = 100.0
    output_on: bool = False
    load_ohm: float = 50.0
    polarity: str = "NORM"
    sync_mode: str = "NORM"
    sync_polarity: str = "NORM"
    arb_name: str = BUILTIN_ARB
    arb_sample_rate: float = 40e3
    arb_filter: str = "NORM"
    arb_advance: str = "SRAT"
    burst_on: bool = False
    burst_mode: str = "TRIG"
    burst_cycles: float = 1.0  # math.inf for INFinity
    burst_period_s: float = 0.01
    burst_phase_deg: float = 0.0
    burst_gate_polarity: str = "NORM"
    trigger_source: str = "IMM"
    trigger_slope: str = "POS"
    trigger_delay_s: float = 0.0
    trigger_count: float = 1.0
    trigger_timer_s: float = 1e-3
    # FUNCtion:PULSe (the period is 1/frequency_hz); FREQuency:MODE
    pulse_width_s: float = 100e-6
    pulse_lead_s: float = PULSE_EDGE_DEFAULT_S
    pulse_trail_s: float = PULSE_EDGE_DEFAULT_S
    pulse_hold: str = "WIDT"
    frequency_mode: str = "CW"


@dataclass
class _Playback:
    """Run-time state that is not a setting: phase origin and triggered burst start times."""

    origin_s: float = 0.0
    burst_starts: list[float] = field(default_factory=list)

    #: Start times older than this many entries are forgotten (a burst that started that many
    #: triggers ago is long over for any realistic query).
    keep: int = 256

    def add_start(self, t: float) -> None:
        if self.burst_starts and t < self.burst_starts[-1]:
            self.burst_starts.append(t)
            self.burst_starts.sort()
        else:
            self.burst_starts.append(t)
        del self.burst_starts[: -self.keep]


class Keysight33500BEmulator(ScpiEmulator):
    """A 33522B on the virtual bench: SCPI front end, two output ports, a sync port.

    Ports: outputs ``ch1``, ``ch2`` (V at the connector) and ``sync`` (0/3.3 V marker); input
    ``ext`` (rear Ext Trig, an event). Fires ``<name>.sync`` at the start of each triggered burst
    of the sync source channel.
    """

    # 100 Mb/s LAN (SCPI socket): ~8 MB/s of payload, ~0.5 ms per message (estimates)
    link_bytes_per_s = 8e6
    message_latency_s = 0.5e-3

    def __init__(self, name: str, bench: Bench | None = None) -> None:
        self.channels: dict[int, AwgChannel] = {n: AwgChannel() for n in range(1, CHANNELS + 1)}
        self.playback: dict[int, _Playback] = {n: _Playback() for n in range(1, CHANNELS + 1)}
        # Volatile arb memory per channel: name -> normalised samples in [-1, 1].
        self.arbs: dict[int, dict[str, FloatArray]] = {
            n: {BUILTIN_ARB: _builtin_exp_rise()} for n in range(1, CHANNELS + 1)
        }
        self.byte_order = "NORM"
        self.sync_on = True
        self.sync_source = 1
        self.trigger_out_on = False
        self.trigger_out_slope = "POS"
        self.trigger_out_source = 1
        super().__init__(name, bench)

    # ------------------------------------------------------------------ base-class hooks
    def identity(self) -> str:
        return IDN

    def reset(self) -> None:
        """*RST: every setting to its default; volatile arbs and the error queue are kept."""
        now = self.bench.clock.now
        for n in self.channels:
            self.channels[n] = AwgChannel()
            self.playback[n] = _Playback(origin_s=now)
        self.byte_order = "NORM"
        self.sync_on = True
        self.sync_source = 1
        self.trigger_out_on = False
        self.trigger_out_slope = "POS"
        self.trigger_out_source = 1
        super().reset()

    def wait_pending(self) -> None:
        """*OPC?/*WAI: let bench time run to the end of the triggered bursts still playing."""
        end = self.bench.clock.now
        for n, ch in self.channels.items():
            starts = self.playback[n].burst_starts
            if ch.burst_on and starts and ch.trigger_source in _EVENT_SOURCES:
                finish = starts[-1] + ch.burst_cycles * self._period(n)
                if math.isfinite(finish):
                    end = max(end, finish)
        self.bench.clock.advance_to(end)

    def on_bus_trigger(self) -> None:
        """*TRG: trigger every channel whose trigger source is BUS (others ignore it)."""
        now = self.bench.clock.now
        for n, ch in self.channels.items():
            if ch.trigger_source == "BUS":
                self.trigger_channel(n, now)

    def on_trigger(self, port: str, t: float) -> None:
        """An edge on the rear Ext Trig input (port ``ext``) triggers channels with source EXT."""
        if port != "ext":
            return
        for n, ch in self.channels.items():
            if ch.trigger_source == "EXT":
                self.trigger_channel(n, t)

    def snapshot(self) -> dict[str, object]:
        snap = super().snapshot()
        snap["byte_order"] = self.byte_order
        snap["sync"] = {"on": self.sync_on, "source": self.sync_source}
        for n, ch in self.channels.items():
            snap[f"ch{n}"] = {f.name: getattr(ch, f.name) for f in fields(ch)}
            snap[f"ch{n}_arbs"] = {k: int(v.size) for k, v in self.arbs[n].items()}
        return snap

    # ------------------------------------------------------------------ triggering
    def trigger_channel(self, n: int, t: float) -> None:
        """Trigger channel ``n`` at bench time ``t``: a triggered burst starts at ``t + DELay``.

        Only channels in triggered burst mode with trigger source BUS or EXTernal respond;
        continuous channels ignore triggers and internally triggered bursts keep their own
        rhythm, as on the instrument.
        """
        ch = self.channels[n]
        if not ch.burst_on or ch.burst_mode != "TRIG" or ch.trigger_source not in _EVENT_SOURCES:
            return
        start = t + ch.trigger_delay_s
        self.playback[n].add_start(start)
        if self.sync_on and self.sync_source == n:
            self.bench.fire(f"{self.name}.sync", start)

    # ------------------------------------------------------------------ physics
    def _period(self, n: int) -> float:
        ch = self.channels[n]
        if ch.function == "ARB":
            return self._arb(n).size / ch.arb_sample_rate
        return 1.0 / ch.frequency_hz

    def _arb(self, n: int) -> FloatArray:
        return self.arbs[n].get(self.channels[n].arb_name, self.arbs[n][BUILTIN_ARB])

    def _shape(self, n: int, cycles: FloatArray) -> FloatArray:
        """Normalised waveform (-1..1) at phase ``cycles`` (in periods, any real number)."""
        ch = self.channels[n]
        frac = cycles - np.floor(cycles)
        f = ch.function
        if f == "SIN":
            return np.sin(2.0 * np.pi * cycles)
        if f == "SQU":
            return np.where(frac < ch.square_duty_pct / 100.0, 1.0, -1.0)
        if f == "PULS":
            return self._pulse_shape(ch, frac)
        if f == "TRI":
            # starts at 0 rising, peaks at 1/4, troughs at 3/4
            return 1.0 - 4.0 * np.abs(np.mod(cycles - 0.25, 1.0) - 0.5)
        if f == "RAMP":
            s = min(max(ch.ramp_symmetry_pct / 100.0, 1e-12), 1.0 - 1e-12)
            # rises over the first fraction s of the period, falls over the rest
            return np.where(frac < s, -1.0 + 2.0 * frac / s, 1.0 - 2.0 * (frac - s) / (1.0 - s))
        if f == "ARB":
            data = self._arb(n)
            # the tiny bias puts an instant that lies exactly on a sample boundary into the new
            # sample despite rounding in (t - origin) * srate
            k = np.floor(frac * data.size + 1e-6).astype(np.int64) % data.size
            return data[k]
        return np.zeros_like(cycles)  # DC, NOIS, PRBS: the offset only

    def _burst_window(self, n: int, t: FloatArray) -> tuple[FloatArray, np.ndarray]:
        """For each instant: the start of the burst it belongs to, and whether it is inside it."""
        ch = self.channels[n]
        pb = self.playback[n]
        duration = ch.burst_cycles * self._period(n)
        if ch.burst_mode != "TRIG":
            return np.full_like(t, np.nan), np.zeros(t.shape, dtype=bool)
        if ch.trigger_source in ("IMM", "TIM"):
            every = ch.burst_period_s if ch.trigger_source == "IMM" else ch.trigger_timer_s
            k = np.floor((t - pb.origin_s) / every)
            start = np.where(k >= 0, pb.origin_s + k * every, np.nan)
        else:
            if not pb.burst_starts:
                return np.full_like(t, np.nan), np.zeros(t.shape, dtype=bool)
            starts = np.asarray(pb.burst_starts)
            idx = np.searchsorted(starts, t, side="right") - 1
            start = np.where(idx >= 0, starts[np.maximum(idx, 0)], np.nan)
        with np.errstate(invalid="ignore"):
            inside = (t >= start) & ((t - start) < duration)
        return start, inside

    def channel_voltage(self, n: int, t: FloatArray) -> FloatArray:
        """Voltage at channel ``n``'s connector at bench times ``t`` (see module docstring)."""
        t = np.asarray(t, dtype=float)
        ch = self.channels[n]
        if not ch.output_on:
            return np.zeros_like(t)
        if ch.function == "DC":
            return np.full_like(t, ch.offset_v)
        period = self._period(n)
        half = ch.amplitude_vpp / 2.0 * (-1.0 if ch.polarity == "INV" else 1.0)
        if not ch.burst_on:
            cycles = (t - self.playback[n].origin_s) / period + ch.phase_deg / 360.0
            return ch.offset_v + half * self._shape(n, cycles)
        start_phase = ch.burst_phase_deg / 360.0
        start, inside = self._burst_window(n, t)
        cycles = np.where(inside, (t - np.where(inside, start, 0.0)) / period, 0.0) + start_phase
        return ch.offset_v + half * self._shape(n, cycles)

    def _burst_starts_between(self, n: int, t0: float, t1: float) -> list[float] | None:
        """Start times of channel ``n``'s bursts that begin in ``[t0, t1]``, plus the last one
        before ``t0``; None when the bursts are not discrete events or internal repeats."""
        ch = self.channels[n]
        pb = self.playback[n]
        if ch.burst_mode != "TRIG":
            return None
        if ch.trigger_source in ("IMM", "TIM"):
            every = ch.burst_period_s if ch.trigger_source == "IMM" else ch.trigger_timer_s
            k0 = max(math.floor((t0 - pb.origin_s) / every), 0)
            k1 = math.floor((t1 - pb.origin_s) / every)
            if k1 - k0 > 4:
                return None  # many short bursts: not one grid (and not worth it)
            return [pb.origin_s + k * every for k in range(k0, k1 + 1)]
        starts = pb.burst_starts
        before = [s for s in starts if s < t0]
        return before[-1:] + [s for s in starts if t0 <= s <= t1]

    def held_grid(self, port: str, t0: float, t1: float) -> tuple[float, float] | None:
        """Bench Part extension: ``(t_edge, rate)`` when output ``port`` is constant on every
        interval ``[t_edge + k / rate, t_edge + (k + 1) / rate)`` over ``[t0, t1]`` (an arb
        played with zero-order hold, burst or continuous, with at most one burst's sample grid
        in the span); None otherwise. A reader then needs the output only once per interval
        (e.g. at the interval midpoints) to know it exactly."""
        if port not in ("ch1", "ch2"):
            return None
        n = int(port[2])
        ch = self.channels[n]
        rate = float(ch.arb_sample_rate)
        if not ch.output_on or ch.function == "DC":
            return (t0, rate)  # constant over the whole span: any grid will do
        if ch.function != "ARB":
            return None
        size = self._arb(n).size
        if not ch.burst_on:
            # Sample k starts where (t - origin) rate + phase * size crosses an integer.
            lead = (ch.phase_deg / 360.0) * size
            return (self.playback[n].origin_s - (lead - math.floor(lead)) / rate, rate)
        if abs(ch.burst_cycles * size - round(ch.burst_cycles * size)) > 1e-9:
            return None  # a burst ending inside a sample: not on the grid
        starts = self._burst_starts_between(n, t0, t1)
        if starts is None:
            return None
        if not starts:
            return (t0, rate)  # never triggered: idle (constant) over the whole span
        duration = ch.burst_cycles * self._period(n)
        if sum(1 for s in starts if s + duration > t0) > 1:
            return None  # two bursts' sample grids in the span
        # One burst plays in the span (or none, and the output idles at a constant level, which
        # any grid represents): its grid. Before its start the output idles, also constant.
        lead = (ch.burst_phase_deg / 360.0) * size
        return (starts[-1] - (lead - math.floor(lead)) / rate, rate)

    def sync_voltage(self, t: FloatArray) -> FloatArray:
        """The Sync connector: 3.3 V marker of the sync source channel (see module docstring)."""
        t = np.asarray(t, dtype=float)
        if not self.sync_on:
            return np.zeros_like(t)
        n = self.sync_source
        ch = self.channels[n]
        if ch.burst_on:
            _, high = self._burst_window(n, t)
        else:
            cycles = (t - self.playback[n].origin_s) / self._period(n)
            high = (cycles - np.floor(cycles)) < 0.5
        return np.where(high, SYNC_HIGH_V, 0.0)

    def output(self, port: str, t: FloatArray) -> FloatArray:
        """Bench Part protocol: ``ch1``, ``ch2`` (volts at the connector) or ``sync``."""
        if port == "sync":
            return self.sync_voltage(t)
        if port in ("ch1", "ch2"):
            v = self.channel_voltage(int(port[2]), t)
            full = f"{self.name}.{port}"
            if v.size and self.bench.watches(full):
                self.bench.log_voltage(full, float(v.min()), float(v.max()))
            return v
        raise KeyError(f"{self.name} has no output port {port!r} (ch1, ch2, sync)")

    # ------------------------------------------------------------------ helpers
    def _keyword_setting(
        self, pattern: str, attr: str, choices: list[str], *, instrument: bool = False
    ) -> None:
        """Register a setting that holds one of ``choices`` (stored and reported in short
        form) as ``attr`` of the addressed channel, or of the instrument."""

        def target(ctx: Context) -> Any:
            return self if instrument else self.channels[self._ch(ctx)]

        def write(ctx: Context, args: Args) -> None:
            args.require(1, 1)
            setattr(target(ctx), attr, _short(args.enum(0, choices)))

        def query(ctx: Context, args: Args) -> str:
            return str(getattr(target(ctx), attr))

        self.tree.add(pattern, write=write, query=query)

    def _number_setting(
        self, pattern: str, attr: str, lo: float, hi: float, default: float
    ) -> None:
        """Register a numeric channel setting held as ``attr``: MIN/MAX/DEF accepted, values
        clamped to ``[lo, hi]`` (as the instrument does), reported in NR3."""

        def write(ctx: Context, args: Args) -> None:
            setattr(self.channels[self._ch(ctx)], attr, self._number(args, lo, hi, default))

        def query(ctx: Context, args: Args) -> str:
            return format_nr3(getattr(self.channels[self._ch(ctx)], attr))

        self.tree.add(pattern, write=write, query=query)

    def _flag_setting(self, pattern: str, attr: str, *, instrument: bool = False) -> None:
        """Register an ON/OFF setting held as ``attr`` (bool), reported as 1 or 0."""

        def target(ctx: Context) -> Any:
            return self if instrument else self.channels[self._ch(ctx)]

        def write(ctx: Context, args: Args) -> None:
            args.require(1, 1)
            setattr(target(ctx), attr, args.bool(0))

        def query(ctx: Context, args: Args) -> str:
            return "1" if getattr(target(ctx), attr) else "0"

        self.tree.add(pattern, write=write, query=query)

    def _ch(self, ctx: Context) -> int:
        return ctx.suffix(0, default=1, lo=1, hi=CHANNELS)

    def _clamp(self, value: float, lo: float, hi: float) -> float:
        """Clamp to [lo, hi]; a clamped value queues -222 as the instrument does."""
        if value > hi:
            self.push_error(-222, CLIPPED_HIGH)
            return hi
        if value < lo:
            self.push_error(-222, CLIPPED_LOW)
            return lo
        return value

    @staticmethod
    def _keyword(args: Args, i: int, *names: str) -> str | None:
        """Which of the keyword mnemonics (``"MINimum"``...) parameter ``i`` is, if any."""
        text = args.raw(i).upper()
        for name in names:
            short = "".join(c for c in name if not c.islower())
            if text in (short.upper(), name.upper()):
                return short.upper()
        return None

    def _number(
        self,
        args: Args,
        lo: float,
        hi: float,
        default: float,
        *,
        extra: dict[str, float] | None = None,
    ) -> float:
        """One numeric parameter with MIN/MAX/DEF (and ``extra`` keywords), clamped to [lo, hi]."""
        args.require(1, 1)
        keywords = {"MINimum": lo, "MAXimum": hi, "DEFault": default, **(extra or {})}
        value = args.float(0, keywords=keywords)
        if math.isinf(value):
            return value
        return self._clamp(value, lo, hi)

    def _restart(self, n: int) -> None:
        self.playback[n].origin_s = self.bench.clock.now

    def _limits(self, n: int) -> tuple[float, float, float]:
        """(min Vpp, max Vpp, max |V|) as displayed for the channel's load."""
        g = _display_gain(self.channels[n].load_ohm)
        return MIN_VPP_50 * g, MAX_VPP_50 * g, MAX_ABS_V_50 * g

    def _rms_per_vpp(self, n: int) -> float:
        ch = self.channels[n]
        if ch.function == "ARB":
            data = self._arb(n)
            rms = float(np.sqrt(np.mean(data * data)))
            if rms > 0:
                return rms / 2.0
        return _RMS_PER_VPP.get(ch.function, _RMS_PER_VPP["SIN"])

    def _to_unit(self, n: int, vpp: float) -> float:
        ch = self.channels[n]
        if ch.unit == "VPP":
            return vpp
        vrms = vpp * self._rms_per_vpp(n)
        if ch.unit == "VRMS":
            return vrms
        return 10.0 * math.log10(max(vrms * vrms / ch.load_ohm / 1e-3, 1e-300))

    def _from_unit(self, n: int, value: float) -> float:
        ch = self.channels[n]
        if ch.unit == "VPP":
            return value
        if ch.unit == "VRMS":
            return value / self._rms_per_vpp(n)
        vrms = math.sqrt(10.0 ** (value / 10.0) * 1e-3 * ch.load_ohm)
        return vrms / self._rms_per_vpp(n)

    @staticmethod
    def _pulse_shape(ch: AwgChannel, frac: FloatArray) -> FloatArray:
        """A pulse with linear edges: the leading edge starts at phase 0, the width is measured
        between the edges' 50 % points (as the 33500B defines it)."""
        period = 1.0 / ch.frequency_hz
        t = frac * period
        lead, trail, width = ch.pulse_lead_s, ch.pulse_trail_s, ch.pulse_width_s
        fall_start = lead / 2.0 + width - trail / 2.0
        rising = -1.0 + 2.0 * t / lead
        falling = 1.0 - 2.0 * (t - fall_start) / trail
        return np.select(
            [t < lead, t < fall_start, t < fall_start + trail],
            [rising, np.ones_like(t), falling],
            -1.0,
        )

    # ------------------------------------------------------------------ pulse interlocks
    def _pulse_room(self, ch: AwgChannel) -> float:
        """The least width the edges need (and the least gap after the pulse)."""
        return max(PULSE_MIN_WIDTH_S, PULSE_EDGE_FACTOR * (ch.pulse_lead_s + ch.pulse_trail_s))

    def _fit_pulse(self, n: int) -> None:
        """After a period or edge change: keep width (HOLD WIDTh) or duty cycle (HOLD DCYCle)
        and, if the width no longer fits, adjust it with -221 Settings conflict."""
        ch = self.channels[n]
        period = 1.0 / ch.frequency_hz
        room = self._pulse_room(ch)
        lo, hi = room, max(room, period - room)
        if not lo <= ch.pulse_width_s <= hi:
            ch.pulse_width_s = min(max(ch.pulse_width_s, lo), hi)
            self.push_error(-221, f"{SETTINGS_CONFLICT};pulse width adjusted")

    def _w_pulse_width(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        ch = self.channels[n]
        period = 1.0 / ch.frequency_hz
        room = self._pulse_room(ch)
        ch.pulse_width_s = self._number(args, room, max(room, period - room), 100e-6)

    def _q_pulse_width(self, ctx: Context, args: Args) -> str:
        return format_nr3(self.channels[self._ch(ctx)].pulse_width_s)

    def _w_pulse_duty(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        ch = self.channels[n]
        period = 1.0 / ch.frequency_hz
        room = self._pulse_room(ch)
        lo = 100.0 * room / period
        hi = max(lo, 100.0 * (period - room) / period)
        ch.pulse_width_s = self._number(args, lo, hi, 10.0) / 100.0 * period

    def _q_pulse_duty(self, ctx: Context, args: Args) -> str:
        ch = self.channels[self._ch(ctx)]
        return format_nr3(100.0 * ch.pulse_width_s * ch.frequency_hz)

    def _w_pulse_period(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        ch = self.channels[n]
        duty = ch.pulse_width_s * ch.frequency_hz
        period = self._number(args, 1.0 / MAX_FREQUENCY_HZ, 1.0 / MIN_FREQUENCY_HZ, 1e-3)
        ch.frequency_hz = 1.0 / period
        if ch.pulse_hold == "DCYC":
            ch.pulse_width_s = duty * period
        self._fit_pulse(n)

    def _q_pulse_period(self, ctx: Context, args: Args) -> str:
        return format_nr3(1.0 / self.channels[self._ch(ctx)].frequency_hz)

    def _edge_writer(self, *attrs: str) -> WriteHandler:
        def write(ctx: Context, args: Args) -> None:
            n = self._ch(ctx)
            ch = self.channels[n]
            value = self._number(args, PULSE_EDGE_MIN_S, PULSE_EDGE_MAX_S, PULSE_EDGE_DEFAULT_S)
            for attr in attrs:
                setattr(ch, attr, value)
            # the edges of one pulse and its gap must fit in the period: shorten them if not
            period = 1.0 / ch.frequency_hz
            most = period / (2.0 * PULSE_EDGE_FACTOR)  # lead + trail at most
            total = ch.pulse_lead_s + ch.pulse_trail_s
            if total > most:
                scale = most / total
                ch.pulse_lead_s = max(PULSE_EDGE_MIN_S, ch.pulse_lead_s * scale)
                ch.pulse_trail_s = max(PULSE_EDGE_MIN_S, ch.pulse_trail_s * scale)
                self.push_error(-221, f"{SETTINGS_CONFLICT};edge time adjusted")
            self._fit_pulse(n)

        return write

    def _edge_reader(self, attr: str) -> Any:
        def query(ctx: Context, args: Args) -> str:
            return format_nr3(getattr(self.channels[self._ch(ctx)], attr))

        return query

    # ------------------------------------------------------------------ command table
    def register_commands(self) -> None:
        add = self.tree.add
        src = "[SOURce#]"
        add(f"{src}:FUNCtion", write=self._w_function, query=self._q_function)
        add(f"{src}:FREQuency", write=self._w_frequency, query=self._q_frequency)
        volt = f"{src}:VOLTage[:LEVel][:IMMediate]"
        add(f"{volt}[:AMPLitude]", write=self._w_amplitude, query=self._q_amplitude)
        add(f"{volt}:OFFSet", write=self._w_offset, query=self._q_offset)
        add(f"{volt}:HIGH", write=self._w_high, query=self._q_high)
        add(f"{volt}:LOW", write=self._w_low, query=self._q_low)
        add(f"{src}:VOLTage:UNIT", write=self._w_unit, query=self._q_unit)
        add(f"{src}:VOLTage:RANGe:AUTO", write=self._w_range_auto, query=self._q_range_auto)
        self._number_setting(f"{src}:PHASe[:ADJust]", "phase_deg", -360.0, 360.0, 0.0)
        add(f"{src}:PHASe:SYNChronize", write=self._w_phase_sync)
        self._number_setting(f"{src}:FUNCtion:SQUare:DCYCle", "square_duty_pct", 0.01, 99.98, 50.0)
        self._number_setting(
            f"{src}:FUNCtion:RAMP:SYMMetry", "ramp_symmetry_pct", 0.0, 100.0, 100.0
        )
        pulse = f"{src}:FUNCtion:PULSe"
        add(f"{pulse}:WIDTh", write=self._w_pulse_width, query=self._q_pulse_width)
        add(f"{pulse}:DCYCle", write=self._w_pulse_duty, query=self._q_pulse_duty)
        add(f"{pulse}:PERiod", write=self._w_pulse_period, query=self._q_pulse_period)
        self._keyword_setting(f"{pulse}:HOLD", "pulse_hold", ["WIDTh", "DCYCle"])
        edges = self._edge_writer("pulse_lead_s", "pulse_trail_s")
        add(f"{pulse}:TRANsition[:BOTH]", write=edges, query=self._edge_reader("pulse_lead_s"))
        add(
            f"{pulse}:TRANsition:LEADing",
            write=self._edge_writer("pulse_lead_s"),
            query=self._edge_reader("pulse_lead_s"),
        )
        add(
            f"{pulse}:TRANsition:TRAiling",
            write=self._edge_writer("pulse_trail_s"),
            query=self._edge_reader("pulse_trail_s"),
        )
        # FREQuency:MODE: CW and FIXed are the same fixed frequency; LIST and SWEep are stored
        # (the frequency list and sweep are not emulated: the output stays at FREQuency) (?).
        self._keyword_setting(
            f"{src}:FREQuency:MODE", "frequency_mode", ["CW", "LIST", "SWEep", "FIXed"]
        )
        arb = f"{src}:FUNCtion:ARBitrary"
        add(arb, write=self._w_arb_select, query=self._q_arb_select)
        add(f"{arb}:SRATe", write=self._w_srate, query=self._q_srate)
        add(f"{arb}:FREQuency", write=self._w_arb_frequency, query=self._q_arb_frequency)
        add(f"{arb}:PERiod", write=self._w_arb_period, query=self._q_arb_period)
        add(f"{arb}:PTPeak", write=self._w_amplitude_vpp, query=self._q_amplitude_vpp)
        self._keyword_setting(f"{arb}:FILTer", "arb_filter", ["NORMal", "STEP", "OFF"])
        self._keyword_setting(f"{arb}:ADVance", "arb_advance", ["SRATe", "TRIGger"])
        add(f"{arb}:POINts", query=self._q_arb_points)
        add(f"{arb}:SYNChronize", write=self._w_phase_sync)
        add(f"{src}:DATA:ARBitrary", write=self._w_data_float)
        add(f"{src}:DATA:ARBitrary:DAC", write=self._w_data_dac)
        add(f"{src}:DATA:VOLatile:CLEar", write=self._w_volatile_clear)
        add(f"{src}:DATA:VOLatile:CATalog", query=self._q_volatile_catalog)
        add(f"{src}:DATA:VOLatile:FREE", query=self._q_volatile_free)
        add(f"{src}:DATA:ATTRibute:POINts", query=self._q_attr_points)
        add(f"{src}:DATA:ATTRibute:AVERage", query=self._q_attr_average)
        add(f"{src}:DATA:ATTRibute:PTPeak", query=self._q_attr_ptpeak)
        add(f"{src}:DATA:ATTRibute:CFACtor", query=self._q_attr_cfactor)
        burst = f"{src}:BURSt"
        add(f"{burst}:STATe", write=self._w_burst_state, query=self._q_burst_state)
        add(f"{burst}:MODE", write=self._w_burst_mode, query=self._q_burst_mode)
        add(f"{burst}:NCYCles", write=self._w_burst_cycles, query=self._q_burst_cycles)
        self._number_setting(f"{burst}:INTernal:PERiod", "burst_period_s", 1e-6, 8000.0, 0.01)
        self._number_setting(f"{burst}:PHASe", "burst_phase_deg", -360.0, 360.0, 0.0)
        self._keyword_setting(
            f"{burst}:GATE:POLarity", "burst_gate_polarity", ["NORMal", "INVerted"]
        )
        add(f"{src}:APPLy", query=self._q_apply)
        for shape in FUNCTIONS:
            add(f"{src}:APPLy:{shape}", write=self._apply_writer(_SHORT[shape]))
        add("TRIGger#[:IMMediate]", write=self._w_trigger_now)
        add("TRIGger#:SOURce", write=self._w_trig_source, query=self._q_trig_source)
        self._keyword_setting("TRIGger#:SLOPe", "trigger_slope", ["POSitive", "NEGative"])
        self._number_setting("TRIGger#:DELay", "trigger_delay_s", 0.0, 1000.0, 0.0)
        add("TRIGger#:COUNt", write=self._w_trig_count, query=self._q_trig_count)
        self._number_setting("TRIGger#:TIMer", "trigger_timer_s", 1e-6, 8000.0, 1e-3)
        add("OUTPut#[:STATe]", write=self._w_output, query=self._q_output)
        add("OUTPut#:LOAD", write=self._w_load, query=self._q_load)
        self._keyword_setting("OUTPut#:POLarity", "polarity", ["NORMal", "INVerted"])
        self._flag_setting("OUTPut#:SYNC[:STATe]", "sync_on", instrument=True)
        add("OUTPut#:SYNC:SOURce", write=self._w_sync_source, query=self._q_sync_source)
        self._keyword_setting("OUTPut#:SYNC:MODE", "sync_mode", ["NORMal", "CARRier", "MARKer"])
        self._keyword_setting("OUTPut#:SYNC:POLarity", "sync_polarity", ["NORMal", "INVerted"])
        self._flag_setting("OUTPut:TRIGger[:STATe]", "trigger_out_on", instrument=True)
        self._keyword_setting(
            "OUTPut:TRIGger:SLOPe", "trigger_out_slope", ["POSitive", "NEGative"], instrument=True
        )
        add("OUTPut:TRIGger:SOURce", write=self._w_trig_out_source, query=self._q_trig_out_source)
        self._keyword_setting("FORMat:BORDer", "byte_order", ["NORMal", "SWAPped"], instrument=True)
        add("SYSTem:VERSion", query=lambda c, a: "1999.0")

    # ------------------------------------------------------------------ waveform, frequency
    def _w_function(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        args.require(1, 1)
        ch = self.channels[n]
        new = _SHORT[args.enum(0, FUNCTIONS)]
        if new != ch.function:
            ch.function = new
            self._restart(n)
            if ch.function == "PULS":
                self._fit_pulse(n)
            if ch.function == "DC":
                # DC has no amplitude: only the offset limit applies, nothing to re-check
                return
            self._fit_amplitude(n)

    def _q_function(self, ctx: Context, args: Args) -> str:
        return self.channels[self._ch(ctx)].function

    def _w_frequency(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        ch = self.channels[n]
        duty = ch.pulse_width_s * ch.frequency_hz
        ch.frequency_hz = self._number(args, MIN_FREQUENCY_HZ, MAX_FREQUENCY_HZ, 1e3)
        if ch.function == "PULS":
            # a new frequency is a new pulse period: HOLD DCYCle keeps the duty cycle
            if ch.pulse_hold == "DCYC":
                ch.pulse_width_s = duty / ch.frequency_hz
            self._fit_pulse(n)

    def _q_frequency(self, ctx: Context, args: Args) -> str:
        return format_nr3(self.channels[self._ch(ctx)].frequency_hz)

    def _w_phase_sync(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        for n in self.channels:
            self._restart(n)

    # ------------------------------------------------------------------ amplitude and offset
    def _fit_amplitude(self, n: int) -> None:
        """After a change that tightens the limits, bring amplitude and offset back inside."""
        ch = self.channels[n]
        lo, hi, vmax = self._limits(n)
        if ch.function == "DC":
            ch.offset_v = self._clamp(ch.offset_v, -vmax, vmax)
            return
        ch.amplitude_vpp = self._clamp(ch.amplitude_vpp, lo, hi)
        room = vmax - ch.amplitude_vpp / 2.0
        ch.offset_v = self._clamp(ch.offset_v, -room, room)

    def _set_vpp(self, n: int, vpp: float) -> None:
        ch = self.channels[n]
        lo, hi, vmax = self._limits(n)
        # amplitude and offset share the output swing: |offset| + Vpp/2 <= Vmax
        hi = min(hi, 2.0 * (vmax - abs(ch.offset_v)))
        ch.amplitude_vpp = self._clamp(vpp, lo, max(hi, lo))

    def _w_amplitude(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        args.require(1, 1)
        lo, hi, vmax = self._limits(n)
        word = self._keyword(args, 0, "MINimum", "MAXimum", "DEFault")
        if word == "MIN":
            vpp = lo
        elif word == "MAX":
            vpp = min(hi, 2.0 * (vmax - abs(self.channels[n].offset_v)))
        elif word == "DEF":
            vpp = 0.1
        else:
            vpp = self._from_unit(n, args.float(0))
        self._set_vpp(n, vpp)

    def _q_amplitude(self, ctx: Context, args: Args) -> str:
        n = self._ch(ctx)
        return format_nr3(self._to_unit(n, self.channels[n].amplitude_vpp))

    def _w_amplitude_vpp(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        args.require(1, 1)
        lo, hi, _ = self._limits(n)
        self._set_vpp(n, args.float(0, keywords={"MINimum": lo, "MAXimum": hi, "DEFault": 0.1}))

    def _q_amplitude_vpp(self, ctx: Context, args: Args) -> str:
        return format_nr3(self.channels[self._ch(ctx)].amplitude_vpp)

    def _w_offset(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        ch = self.channels[n]
        _, _, vmax = self._limits(n)
        room = vmax if ch.function == "DC" else vmax - ch.amplitude_vpp / 2.0
        ch.offset_v = self._number(args, -room, room, 0.0)

    def _q_offset(self, ctx: Context, args: Args) -> str:
        return format_nr3(self.channels[self._ch(ctx)].offset_v)

    def _set_level(self, n: int, value: float, high: bool) -> None:
        """Set the high (or low) level; the other level stays, amplitude and offset follow."""
        ch = self.channels[n]
        lo_vpp, hi_vpp, vmax = self._limits(n)
        top = ch.offset_v + ch.amplitude_vpp / 2.0
        bottom = ch.offset_v - ch.amplitude_vpp / 2.0
        if high:
            top = self._clamp(value, bottom + lo_vpp, min(vmax, bottom + hi_vpp))
        else:
            bottom = self._clamp(value, max(-vmax, top - hi_vpp), top - lo_vpp)
        ch.amplitude_vpp = top - bottom
        ch.offset_v = (top + bottom) / 2.0

    def _level_value(self, args: Args, n: int, high: bool) -> float:
        args.require(1, 1)
        _, _, vmax = self._limits(n)
        return args.float(0, keywords={"MINimum": -vmax, "MAXimum": vmax})

    def _w_high(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        self._set_level(n, self._level_value(args, n, True), high=True)

    def _w_low(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        self._set_level(n, self._level_value(args, n, False), high=False)

    def _q_high(self, ctx: Context, args: Args) -> str:
        ch = self.channels[self._ch(ctx)]
        return format_nr3(ch.offset_v + ch.amplitude_vpp / 2.0)

    def _q_low(self, ctx: Context, args: Args) -> str:
        ch = self.channels[self._ch(ctx)]
        return format_nr3(ch.offset_v - ch.amplitude_vpp / 2.0)

    def _w_unit(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        args.require(1, 1)
        unit = args.enum(0, ["VPP", "VRMS", "DBM"])
        if unit == "DBM" and math.isinf(self.channels[n].load_ohm):
            raise ScpiError(-221, detail="dBm needs a finite OUTPut:LOAD")
        self.channels[n].unit = unit

    def _q_unit(self, ctx: Context, args: Args) -> str:
        return self.channels[self._ch(ctx)].unit

    def _w_range_auto(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        if self._keyword(args, 0, "ONCE") is None:
            self.channels[self._ch(ctx)].range_auto = args.bool(0)

    def _q_range_auto(self, ctx: Context, args: Args) -> str:
        return "1" if self.channels[self._ch(ctx)].range_auto else "0"

    # ------------------------------------------------------------------ output, load, sync
    def _w_output(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        args.require(1, 1)
        on = args.bool(0)
        if on and not self.channels[n].output_on:
            self._restart(n)
        self.channels[n].output_on = on

    def _q_output(self, ctx: Context, args: Args) -> str:
        return "1" if self.channels[self._ch(ctx)].output_on else "0"

    def _w_load(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        ch = self.channels[n]
        new = self._number(args, 1.0, 10e3, 50.0, extra={"INFinity": math.inf})
        # The real output is unchanged; the displayed amplitude and offset follow the new load.
        scale = _display_gain(new) / _display_gain(ch.load_ohm)
        ch.load_ohm = new
        ch.amplitude_vpp *= scale
        ch.offset_v *= scale
        if math.isinf(new) and ch.unit == "DBM":
            ch.unit = "VPP"

    def _q_load(self, ctx: Context, args: Args) -> str:
        load = self.channels[self._ch(ctx)].load_ohm
        return INFINITY_REPLY if math.isinf(load) else format_nr3(load)

    def _w_sync_source(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.sync_source = int(args.enum(0, ["CH1", "CH2"])[2])

    def _q_sync_source(self, ctx: Context, args: Args) -> str:
        return f"CH{self.sync_source}"

    def _w_trig_out_source(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.trigger_out_source = int(args.enum(0, ["CH1", "CH2"])[2])

    def _q_trig_out_source(self, ctx: Context, args: Args) -> str:
        return f"CH{self.trigger_out_source}"

    # ------------------------------------------------------------------ arb selection, rate
    def _lookup_arb(self, n: int, text: str) -> str:
        name = text.strip().upper()
        if name not in self.arbs[n]:
            raise ScpiError(-256, detail=f"arb {text!r} is not in channel {n}'s volatile memory")
        return name

    def _w_arb_select(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        args.require(1, 1)
        name = self._lookup_arb(n, args.string(0))
        if name != self.channels[n].arb_name:
            self.channels[n].arb_name = name
            self._restart(n)

    def _q_arb_select(self, ctx: Context, args: Args) -> str:
        return f'"{self.channels[self._ch(ctx)].arb_name}"'

    def _w_srate(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        self.channels[n].arb_sample_rate = self._number(args, MIN_SRATE, MAX_SRATE, 40e3)

    def _q_srate(self, ctx: Context, args: Args) -> str:
        return format_nr3(self.channels[self._ch(ctx)].arb_sample_rate)

    def _w_arb_frequency(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        points = self._arb(n).size
        hz = self._number(args, MIN_SRATE / points, MAX_SRATE / points, 40e3 / points)
        self.channels[n].arb_sample_rate = hz * points

    def _q_arb_frequency(self, ctx: Context, args: Args) -> str:
        n = self._ch(ctx)
        return format_nr3(self.channels[n].arb_sample_rate / self._arb(n).size)

    def _w_arb_period(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        points = self._arb(n).size
        s = self._number(args, points / MAX_SRATE, points / MIN_SRATE, points / 40e3)
        self.channels[n].arb_sample_rate = points / s

    def _q_arb_period(self, ctx: Context, args: Args) -> str:
        n = self._ch(ctx)
        return format_nr3(self._arb(n).size / self.channels[n].arb_sample_rate)

    def _q_arb_points(self, ctx: Context, args: Args) -> str:
        return f"{self._arb(self._ch(ctx)).size:+d}"

    # ------------------------------------------------------------------ arb upload
    def _check_name(self, n: int, text: str) -> str:
        name = text.strip().upper()
        if not name or len(name) > NAME_MAX or not _NAME_RE.match(name):
            raise ScpiError(
                -224,
                detail=f"arb name {text!r}: 1..{NAME_MAX} letters/digits/_, starting with a letter",
            )
        if name in self.arbs[n]:
            raise ScpiError(
                -221, detail=f"arb {name} already in volatile memory; clear it with DATA:VOL:CLE"
            )
        return name

    def _store(self, n: int, name: str, samples: FloatArray) -> None:
        if not MIN_ARB_POINTS <= samples.size <= MAX_ARB_POINTS:
            raise ScpiError(
                -224,
                detail=f"arb {name}: {samples.size} points, "
                f"allowed {MIN_ARB_POINTS}..{MAX_ARB_POINTS}",
            )
        used = sum(_blocks(a.size) for a in self.arbs[n].values())
        if used + _blocks(samples.size) > MEMORY_POINTS:
            raise ScpiError(-225, detail=f"arb {name}: {MEMORY_POINTS - used} points free")
        self.arbs[n][name] = samples

    @staticmethod
    def _ascii_list(args: Args, start: int) -> FloatArray:
        """Parameters ``start..`` as floats, fast enough for a million-point list."""
        try:
            return np.array([float(args.raw_bytes(j)) for j in range(start, len(args))])
        except ValueError:
            raise ScpiError(-104, detail="arb data list holds a non-number") from None

    def _arb_values(self, ctx: Context, args: Args, code: str) -> tuple[int, str, FloatArray, bool]:
        """Channel, arb name and values of ``DATA:ARB[:DAC] name,<values>``: a block of ``code``
        (``f4`` or ``i2``, byte order by ``FORM:BORD``) or an ASCII list; True if a block."""
        n = self._ch(ctx)
        args.require(2)
        name = self._check_name(n, args.string(0))
        if not args.is_block(1):
            return n, name, self._ascii_list(args, 1), False
        args.require(2, 2)
        payload = args.block(1)
        size = int(code[1])
        if len(payload) % size:
            kind = "float32" if code == "f4" else "int16"
            raise ScpiError(-161, detail=f"{kind} block of {len(payload)} bytes")
        order = ">" if self.byte_order == "NORM" else "<"
        return n, name, np.frombuffer(payload, dtype=order + code).astype(np.float64), True

    def _w_data_float(self, ctx: Context, args: Args) -> None:
        """``DATA:ARB name,<values in -1..1>`` (ASCII list or float32 block)."""
        n, name, samples, _ = self._arb_values(ctx, args, "f4")
        if samples.size and (not np.all(np.isfinite(samples)) or np.max(np.abs(samples)) > 1.0):
            raise ScpiError(-222, detail=f"arb {name}: values must lie in -1.0..+1.0")
        self._store(n, name, samples)

    def _w_data_dac(self, ctx: Context, args: Args) -> None:
        """``DATA:ARB:DAC name,<codes>`` (ASCII list or int16 block); ±32767 is full scale."""
        n, name, codes, block = self._arb_values(ctx, args, "i2")
        if (
            not block
            and codes.size
            and (
                np.any(codes != np.round(codes))
                or codes.min() < -DAC_FULL_SCALE - 1
                or codes.max() > DAC_FULL_SCALE
            )
        ):
            raise ScpiError(-222, detail=f"arb {name}: DAC codes must be integers -32768..32767")
        # -32768 is accepted and plays as -32767 (full scale is symmetric)
        self._store(n, name, np.clip(codes / DAC_FULL_SCALE, -1.0, 1.0))

    def _w_volatile_clear(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        args.require(0, 0)
        self.arbs[n] = {BUILTIN_ARB: _builtin_exp_rise()}
        if self.channels[n].arb_name != BUILTIN_ARB:
            self.channels[n].arb_name = BUILTIN_ARB
            self._restart(n)

    def _q_volatile_catalog(self, ctx: Context, args: Args) -> str:
        return ",".join(f'"{name}"' for name in self.arbs[self._ch(ctx)])

    def _q_volatile_free(self, ctx: Context, args: Args) -> str:
        used = sum(_blocks(a.size) for a in self.arbs[self._ch(ctx)].values())
        return f"{MEMORY_POINTS - used:+d}"

    def _attr_data(self, ctx: Context, args: Args) -> FloatArray:
        n = self._ch(ctx)
        args.require(0, 1)
        if args.has(0):
            return self.arbs[n][self._lookup_arb(n, args.string(0))]
        return self._arb(n)

    def _q_attr_points(self, ctx: Context, args: Args) -> str:
        return f"{self._attr_data(ctx, args).size:+d}"

    def _q_attr_average(self, ctx: Context, args: Args) -> str:
        return format_nr3(float(np.mean(self._attr_data(ctx, args))))

    def _q_attr_ptpeak(self, ctx: Context, args: Args) -> str:
        return format_nr3(float(np.ptp(self._attr_data(ctx, args))))

    def _q_attr_cfactor(self, ctx: Context, args: Args) -> str:
        data = self._attr_data(ctx, args)
        rms = float(np.sqrt(np.mean(data * data)))
        return format_nr3(float(np.max(np.abs(data))) / rms if rms > 0 else 0.0)

    # ------------------------------------------------------------------ burst
    def _w_burst_state(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        args.require(1, 1)
        on = args.bool(0)
        if on != self.channels[n].burst_on:
            self.channels[n].burst_on = on
            self.playback[n].burst_starts.clear()
            self._restart(n)

    def _q_burst_state(self, ctx: Context, args: Args) -> str:
        return "1" if self.channels[self._ch(ctx)].burst_on else "0"

    def _w_burst_mode(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        mode = args.enum(0, ["TRIGgered", "GATed"])
        self.channels[self._ch(ctx)].burst_mode = "TRIG" if mode == "TRIGgered" else "GAT"

    def _q_burst_mode(self, ctx: Context, args: Args) -> str:
        return self.channels[self._ch(ctx)].burst_mode

    def _w_burst_cycles(self, ctx: Context, args: Args) -> None:
        value = self._number(args, 1.0, 1e8, 1.0, extra={"INFinity": math.inf})
        self.channels[self._ch(ctx)].burst_cycles = value if math.isinf(value) else round(value)

    def _q_burst_cycles(self, ctx: Context, args: Args) -> str:
        cycles = self.channels[self._ch(ctx)].burst_cycles
        return INFINITY_REPLY if math.isinf(cycles) else format_nr3(cycles)

    # ------------------------------------------------------------------ trigger
    def _w_trigger_now(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        self.trigger_channel(self._ch(ctx), self.bench.clock.now)

    def _w_trig_source(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        src = args.enum(0, ["IMMediate", "EXTernal", "TIMer", "BUS"])
        self.channels[self._ch(ctx)].trigger_source = _short(src)

    def _q_trig_source(self, ctx: Context, args: Args) -> str:
        return self.channels[self._ch(ctx)].trigger_source

    def _w_trig_count(self, ctx: Context, args: Args) -> None:
        value = self._number(args, 1.0, 1e6, 1.0, extra={"INFinity": math.inf})
        self.channels[self._ch(ctx)].trigger_count = value if math.isinf(value) else round(value)

    def _q_trig_count(self, ctx: Context, args: Args) -> str:
        count = self.channels[self._ch(ctx)].trigger_count
        return INFINITY_REPLY if math.isinf(count) else format_nr3(count)

    # ------------------------------------------------------------------ APPLy
    def _apply_writer(self, function: str) -> WriteHandler:
        def apply(ctx: Context, args: Args) -> None:
            """``APPLy:<shape> [freq[,amp[,offset]]]``: set shape and values, trigger source
            IMMediate, output on (the instrument's one-shot setup)."""
            n = self._ch(ctx)
            args.require(0, 3)
            ch = self.channels[n]
            ch.function = function
            if args.has(0) and function not in ("DC", "NOIS"):
                hz = args.float(0, keywords={"DEFault": ch.frequency_hz})
                if function == "ARB":
                    ch.arb_sample_rate = self._clamp(hz, MIN_SRATE, MAX_SRATE)
                else:
                    ch.frequency_hz = self._clamp(hz, MIN_FREQUENCY_HZ, MAX_FREQUENCY_HZ)
            if args.has(1) and function != "DC":
                vpp = args.float(1, keywords={"DEFault": ch.amplitude_vpp})
                ch.offset_v = 0.0 if args.has(2) else ch.offset_v
                self._set_vpp(n, self._from_unit(n, vpp))
            if args.has(2):
                _, _, vmax = self._limits(n)
                room = vmax if function == "DC" else vmax - ch.amplitude_vpp / 2.0
                offs = args.float(2, keywords={"DEFault": ch.offset_v})
                ch.offset_v = self._clamp(offs, -room, room)
            ch.trigger_source = "IMM"
            ch.output_on = True
            self._restart(n)

        return apply

    def _q_apply(self, ctx: Context, args: Args) -> str:
        n = self._ch(ctx)
        ch = self.channels[n]
        rate = ch.arb_sample_rate if ch.function == "ARB" else ch.frequency_hz
        amp = self._to_unit(n, ch.amplitude_vpp)
        return f'"{ch.function} {format_nr3(rate)},{format_nr3(amp)},{format_nr3(ch.offset_v)}"'
