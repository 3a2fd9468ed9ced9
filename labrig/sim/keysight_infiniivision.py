"""Emulator of a Keysight InfiniiVision DSOX3024T four-channel oscilloscope.

Use it on a bench; its channel inputs read whatever is wired to them, its ``ext`` input takes
trigger events::

    bench = Bench()
    scope = InfiniiVisionEmulator("scope", bench)
    bench.connect("scope.ch1", "awg.ch1")
    bench.connect("scope.ext", "awg.sync")
    scope.feed(b":TRIG:EDGE:SOUR EXT;:TRIG:SWE NORM;:SING\\n")   # armed; the AWG's burst fires it

Command set: the InfiniiVision X-series subset in the project's manual — ``:TIMebase``,
``:CHANnel<n>``, ``:TRIGger[:EDGE]``, ``:ACQuire``, ``:WAVeform``, ``:RUN :STOP :SINGle
:DIGitize``, ``:TER?``, ``:OPERegister:CONDition?``, ``:SYSTem:ERRor?``, the summary queries
``:TIMebase?`` and ``:CHANnel<n>?`` that PyMeasure parses — short or long forms, any case.
Numbers reply as ``+1.00000000E-04`` (more digits when needed to round-trip), counts as bare
integers, registers as ``+<n>``. Out-of-range settings are refused with -222 except the channel
offset, which the scope clamps silently to its legal range.

Acquisition model
-----------------
- Record: ``P`` points spread over the screen (10 divisions): sample interval
  ``xinc = 10·SCALe / P``, first point at the left screen edge, ``xorigin`` (relative to the
  trigger) ``= POSition - 5·SCALe`` for reference CENTer, ``- 1·SCALe`` for LEFT and ``- 9·SCALe``
  for RIGHt (one division in from the edge). ``P`` is the ``:WAVeform:POINts`` request rounded down
  to an allowed record length (100, 250, 500, 1000 in NORMal points mode; up to 4,000,000 in
  MAXimum/RAW) and to at most 5 GSa/s; ``:ACQuire:SRATe? = P / (10·SCALe)``.
- Vertical: the voltage at the probe tip is displayed in volts (the probe ratio divides at the
  input and multiplies on the display: it cancels, and only scales the legal ranges). Input noise
  of :attr:`InfiniiVisionEmulator.noise_divisions` (rms, in divisions) is added, divided by
  ``sqrt(COUNt)`` for AVERage and by 4 for HRESolution. INVert negates; AC coupling removes the
  record's mean (a stand-in for the 10 Hz high-pass); BWLimit, PEAK detect and the trigger's
  coupling/hold-off are stored only.
- ADC: 10 bits over the 8 vertical divisions, ``code10 = round((v - OFFSet) / (8·SCALe/1000))``
  in -500..500; beyond the screen the point is *clipped*. Transfer codes: WORD ``32768 + 64·code10``
  (yincrement ``8·SCALe/64000``, yreference 32768), BYTE ``128 + round(code10/4)``
  (yincrement ``8·SCALe/250``, yreference 128); clipped low/high are 0x01/0xFF (BYTE) and
  0x0001/0xFFFF (WORD). ``:WAVeform:UNSigned 0`` subtracts yreference from every code (and reports
  yreference 0). ASCii sends volts (``code10`` scaled), clipped points as ``∓9.9E+37``.
  ``volts = (code - yreference) · yincrement + yorigin`` recovers the signal to one code step.
- Data are computed when the scope triggers and kept with the settings of that moment, so later
  setting changes never alter a stored record.

Triggering
----------
``:SINGle`` arms one acquisition; ``:DIGitize [CHAN<n>,...]`` arms one and waits for it (the
named channels are switched on, the others off). ``:RUN`` acquires continuously (a record is taken
when data are read); ``:STOP`` stops.

- Source EXTernal: an event on input port ``ext`` (``on_trigger("ext", t)``) while armed triggers
  at ``t``. Events before arming are ignored.
- Source CHANnel<n>: the channel's signal is searched from the arming time for a crossing of the
  level with the selected slope (sampled at the record's sample interval, crossing interpolated
  linearly; at most :data:`SEARCH_MAX_SAMPLES` samples and :data:`SEARCH_MAX_S` seconds). The
  search runs when the client waits for the result, so signals that start after ``:SINGle``
  (an AWG triggered later) are found.
- Source LINE: the next rising zero crossing of 50 Hz mains.
- Sweep AUTO: when the client waits and no trigger has come, the scope triggers itself at the
  current bench time (``:TER?`` stays 0). Sweep NORMal: the acquisition stays pending; ``*OPC?``,
  ``:WAV:DATA?`` and ``:DIGitize`` then queue ``-200`` and send no reply — the real scope would not
  answer until it triggers, so the client times out either way.
- Waiting (``*OPC?``, ``*WAI``, ``:DIGitize``, ``:WAV:DATA?``, ``:WAV:PRE?``, ``:OPER:COND?``)
  advances the bench clock to the end of the record (times ``COUNt`` for AVERage).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from labrig.sim.bench import Bench, FloatArray
from labrig.sim.emulator import ScpiEmulator
from labrig.sim.scpi import Args, Context, QueryHandler, ScpiError, format_nr3

__all__ = [
    "IDN",
    "InfiniiVisionEmulator",
    "Record",
]

IDN = "KEYSIGHT TECHNOLOGIES,DSO-X 3024T,MY58493325,07.20.2017102614"
CHANNELS = 4
H_DIVISIONS = 10
V_DIVISIONS = 8
#: 10-bit ADC: 1000 usable steps over the 8 divisions of the screen.
ADC_HALF_SPAN = 500
BYTE_YREF = 128
WORD_YREF = 32768
BYTE_PER_ADC = 4  # 10-bit code -> 8-bit code
WORD_PER_ADC = 64  # 10-bit code -> 16-bit code
CLIP_LOW_BYTE, CLIP_HIGH_BYTE = 0x01, 0xFF
CLIP_LOW_WORD, CLIP_HIGH_WORD = 0x0001, 0xFFFF
# Markers for clipped points inside the stored 10-bit record (outside the ADC range).
_ADC_LOW = -(1 << 20)
_ADC_HIGH = 1 << 20
ASCII_CLIPPED = "9.9E+37"

MAX_SAMPLE_RATE = 5e9
# Record lengths :WAVeform:POINts accepts (X-series programmer's guides): NORMal transfers the
# measurement record, RAW the acquisition memory (4 M points on the 3000T). Stated here as well
# as in the driver (the bench must not import drivers); a test holds the two equal.
NORMAL_POINTS: tuple[int, ...] = (100, 250, 500, 1000)
RAW_POINTS: tuple[int, ...] = (
    *NORMAL_POINTS,
    *(2000, 5000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000),
    *(1_000_000, 2_000_000, 4_000_000),
)
MAX_RECORD = RAW_POINTS[-1]
MIN_TIME_SCALE, MAX_TIME_SCALE = 2e-9, 50.0
MIN_V_SCALE, MAX_V_SCALE = 1e-3, 5.0  # per unit probe ratio
LINE_FREQUENCY_HZ = 50.0
#: Bounds of a channel-edge trigger search.
SEARCH_MAX_SAMPLES = 4_000_000
SEARCH_MAX_S = 100.0
_SEARCH_CHUNK = 65_536

_FORMAT_CODE = {"BYTE": 0, "WORD": 1, "ASC": 4}
_TYPE_CODE = {"NORM": 0, "PEAK": 1, "AVER": 2, "HRES": 3}
#: Single-field queries and their index in the preamble.
_PREAMBLE_FIELDS = {
    "COUNt": 3,
    "XINCrement": 4,
    "XORigin": 5,
    "XREFerence": 6,
    "YINCrement": 7,
    "YORigin": 8,
    "YREFerence": 9,
}
_SOURCE_RE = re.compile(r"^(?:CHAN|CHANNEL)([1-9])$")

IntArray = npt.NDArray[np.int64]


def _short(mnemonic: str) -> str:
    """``"CENTer"`` -> ``"CENT"``: the reply form of an enumeration choice."""
    return "".join(c for c in mnemonic if not c.islower())


def _nr3(x: float) -> str:
    return format_nr3(x, 8)


@functools.cache
def _wire_table(fmt: str, unsigned: bool, endian: str) -> npt.NDArray[Any]:
    """Wire code of every stored code for ``:WAV:FORM BYTE|WORD``, indexed by stored code +
    ``ADC_HALF_SPAN + 1``: index 0 is the low-clip marker, the last the high-clip marker."""
    fine = np.arange(-ADC_HALF_SPAN, ADC_HALF_SPAN + 1, dtype=np.int64)
    if fmt == "BYTE":
        codes = BYTE_YREF + np.rint(fine / BYTE_PER_ADC).astype(np.int64)
        clip_low, clip_high, yref, kind = CLIP_LOW_BYTE, CLIP_HIGH_BYTE, BYTE_YREF, "1"
    else:
        codes = WORD_YREF + fine * WORD_PER_ADC
        clip_low, clip_high, yref, kind = CLIP_LOW_WORD, CLIP_HIGH_WORD, WORD_YREF, "2"
    codes = np.concatenate(([clip_low], codes, [clip_high]))
    if unsigned:
        return codes.astype(f"{endian}u{kind}")
    return (codes - yref).astype(f"{endian}i{kind}")


def _definite_block(payload: bytes) -> bytes:
    """The scope's block header is always ``#8`` + eight digits."""
    return b"#8" + f"{len(payload):08d}".encode("ascii") + payload


