"""Emulator of a QDevil QDAC-II: 24 DC channels with sine/square/triangle/trace generators.

Use it on a bench like any other part; output port ``ch<n>`` is the voltage on channel n's
connector, and ``trig<m>`` (m = 1..5) are the external trigger outputs (events, see below)::

    bench = Bench(watch_voltages=["dac.ch1"])
    dac = QDac2Emulator("dac", bench)
    bench.connect("dnpu.e0", "dac.ch1")
    bench.connect("scope.ext", "dac.trig1")
    dac.feed(b"sour1:volt:slew 100;:sour1:volt 0.5\\n")   # a 5 ms ramp in bench time
    dac.feed(b"*OPC?\\n")                                  # advances the clock to its end

Command set (the project's QDAC-II manual, lower-case short forms or long forms, any case):

- DC: ``sour<n>[:dc]:volt[:lev][:imm][:ampl]`` (set and ``?``), ``volt:last?``,
  ``volt:mode fix|swe|list``, ``volt:slew <V/s>|inf``, ``volt:trig`` (level applied on a DC
  trigger), ``[volt:]rang low|high`` (+ ``rang:low|high:min?|max?``), ``[volt:]filt dc|med|high``,
  ``dc:trig:sour``, ``dc:init[:cont]``, ``dc:abor``, ``dc:del``, ``dc:mark:star|end``,
  ``all:abor`` and global ``abor``. Channel lists: ``sour:volt 0.2,(@2:5)``,
  ``sour:volt? (@1:3)``, ``sour:volt:last? (@1:24)`` (replies comma-separated, in list order).
- Waveform generators ``sine``, ``squ``, ``tri``: ``freq|per``, ``[volt:]span``, ``[volt:]offs``,
  ``pol norm|inv``, ``coun <N>|-1|inf``, ``slew``, ``del``, ``trig:sour``, ``init[:cont]``,
  ``abor``, ``ncl?``, ``mark:star|end|pstart|pend``; ``squ:dcyc``, ``squ:typ symm|pos|neg``,
  ``tri:dcyc`` (stored; the triangle is always symmetric).
- Traces: ``trac:def "name",N``, ``trac:data "name",<ascii list | float32 LE block>``,
  ``trac:data? "name"``, ``trac:poin? "name"``, ``trac:cat?`` (names comma-separated, empty line
  when none), ``trac:rem "name"``, ``trac:rem:all``; per channel ``awg:def "name"``, ``awg:scal``,
  ``awg:offs``, ``awg:slew``, ``awg:coun``, ``awg:trig:sour``, ``awg:init[:cont]``, ``awg:abor``,
  ``awg:ncl?``, ``awg:mark:star|end|pstart|pend``. Traces play at the fixed 1 MS/s of the real
  unit (1 point = 1 µs; a 0.5 s sequence is 500 000 points); there is no sample-rate command.
- Triggers: ``*trg`` (bus), ``tint <k>`` (internal 1..14), input ports ``ext1..ext4``,
  ``outp:trig<m>:sour hold|bus|int<k>|ext<k>``, ``:widt``, ``:pol``, ``:del``, ``:sign``.
- Errors: ``syst:err?``, ``syst:err:all?``, ``syst:err:coun?``, printed ``0, "No error"`` /
  ``-113, "Undefined header"`` (several joined by ``,``). Out-of-range values are -222 and are
  never clipped; a range change that the present level does not fit is -221.

Replies: floats as Python's shortest round-trip repr (``0.1``, ``1e-05``, ``inf``), integers
plain, enumerations as lower-case short forms (``fix``, ``low``, ``high``, ``imm``, ``int3``),
``awg:def?`` quoted. *RST state (manual §11, (?) where the manual was not available): 0 V,
``fix``, range ``low``, filter ``high``, slew ``inf``, every trigger source ``imm``, generators
idle with sine 1 kHz / 0.2 V span / 0 V offset / count -1, awg scale 1 / offset 0 / count 1,
trigger outputs ``hold`` / 10 µs / ``norm`` / 0 s. Traces survive ``*RST`` (drivers send
``trac:rem:all``).

Physics (what :meth:`output` returns for ``ch<n>``), all in bench time:

- The DC generator's digital value ``u(t)`` is piecewise linear: a new level is approached at the
  slew rate, ``u(t) = u0 + sign(V - u0) · slew · (t - t0)`` until it reaches ``V`` (a step when the
  slew is ``inf``). ``sour:volt?`` returns ``u(now)`` (mid-ramp: the value passed so far),
  ``volt:last?`` the target. ``*OPC?`` advances the bench clock to the end of every ramp.
- The output filter is a first-order low-pass, ``τ dy/dt = u - y`` with ``τ = 1 / (2π f_c)`` and
  ``f_c`` = 10 Hz (``dc``), 10 kHz (``med``), 300 kHz (``high``). For the piecewise-linear DC path
  it is solved exactly per segment ``u = a + b·s`` (s = time since the segment start):
  ``y(s) = a + b·s - b·τ + (y0 - a + b·τ)·exp(-s/τ)``.
- Sine / square / triangle: a triggered generator starts ``del`` seconds after its trigger, at
  phase 0, and runs ``coun`` periods (``-1`` forever). A re-trigger restarts it at phase 0; new
  settings take effect at the next start. The waveform is computed at 1 µs steps counted from its
  start and held in between (the 1 MS/s update). The sine passes the output filter's steady-state
  response, gain ``1/sqrt(1 + (f/f_c)²)`` and lag ``atan(f/f_c)`` (the start transient is not
  modelled); square and triangle are not filtered.
- Trace playback: point k of the bound trace, times ``awg:scal``, plus ``awg:offs``, is output
  from ``start + k µs`` for 1 µs, ``awg:coun`` times over. The points pass the output filter as a
  zero-order-hold first-order IIR, ``y[k] = α·y[k-1] + (1 - α)·x[k]``, ``α = exp(-1 µs / τ)``,
  starting from 0 (the generator's output before it starts); later repetitions start from the
  end of the previous one; the decay after the end is not modelled.
- Generators started by one trigger event start at the same bench time, so channels play in sync.
- The sum is clipped to the range (±2 V ``low``, ±10 V ``high``), as the output stage would.
- Markers: when a generator with ``mark:star k`` starts, internal trigger k fires at its start;
  ``mark:end k`` fires at its end — delivered when the QDAC next receives a command or
  ``*OPC?`` (bench time only moves through commands). ``mark:pstart|pend`` are stored only.
  Internal trigger k starts every armed generator whose source is ``int<k>`` and every trigger
  output routed to ``int<k>`` fires the bench event ``<name>.trig<m>`` (``del`` later).
- Safety evidence: whenever a channel's output changes (DC set, ramp, generator start, range or
  filter change, reset) the emulator bounds the new trajectory's minimum and maximum (DC extremes
  plus each running generator's extremes) and calls ``bench.log_voltage("<name>.ch<n>", lo, hi)``.

Not emulated: sweep and list generation (``volt:mode swe|list`` is stored), the waveform and AWG
slew limits (stored), current sensing, the DC generator's step markers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy import signal as sps

from labrig.sim.bench import Bench, FloatArray
from labrig.sim.emulator import Reply, ScpiEmulator
from labrig.sim.scpi import Args, Context, ScpiError, quote_string

__all__ = [
    "CHANNEL_COUNT",
    "FILTER_CUTOFF_HZ",
    "RANGE_LIMIT_V",
    "SAMPLE_PERIOD_S",
    "QDac2Emulator",
]

CHANNEL_COUNT = 24
INTERNAL_TRIGGERS = 14
EXTERNAL_INPUTS = 4
TRIGGER_OUTPUTS = 5
SAMPLE_PERIOD_S = 1e-6  # 1 MS/s update rate of every channel
RANGE_LIMIT_V = {"low": 2.0, "high": 10.0}
FILTER_CUTOFF_HZ = {"dc": 10.0, "med": 10e3, "high": 300e3}
SLEW_MIN_V_PER_S = 0.01
SLEW_MAX_V_PER_S = 2e7
WAVE_FREQ_MIN_HZ = 1e-3  # (?) not in any source; 1 mHz .. Nyquist of the 1 MS/s update
WAVE_FREQ_MAX_HZ = 500e3
MAX_TRACE_POINTS = 10_000_000  # (?) per trace; the real memory size is not documented
MAX_TOTAL_TRACE_POINTS = 20_000_000
_MAX_KNOTS = 2048  # DC trajectory history kept for output() at past times
_MAX_RUNS = 64  # generator runs kept per generator for output() at past times
_HOLD_EPS = 1e-6  # in samples: floor((t - t0) / 1 µs + eps) so exact grid times land on k
_SLEW_KEYWORDS = {"INFinity": math.inf}
_COUNT_KEYWORDS = {"INFinity": -1}
_WAVE_KINDS = ("sine", "squ", "tri")

_TRIGGER_RE = re.compile(r"^(IMM|IMMEDIATE|BUS|HOLD|INT|INTERNAL|EXT|EXTERNAL)(\d*)$")


def _fmt(x: float) -> str:
    """A float reply: the shortest text that reads back to the same float (``inf`` for ∞)."""
    return repr(float(x))


def _tau(filter_name: str) -> float:
    """Output-filter time constant τ = 1 / (2π f_c)."""
    return 1.0 / (2.0 * math.pi * FILTER_CUTOFF_HZ[filter_name])


def _parse_trigger_source(args: Args, i: int, *, allow_imm: bool = True) -> str:
    """``imm|bus|hold|int<k>|ext<k>`` (short or long form) -> normalised lower-case name."""
    text = args.raw(i).upper()
    m = _TRIGGER_RE.match(text)
    if m is None:
        raise ScpiError(-224, detail=f"trigger source {args.raw(i)!r}")
    word, number = m.group(1), m.group(2)
    if word in ("IMM", "IMMEDIATE", "BUS", "HOLD"):
        if number:
            raise ScpiError(-224, detail=f"trigger source {args.raw(i)!r}")
        name = {"IMM": "imm", "IMMEDIATE": "imm", "BUS": "bus", "HOLD": "hold"}[word]
        if name == "imm" and not allow_imm:
            raise ScpiError(-224, detail="imm is not a trigger output source")
        return name
    if not number:
        raise ScpiError(-224, detail=f"trigger source {args.raw(i)!r} needs a number")
    k = int(number)
    limit = INTERNAL_TRIGGERS if word.startswith("INT") else EXTERNAL_INPUTS
    if not 1 <= k <= limit:
        raise ScpiError(-222, detail=f"trigger {args.raw(i)!r} outside 1..{limit}")
    return f"{'int' if word.startswith('INT') else 'ext'}{k}"


def _held(t: FloatArray, t0: float) -> tuple[FloatArray, FloatArray]:
    """Sample index k = floor((t - t0) / 1 µs) and the held time k µs (the 1 MS/s update)."""
    k = np.floor((t - t0) / SAMPLE_PERIOD_S + _HOLD_EPS)
    return k, k * SAMPLE_PERIOD_S


# --------------------------------------------------------------------------- DC path


class FilteredRamp:
    """The DC generator's trajectory ``u(t)`` (piecewise linear) and the filtered output ``y(t)``.

    Knots ``(t_k, u_k, y_k, τ_k)``: between knots ``u`` is linear, after the last it is constant;
    two knots at one time are a step. ``y`` obeys ``τ dy/dt = u - y`` with the τ of the segment's
    first knot (0 = no filter), solved exactly (see the module docstring). Use::

        path = FilteredRamp(0.0, tau=_tau("high"))
        end_time = path.move_to(now, 0.5, slew=100.0, tau=_tau("high"))
        path.evaluate(np.array([now, end_time]))           # filtered output
    """

    def __init__(self, value: float = 0.0, tau: float = 0.0, t0: float = 0.0) -> None:
        self._t = np.array([t0])
        self._u = np.array([value])
        self._y = np.array([value])
        self._tau = np.array([tau])

    @property
    def end_time(self) -> float:
        """Bench time at which the last ramp reaches its target."""
        return float(self._t[-1])

    @property
    def target(self) -> float:
        """The level the trajectory ends at."""
        return float(self._u[-1])

    def evaluate(self, t: FloatArray, *, filtered: bool = True) -> FloatArray:
        """``y(t)`` (``filtered``) or ``u(t)`` at bench times ``t`` (before the first knot: its
        value)."""
        t = np.asarray(t, dtype=float)
        n = self._t.size
        idx = np.searchsorted(self._t, t, side="right") - 1
        before = idx < 0
        idx = np.clip(idx, 0, n - 1)
        nxt = np.minimum(idx + 1, n - 1)
        seg = self._t[nxt] - self._t[idx]
        a = self._u[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.where(seg > 0, (self._u[nxt] - a) / np.where(seg > 0, seg, 1.0), 0.0)
        s = np.where(before, 0.0, t - self._t[idx])
        u = a + b * s
        if not filtered:
            return u
        tau = self._tau[idx]
        safe_tau = np.where(tau > 0, tau, 1.0)
        y = np.where(
            tau > 0,
            u - b * tau + (self._y[idx] - a + b * tau) * np.exp(-s / safe_tau),
            u,
        )
        return y

    def value_at(self, t: float) -> tuple[float, float]:
        """``(u(t), y(t))`` at one time."""
        tt = np.array([t])
        return float(self.evaluate(tt, filtered=False)[0]), float(self.evaluate(tt)[0])

    def _cut_at(self, now: float, tau: float) -> tuple[float, float]:
        """Drop the knots after ``now`` and end the trajectory with a knot at ``now``."""
        u_now, y_now = self.value_at(now)
        keep = int(np.searchsorted(self._t, now, side="right"))
        self._t = np.append(self._t[:keep], now)
        self._u = np.append(self._u[:keep], u_now)
        self._y = np.append(self._y[:keep], y_now)
        self._tau = np.append(self._tau[:keep], tau)
        return u_now, y_now

    def move_to(self, now: float, target: float, slew: float, tau: float) -> float:
        """Start moving from the present value to ``target`` at ``slew`` V/s (``inf``: a step);
        an unfinished ramp is abandoned where it is. Returns the time the ramp ends."""
        u_now, y_now = self._cut_at(now, tau)
        if math.isinf(slew) or target == u_now:
            t_end, y_end = now, y_now
        else:
            t_end = now + abs(target - u_now) / slew
            b = (target - u_now) / (t_end - now) if t_end > now else 0.0
            s = t_end - now
            if tau > 0:
                y_end = target - b * tau + (y_now - u_now + b * tau) * math.exp(-s / tau)
            else:
                y_end = target
        self._t = np.append(self._t, t_end)
        self._u = np.append(self._u, target)
        self._y = np.append(self._y, y_end)
        self._tau = np.append(self._tau, tau)
        self._prune()
        return t_end

    def set_tau(self, now: float, tau: float) -> None:
        """Change the filter from ``now`` on, keeping a ramp in flight."""
        u_now, y_now = self.value_at(now)
        keep = int(np.searchsorted(self._t, now, side="right"))
        t_rest, u_rest = self._t[keep:], self._u[keep:]
        self._t = np.concatenate([self._t[:keep], [now], t_rest])
        self._u = np.concatenate([self._u[:keep], [u_now], u_rest])
        self._y = np.concatenate([self._y[:keep], [y_now], np.zeros(t_rest.size)])
        self._tau = np.concatenate([self._tau[:keep], [tau], np.full(t_rest.size, tau)])
        # Recompute y on the knots after now with the new τ, segment by segment.
        for k in range(keep + 1, self._t.size):
            s = self._t[k] - self._t[k - 1]
            a, y0 = self._u[k - 1], self._y[k - 1]
            b = (self._u[k] - a) / s if s > 0 else 0.0
            if tau > 0 and s > 0:
                self._y[k] = a + b * s - b * tau + (y0 - a + b * tau) * math.exp(-s / tau)
            else:
                self._y[k] = y0 if s == 0 and tau > 0 else self._u[k]
        self._prune()

    def extremes_from(self, now: float) -> tuple[float, float]:
        """Bounds of ``y`` from ``now`` on: a first-order filter never leaves the hull of its
        state and its input."""
        u_now, y_now = self.value_at(now)
        later = self._u[self._t > now]
        values = [u_now, y_now, self.target, *later.tolist()]
        return min(values), max(values)

    def _prune(self) -> None:
        if self._t.size > _MAX_KNOTS:
            drop = self._t.size - _MAX_KNOTS
            self._t, self._u = self._t[drop:], self._u[drop:]
            self._y, self._tau = self._y[drop:], self._tau[drop:]


# --------------------------------------------------------------------------- generators


@dataclass
class GeneratorRun:
    """One start of a generator: it contributes ``wave(t)`` for ``start <= t < stop``."""

    start: float
    stop: float
    wave: Callable[[FloatArray], FloatArray]
    low: float
    high: float
    period_s: float  # one period (waveforms) or one repetition (traces)
    count: int  # -1 = forever
    finite: bool

    @property
    def end(self) -> float:
        """Natural end (inf for a count of -1)."""
        return self.start + self.count * self.period_s if self.finite else math.inf

    def cycles_left(self, now: float) -> int:
        """``ncl?``: periods (repetitions) still to play at ``now``."""
        if now >= self.stop:
            return 0
        if not self.finite:
            return -1
        done = max(0.0, now - self.start) / self.period_s
        return max(0, self.count - math.floor(done + 1e-9))


@dataclass
class Generator:
    """Trigger plumbing shared by the DC, waveform and AWG generators of one channel."""

    kind: str
    trigger_source: str = "imm"
    continuous: bool = False
    armed: bool = False
    delay_s: float = 0.0
    markers: dict[str, int] = field(
        default_factory=lambda: {"star": 0, "end": 0, "pstart": 0, "pend": 0}
    )
    runs: list[GeneratorRun] = field(default_factory=list)

    def active_run(self, now: float) -> GeneratorRun | None:
        if self.runs and self.runs[-1].stop > now:
            return self.runs[-1]
        return None

    def stop(self, t: float) -> None:
        """End whatever is playing at ``t`` (a run not started yet is cancelled)."""
        if self.runs and self.runs[-1].stop > t:
            run = self.runs[-1]
            run.stop = max(min(run.stop, t), run.start) if t >= run.start else run.start

    def add_run(self, run: GeneratorRun) -> None:
        self.stop(run.start)
        self.runs.append(run)
        if len(self.runs) > _MAX_RUNS:
            del self.runs[: len(self.runs) - _MAX_RUNS]

    def contribution(self, t: FloatArray) -> FloatArray:
        out = np.zeros_like(t)
        if not self.runs or t.size == 0:
            return out
        t_lo, t_hi = float(t.min()), float(t.max())
        for run in self.runs:
            if run.stop <= t_lo or run.start > t_hi:
                continue
            mask = (t >= run.start) & (t < run.stop)
            if mask.any():
                out[mask] += run.wave(t[mask])
        return out


@dataclass
class WaveSettings:
    """Settings of a sine/square/triangle generator (take effect at the next start)."""

    freq_hz: float = 1000.0
    span_v: float = 0.2
    offset_v: float = 0.0
    inverted: bool = False
    count: int = -1
    slew: float = math.inf
    duty_pct: float = 50.0
    square_type: str = "symm"


@dataclass
class AwgSettings:
    """Settings of a channel's trace player."""

    trace: str = ""
    scale: float = 1.0
    offset_v: float = 0.0
    slew: float = math.inf
    count: int = 1