@dataclass
class ScopeChannel:
    """Vertical settings of one analog channel (volts as displayed, probe ratio included)."""

    scale_v: float = 0.5
    offset_v: float = 0.0
    display: bool = False
    coupling: str = "DC"
    probe: float = 1.0
    impedance: str = "ONEM"
    bw_limit: bool = False
    invert: bool = False
    label: str = ""
    unit: str = "VOLT"


@dataclass
class ScopeSettings:
    """Everything else a *RST restores."""

    time_scale_s: float = 1e-4
    time_position_s: float = 0.0
    time_mode: str = "MAIN"
    time_reference: str = "CENT"
    trigger_mode: str = "EDGE"
    trigger_sweep: str = "AUTO"
    trigger_source: str = "CHAN1"
    trigger_levels: dict[str, float] = field(default_factory=dict)
    trigger_slope: str = "POS"
    trigger_coupling: str = "DC"
    trigger_holdoff_s: float = 60e-9
    trigger_hf_reject: bool = False
    trigger_noise_reject: bool = False
    acquire_type: str = "NORM"
    acquire_count: int = 8
    acquire_mode: str = "RTIM"
    acquire_complete: int = 100
    waveform_source: int = 1
    waveform_format: str = "BYTE"
    waveform_byte_order: str = "MSBF"
    waveform_unsigned: bool = True
    waveform_points_mode: str = "NORM"
    waveform_points: int = 1000


@dataclass
class Record:
    """One acquisition, frozen at trigger time: 10-bit codes and the scaling they were taken at."""

    trigger_time_s: float
    triggered: bool
    x_origin_s: float  # time of point 0 relative to the trigger
    x_increment_s: float
    points: int
    acquire_type: str
    count: int
    codes: dict[int, IntArray]  # channel -> 10-bit codes (clip markers outside +-500)
    scale_v: dict[int, float]
    offset_v: dict[int, float]

    @property
    def end_time_s(self) -> float:
        """Bench time at which the record is complete."""
        return self.trigger_time_s + self.x_origin_s + self.points * self.x_increment_s