@dataclass
class TriggerOutput:
    """``outp:trig<m>``: which trigger it forwards, with what pulse."""

    source: str = "hold"
    width_s: float = 10e-6
    inverted: bool = False
    delay_s: float = 0.0


@dataclass
class Channel:
    """One output channel's settings and generators."""

    number: int
    dc: FilteredRamp
    range_name: str = "low"
    filter_name: str = "high"
    slew: float = math.inf
    mode: str = "fix"
    trigger_level: float | None = None
    dc_gen: Generator = field(default_factory=lambda: Generator("dc"))
    waves: dict[str, Generator] = field(
        default_factory=lambda: {k: Generator(k) for k in _WAVE_KINDS}
    )
    wave_settings: dict[str, WaveSettings] = field(
        default_factory=lambda: {k: WaveSettings() for k in _WAVE_KINDS}
    )
    awg: Generator = field(default_factory=lambda: Generator("awg"))
    awg_settings: AwgSettings = field(default_factory=AwgSettings)

    @property
    def limit(self) -> float:
        return RANGE_LIMIT_V[self.range_name]

    @property
    def tau(self) -> float:
        return _tau(self.filter_name)

    def players(self) -> list[Generator]:
        """The generators that add to the DC level."""
        return [*self.waves.values(), self.awg]

    def all_generators(self) -> list[Generator]:
        return [self.dc_gen, *self.players()]


def _square(phase: FloatArray, duty: float) -> FloatArray:
    """1 for the first ``duty`` of each period, else 0 (phase in periods)."""
    return (np.mod(phase, 1.0) < duty).astype(float)


def _triangle(phase: FloatArray) -> FloatArray:
    """A symmetric triangle in [-1, 1] in phase with sin(2π·phase): 0 at 0, +1 at 1/4."""
    p = np.mod(phase, 1.0)
    return np.where(p < 0.25, 4 * p, np.where(p < 0.75, 2 - 4 * p, 4 * p - 4))


def _wave_run(
    kind: str, s: WaveSettings, start: float, tau: float
) -> tuple[Callable[[FloatArray], FloatArray], float, float]:
    """The waveform function of one start, and its extremes."""
    amp = s.span_v / 2.0
    sign = -1.0 if s.inverted else 1.0
    f = s.freq_hz
    if kind == "sine":
        # Steady-state response of the first-order output filter: H = 1 / (1 + j f/f_c).
        ratio = 2 * math.pi * f * tau
        gain = 1.0 / math.sqrt(1.0 + ratio * ratio)
        lag = math.atan(ratio)

        def sine(t: FloatArray) -> FloatArray:
            _, th = _held(t, start)
            return s.offset_v + sign * amp * gain * np.sin(2 * math.pi * f * th - lag)

        return sine, s.offset_v - amp * gain, s.offset_v + amp * gain
    if kind == "squ":
        duty = s.duty_pct / 100.0
        if s.square_type == "symm":
            lo_n, hi_n = -amp, amp

            def square(t: FloatArray) -> FloatArray:
                _, th = _held(t, start)
                return s.offset_v + sign * amp * (2 * _square(f * th, duty) - 1)

        else:
            polarity = 1.0 if s.square_type == "pos" else -1.0
            lo_n, hi_n = sorted((0.0, polarity * s.span_v))

            def square(t: FloatArray) -> FloatArray:
                _, th = _held(t, start)
                return s.offset_v + sign * polarity * s.span_v * _square(f * th, duty)

        if sign < 0:
            lo_n, hi_n = -hi_n, -lo_n
        return square, s.offset_v + lo_n, s.offset_v + hi_n

    def triangle(t: FloatArray) -> FloatArray:
        _, th = _held(t, start)
        return s.offset_v + sign * amp * _triangle(f * th)

    return triangle, s.offset_v - amp, s.offset_v + amp