@dataclass
class _Pending:
    """An armed acquisition waiting for its trigger."""

    armed_at: float
    single: bool = True


class InfiniiVisionEmulator(ScpiEmulator):
    """A DSOX3024T on the virtual bench: inputs ``ch1``..``ch4`` (signals), ``ext`` (events).

    ``noise_divisions`` sets the input noise (rms, in vertical divisions; 0 for exact tests).
    """

    # LAN (SCPI socket): ~10 MB/s of waveform payload, ~0.5 ms per message (estimates)
    link_bytes_per_s = 10e6
    #: Input buffer size is not documented (?): 1 MB is far beyond any setup or command.
    max_input_bytes: ClassVar[int] = 1024 * 1024
    message_latency_s = 0.5e-3

    def __init__(
        self, name: str, bench: Bench | None = None, *, noise_divisions: float = 0.003
    ) -> None:
        self.channels: dict[int, ScopeChannel] = self._default_channels()
        self.settings = ScopeSettings()
        self.noise_divisions = noise_divisions
        self.running = True
        self.pending: _Pending | None = None
        self.record: Record | None = None
        self.trigger_event = False
        super().__init__(name, bench)

    @staticmethod
    def _default_channels() -> dict[int, ScopeChannel]:
        chans = {n: ScopeChannel(label=str(n)) for n in range(1, CHANNELS + 1)}
        chans[1].display = True
        return chans

    # ------------------------------------------------------------------ base-class hooks
    def identity(self) -> str:
        return IDN

    def reset(self) -> None:
        """*RST / :SYST:PRES: default setup, running, no stored record."""
        self.channels = self._default_channels()
        self.settings = ScopeSettings()
        self.running = True
        self.pending = None
        self.record = None
        self.trigger_event = False
        super().reset()

    def wait_pending(self) -> None:
        """*OPC?/*WAI: complete the armed acquisition (see module docstring) or raise -200."""
        self._complete(wait=True)

    def on_bus_trigger(self) -> None:
        """*TRG: a forced trigger of the armed acquisition, now."""
        if self.pending is not None:
            self._capture(self.bench.clock.now, triggered=True)

    def on_trigger(self, port: str, t: float) -> None:
        """An event on the EXT TRIG input (port ``ext``)."""
        if port != "ext" or self.settings.trigger_source != "EXT":
            return
        if (self.pending is not None and t >= self.pending.armed_at) or (
            self.pending is None and self.running
        ):
            self._capture(t, triggered=True)

    def snapshot(self) -> dict[str, object]:
        snap = super().snapshot()
        snap["settings"] = {f.name: getattr(self.settings, f.name) for f in fields(self.settings)}
        for n, ch in self.channels.items():
            snap[f"ch{n}"] = {f.name: getattr(ch, f.name) for f in fields(ch)}
        snap["running"] = self.running
        snap["armed"] = self.pending is not None
        return snap

    # ------------------------------------------------------------------ horizontal model
    def record_points(self) -> int:
        """Points of the next record: the request, rounded down to an allowed length."""
        s = self.settings
        allowed = NORMAL_POINTS if s.waveform_points_mode == "NORM" else RAW_POINTS
        by_rate = H_DIVISIONS * s.time_scale_s * MAX_SAMPLE_RATE
        limit = min(s.waveform_points, by_rate, MAX_RECORD)
        fitting = [p for p in allowed if p <= limit]
        return fitting[-1] if fitting else allowed[0]

    def _x_origin(self) -> float:
        s = self.settings
        left_of_reference = {"LEFT": 1.0, "CENT": 5.0, "RIGH": 9.0}[s.time_reference]
        return s.time_position_s - left_of_reference * s.time_scale_s

    def _x_increment(self, points: int) -> float:
        return H_DIVISIONS * self.settings.time_scale_s / points

    # ------------------------------------------------------------------ acquisition
    def _displayed_volts(self, n: int, t: FloatArray) -> FloatArray:
        """What channel ``n`` shows at times ``t``, before noise and the ADC."""
        v = np.asarray(self.bench.signal(f"{self.name}.ch{n}", t), dtype=float)
        if self.channels[n].invert:
            v = -v
        return v

    def _capture(self, t_trigger: float, triggered: bool) -> None:
        """Take the record belonging to a trigger at ``t_trigger`` (now, eagerly)."""
        s = self.settings
        points = self.record_points()
        xinc = self._x_increment(points)
        xorig = self._x_origin()
        times = t_trigger + xorig + xinc * np.arange(points, dtype=np.float64)
        count = s.acquire_count if s.acquire_type == "AVER" else 1
        noise_factor = {"AVER": 1.0 / math.sqrt(count), "HRES": 0.25}.get(s.acquire_type, 1.0)
        codes: dict[int, IntArray] = {}
        scales: dict[int, float] = {}
        offsets: dict[int, float] = {}
        for n, ch in self.channels.items():
            if not ch.display:
                continue
            v = self._displayed_volts(n, times)
            if ch.coupling == "AC":
                v = v - float(np.mean(v))
            sigma = self.noise_divisions * ch.scale_v * noise_factor
            # x = ((v + noise) - offset) / step, rounded, worked in one scratch array (the
            # record can hold 4 M points): normal(0, sigma) is sigma * standard_normal.
            if sigma > 0:
                rng = self.bench.rng_for(f"{self.name}.ch{n}", float(times[0]))
                x = rng.standard_normal(size=v.shape)
                x *= sigma
                x += v
            else:
                x = np.array(v, dtype=float)
            step = V_DIVISIONS * ch.scale_v / (2 * ADC_HALF_SPAN)
            x -= ch.offset_v
            x /= step
            np.rint(x, out=x)
            code = x.astype(np.int64)
            # the screen is the ADC's range: beyond it a point is clipped, not saturated
            np.putmask(code, x > ADC_HALF_SPAN, _ADC_HIGH)
            np.putmask(code, x < -ADC_HALF_SPAN, _ADC_LOW)
            codes[n] = code
            scales[n] = ch.scale_v
            offsets[n] = ch.offset_v
        self.record = Record(
            trigger_time_s=t_trigger,
            triggered=triggered,
            x_origin_s=xorig,
            x_increment_s=xinc,
            points=points,
            acquire_type=s.acquire_type,
            count=count,
            codes=codes,
            scale_v=scales,
            offset_v=offsets,
        )
        if triggered:
            self.trigger_event = True
        self.pending = None

    def _find_edge(self, start: float, stop: float) -> float | None:
        """First crossing of the trigger level with the trigger slope in ``[start, stop)``."""
        s = self.settings
        m = _SOURCE_RE.match(s.trigger_source)
        if m is None:
            return None
        n = int(m.group(1))
        level = s.trigger_levels.get(s.trigger_source, 0.0)
        dt = self._x_increment(self.record_points())
        t0 = start
        searched = 0
        while t0 < stop and searched < SEARCH_MAX_SAMPLES:
            count = min(_SEARCH_CHUNK, math.ceil((stop - t0) / dt) + 1)
            t = t0 + dt * np.arange(count + 1, dtype=np.float64)
            v = self._displayed_volts(n, t)
            above = v >= level
            rising = ~above[:-1] & above[1:]
            falling = above[:-1] & ~above[1:]
            hits = {"POS": rising, "NEG": falling}.get(s.trigger_slope, rising | falling)
            idx = np.flatnonzero(hits)
            if idx.size:
                i = int(idx[0])
                dv = v[i + 1] - v[i]
                frac = (level - v[i]) / dv if dv != 0 else 0.0
                return float(t[i] + frac * dt)
            searched += count
            t0 = float(t[-1])
        return None

    def _complete(self, wait: bool) -> None:
        """Resolve the armed acquisition if it can be; ``wait``: the client waits for it.

        Raises -200 when the client waits for an acquisition that cannot trigger (NORMal sweep).
        """
        now = self.bench.clock.now
        if self.pending is not None:
            s = self.settings
            armed = self.pending.armed_at
            if s.trigger_source == "LINE":
                period = 1.0 / LINE_FREQUENCY_HZ
                self._capture(math.ceil(armed / period) * period, triggered=True)
            elif s.trigger_source != "EXT":
                record = H_DIVISIONS * s.time_scale_s
                horizon = max(now - armed, 0.0) + max(100 * record, 0.1)
                stop = armed + min(horizon, SEARCH_MAX_S)
                if s.trigger_sweep == "AUTO":
                    # AUTO triggers itself if nothing comes within the auto time-out
                    stop = min(stop, max(now, armed) + max(2 * record, 0.05))
                hit = self._find_edge(armed, stop)
                if hit is not None:
                    self._capture(hit, triggered=True)
            if self.pending is not None and s.trigger_sweep == "AUTO":
                self._capture(max(now, armed), triggered=False)
        elif self.running and wait and self.record is None:
            # a running scope always has a recent record to show
            self._capture(now, triggered=False)
        if wait:
            if self.pending is not None:
                raise ScpiError(
                    -200,
                    detail="acquisition waiting for a trigger (NORMal sweep); "
                    "the scope answers when it triggers",
                )
            if self.record is not None:
                done = self.record.end_time_s
                if self.record.acquire_type == "AVER":
                    done += (self.record.count - 1) * self.record.points * self.record.x_increment_s
                self.bench.clock.advance_to(done)

    def _arm(self) -> None:
        self.pending = _Pending(self.bench.clock.now)
        self.trigger_event = False

    def _data_record(self) -> Record:
        """The record a waveform query reports; a running scope takes a fresh one first."""
        if self.running and self.pending is None:
            rec = self.record
            now = self.bench.clock.now
            screen = H_DIVISIONS * self.settings.time_scale_s
            if rec is None or rec.end_time_s < now - screen:
                self.pending = _Pending(now, single=False)
                try:
                    self._complete(wait=True)
                except ScpiError:
                    if rec is None:
                        raise
                    # NORMal sweep without a new trigger: the screen keeps the last record
                    self.pending = None
        self._complete(wait=True)
        if self.record is None:
            raise ScpiError(-230, detail="no acquisition yet: :SINGle, :DIGitize or :RUN first")
        return self.record

    # ------------------------------------------------------------------ waveform encoding
    def _source_codes(self, rec: Record) -> tuple[int, IntArray]:
        n = self.settings.waveform_source
        if n not in rec.codes:
            raise ScpiError(-221, detail=f"channel {n} was off in the last acquisition")
        codes = rec.codes[n]
        step = self._decimation(rec)
        return n, codes[::step]

    def _decimation(self, rec: Record) -> int:
        """Every ``k``-th point when fewer points are requested than the record holds."""
        want = self.record_points()
        return max(1, rec.points // want) if want < rec.points else 1

    def _preamble(self, rec: Record | None) -> list[str]:
        s = self.settings
        if rec is None:
            points = self.record_points()
            xinc, xorig = self._x_increment(points), self._x_origin()
            scale = self.channels[s.waveform_source].scale_v
            offset = self.channels[s.waveform_source].offset_v
            kind, count = s.acquire_type, s.acquire_count if s.acquire_type == "AVER" else 1
        else:
            step = self._decimation(rec)
            points = len(range(0, rec.points, step))
            xinc, xorig = rec.x_increment_s * step, rec.x_origin_s
            n = s.waveform_source
            scale = rec.scale_v.get(n, self.channels[n].scale_v)
            offset = rec.offset_v.get(n, self.channels[n].offset_v)
            kind, count = rec.acquire_type, rec.count
        yinc, yref = self._y_scaling(scale)
        return [
            str(_FORMAT_CODE[s.waveform_format]),
            str(_TYPE_CODE[kind]),
            str(points),
            str(count),
            _nr3(xinc),
            _nr3(xorig),
            "0",
            _nr3(yinc),
            _nr3(offset),
            str(yref),
        ]

    def _y_scaling(self, scale: float) -> tuple[float, int]:
        """(yincrement, yreference) of the current format for a channel at ``scale`` V/div."""
        s = self.settings
        adc_step = V_DIVISIONS * scale / (2 * ADC_HALF_SPAN)
        if s.waveform_format == "BYTE":
            return adc_step * BYTE_PER_ADC, BYTE_YREF if s.waveform_unsigned else 0
        # WORD; ASCii reports the WORD scaling (its values are volts already)
        return adc_step / WORD_PER_ADC, WORD_YREF if s.waveform_unsigned else 0

    def _encode(self, rec: Record) -> bytes:
        s = self.settings
        n, adc = self._source_codes(rec)
        if s.waveform_format == "ASC":
            low = adc == _ADC_LOW
            high = adc == _ADC_HIGH
            fine = np.clip(adc, -ADC_HALF_SPAN, ADC_HALF_SPAN)
            step = V_DIVISIONS * rec.scale_v[n] / (2 * ADC_HALF_SPAN)
            volts = fine * step + rec.offset_v[n]
            text = [f"{v:+.9E}" for v in volts]
            for i in np.flatnonzero(low):
                text[i] = "-" + ASCII_CLIPPED
            for i in np.flatnonzero(high):
                text[i] = "+" + ASCII_CLIPPED
            return _definite_block(",".join(text).encode("ascii"))
        # BYTE and WORD: every stored code (the 10-bit range and the two clip markers) maps
        # through a table to its wire code, written straight after the block header: one pass
        # over a record of up to 4 M points instead of one per step of the conversion.
        endian = ">" if s.waveform_byte_order == "MSBF" else "<"
        table = _wire_table(s.waveform_format, s.waveform_unsigned, endian)
        index = np.clip(adc, -ADC_HALF_SPAN - 1, ADC_HALF_SPAN + 1)
        index += ADC_HALF_SPAN + 1
        size = index.size * table.itemsize
        header = b"#8" + f"{size:08d}".encode("ascii")
        block = bytearray(len(header) + size)
        block[: len(header)] = header
        out = np.frombuffer(block, dtype=table.dtype, offset=len(header))
        np.take(table, index, out=out)
        return bytes(block)

    # ------------------------------------------------------------------ helpers
    def _ch(self, ctx: Context) -> int:
        return ctx.suffix(0, default=1, lo=1, hi=CHANNELS)

    @staticmethod
    def _source_name(text: str, *, allow_ext: bool) -> str:
        """``CHANnel2``/``chan2`` -> ``CHAN2``; ``EXTernal`` -> ``EXT``; ``LINE``."""
        up = text.strip().upper()
        m = _SOURCE_RE.match(up)
        if m is not None and 1 <= int(m.group(1)) <= CHANNELS:
            return f"CHAN{m.group(1)}"
        if allow_ext and up in ("EXT", "EXTERNAL"):
            return "EXT"
        if allow_ext and up == "LINE":
            return "LINE"
        raise ScpiError(-224, detail=f"source {text!r}")

    def _offset_limit(self, n: int) -> float:
        ch = self.channels[n]
        # 3000 X: +-2 V up to 200 mV/div, +-50 V above (1:1 probe; scales with the ratio)
        return (2.0 if ch.scale_v <= 0.2 * ch.probe else 50.0) * ch.probe

    # ------------------------------------------------------------------ command table
    def register_commands(self) -> None:
        add = self.tree.add
        add(":RUN", write=self._w_run)
        add(":STOP", write=self._w_stop)
        add(":SINGle", write=self._w_single)
        add(":DIGitize", write=self._w_digitize)
        add(":AUToscale", write=self._w_autoscale)
        add(":TER", query=self._q_ter)
        add(":OPERegister:CONDition", query=self._q_oper_condition)
        add(":SYSTem:PRESet", write=lambda c, a: self.reset())
        tb = ":TIMebase"
        add(tb, query=self._q_timebase)
        add(f"{tb}:SCALe", write=self._w_time_scale, query=self._q_time_scale)
        add(f"{tb}[:MAIN]:RANGe", write=self._w_time_range, query=self._q_time_range)
        add(f"{tb}[:MAIN]:POSition", write=self._w_time_position, query=self._q_time_position)
        add(f"{tb}:MODE", write=self._w_time_mode, query=self._q_time_mode)
        add(f"{tb}:REFerence", write=self._w_time_reference, query=self._q_time_reference)
        ch = ":CHANnel#"
        add(ch, query=self._q_channel)
        add(f"{ch}:SCALe", write=self._w_ch_scale, query=self._q_ch_scale)
        add(f"{ch}:RANGe", write=self._w_ch_range, query=self._q_ch_range)
        add(f"{ch}:OFFSet", write=self._w_ch_offset, query=self._q_ch_offset)
        add(f"{ch}:DISPlay", write=self._w_ch_display, query=self._q_ch_display)
        add(f"{ch}:COUPling", write=self._w_ch_coupling, query=self._q_ch_coupling)
        add(f"{ch}:PROBe", write=self._w_ch_probe, query=self._q_ch_probe)
        add(f"{ch}:IMPedance", write=self._w_ch_impedance, query=self._q_ch_impedance)
        add(f"{ch}:BWLimit", write=self._w_ch_bwlimit, query=self._q_ch_bwlimit)
        add(f"{ch}:INVert", write=self._w_ch_invert, query=self._q_ch_invert)
        add(f"{ch}:LABel", write=self._w_ch_label, query=self._q_ch_label)
        add(f"{ch}:UNITs", write=self._w_ch_unit, query=self._q_ch_unit)
        trig = ":TRIGger"
        add(f"{trig}:MODE", write=self._w_trig_mode, query=self._q_trig_mode)
        add(f"{trig}:SWEep", write=self._w_trig_sweep, query=self._q_trig_sweep)
        add(f"{trig}[:EDGE]:SOURce", write=self._w_trig_source, query=self._q_trig_source)
        add(f"{trig}[:EDGE]:LEVel", write=self._w_trig_level, query=self._q_trig_level)
        add(f"{trig}[:EDGE]:SLOPe", write=self._w_trig_slope, query=self._q_trig_slope)
        add(f"{trig}[:EDGE]:COUPling", write=self._w_trig_coupling, query=self._q_trig_coupling)
        add(f"{trig}:HOLDoff", write=self._w_trig_holdoff, query=self._q_trig_holdoff)
        add(f"{trig}:HFReject", write=self._w_trig_hfr, query=self._q_trig_hfr)
        add(f"{trig}:NREJect", write=self._w_trig_nrej, query=self._q_trig_nrej)
        acq = ":ACQuire"
        add(f"{acq}:TYPE", write=self._w_acq_type, query=self._q_acq_type)
        add(f"{acq}:COUNt", write=self._w_acq_count, query=self._q_acq_count)
        add(f"{acq}:MODE", write=self._w_acq_mode, query=self._q_acq_mode)
        add(f"{acq}:COMPlete", write=self._w_acq_complete, query=self._q_acq_complete)
        add(f"{acq}:SRATe", query=self._q_acq_srate)
        add(f"{acq}:POINts", query=self._q_acq_points)
        wav = ":WAVeform"
        add(f"{wav}:SOURce", write=self._w_wav_source, query=self._q_wav_source)
        add(f"{wav}:FORMat", write=self._w_wav_format, query=self._q_wav_format)
        add(f"{wav}:BYTeorder", write=self._w_wav_byteorder, query=self._q_wav_byteorder)
        add(f"{wav}:UNSigned", write=self._w_wav_unsigned, query=self._q_wav_unsigned)
        add(f"{wav}:POINts:MODE", write=self._w_wav_points_mode, query=self._q_wav_points_mode)
        add(f"{wav}:POINts", write=self._w_wav_points, query=self._q_wav_points)
        add(f"{wav}:PREamble", query=self._q_preamble)
        add(f"{wav}:DATA", query=self._q_data)
        for field_name, index in _PREAMBLE_FIELDS.items():
            add(f"{wav}:{field_name}", query=self._preamble_field(index))
        add(f"{wav}:TYPE", query=self._q_wav_type)

    # ------------------------------------------------------------------ run control
    def _w_run(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        self.running = True
        self.pending = None

    def _w_stop(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        if self.running and self.record is None:
            self._capture(self.bench.clock.now, triggered=False)
        self.running = False
        self.pending = None

    def _w_single(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        self.running = False
        self._arm()

    def _w_digitize(self, ctx: Context, args: Args) -> None:
        if len(args):
            wanted = set()
            for i in range(len(args)):
                name = self._source_name(args.raw(i), allow_ext=False)
                wanted.add(int(name[4:]))
            for n, ch in self.channels.items():
                ch.display = n in wanted
        self.running = False
        self._arm()
        # the EXT input cannot fire while this command runs: AUTO gives up at once
        self._complete(wait=True)

    def _w_autoscale(self, ctx: Context, args: Args) -> None:
        """:AUToscale: fit each displayed channel's current 10-division window onto 6 divisions
        (a simple stand-in for the scope's search over time bases)."""
        now = self.bench.clock.now
        t = now + np.linspace(0.0, H_DIVISIONS * self.settings.time_scale_s, 2001)
        for n, ch in self.channels.items():
            if not ch.display:
                continue
            v = self._displayed_volts(n, t)
            lo, hi = float(v.min()), float(v.max())
            span = max(hi - lo, 8e-3)
            ch.scale_v = min(max(span / 6.0, MIN_V_SCALE * ch.probe), MAX_V_SCALE * ch.probe)
            limit = self._offset_limit(n)
            ch.offset_v = min(max((hi + lo) / 2.0, -limit), limit)

    def _q_ter(self, ctx: Context, args: Args) -> str:
        self._complete(wait=False)
        value, self.trigger_event = self.trigger_event, False
        return "+1" if value else "+0"

    def _q_oper_condition(self, ctx: Context, args: Args) -> str:
        if self.pending is not None:
            # still waiting for its trigger is what the register then reports
            with contextlib.suppress(ScpiError):
                self._complete(wait=True)
        bits = 0
        if self.running or self.pending is not None:
            bits |= 1 << 3  # Run
        if self.pending is not None:
            bits |= 1 << 5  # Wait Trig
        return f"+{bits}"

    # ------------------------------------------------------------------ timebase
    def _q_timebase(self, ctx: Context, args: Args) -> str:
        s = self.settings
        return (
            f":TIM:MODE {s.time_mode};REF {s.time_reference};"
            f"MAIN:RANG {_nr3(H_DIVISIONS * s.time_scale_s)};POS {_nr3(s.time_position_s)}"
        )

    def _w_time_scale(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.time_scale_s = args.float(0, MIN_TIME_SCALE, MAX_TIME_SCALE)

    def _q_time_scale(self, ctx: Context, args: Args) -> str:
        return _nr3(self.settings.time_scale_s)

    def _w_time_range(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        full = args.float(0, H_DIVISIONS * MIN_TIME_SCALE, H_DIVISIONS * MAX_TIME_SCALE)
        self.settings.time_scale_s = full / H_DIVISIONS

    def _q_time_range(self, ctx: Context, args: Args) -> str:
        return _nr3(H_DIVISIONS * self.settings.time_scale_s)

    def _w_time_position(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.time_position_s = args.float(0, -500.0, 500.0)

    def _q_time_position(self, ctx: Context, args: Args) -> str:
        return _nr3(self.settings.time_position_s)

    def _w_time_mode(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.time_mode = _short(args.enum(0, ["MAIN", "WINDow", "XY", "ROLL"]))

    def _q_time_mode(self, ctx: Context, args: Args) -> str:
        return self.settings.time_mode

    def _w_time_reference(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.time_reference = _short(args.enum(0, ["LEFT", "CENTer", "RIGHt"]))

    def _q_time_reference(self, ctx: Context, args: Args) -> str:
        return self.settings.time_reference

    # ------------------------------------------------------------------ channels
    def _q_channel(self, ctx: Context, args: Args) -> str:
        n = self._ch(ctx)
        c = self.channels[n]
        return (
            f":CHAN{n}:RANG {_nr3(V_DIVISIONS * c.scale_v)};OFFS {_nr3(c.offset_v)};"
            f"COUP {c.coupling};IMP {c.impedance};DISP {int(c.display)};BWL {int(c.bw_limit)};"
            f'INV {int(c.invert)};LAB "{c.label}";UNIT {c.unit};PROB {_nr3(c.probe)};'
            f"PROB:SKEW {_nr3(0.0)};STYP SING"
        )

    def _set_scale(self, n: int, scale: float) -> None:
        ch = self.channels[n]
        lo, hi = MIN_V_SCALE * ch.probe, MAX_V_SCALE * ch.probe
        if not lo * (1 - 1e-12) <= scale <= hi * (1 + 1e-12):
            raise ScpiError(-222, detail=f"{scale!r} V/div outside {lo!r}..{hi!r}")
        ch.scale_v = scale
        limit = self._offset_limit(n)
        ch.offset_v = min(max(ch.offset_v, -limit), limit)

    def _w_ch_scale(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self._set_scale(self._ch(ctx), args.float(0))

    def _q_ch_scale(self, ctx: Context, args: Args) -> str:
        return _nr3(self.channels[self._ch(ctx)].scale_v)

    def _w_ch_range(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self._set_scale(self._ch(ctx), args.float(0) / V_DIVISIONS)

    def _q_ch_range(self, ctx: Context, args: Args) -> str:
        return _nr3(V_DIVISIONS * self.channels[self._ch(ctx)].scale_v)

    def _w_ch_offset(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        args.require(1, 1)
        limit = self._offset_limit(n)
        # the scope clamps the offset to its legal range without an error
        self.channels[n].offset_v = min(max(args.float(0), -limit), limit)

    def _q_ch_offset(self, ctx: Context, args: Args) -> str:
        return _nr3(self.channels[self._ch(ctx)].offset_v)

    def _w_ch_display(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.channels[self._ch(ctx)].display = args.bool(0)

    def _q_ch_display(self, ctx: Context, args: Args) -> str:
        return str(int(self.channels[self._ch(ctx)].display))

    def _w_ch_coupling(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.channels[self._ch(ctx)].coupling = args.enum(0, ["AC", "DC"])

    def _q_ch_coupling(self, ctx: Context, args: Args) -> str:
        return self.channels[self._ch(ctx)].coupling

    def _w_ch_probe(self, ctx: Context, args: Args) -> None:
        n = self._ch(ctx)
        args.require(1, 1)
        ch = self.channels[n]
        ratio = args.float(0, 0.001, 10000.0)
        # the displayed scale and offset follow the probe ratio (same volts at the BNC)
        factor = ratio / ch.probe
        ch.probe = ratio
        ch.scale_v *= factor
        ch.offset_v *= factor

    def _q_ch_probe(self, ctx: Context, args: Args) -> str:
        return _nr3(self.channels[self._ch(ctx)].probe)

    def _w_ch_impedance(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.channels[self._ch(ctx)].impedance = _short(args.enum(0, ["ONEMeg", "FIFTy"]))

    def _q_ch_impedance(self, ctx: Context, args: Args) -> str:
        return self.channels[self._ch(ctx)].impedance

    def _w_ch_bwlimit(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.channels[self._ch(ctx)].bw_limit = args.bool(0)

    def _q_ch_bwlimit(self, ctx: Context, args: Args) -> str:
        return str(int(self.channels[self._ch(ctx)].bw_limit))

    def _w_ch_invert(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.channels[self._ch(ctx)].invert = args.bool(0)

    def _q_ch_invert(self, ctx: Context, args: Args) -> str:
        return str(int(self.channels[self._ch(ctx)].invert))

    def _w_ch_label(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.channels[self._ch(ctx)].label = args.string(0)[:10].upper()

    def _q_ch_label(self, ctx: Context, args: Args) -> str:
        return f'"{self.channels[self._ch(ctx)].label}"'

    def _w_ch_unit(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.channels[self._ch(ctx)].unit = _short(args.enum(0, ["VOLT", "AMPere"]))

    def _q_ch_unit(self, ctx: Context, args: Args) -> str:
        return self.channels[self._ch(ctx)].unit

    # ------------------------------------------------------------------ trigger
    def _w_trig_mode(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.trigger_mode = args.enum(0, ["EDGE"])

    def _q_trig_mode(self, ctx: Context, args: Args) -> str:
        return self.settings.trigger_mode

    def _w_trig_sweep(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.trigger_sweep = _short(args.enum(0, ["AUTO", "NORMal"]))

    def _q_trig_sweep(self, ctx: Context, args: Args) -> str:
        return self.settings.trigger_sweep

    def _w_trig_source(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.trigger_source = self._source_name(args.raw(0), allow_ext=True)

    def _q_trig_source(self, ctx: Context, args: Args) -> str:
        return self.settings.trigger_source

    def _w_trig_level(self, ctx: Context, args: Args) -> None:
        args.require(1, 2)
        source = self.settings.trigger_source
        if args.has(1):
            source = self._source_name(args.raw(1), allow_ext=True)
        self.settings.trigger_levels[source] = args.float(0, -20.0, 20.0)

    def _q_trig_level(self, ctx: Context, args: Args) -> str:
        args.require(0, 1)
        source = self.settings.trigger_source
        if args.has(0):
            source = self._source_name(args.raw(0), allow_ext=True)
        return _nr3(self.settings.trigger_levels.get(source, 0.0))

    def _w_trig_slope(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        choices = ["POSitive", "NEGative", "EITHer", "ALTernate"]
        self.settings.trigger_slope = _short(args.enum(0, choices))

    def _q_trig_slope(self, ctx: Context, args: Args) -> str:
        return self.settings.trigger_slope

    def _w_trig_coupling(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.trigger_coupling = _short(args.enum(0, ["AC", "DC", "LFReject"]))

    def _q_trig_coupling(self, ctx: Context, args: Args) -> str:
        return self.settings.trigger_coupling

    def _w_trig_holdoff(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.trigger_holdoff_s = args.float(0, 40e-9, 10.0)

    def _q_trig_holdoff(self, ctx: Context, args: Args) -> str:
        return _nr3(self.settings.trigger_holdoff_s)

    def _w_trig_hfr(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.trigger_hf_reject = args.bool(0)

    def _q_trig_hfr(self, ctx: Context, args: Args) -> str:
        return str(int(self.settings.trigger_hf_reject))

    def _w_trig_nrej(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.trigger_noise_reject = args.bool(0)

    def _q_trig_nrej(self, ctx: Context, args: Args) -> str:
        return str(int(self.settings.trigger_noise_reject))

    # ------------------------------------------------------------------ acquisition
    def _w_acq_type(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        choices = ["NORMal", "AVERage", "HRESolution", "PEAK"]
        self.settings.acquire_type = _short(args.enum(0, choices))

    def _q_acq_type(self, ctx: Context, args: Args) -> str:
        return self.settings.acquire_type

    def _w_acq_count(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.acquire_count = args.int(0, 2, 65536)

    def _q_acq_count(self, ctx: Context, args: Args) -> str:
        return str(self.settings.acquire_count)

    def _w_acq_mode(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.acquire_mode = _short(args.enum(0, ["RTIMe", "SEGMented"]))

    def _q_acq_mode(self, ctx: Context, args: Args) -> str:
        return self.settings.acquire_mode

    def _w_acq_complete(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.acquire_complete = args.int(0, 100, 100)

    def _q_acq_complete(self, ctx: Context, args: Args) -> str:
        return str(self.settings.acquire_complete)

    def _q_acq_srate(self, ctx: Context, args: Args) -> str:
        return _nr3(self.record_points() / (H_DIVISIONS * self.settings.time_scale_s))

    def _q_acq_points(self, ctx: Context, args: Args) -> str:
        return str(self.record_points())

    # ------------------------------------------------------------------ waveform
    def _w_wav_source(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.waveform_source = int(self._source_name(args.raw(0), allow_ext=False)[4:])

    def _q_wav_source(self, ctx: Context, args: Args) -> str:
        return f"CHAN{self.settings.waveform_source}"

    def _w_wav_format(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.waveform_format = _short(args.enum(0, ["WORD", "BYTE", "ASCii"]))

    def _q_wav_format(self, ctx: Context, args: Args) -> str:
        return self.settings.waveform_format

    def _w_wav_byteorder(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        order = args.enum(0, ["LSBFirst", "MSBFirst"])
        self.settings.waveform_byte_order = _short(order)

    def _q_wav_byteorder(self, ctx: Context, args: Args) -> str:
        return self.settings.waveform_byte_order

    def _w_wav_unsigned(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self.settings.waveform_unsigned = args.bool(0)

    def _q_wav_unsigned(self, ctx: Context, args: Args) -> str:
        return str(int(self.settings.waveform_unsigned))

    def _w_wav_points_mode(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        mode = args.enum(0, ["NORMal", "MAXimum", "RAW"])
        self.settings.waveform_points_mode = _short(mode)

    def _q_wav_points_mode(self, ctx: Context, args: Args) -> str:
        return self.settings.waveform_points_mode

    def _w_wav_points(self, ctx: Context, args: Args) -> None:
        """Any count is taken; the record uses the largest allowed length not above it."""
        args.require(1, 1)
        self.settings.waveform_points = args.int(0, 1, None, keywords={"MAXimum": MAX_RECORD})

    def _q_wav_points(self, ctx: Context, args: Args) -> str:
        rec = self.record
        if rec is None or self.running:
            return str(self.record_points())
        return str(len(range(0, rec.points, self._decimation(rec))))

    def _q_preamble(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        busy = self.record is not None or self.running or self.pending is not None
        rec = self._data_record() if busy else None
        return ",".join(self._preamble(rec))

    def _preamble_field(self, index: int) -> QueryHandler:
        def query(ctx: Context, args: Args) -> str:
            args.require(0, 0)
            return self._q_preamble(ctx, args).split(",")[index]

        return query

    def _q_wav_type(self, ctx: Context, args: Args) -> str:
        rec = self.record
        return rec.acquire_type if rec is not None else self.settings.acquire_type

    def _q_data(self, ctx: Context, args: Args) -> bytes:
        args.require(0, 0)
        return self._encode(self._data_record())