def _filtered_trace(points: FloatArray, tau: float) -> tuple[FloatArray, FloatArray]:
    """The trace through the output filter (zero-order-hold IIR): first repetition starting
    from 0, and a later repetition starting from the end of the previous one."""
    alpha = math.exp(-SAMPLE_PERIOD_S / tau) if tau > 0 else 0.0
    b, a = [1.0 - alpha], [1.0, -alpha]
    first = sps.lfilter(b, a, points, zi=[0.0])[0]
    later = sps.lfilter(b, a, points, zi=[alpha * float(first[-1])])[0]
    return np.asarray(first, dtype=float), np.asarray(later, dtype=float)


# --------------------------------------------------------------------------- the emulator


@dataclass(order=True)
class _Pending:
    time: float
    source: str = field(compare=False)
    run: GeneratorRun = field(compare=False)


class QDac2Emulator(ScpiEmulator):
    """QDevil QDAC-II emulator (see the module docstring for commands and physics)."""

    # LAN: ~5 MB/s, ~2 ms per message (estimates; older firmware was far slower)
    link_bytes_per_s = 5e6
    message_latency_s = 2e-3

    error_format: ClassVar[str] = '{code}, "{message}"'
    error_detail: ClassVar[bool] = False  # the real unit prints the bare standard text

    def __init__(self, name: str, bench: Bench | None = None) -> None:
        self.channels: dict[int, Channel] = {}
        self.trigger_outputs: dict[int, TriggerOutput] = {}
        self.traces: dict[str, np.ndarray] = {}
        self._pending: list[_Pending] = []
        # (trace array id, scale, offset, tau) -> (trace array, first repetition, later ones)
        self._filtered_cache: dict[tuple[int, float, float, float], tuple[Any, Any, Any]] = {}
        super().__init__(name, bench)
        self._init_settings(self.bench.clock.now)

    # ------------------------------------------------------------------ identity and state
    def identity(self) -> str:
        return "QDevil, QDAC-II, 101, 13-1.57"

    def _init_settings(self, now: float) -> None:
        for n in range(1, CHANNEL_COUNT + 1):
            old = self.channels.get(n)
            if old is None:
                self.channels[n] = Channel(n, FilteredRamp(0.0, _tau("high"), now))
            else:
                fresh = Channel(n, old.dc)
                # keep the run history (output() at past times) on the fresh generators
                fresh.dc_gen.runs = old.dc_gen.runs
                fresh.awg.runs = old.awg.runs
                for k in _WAVE_KINDS:
                    fresh.waves[k].runs = old.waves[k].runs
                self.channels[n] = fresh
        self.trigger_outputs = {m: TriggerOutput() for m in range(1, TRIGGER_OUTPUTS + 1)}

    def reset(self) -> None:
        """``*RST``: abort every generator, step every output to 0 V, restore the settings."""
        now = self.bench.clock.now
        for ch in self.channels.values():
            for gen in ch.all_generators():
                gen.stop(now)
        self._pending.clear()
        self._init_settings(now)
        for ch in self.channels.values():
            ch.dc.set_tau(now, ch.tau)
            ch.dc.move_to(now, 0.0, math.inf, ch.tau)
            self._log(ch)
        super().reset()

    def wait_pending(self) -> None:
        """``*OPC?``/``*WAI``: advance the bench clock to the end of every DC ramp."""
        end = max(ch.dc.end_time for ch in self.channels.values())
        self.bench.clock.advance_to(end)
        self._process_due()

    def process_message(self, message: bytes) -> Reply:
        """Deliver due end markers before running the message (see the module docstring)."""
        with self.bench.lock:
            self._process_due()
            return super().process_message(message)

    def snapshot(self) -> dict[str, object]:
        now = self.bench.clock.now
        snap = super().snapshot()
        snap["channels"] = {
            n: {
                "volt": ch.dc.value_at(now)[0],
                "target": ch.dc.target,
                "range": ch.range_name,
                "filter": ch.filter_name,
                "slew": ch.slew,
                "mode": ch.mode,
                "running": [g.kind for g in ch.players() if g.active_run(now) is not None],
            }
            for n, ch in self.channels.items()
        }
        snap["traces"] = {name: int(data.size) for name, data in self.traces.items()}
        snap["trigger_outputs"] = {m: vars(o).copy() for m, o in self.trigger_outputs.items()}
        return snap

    # ------------------------------------------------------------------ bench Part protocol
    def output(self, port: str, t: FloatArray) -> FloatArray:
        """``ch<n>``: volts at bench times ``t``; trigger outputs carry events only (0)."""
        t = np.asarray(t, dtype=float)
        if port.startswith("ch") and port[2:].isdigit():
            ch = self.channels.get(int(port[2:]))
            if ch is None:
                raise KeyError(f"{self.name} has no port {port!r}")
            v = ch.dc.evaluate(t)
            for gen in ch.players():
                v = v + gen.contribution(t)
            return np.clip(v, -ch.limit, ch.limit)
        return np.zeros_like(t)

    def on_trigger(self, port: str, t: float) -> None:
        """Input ports ``ext1`` .. ``ext4``: an external trigger edge."""
        if port.startswith("ext") and port[3:].isdigit():
            self._fire(f"ext{int(port[3:])}", t)

    def on_bus_trigger(self) -> None:
        self._fire("bus", self.bench.clock.now)

    # ------------------------------------------------------------------ trigger machinery
    def _fire(self, source: str, t: float, depth: int = 0) -> None:
        """Trigger event ``source`` (``bus``, ``int<k>``, ``ext<k>``) at bench time ``t``."""
        if depth > 16:  # markers that trigger each other in a loop
            return
        # Start every generator this event arms before any of their start markers fires: a
        # marker routed to a digitiser must see all channels that started together playing,
        # not just the first one.
        markers: list[tuple[str, float]] = []
        for ch in self.channels.values():
            if ch.dc_gen.trigger_source == source and ch.dc_gen.armed:
                self._trigger_dc(ch, t, depth, markers)
            for gen in ch.players():
                if gen.trigger_source == source and gen.armed:
                    self._start(ch, gen, t, depth, markers)
        for marker, at in markers:
            self._fire(marker, at, depth + 1)
        for m, out in self.trigger_outputs.items():
            if out.source == source:
                self.bench.fire(f"{self.name}.trig{m}", t + out.delay_s)

    def _arm(self, ch: Channel, gen: Generator, *, continuous: bool | None = None) -> None:
        """``init`` (once) or ``init:cont on``; source ``imm`` starts at once."""
        if continuous is not None:
            gen.continuous = continuous
            if not continuous:
                return
        gen.armed = True
        if gen.trigger_source == "imm":
            now = self.bench.clock.now
            if gen is ch.dc_gen:
                self._trigger_dc(ch, now)
            else:
                self._start(ch, gen, now, 0)

    def _abort(self, ch: Channel, gen: Generator) -> None:
        now = self.bench.clock.now
        gen.stop(now)
        gen.armed = gen.continuous and gen.trigger_source != "imm"

    def _trigger_dc(
        self,
        ch: Channel,
        t: float,
        depth: int = 0,
        markers: list[tuple[str, float]] | None = None,
    ) -> None:
        """A DC trigger: move to the ``volt:trig`` level (nothing if none was set).

        Start markers go to ``markers`` when given (fired by the caller), else fire at once."""
        gen = ch.dc_gen
        gen.armed = gen.continuous
        if ch.trigger_level is None:
            return
        start = max(t + gen.delay_s, self.bench.clock.now)
        self._move(ch, ch.trigger_level, start)
        if gen.markers["star"]:
            self._mark(f"int{gen.markers['star']}", start, depth, markers)

    def _mark(
        self, source: str, t: float, depth: int, markers: list[tuple[str, float]] | None
    ) -> None:
        if markers is None:
            self._fire(source, t, depth + 1)
        else:
            markers.append((source, t))

    def _start(
        self,
        ch: Channel,
        gen: Generator,
        t: float,
        depth: int,
        markers: list[tuple[str, float]] | None = None,
    ) -> None:
        """Start ``gen`` from trigger time ``t`` (phase 0 after its delay); start markers go
        to ``markers`` when given (fired by the caller once every generator has started)."""
        gen.armed = gen.continuous
        start = t + gen.delay_s
        if gen.kind == "awg":
            run = self._awg_run(ch, start)
            if run is None:
                return
        else:
            s = ch.wave_settings[gen.kind]
            wave, low, high = _wave_run(gen.kind, s, start, ch.tau)
            run = GeneratorRun(
                start, math.inf, wave, low, high, 1.0 / s.freq_hz, s.count, s.count >= 0
            )
        if run.finite:
            run.stop = run.end
        gen.add_run(run)
        self._log(ch)
        if gen.markers["star"]:
            self._mark(f"int{gen.markers['star']}", start, depth, markers)
        if gen.markers["end"] and run.finite:
            self._pending.append(_Pending(run.end, f"int{gen.markers['end']}", run))
            self._pending.sort()

    def _awg_run(self, ch: Channel, start: float) -> GeneratorRun | None:
        s = ch.awg_settings
        data = self.traces.get(s.trace)
        if data is None or data.size == 0:
            self.push_error(-221, "Settings conflict")
            return None
        # The filtered trace depends only on the trace, its scale and offset and the filter;
        # a trace re-armed every iteration is filtered once. The cache keeps the array itself,
        # so a new upload (a new array) can never be mistaken for the old one.
        key = (id(data), s.scale, s.offset_v, ch.tau)
        hit = self._filtered_cache.get(key)
        if hit is not None and hit[0] is data:
            first, later = hit[1], hit[2]
        else:
            points = s.scale * data.astype(float) + s.offset_v
            first, later = _filtered_trace(points, ch.tau)
            if len(self._filtered_cache) > 64:
                self._filtered_cache.clear()
            self._filtered_cache[key] = (data, first, later)
        n = first.size

        def play(t: FloatArray) -> FloatArray:
            k, _ = _held(t, start)
            k = k.astype(np.int64)
            rep, pos = np.divmod(np.maximum(k, 0), n)
            return np.where(rep == 0, first[pos], later[pos])

        low = float(min(first.min(), later.min()))
        high = float(max(first.max(), later.max()))
        return GeneratorRun(
            start, math.inf, play, low, high, n * SAMPLE_PERIOD_S, s.count, s.count >= 0
        )

    def _process_due(self) -> None:
        """Fire the end markers whose time has come."""
        now = self.bench.clock.now
        while self._pending and self._pending[0].time <= now:
            event = self._pending.pop(0)
            if event.run.stop >= event.time:  # not aborted before its end
                self._fire(event.source, event.time, 1)

    # ------------------------------------------------------------------ DC and safety log
    def _move(self, ch: Channel, target: float, now: float | None = None) -> None:
        now = self.bench.clock.now if now is None else now
        ch.dc.move_to(now, target, ch.slew, ch.tau)
        self._log(ch)

    def _log(self, ch: Channel) -> None:
        """Record the bounds of the channel's output from now on (safety evidence)."""
        port = f"{self.name}.ch{ch.number}"
        if not self.bench.watches(port):
            return
        now = self.bench.clock.now
        low, high = ch.dc.extremes_from(now)
        for gen in ch.players():
            run = gen.active_run(now)
            if run is None:
                continue
            g_low, g_high = run.low, run.high
            if run.finite:  # the channel returns to the bare DC level afterwards
                g_low, g_high = min(g_low, 0.0), max(g_high, 0.0)
            low, high = low + g_low, high + g_high
        limit = ch.limit
        self.bench.log_voltage(port, max(low, -limit), min(high, limit))

    # ------------------------------------------------------------------ command table
    def register_commands(self) -> None:
        add = self.tree.add
        dc = "SOURce#[:DC]:VOLTage"
        add(f"{dc}[:LEVel][:IMMediate][:AMPLitude]", write=self._w_volt, query=self._q_volt)
        add(f"{dc}:LAST", query=self._q_volt_last)
        add(f"{dc}:MODE", write=self._w_mode, query=self._q_mode)
        add(f"{dc}:SLEW", write=self._w_slew, query=self._q_slew)
        add(f"{dc}:TRIGgered", write=self._w_volt_trig, query=self._q_volt_trig)
        add("SOURce#[:VOLTage]:RANGe", write=self._w_range, query=self._q_range)
        for which in ("LOW", "HIGH"):
            for bound in ("MINimum", "MAXimum"):
                add(f"SOURce#[:VOLTage]:RANGe:{which}:{bound}", query=self._q_range_bound)
        add("SOURce#[:VOLTage]:FILTer[:LOWPass]", write=self._w_filter, query=self._q_filter)
        self._add_trigger_commands("SOURce#:DC", lambda ch: ch.dc_gen)
        add("SOURce#:ALL:ABORt", write=self._w_all_abort)
        add("ABORt", write=self._w_abort_everything)

        for kind, word in (("sine", "SINE"), ("squ", "SQUare"), ("tri", "TRIangle")):
            self._add_wave_commands(kind, f"SOURce#:{word}")

        awg = "SOURce#:AWG"
        add(f"{awg}:DEFine", write=self._w_awg_def, query=self._q_awg_def)
        add(f"{awg}:SCALe", write=self._w_awg_scale, query=self._q_awg_scale)
        add(f"{awg}[:VOLTage]:OFFSet", write=self._w_awg_offset, query=self._q_awg_offset)
        add(f"{awg}:SLEW", write=self._w_awg_slew, query=self._q_awg_slew)
        add(f"{awg}:COUNt", write=self._w_awg_count, query=self._q_awg_count)
        self._add_trigger_commands(awg, lambda ch: ch.awg)

        add("TRACe:DEFine", write=self._w_trace_def)
        add("TRACe:DATA", write=self._w_trace_data, query=self._q_trace_data)
        add("TRACe:POINts", query=self._q_trace_points)
        add("TRACe:CATalog", query=self._q_trace_cat)
        add("TRACe:REMove", write=self._w_trace_remove)
        add("TRACe:REMove:ALL", write=self._w_trace_remove_all)

        add("TINT", write=self._w_tint)
        out = "OUTPut:TRIGger#"
        add(f"{out}:SOURce", write=self._w_out_source, query=self._q_out_source)
        add(f"{out}:WIDTh", write=self._w_out_width, query=self._q_out_width)
        add(f"{out}:POLarity", write=self._w_out_pol, query=self._q_out_pol)
        add(f"{out}:DELay", write=self._w_out_delay, query=self._q_out_delay)
        add(f"{out}:SIGNal", write=self._w_out_signal)

    # ------------------------------------------------------------------ helpers for handlers
    def _targets(self, ctx: Context, args: Args, n_values: int) -> list[Channel]:
        """The channels a command addresses: a trailing channel list ``(@...)`` after
        ``n_values`` parameters, else the header suffix (default 1)."""
        if args.is_channel_list(n_values):
            args.require(n_values + 1, n_values + 1)
            numbers = args.channel_list(n_values, 1, CHANNEL_COUNT)
            return [self.channels[n] for n in numbers]
        args.require(n_values, n_values)
        return [self.channels[ctx.suffix(0, default=1, lo=1, hi=CHANNEL_COUNT)]]

    def _each(self, ctx: Context, args: Args, reply: Callable[[Channel], str]) -> str:
        return ",".join(reply(ch) for ch in self._targets(ctx, args, 0))

    # ------------------------------------------------------------------ DC handlers
    def _w_volt(self, ctx: Context, args: Args) -> None:
        channels = self._targets(ctx, args, 1)
        value = args.float(0)
        for ch in channels:
            if abs(value) > ch.limit:
                raise ScpiError(-222, detail=f"{value!r} V outside ±{ch.limit} V ({ch.range_name})")
        for ch in channels:
            self._move(ch, value)

    def _q_volt(self, ctx: Context, args: Args) -> str:
        now = self.bench.clock.now
        return self._each(ctx, args, lambda ch: _fmt(ch.dc.value_at(now)[0]))

    def _q_volt_last(self, ctx: Context, args: Args) -> str:
        return self._each(ctx, args, lambda ch: _fmt(ch.dc.target))

    def _w_mode(self, ctx: Context, args: Args) -> None:
        channels = self._targets(ctx, args, 1)
        mode = {"FIXed": "fix", "SWEep": "swe", "LIST": "list"}[
            args.enum(0, ["FIXed", "SWEep", "LIST"])
        ]
        for ch in channels:
            ch.mode = mode

    def _q_mode(self, ctx: Context, args: Args) -> str:
        return self._each(ctx, args, lambda ch: ch.mode)

    def _w_slew(self, ctx: Context, args: Args) -> None:
        channels = self._targets(ctx, args, 1)
        value = args.float(0, SLEW_MIN_V_PER_S, SLEW_MAX_V_PER_S, keywords=_SLEW_KEYWORDS)
        for ch in channels:
            ch.slew = value

    def _q_slew(self, ctx: Context, args: Args) -> str:
        return self._each(ctx, args, lambda ch: _fmt(ch.slew))

    def _w_volt_trig(self, ctx: Context, args: Args) -> None:
        channels = self._targets(ctx, args, 1)
        value = args.float(0)
        for ch in channels:
            if abs(value) > ch.limit:
                raise ScpiError(-222, detail=f"{value!r} V outside ±{ch.limit} V")
        for ch in channels:
            ch.trigger_level = value

    def _q_volt_trig(self, ctx: Context, args: Args) -> str:
        return self._each(ctx, args, lambda ch: _fmt(ch.trigger_level or 0.0))

    def _w_range(self, ctx: Context, args: Args) -> None:
        channels = self._targets(ctx, args, 1)
        name = args.enum(0, ["LOW", "HIGH"]).lower()
        now = self.bench.clock.now
        for ch in channels:
            low, high = ch.dc.extremes_from(now)
            if max(abs(low), abs(high)) > RANGE_LIMIT_V[name]:
                raise ScpiError(-221, detail=f"ch{ch.number} level does not fit range {name}")
        for ch in channels:
            ch.range_name = name
            self._log(ch)

    def _q_range(self, ctx: Context, args: Args) -> str:
        return self._each(ctx, args, lambda ch: ch.range_name)

    def _q_range_bound(self, ctx: Context, args: Args) -> str:
        words = ctx.header.upper().split(":")
        limit = RANGE_LIMIT_V["high" if any(w.startswith("HIGH") for w in words) else "low"]
        sign = -1.0 if words[-1].startswith("MIN") else 1.0
        return self._each(ctx, args, lambda ch: _fmt(sign * limit))

    def _w_filter(self, ctx: Context, args: Args) -> None:
        channels = self._targets(ctx, args, 1)
        name = {"DC": "dc", "MEDium": "med", "HIGH": "high"}[args.enum(0, ["DC", "MEDium", "HIGH"])]
        now = self.bench.clock.now
        for ch in channels:
            ch.filter_name = name
            ch.dc.set_tau(now, ch.tau)
            self._log(ch)

    def _q_filter(self, ctx: Context, args: Args) -> str:
        return self._each(ctx, args, lambda ch: ch.filter_name)

    def _w_all_abort(self, ctx: Context, args: Args) -> None:
        for ch in self._targets(ctx, args, 0):
            for gen in ch.all_generators():
                self._abort(ch, gen)

    def _w_abort_everything(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        for ch in self.channels.values():
            for gen in ch.all_generators():
                self._abort(ch, gen)

    # ------------------------------------------------------------------ generator commands
    def _add_trigger_commands(self, prefix: str, pick: Callable[[Channel], Generator]) -> None:
        """``trig:sour``, ``init[:cont]``, ``abor``, ``del``, ``ncl?``, ``mark:*`` under prefix."""
        add = self.tree.add

        def w_source(ctx: Context, args: Args) -> None:
            channels = self._targets(ctx, args, 1)
            source = _parse_trigger_source(args, 0)
            for ch in channels:
                pick(ch).trigger_source = source

        def w_init(ctx: Context, args: Args) -> None:
            for ch in self._targets(ctx, args, 0):
                self._arm(ch, pick(ch))

        def w_cont(ctx: Context, args: Args) -> None:
            channels = self._targets(ctx, args, 1)
            on = args.bool(0)
            for ch in channels:
                self._arm(ch, pick(ch), continuous=on)

        def w_abort(ctx: Context, args: Args) -> None:
            for ch in self._targets(ctx, args, 0):
                self._abort(ch, pick(ch))

        def w_delay(ctx: Context, args: Args) -> None:
            channels = self._targets(ctx, args, 1)
            value = args.float(0, 0.0, 3600.0)
            for ch in channels:
                pick(ch).delay_s = value

        def q_ncl(ctx: Context, args: Args) -> str:
            now = self.bench.clock.now

            def left(ch: Channel) -> str:
                run = pick(ch).active_run(now)
                return "0" if run is None else str(run.cycles_left(now))

            return self._each(ctx, args, left)

        add(f"{prefix}:TRIGger[:SEQuence]:SOURce", write=w_source)
        add(
            f"{prefix}:TRIGger[:SEQuence]:SOURce",
            query=lambda ctx, args: self._each(ctx, args, lambda ch: pick(ch).trigger_source),
        )
        add(f"{prefix}:INITiate[:IMMediate]", write=w_init)
        add(f"{prefix}:INITiate:CONTinuous", write=w_cont)
        add(
            f"{prefix}:INITiate:CONTinuous",
            query=lambda ctx, args: self._each(ctx, args, lambda ch: str(int(pick(ch).continuous))),
        )
        add(f"{prefix}:ABORt", write=w_abort)
        add(
            f"{prefix}:DELay",
            write=w_delay,
            query=lambda ctx, args: self._each(ctx, args, lambda ch: _fmt(pick(ch).delay_s)),
        )
        add(f"{prefix}:NCLeft", query=q_ncl)
        for key, word in (
            ("star", "STARt"),
            ("end", "END"),
            ("pstart", "PSTart"),
            ("pend", "PEND"),
        ):
            self._add_marker(prefix, key, word, pick)

    def _add_marker(
        self, prefix: str, key: str, word: str, pick: Callable[[Channel], Generator]
    ) -> None:
        def w_marker(ctx: Context, args: Args) -> None:
            channels = self._targets(ctx, args, 1)
            k = args.int(0, 0, INTERNAL_TRIGGERS)
            for ch in channels:
                pick(ch).markers[key] = k

        def q_marker(ctx: Context, args: Args) -> str:
            return self._each(ctx, args, lambda ch: str(pick(ch).markers[key]))

        self.tree.add(f"{prefix}:MARKer:{word}", write=w_marker, query=q_marker)

    def _add_wave_commands(self, kind: str, prefix: str) -> None:
        add = self.tree.add

        def setting(
            name: str,
            parse: Callable[[Args], object],
            show: Callable[[WaveSettings], str],
            apply: Callable[[WaveSettings, object], None],
        ) -> None:
            def write(ctx: Context, args: Args) -> None:
                channels = self._targets(ctx, args, 1)
                value = parse(args)
                for ch in channels:
                    apply(ch.wave_settings[kind], value)

            def query(ctx: Context, args: Args) -> str:
                return self._each(ctx, args, lambda ch: show(ch.wave_settings[kind]))

            add(f"{prefix}{name}", write=write, query=query)

        def set_attr(attr: str) -> Callable[[WaveSettings, object], None]:
            return lambda s, v: setattr(s, attr, v)

        setting(
            ":FREQuency",
            lambda a: a.float(0, WAVE_FREQ_MIN_HZ, WAVE_FREQ_MAX_HZ),
            lambda s: _fmt(s.freq_hz),
            set_attr("freq_hz"),
        )
        setting(
            ":PERiod",
            lambda a: 1.0 / a.float(0, 1.0 / WAVE_FREQ_MAX_HZ, 1.0 / WAVE_FREQ_MIN_HZ),
            lambda s: _fmt(1.0 / s.freq_hz),
            set_attr("freq_hz"),
        )
        setting(
            "[:VOLTage]:SPAN",
            lambda a: a.float(0, 0.0, 2 * RANGE_LIMIT_V["high"]),
            lambda s: _fmt(s.span_v),
            set_attr("span_v"),
        )
        setting(
            "[:VOLTage]:OFFSet",
            lambda a: a.float(0, -RANGE_LIMIT_V["high"], RANGE_LIMIT_V["high"]),
            lambda s: _fmt(s.offset_v),
            set_attr("offset_v"),
        )
        setting(
            ":POLarity",
            lambda a: a.enum(0, ["NORMal", "INVerted"]) == "INVerted",
            lambda s: "inv" if s.inverted else "norm",
            set_attr("inverted"),
        )
        setting(
            ":COUNt",
            lambda a: _parse_count(a),
            lambda s: str(s.count),
            set_attr("count"),
        )
        setting(
            ":SLEW",
            lambda a: a.float(0, SLEW_MIN_V_PER_S, SLEW_MAX_V_PER_S, keywords=_SLEW_KEYWORDS),
            lambda s: _fmt(s.slew),
            set_attr("slew"),
        )
        if kind in ("squ", "tri"):
            setting(
                ":DCYCle",
                lambda a: a.float(0, 0.0, 100.0),
                lambda s: _fmt(s.duty_pct),
                set_attr("duty_pct"),
            )
        if kind == "squ":
            setting(
                ":TYPe",
                lambda a: {"SYMMetric": "symm", "POSitive": "pos", "NEGative": "neg"}[
                    a.enum(0, ["SYMMetric", "POSitive", "NEGative"])
                ],
                lambda s: s.square_type,
                set_attr("square_type"),
            )
        self._add_trigger_commands(prefix, lambda ch: ch.waves[kind])

    # ------------------------------------------------------------------ AWG handlers
    def _w_awg_def(self, ctx: Context, args: Args) -> None:
        channels = self._targets(ctx, args, 1)
        name = args.string(0)
        if name not in self.traces:
            raise ScpiError(-224, detail=f"no trace {name!r}")
        for ch in channels:
            ch.awg_settings.trace = name

    def _q_awg_def(self, ctx: Context, args: Args) -> str:
        return self._each(ctx, args, lambda ch: quote_string(ch.awg_settings.trace))

    def _w_awg_scale(self, ctx: Context, args: Args) -> None:
        channels = self._targets(ctx, args, 1)
        value = args.float(0, -2 * RANGE_LIMIT_V["high"], 2 * RANGE_LIMIT_V["high"])
        for ch in channels:
            ch.awg_settings.scale = value

    def _q_awg_scale(self, ctx: Context, args: Args) -> str:
        return self._each(ctx, args, lambda ch: _fmt(ch.awg_settings.scale))

    def _w_awg_offset(self, ctx: Context, args: Args) -> None:
        channels = self._targets(ctx, args, 1)
        value = args.float(0, -RANGE_LIMIT_V["high"], RANGE_LIMIT_V["high"])
        for ch in channels:
            ch.awg_settings.offset_v = value

    def _q_awg_offset(self, ctx: Context, args: Args) -> str:
        return self._each(ctx, args, lambda ch: _fmt(ch.awg_settings.offset_v))

    def _w_awg_slew(self, ctx: Context, args: Args) -> None:
        channels = self._targets(ctx, args, 1)
        value = args.float(0, SLEW_MIN_V_PER_S, SLEW_MAX_V_PER_S, keywords=_SLEW_KEYWORDS)
        for ch in channels:
            ch.awg_settings.slew = value

    def _q_awg_slew(self, ctx: Context, args: Args) -> str:
        return self._each(ctx, args, lambda ch: _fmt(ch.awg_settings.slew))

    def _w_awg_count(self, ctx: Context, args: Args) -> None:
        channels = self._targets(ctx, args, 1)
        value = _parse_count(args)
        for ch in channels:
            ch.awg_settings.count = value

    def _q_awg_count(self, ctx: Context, args: Args) -> str:
        return self._each(ctx, args, lambda ch: str(ch.awg_settings.count))

    # ------------------------------------------------------------------ traces
    def _w_trace_def(self, ctx: Context, args: Args) -> None:
        args.require(2, 2)
        name = _trace_name(args)
        n = args.int(1, 1, MAX_TRACE_POINTS)
        used = sum(v.size for k, v in self.traces.items() if k != name)
        if used + n > MAX_TOTAL_TRACE_POINTS:
            raise ScpiError(-225, detail=f"{used + n} trace points exceed {MAX_TOTAL_TRACE_POINTS}")
        self.traces[name] = np.zeros(n, dtype=np.float32)

    def _w_trace_data(self, ctx: Context, args: Args) -> None:
        args.require(2)
        name = args.string(0)
        trace = self.traces.get(name)
        if trace is None:
            raise ScpiError(-224, detail=f"no trace {name!r} (trac:def first)")
        if args.is_block(1):
            args.require(2, 2)
            payload = args.block(1)
            if len(payload) % 4:
                raise ScpiError(-161, detail="block length is not a multiple of 4 (float32)")
            values = np.frombuffer(payload, dtype="<f4")
        else:
            values = np.asarray(args.numbers(1), dtype=np.float32)
        if values.size != trace.size:
            code = -223 if values.size > trace.size else -109
            raise ScpiError(code, detail=f"trace {name!r} holds {trace.size}, got {values.size}")
        if not np.all(np.isfinite(values)):
            raise ScpiError(-222, detail="trace data must be finite")
        self.traces[name] = values.astype(np.float32, copy=True)

    def _q_trace_data(self, ctx: Context, args: Args) -> str:
        args.require(1, 1)
        trace = self._trace(args.string(0))
        return ",".join(_fmt(float(v)) for v in trace)

    def _q_trace_points(self, ctx: Context, args: Args) -> str:
        args.require(1, 1)
        return str(self._trace(args.string(0)).size)

    def _trace(self, name: str) -> np.ndarray:
        trace = self.traces.get(name)
        if trace is None:
            raise ScpiError(-224, detail=f"no trace {name!r}")
        return trace

    def _q_trace_cat(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return ",".join(self.traces)

    def _w_trace_remove(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        name = args.string(0)
        self._trace(name)
        del self.traces[name]

    def _w_trace_remove_all(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        self.traces.clear()

    # ------------------------------------------------------------------ trigger outputs
    def _w_tint(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        k = args.int(0, 1, INTERNAL_TRIGGERS)
        self._fire(f"int{k}", self.bench.clock.now)

    def _out(self, ctx: Context) -> TriggerOutput:
        return self.trigger_outputs[ctx.suffix(0, default=1, lo=1, hi=TRIGGER_OUTPUTS)]

    def _w_out_source(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self._out(ctx).source = _parse_trigger_source(args, 0, allow_imm=False)

    def _q_out_source(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return self._out(ctx).source

    def _w_out_width(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self._out(ctx).width_s = args.float(0, 1e-7, 1.0)

    def _q_out_width(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return _fmt(self._out(ctx).width_s)

    def _w_out_pol(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self._out(ctx).inverted = args.enum(0, ["NORMal", "INVerted"]) == "INVerted"

    def _q_out_pol(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return "inv" if self._out(ctx).inverted else "norm"

    def _w_out_delay(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self._out(ctx).delay_s = args.float(0, 0.0, 3600.0)

    def _q_out_delay(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return _fmt(self._out(ctx).delay_s)

    def _w_out_signal(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        out = self._out(ctx)
        m = ctx.suffix(0, default=1)
        self.bench.fire(f"{self.name}.trig{m}", self.bench.clock.now + out.delay_s)


def _parse_count(args: Args) -> int:
    """A repetition count: a positive integer, or ``-1`` / ``inf`` for forever."""
    value = args.int(0, -1, 2**31 - 1, keywords=_COUNT_KEYWORDS)
    if value == 0:
        raise ScpiError(-222, detail="count 0: use a positive count or -1 (forever)")
    return value


def _trace_name(args: Args) -> str:
    name = args.string(0)
    if not name or len(name) > 64 or not re.fullmatch(r"[A-Za-z0-9_\-.]+", name):
        raise ScpiError(-224, detail=f"trace name {name!r}")
    return name
