"""Emulator of a Stanford Research SR860 lock-in amplifier that really demodulates its input.

Use it on a bench like any other part: the signal comes from whatever is wired to its input
port ``in``; output port ``sine`` is the sine out; input trigger port ``trig`` starts a
triggered capture::

    bench = Bench()
    lockin = SR860Emulator("lockin1", bench)
    bench.connect("lockin1.in", "dnpu.tia")
    lockin.feed(b"FREQ 213.0;OFLT 8;OFSL 1\\n")
    bench.clock.advance(0.2)                    # settling is the client's business
    lockin.feed(b"SNAP? 0,1\\n")                 # X, Y in Vrms

Command set (the project's SR860 manual; flat mnemonics, any case, enumerations by index or
keyword, e.g. ``RSRC 1`` = ``RSRC EXT``, ``OUTP? THeta`` = ``OUTP? 3``; queries answer indices):
``FREQ FREQINT FREQEXT? FREQDET? RSRC SLVL SOFF PHAS HARM HARMDUAL RTRG REFZ REFM IVMD ISRC ICPL
IGND IRNG ICUR ILVL? OFLT OFSL SYNC ADVFILT ENBW? SCAL OUTP? SNAP? SNAPD? OUTR? CDSP AUXV OAUX?
PSTF PSTA PSTL TBMODE TBSTAT? DBLK DLAY CGRF GSPD DCAP``, the capture buffer ``CAPTURELEN
CAPTURECFG CAPTURERATEMAX? CAPTURERATE CAPTURESTART CAPTURESTOP CAPTURESTAT? CAPTUREBYTES?
CAPTUREPROG? CAPTUREVAL? CAPTUREGET?``, status ``*ESR? *ESE *CLS *STB? *SRE LIAS? LIAE
CUROVLDSTAT? ERRS? ERRE *OPC? *RST *IDN?``.

Errors as on the instrument: there is no error queue (no ``SYST:ERR?``); an unknown command sets
``*ESR`` bit 5 (CMD) and an unknown query sends no reply; a bad or out-of-range parameter sets
bit 4 (EXE) and the setting keeps its old value. Floats are printed ``format(x, '.11g')``.

*RST state ((?) = not confirmed by the manual, our choice): FREQ 1 kHz (?), RSRC INT (?), HARM 1
(?), PHAS 0, SLVL 0, SOFF 0 (?), IVMD 0 (?), ISRC 0 (?), ICPL 0 AC (?), IGND 0 (?), IRNG 0,
ICUR 0 (?), OFLT 10 (100 ms), OFSL 0, SYNC 0, SCAL 0 (1 V) (?), CDSP X,Y,R,θ; capture 256 kB (?),
XY (?), exponent 0 (?). Status registers survive *RST.

Physics. The instrument reads ``s(t) = bench.signal("<name>.in", t)``: volts, or amperes when
``IVMD 1`` (current input: the wired port is taken to deliver amperes directly). It demodulates
it as a DSP lock-in does:

- internal oscillator phase ``φ(t) = φ0 + 2π·FREQ·(t - t0)``, kept continuous across FREQ
  changes; detection reference ``θ_r(t) = HARM·φ(t) + PHAS·π/180``; sine out
  ``SOFF + √2·SLVL·sin φ(t)`` (SLVL taken as Vrms (?));
- mixer ``m(t) = s(t)·√2·(sin θ_r + j cos θ_r)``; for ``s = A sin(θ_r + θ)`` the mean of ``m`` is
  ``(A/√2)(cos θ + j sin θ)``, so ``X = Re``, ``Y = Im`` are in Vrms, ``R = |X + jY|``,
  ``θ = atan2(Y, X)`` in degrees (signal phase relative to the reference);
- low-pass: OFSL + 1 cascaded first-order stages of time constant ``τ`` (OFLT table),
  ``z_k[n] = a·z_k[n-1] + (1 - a)·z_{k-1}[n]``, ``a = exp(-Δt/τ)``.

Readings at bench time ``now`` are the filter outputs given the signal history: the filter state
is carried from the last reading (settings changes act from the moment they are made, as on the
instrument) and the mixer is evaluated on a grid from then to ``now``, ``Δt = min(1/(16·f_det),
τ/8)``. Only the last ``(10 + 5·(stages - 1))·τ`` (at least two reference periods) are evaluated
when more time has passed (older history has decayed below 1e-4). At most 400 000 grid points are
evaluated per reading; beyond that the grid is coarsened and jittered (stratified sampling), which
keeps the mean exact and turns the 2f ripple into a small noise. Waiting for the filter to settle
is the client's job: bench time moves when other instruments advance it (a DAC ramp, a scope
acquisition) or with ``*OPC?``, which on this instrument advances the clock to the end of a
running one-shot capture.

- ``ILVL?`` (0..4) compares the peak input over the last evaluated stretch with the input range
  (IRNG in voltage mode; 1 µA or 10 nA per ICUR in current mode; after removing the mean with
  AC coupling): 4 = overload (> range), 3 > 30 %, 2 > 10 %, 1 > 3 %. An overload sets LIAS bit 4
  and CUROVLDSTAT bit 4.
- Scale overload: |X|, |Y| above the SCAL full scale sets bits 0/1 (CH1 = X, CH2 = Y), and each
  data channel DAT1..4 showing X, Y, R or a noise above full scale sets bits 8..11.
- ``XNOise``/``YNOise`` read 0; aux inputs 1..4 read input ports ``in1..in4`` at ``now``.

External reference (RSRC EXT): the lock-in follows the phase of the sine wired into its ``ref``
input at FREQ (a phase-locked loop with a one-period lock time; see ``_reference_phase``), so a
signal in phase with that sine reads theta = 0 whenever the sine started; with nothing (or no
sine) on ``ref`` it runs on the internal oscillator and sets LIAS bit 3 UNLK.
Not emulated: DUAL and CHOP references (stored; internal oscillator with UNLK), ``FREQEXT?``
(reads 0), the synchronous and advanced filters (stored), input coupling beyond the overload
estimate, ``SAMP`` capture (one sample per trigger) which captures like ``TRIG``.

Capture buffer: ``CAPTURELEN n`` kB (odd n -> n+1) holds n·256 float32; ``CAPTURECFG`` picks X,
XY, RT or XYRT per sample; ``CAPTURERATEMAX?`` is 1.25 MHz halved until at most 16 samples fall in
one τ (our rule (?)); ``CAPTURERATE n`` sets rate max/2ⁿ, its query answers Hz. Samples are the
filter outputs at ``start + k/rate`` (linear interpolation on the evaluation grid), computed when
the buffer is looked at. ``CAPTUREGET? i,j`` (capture stopped, j ≤ 64) sends kB i..i+j as a
little-endian float32 block, wrapping at CAPTURELEN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import signal as sps

from labrig.sim.bench import Bench, FloatArray
from labrig.sim.emulator import ESR_CME, ESR_EXE, ScpiEmulator
from labrig.sim.scpi import Args, Context, ScpiError, format_block

__all__ = [
    "PARAMETERS",
    "SENSITIVITY_V",
    "TIME_CONSTANT_S",
    "SR860Emulator",
    "time_constant_s",
]

F_MIN_HZ = 1e-3
F_MAX_HZ = 500e3
#: OFLT index -> τ: {1, 3}[i mod 2] × 10^(⌊i/2⌋ - 6) s.
TIME_CONSTANT_S = tuple((1.0, 3.0)[i % 2] * 10.0 ** (i // 2 - 6) for i in range(22))
#: SCAL index -> full scale: {1, 0.5, 0.2}[i mod 3] × 10^(-⌊i/3⌋) V (× 1e-6 A/V in current mode).
SENSITIVITY_V = tuple((1.0, 0.5, 0.2)[i % 3] * 10.0 ** (-(i // 3)) for i in range(28))
INPUT_RANGE_V = (1.0, 0.3, 0.1, 0.03, 0.01)
CURRENT_RANGE_A = (1e-6, 10e-9)  # ICUR 0 (1 MΩ), 1 (100 MΩ)
#: OUTP?/SNAP?/CDSP parameters, index order, SR860 keywords (upper case = minimum abbreviation).
PARAMETERS = (
    "X", "Y", "R", "THeta", "IN1", "IN2", "IN3", "IN4", "XNOise", "YNOise",
    "OUT1", "OUT2", "PHAse", "SAMp", "LEVel", "FInt", "FExt",
)  # fmt: skip
CAPTURE_CONFIGS = ("X", "XY", "RT", "XYRT")
CAPTURE_RATE_CEILING_HZ = 1.25e6
_SIGNAL_PARAMS = frozenset({0, 1, 2, 8, 9})  # parameters compared with the sensitivity
_GRID_POINTS_PER_PERIOD = 16
_MAX_GRID_POINTS = 400_000
_STEP_POINTS = 50_000  # grid points per step of a long *OPC? wait
_STEP_MAX_S = 0.05  # bench seconds per step (the device model's cost grows with the span)
_ENBW_FACTOR = (1 / 4, 1 / 8, 3 / 32, 5 / 64)  # ENBW·τ for 1..4 stages (6..24 dB/oct)

# LIAS / CUROVLDSTAT bits
_CH1_OVLD = 1 << 0
_CH2_OVLD = 1 << 1
_UNLOCK = 1 << 3
_INPUT_OVLD = 1 << 4
_CAPTURE_TRIGGERED = 1 << 7
_ESR_INP = 1 << 1  # *ESR input queue overflow


def _xyr(args: Args, i: int) -> int:
    """The X/Y/R index of the output commands: 0..2 or ``X``, ``Y``, ``R``."""
    return ["X", "Y", "R"].index(args.enum(i, ["X", "Y", "R"], allow_index=True))


def time_constant_s(index: int) -> float:
    """τ of OFLT index ``index`` (0..21)."""
    return TIME_CONSTANT_S[index]


def _fmt(x: Any) -> str:
    """Float reply as the SR860 prints it (about 11 significant digits)."""
    return format(float(x), ".11g")


@dataclass
class _Capture:
    """Capture-buffer state. ``data`` is the whole buffer (float32, zero where unfilled)."""

    length_kb: int = 256
    config: int = 1
    rate_exponent: int = 0
    data: np.ndarray | None = None
    running: bool = False
    waiting_trigger: bool = False
    continuous: bool = False
    started: bool = False
    wrapped: bool = False
    start_time: float = 0.0
    rate_hz: float = 0.0
    samples_done: int = 0  # samples written since the start

    @property
    def floats(self) -> int:
        return self.length_kb * 256

    @property
    def per_sample(self) -> int:
        return (1, 2, 2, 4)[self.config]

    @property
    def capacity(self) -> int:
        """Samples that fit in the buffer."""
        return self.floats // self.per_sample

    def buffer(self) -> np.ndarray:
        if self.data is None or self.data.size != self.floats:
            self.data = np.zeros(self.floats, dtype=np.float32)
        return self.data


class SR860Emulator(ScpiEmulator):
    """SR860 lock-in emulator (see the module docstring for commands and physics)."""

    # Ethernet (telnet socket): ~1 MB/s, ~1 ms per message (estimates)
    link_bytes_per_s = 1e6
    message_latency_s = 1e-3

    error_detail: ClassVar[bool] = False
    #: The input queue's size is not in the manual (?): a line of 64 kB is far beyond any
    #: command the drivers send, and sets INP (*ESR bit 1) as an overflow does.
    max_input_bytes: ClassVar[int] = 64 * 1024

    def __init__(self, name: str, bench: Bench | None = None) -> None:
        self._settings: dict[str, object] = {}
        self._lias = 0
        self._liae = 0
        self._errs_enable = 0
        self._current_ovld = 0
        self._input_level = 0
        self._capture = _Capture()
        # Demodulator: oscillator phase anchor, filter stages (complex X + jY), their time.
        self._phase_anchor = (0.0, 0.0)  # (bench time, oscillator phase in rad)
        self._ext_locked = False  # locked to a sine on the "ref" input (RSRC EXT)
        self._stages = np.zeros(4, dtype=complex)
        self._state_time = 0.0
        self._rng = np.random.default_rng()
        super().__init__(name, bench)
        self._rng = np.random.default_rng([self.bench.seed, *name.encode()])
        self._state_time = self.bench.clock.now
        self._phase_anchor = (self.bench.clock.now, 0.0)
        self._defaults()

    # ------------------------------------------------------------------ identity, reset
    def identity(self) -> str:
        return "Stanford_Research_Systems,SR860,003101,v1.51"

    def _defaults(self) -> None:
        s = self._settings
        s.update(
            freq=1000.0, rsrc=0, harm=1, harmdual=1, phas=0.0, slvl=0.0, soff=0.0, rtrg=0,
            refz=0, refm=0, ivmd=0, isrc=0, icpl=0, ignd=0, irng=0, icur=0, oflt=10, ofsl=0,
            sync=0, advfilt=0, scal=0, tbmode=0, dblk=0, dlay=0, gspd=0,
        )  # fmt: skip
        s["cdsp"] = [0, 1, 2, 3]
        s["auxv"] = [0.0] * 4
        s["pstf"] = [1000.0] * 4
        s["psta"] = [0.0] * 4
        s["pstl"] = [0.0] * 4
        s["cgrf"] = [1, 1, 0, 0]
        # Output channels (COUT: OCH1, OCH2) and the X, Y, R display settings (CEXP, COFA,
        # COFP, CRAT); *RST values are not in the manual pages read (?): off / XY / 0 %.
        s["cout"] = [0, 0]
        s["cexp"] = [0, 0, 0]
        s["cofa"] = [0, 0, 0]
        s["cofp"] = [0.0, 0.0, 0.0]
        s["crat"] = [0, 0, 0]
        self._capture = _Capture()

    def reset(self) -> None:
        """``*RST``: the demodulator keeps running; the settings go back to their defaults."""
        self._advance()
        self._set_frequency(1000.0)
        self._defaults()
        super().reset()

    def wait_pending(self) -> None:
        """``*OPC?``: advance the bench clock to the end of a running one-shot capture."""
        cap = self._capture
        if cap.running and not cap.continuous and not cap.waiting_trigger:
            end = cap.start_time + (cap.capacity - 1) / cap.rate_hz
            # Minutes of capture are demodulated in fixed steps (the result must not depend on
            # the machine) of at most _STEP_POINTS grid points and _STEP_MAX_S, and the other
            # instruments answer in between: an instrument's long wait must not hold the bench.
            f_det = max(self.detection_hz, F_MIN_HZ)
            dt = min(1.0 / (_GRID_POINTS_PER_PERIOD * f_det), self.tau / 8.0)
            step_s = min(_STEP_POINTS * dt, _STEP_MAX_S)
            while self.bench.clock.now < end:
                self.bench.clock.advance_to(min(end, self.bench.clock.now + step_s))
                self._advance_and_capture()
                self.bench.lock.yield_to_waiters()
            self._advance_and_capture()

    # ------------------------------------------------------------------ errors and status
    def push_error(self, code: int, message: str | None = None) -> None:
        """No error queue: command errors set ``*ESR`` bit 5 (CMD), the rest bit 4 (EXE)."""
        if code == 0:
            return
        self.esr = self.esr | (ESR_CME if -199 <= code <= -100 else ESR_EXE)

    def input_overrun(self) -> None:
        """A line longer than the input queue: ``*ESR`` bit 1 (INP, input queue overflow)."""
        self.esr = self.esr | _ESR_INP

    def status_byte(self) -> int:
        """``*STB?``: bit 3 LIA (enabled LIAS bits), bit 5 ESB, bit 6 MSS."""
        self._advance()
        stb = 0
        if self._lias & self._liae:
            stb |= 1 << 3
        if self.esr & self.ese:
            stb |= 1 << 5
        if stb & self.sre & ~(1 << 6):
            stb |= 1 << 6
        return stb

    def clear_status(self) -> None:
        super().clear_status()
        self._lias = 0

    def snapshot(self) -> dict[str, object]:
        snap = super().snapshot()
        snap["settings"] = {
            k: (list(v) if isinstance(v, list) else v) for k, v in self._settings.items()
        }
        snap["lias"] = self._lias
        return snap

    # ------------------------------------------------------------------ bench Part protocol
    def output(self, port: str, t: FloatArray) -> FloatArray:
        """``sine``: the sine out, ``SOFF + √2·SLVL·sin φ(t)``; other ports read 0."""
        t = np.asarray(t, dtype=float)
        if port == "sine":
            amp = math.sqrt(2.0) * float(self._settings["slvl"])  # type: ignore[arg-type]
            return float(self._settings["soff"]) + amp * np.sin(self._osc_phase(t))  # type: ignore[arg-type]
        return np.zeros_like(t)

    def on_trigger(self, port: str, t: float) -> None:
        """``trig``: starts a capture armed with ``CAPTURESTART ...,TRIG``."""
        cap = self._capture
        if port == "trig" and cap.running and cap.waiting_trigger:
            cap.waiting_trigger = False
            cap.started = True
            cap.start_time = t
            self._lias |= _CAPTURE_TRIGGERED

    # ------------------------------------------------------------------ demodulator
    @property
    def tau(self) -> float:
        return TIME_CONSTANT_S[int(self._settings["oflt"])]  # type: ignore[call-overload]

    @property
    def stage_count(self) -> int:
        return int(self._settings["ofsl"]) + 1  # type: ignore[call-overload]

    @property
    def detection_hz(self) -> float:
        return float(self._settings["freq"]) * int(self._settings["harm"])  # type: ignore[arg-type, call-overload]

    def _osc_phase(self, t: FloatArray) -> FloatArray:
        t0, phi0 = self._phase_anchor
        return phi0 + 2.0 * math.pi * float(self._settings["freq"]) * (t - t0)  # type: ignore[arg-type]

    def _reference_phase(self, t: FloatArray, dt: float) -> FloatArray:
        """Phase of the reference at ``t``: the internal oscillator, or (RSRC EXT) the phase of
        the sine wired into ``ref``, as a phase-locked loop with a one-period lock time sees it.

        For ``r(t) = r0 + A sin(w t + phi)`` the one-period means of ``r sin(w t)`` and
        ``r cos(w t)`` are ``A/2 cos(phi)`` and ``A/2 sin(phi)``, so ``phi = atan2(.., ..)``
        at every instant, and a sine that restarts (new ``phi``) is followed within a period.
        """
        self._ext_locked = False
        if int(self._settings["rsrc"]) != 1 or self.bench.source_of(f"{self.name}.ref") is None:  # type: ignore[call-overload]
            return self._osc_phase(t)
        f = float(self._settings["freq"])  # type: ignore[arg-type]
        period_n = max(1, round(1.0 / (f * dt)))
        # Evaluate the reference one period further back so every instant has a full period.
        t_ext = np.concatenate([t[0] - dt * np.arange(period_n, 0, -1), t])
        r = self.bench.signal(f"{self.name}.ref", t_ext)
        wt = 2.0 * math.pi * f * t_ext
        cs = np.cumsum(np.concatenate([[0.0], r * np.sin(wt)]))
        cc = np.cumsum(np.concatenate([[0.0], r * np.cos(wt)]))
        m_sin = (cs[period_n + 1 :] - cs[1:-period_n]) / period_n
        m_cos = (cc[period_n + 1 :] - cc[1:-period_n]) / period_n
        amplitude = 2.0 * np.hypot(m_sin, m_cos)
        if float(np.median(amplitude)) < 1e-6:  # nothing to lock to: stay on the oscillator
            return self._osc_phase(t)
        self._ext_locked = True
        return np.asarray(2.0 * math.pi * f * t + np.arctan2(m_cos, m_sin), dtype=np.float64)

    def _set_frequency(self, hz: float) -> None:
        """Change the internal oscillator keeping its phase continuous."""
        now = self.bench.clock.now
        self._phase_anchor = (now, float(self._osc_phase(np.array([now]))[0]) % (2 * math.pi))
        self._settings["freq"] = hz

    def _grid(self, t_from: float, t_to: float, force_all: bool) -> tuple[FloatArray, float, bool]:
        """Evaluation times in ``(t_from, t_to]`` (the last at ``t_to``), their spacing, and
        whether older history was skipped."""
        f_det = max(self.detection_hz, F_MIN_HZ)
        dt = min(1.0 / (_GRID_POINTS_PER_PERIOD * f_det), self.tau / 8.0)
        span = t_to - t_from
        truncated = False
        if not force_all:
            memory = max((10.0 + 5.0 * (self.stage_count - 1)) * self.tau, 2.0 / f_det)
            if span > memory:
                span, truncated = memory, True
        n = max(1, math.ceil(span / dt - 1e-9))
        if n <= _MAX_GRID_POINTS:
            uniform = np.asarray(t_to - dt * np.arange(n - 1, -1, -1), dtype=np.float64)
            return uniform, dt, truncated
        # Coarse grid: one randomly placed sample per cell of width dt (stratified sampling), so
        # a periodic signal is not aliased coherently; each sample stands for its cell.
        n = _MAX_GRID_POINTS
        dt = span / n
        jitter = self._rng.random(n)
        jitter[-1] = 1.0
        t = np.asarray(t_to - span + dt * (np.arange(n) + jitter), dtype=np.float64)
        return t, dt, truncated

    def _advance(self) -> tuple[FloatArray, np.ndarray]:
        """Run the demodulator from the last state to ``now``; update the input status.

        Returns the evaluation times and the filter output there (empty if no time passed).
        """
        now = self.bench.clock.now
        t_from = self._state_time
        if now <= t_from:
            return np.empty(0), np.empty(0, dtype=complex)
        cap = self._capture
        t, dt, truncated = self._grid(
            t_from, now, force_all=cap.running and not cap.waiting_trigger
        )
        if truncated:
            self._stages[:] = 0.0  # the skipped history has decayed: start from rest
        s = self.bench.signal(f"{self.name}.in", t)
        harm = int(self._settings["harm"])  # type: ignore[call-overload]
        phas = math.radians(float(self._settings["phas"]))  # type: ignore[arg-type]
        theta = harm * self._reference_phase(t, dt) + phas
        z = s * math.sqrt(2.0) * (np.sin(theta) + 1j * np.cos(theta))
        first_dt = dt if truncated else max(float(t[0]) - t_from, 0.0)
        for k in range(self.stage_count):
            z = self._stage(k, z, dt, first_dt)
        self._state_time = now
        self._input_status(s)
        return t, z

    def _stage(self, k: int, x: np.ndarray, dt: float, first_dt: float) -> np.ndarray:
        """One first-order stage, ``y[n] = a·y[n-1] + (1 - a)·x[n]`` with ``a = exp(-Δt/τ)``
        (exact for an input held over each step); the first step may be shorter."""
        a_first = math.exp(-first_dt / self.tau)
        y0 = a_first * self._stages[k] + (1.0 - a_first) * x[0]
        a = math.exp(-dt / self.tau)
        if x.size > 1:
            rest, _ = sps.lfilter([1.0 - a], [1.0, -a], x[1:], zi=[a * y0])
            y = np.concatenate([[y0], rest])
        else:
            y = np.array([y0])
        self._stages[k] = y[-1]
        return y

    def _input_status(self, s: FloatArray) -> None:
        if int(self._settings["ivmd"]) == 1:  # type: ignore[call-overload]
            full = CURRENT_RANGE_A[int(self._settings["icur"])]  # type: ignore[call-overload]
        else:
            full = INPUT_RANGE_V[int(self._settings["irng"])]  # type: ignore[call-overload]
        if int(self._settings["icpl"]) == 0:  # type: ignore[call-overload]
            s = s - float(np.mean(s))
        peak = float(np.max(np.abs(s))) / full
        level = (
            4 if peak > 1.0 else 3 if peak > 0.3 else 2 if peak > 0.1 else 1 if peak > 0.03 else 0
        )
        self._input_level = level
        if level == 4:
            self._current_ovld |= _INPUT_OVLD
            self._lias |= _INPUT_OVLD
        else:
            self._current_ovld &= ~_INPUT_OVLD

    def _outputs_now(self) -> complex:
        """Advance to now and return ``X + jY`` (with overload bookkeeping)."""
        self._advance_and_capture()
        z = complex(self._stages[self.stage_count - 1])
        self._scale_status(z)
        return z

    def _scale_status(self, z: complex) -> None:
        full = SENSITIVITY_V[int(self._settings["scal"])]  # type: ignore[call-overload]
        if int(self._settings["ivmd"]) == 1:  # type: ignore[call-overload]
            full *= 1e-6
        bits = self._current_ovld & ~(_CH1_OVLD | _CH2_OVLD | (0xF << 8))
        if abs(z.real) > full:
            bits |= _CH1_OVLD
        if abs(z.imag) > full:
            bits |= _CH2_OVLD
        cdsp: list[int] = self._settings["cdsp"]  # type: ignore[assignment]
        for i, param in enumerate(cdsp):
            if param in _SIGNAL_PARAMS and abs(self._param(param, z)) > full:
                bits |= 1 << (8 + i)
        if int(self._settings["rsrc"]) != 0 and not self._ext_locked:  # type: ignore[call-overload]
            bits |= _UNLOCK
        else:
            bits &= ~_UNLOCK
        self._current_ovld = bits
        self._lias |= bits

    def _param(self, j: int, z: complex) -> float:
        """Value of OUTP? parameter ``j`` given the demodulator output ``z = X + jY``."""
        s = self._settings
        if j == 0:
            return z.real
        if j == 1:
            return z.imag
        if j == 2:
            return abs(z)
        if j == 3:
            return math.degrees(math.atan2(z.imag, z.real))
        if 4 <= j <= 7:
            now = np.array([self.bench.clock.now])
            return float(self.bench.signal(f"{self.name}.in{j - 3}", now)[0])
        if j in (8, 9):
            return 0.0
        if j in (10, 11):
            return float(s["auxv"][j - 10])  # type: ignore[index]
        values = {12: s["phas"], 13: s["slvl"], 14: s["soff"], 15: s["freq"], 16: 0.0}
        return float(values[j])  # type: ignore[arg-type]

    # ------------------------------------------------------------------ capture
    def _capture_rate_max(self) -> float:
        k = math.ceil(math.log2(max(CAPTURE_RATE_CEILING_HZ * self.tau / 16.0, 1.0)))
        return CAPTURE_RATE_CEILING_HZ / 2.0 ** min(max(k, 0), 20)

    def _update_capture(self, grid: tuple[FloatArray, np.ndarray]) -> None:
        """Write the samples due by ``now`` into the buffer (``grid``: the demodulator output
        just computed, interpolated at the sample times)."""
        cap = self._capture
        if not cap.running or cap.waiting_trigger:
            return
        t_grid, z_grid = grid
        now = self.bench.clock.now
        due = math.floor((now - cap.start_time) * cap.rate_hz + 1e-9) + 1
        if not cap.continuous:
            due = min(due, cap.capacity)
        new = np.arange(cap.samples_done, due)
        if new.size:
            ts = cap.start_time + new / cap.rate_hz
            if t_grid.size:
                x = np.interp(ts, t_grid, z_grid.real)
                y = np.interp(ts, t_grid, z_grid.imag)
            else:
                z = complex(self._stages[self.stage_count - 1])
                x, y = np.full(ts.size, z.real), np.full(ts.size, z.imag)
            r, th = np.hypot(x, y), np.degrees(np.arctan2(y, x))
            cols = {0: (x,), 1: (x, y), 2: (r, th), 3: (x, y, r, th)}[cap.config]
            rows = np.stack(cols, axis=1).astype(np.float32)
            slots = new % cap.capacity
            buf = cap.buffer()[: cap.capacity * cap.per_sample].reshape(cap.capacity, -1)
            buf[slots] = rows
            if cap.continuous and due > cap.capacity:
                cap.wrapped = True
            cap.samples_done = int(due)
        if not cap.continuous and cap.samples_done >= cap.capacity:
            cap.running = False

    # ------------------------------------------------------------------ command table
    def register_commands(self) -> None:
        for pattern in ("SYSTem:ERRor[:NEXT]", "SYSTem:ERRor:COUNt", "SYSTem:ERRor:ALL"):
            self.tree.remove(pattern)
        add = self.tree.add
        self._flat("FREQ", "freq", self._float(F_MIN_HZ, F_MAX_HZ), _fmt, apply=self._w_freq)
        self._flat("FREQINT", "freq", self._float(F_MIN_HZ, F_MAX_HZ), _fmt, apply=self._w_freq)
        add("FREQEXT", query=lambda ctx, args: self._q_simple(args, "0"))
        add("FREQDET", query=lambda ctx, args: self._q_simple(args, _fmt(self.detection_hz)))
        self._flat("RSRC", "rsrc", self._enum(["INT", "EXT", "DUAL", "CHOP"]), str)
        self._flat("HARM", "harm", self._int(1, 99), str, apply=self._w_harm)
        self._flat("HARMDUAL", "harmdual", self._int(1, 99), str)
        self._flat("PHAS", "phas", self._float(-360000.0, 360000.0), _fmt)
        self._flat("SLVL", "slvl", self._float(0.0, 2.0), _fmt)
        self._flat("SOFF", "soff", self._float(-5.0, 5.0), _fmt)
        self._flat("RTRG", "rtrg", self._enum(["SINe", "POSttl", "NEGttl"]), str)
        self._flat("REFZ", "refz", self._enum(["50OHms", "1MEG"]), str)
        self._flat("REFM", "refm", self._enum(["COMmon", "DIFference"]), str)
        self._flat("IVMD", "ivmd", self._enum(["VOLTage", "CURRent"]), str)
        self._flat("ISRC", "isrc", self._enum(["A", "A-B"]), str)
        self._flat("ICPL", "icpl", self._enum(["AC", "DC"]), str)
        self._flat("IGND", "ignd", self._enum(["FLOat", "GROund"]), str)
        self._flat("IRNG", "irng", self._enum(["1V", "300M", "100M", "30M", "10M"]), str)
        self._flat("ICUR", "icur", self._enum(["1MEG", "100MEG"]), str)
        self._flat("OFLT", "oflt", self._int(0, 21), str)
        self._flat("OFSL", "ofsl", self._int(0, 3), str)
        self._flat("SYNC", "sync", self._enum(["OFF", "ON"]), str)
        self._flat("ADVFILT", "advfilt", self._enum(["OFF", "ON"]), str)
        self._flat("SCAL", "scal", self._int(0, 27), str)
        self._flat("TBMODE", "tbmode", self._enum(["AUTO", "INTernal"]), str)
        self._flat("DBLK", "dblk", self._int(0, 1), str)
        self._flat("DLAY", "dlay", self._int(0, 5), str)
        self._flat("GSPD", "gspd", self._int(0, 16), str)
        add("TBSTAT", query=lambda ctx, args: self._q_simple(args, "1"))
        add("DCAP", write=lambda ctx, args: args.require(0, 0))
        add("ILVL", query=self._q_ilvl)
        add("ENBW", query=self._q_enbw)
        add("OUTP", query=self._q_outp)
        add("SNAP", query=self._q_snap)
        add("SNAPD", query=self._q_snapd)
        add("OUTR", query=self._q_outr)
        self._indexed("CDSP", "cdsp", 4, self._param_index, str)
        self._indexed("AUXV", "auxv", 4, self._float(-10.5, 10.5), _fmt)
        self._indexed("PSTF", "pstf", 4, self._float(F_MIN_HZ, F_MAX_HZ), _fmt)
        self._indexed("PSTA", "psta", 4, self._float(0.0, 2.0), _fmt)
        self._indexed("PSTL", "pstl", 4, self._float(-5.0, 5.0), _fmt)
        self._indexed("CGRF", "cgrf", 4, self._int(0, 1), str)
        add("OAUX", query=self._q_oaux)
        # Output channels and X/Y/R expand, offset, ratio (SR86x manual "Output and display"
        # commands; the forms follow QCoDeS' and SRS's own drivers (?)). Stored and answered;
        # whether offset/ratio change OUTP?/SNAP? readings is not in the pages read (?), so
        # the readings stay the demodulator's X, Y, R (the analog outputs are not emulated).
        self._indexed(
            "COUT", "cout", 2, self._enum(["XY", "RTHeta"]), str, self._enum_index(["OCH1", "OCH2"])
        )
        self._indexed("CEXP", "cexp", 3, self._enum(["OFF", "X10", "X100"]), str, _xyr)
        self._indexed("COFA", "cofa", 3, self._enum(["OFF", "ON"]), str, _xyr)
        self._indexed("COFP", "cofp", 3, self._float(-999.99, 999.99), _fmt, _xyr)
        self._indexed("CRAT", "crat", 3, self._enum(["OFF", "ON"]), str, _xyr)
        add("OAUT", write=self._w_oaut)
        # IEEE 488.2 status registers with the SRS bit forms: "*ESR? n" reads (and clears)
        # bit n, "*ESE n,b" sets bit n of the enable register (M1 p.152).
        add("*ESR", query=self._q_esr_bits)
        add("*ESE", write=self._bit_writer("ese"), query=self._bit_reader("ese"))
        add("*SRE", write=self._bit_writer("sre"), query=self._bit_reader("sre"))
        add("*STB", query=self._q_stb_bits)
        add("LIAS", query=self._q_lias)
        add("LIAE", write=self._w_liae, query=self._q_liae)
        add("CUROVLDSTAT", query=self._q_curovld)
        add("ERRS", query=lambda ctx, args: self._q_simple(args, "0", allow_bit=True))
        add("ERRE", write=self._bit_writer("erre"), query=self._bit_reader("erre"))
        add("CAPTURELEN", write=self._w_caplen, query=self._q_caplen)
        add("CAPTURECFG", write=self._w_capcfg, query=self._q_capcfg)
        add("CAPTURERATEMAX", query=self._q_caprate_max)
        add("CAPTURERATE", write=self._w_caprate, query=self._q_caprate)
        add("CAPTURESTART", write=self._w_capstart)
        add("CAPTURESTOP", write=self._w_capstop)
        add("CAPTURESTAT", query=self._q_capstat)
        add("CAPTUREBYTES", query=self._q_capbytes)
        add("CAPTUREPROG", query=self._q_capprog)
        add("CAPTUREVAL", query=self._q_capval)
        add("CAPTUREGET", query=self._q_capget)

    # ------------------------------------------------------------------ handler factories
    @staticmethod
    def _float(lo: float, hi: float) -> Callable[[Args, int], object]:
        return lambda args, i: args.float(i, lo, hi)

    @staticmethod
    def _int(lo: int, hi: int) -> Callable[[Args, int], object]:
        return lambda args, i: args.int(i, lo, hi)

    @staticmethod
    def _enum(choices: list[str]) -> Callable[[Args, int], object]:
        def parse(args: Args, i: int) -> int:
            return choices.index(args.enum(i, choices, allow_index=True, prefix=True))

        return parse

    @staticmethod
    def _enum_index(choices: list[str]) -> Callable[[Args, int], int]:
        def parse(args: Args, i: int) -> int:
            return choices.index(args.enum(i, choices, allow_index=True, prefix=True))

        return parse

    @staticmethod
    def _param_index(args: Args, i: int) -> object:
        return PARAMETERS.index(args.enum(i, list(PARAMETERS), allow_index=True, prefix=True))

    def _flat(
        self,
        mnemonic: str,
        key: str,
        parse: Callable[[Args, int], object],
        show: Callable[[object], str],
        *,
        apply: Callable[[object], None] | None = None,
    ) -> None:
        """``MNEMONIC value`` / ``MNEMONIC?`` for one stored setting."""

        def write(ctx: Context, args: Args) -> None:
            args.require(1, 1)
            value = parse(args, 0)
            # Settle the demodulator with the old settings before they change.
            self._advance_and_capture()
            if apply is not None:
                apply(value)
            else:
                self._settings[key] = value

        def query(ctx: Context, args: Args) -> str:
            args.require(0, 0)
            if key == "freq" and ctx.header.upper() == "FREQ" and self._settings["rsrc"] == 1:
                return _fmt(0.0)  # external reference: the measured frequency (not emulated)
            return show(self._settings[key])

        self.tree.add(mnemonic, write=write, query=query)

    def _indexed(
        self,
        mnemonic: str,
        key: str,
        count: int,
        parse: Callable[[Args, int], object],
        show: Callable[[object], str],
        index: Callable[[Args, int], int] | None = None,
    ) -> None:
        """``MNEMONIC i,value`` / ``MNEMONIC? i`` for a small array of settings (``index``
        parses ``i`` when it may also be a keyword, e.g. ``X``/``Y``/``R``)."""

        def where(args: Args) -> int:
            return index(args, 0) if index is not None else args.int(0, 0, count - 1)

        def write(ctx: Context, args: Args) -> None:
            args.require(2, 2)
            i = where(args)
            value = parse(args, 1)
            self._settings[key][i] = value  # type: ignore[index]

        def query(ctx: Context, args: Args) -> str:
            args.require(1, 1)
            return show(self._settings[key][where(args)])  # type: ignore[index]

        self.tree.add(mnemonic, write=write, query=query)

    def _advance_and_capture(self) -> None:
        grid = self._advance()
        self._update_capture(grid)

    def _q_simple(self, args: Args, value: str, *, allow_bit: bool = False) -> str:
        args.require(0, 1 if allow_bit else 0)
        return value

    def _w_freq(self, value: object) -> None:
        hz = float(value)  # type: ignore[arg-type]
        if hz * int(self._settings["harm"]) > F_MAX_HZ:  # type: ignore[call-overload]
            raise ScpiError(-222, detail="harmonic × frequency above 500 kHz")
        self._set_frequency(hz)

    def _w_harm(self, value: object) -> None:
        n = int(value)  # type: ignore[call-overload]
        if n * float(self._settings["freq"]) > F_MAX_HZ:  # type: ignore[arg-type]
            raise ScpiError(-222, detail="harmonic × frequency above 500 kHz")
        self._settings["harm"] = n

    # ------------------------------------------------------------------ readings
    def _q_ilvl(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        self._outputs_now()
        return str(self._input_level)

    def _q_enbw(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return _fmt(_ENBW_FACTOR[self.stage_count - 1] / self.tau)

    def _q_outp(self, ctx: Context, args: Args) -> str:
        args.require(1, 1)
        j = int(self._param_index(args, 0))  # type: ignore[call-overload]
        return _fmt(self._param(j, self._outputs_now()))

    def _q_snap(self, ctx: Context, args: Args) -> str:
        args.require(2, 3)
        params = [int(self._param_index(args, i)) for i in range(len(args))]  # type: ignore[call-overload]
        z = self._outputs_now()
        return ",".join(_fmt(self._param(j, z)) for j in params)

    def _q_snapd(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        z = self._outputs_now()
        cdsp: list[int] = self._settings["cdsp"]  # type: ignore[assignment]
        return ",".join(_fmt(self._param(j, z)) for j in cdsp)

    def _q_outr(self, ctx: Context, args: Args) -> str:
        args.require(1, 1)
        i = args.int(0, 0, 3)
        z = self._outputs_now()
        cdsp: list[int] = self._settings["cdsp"]  # type: ignore[assignment]
        return _fmt(self._param(cdsp[i], z))

    def _q_oaux(self, ctx: Context, args: Args) -> str:
        args.require(1, 1)
        i = args.int(0, 0, 3)
        return _fmt(self._param(4 + i, 0j))

    # ------------------------------------------------------------------ status registers
    def _q_lias(self, ctx: Context, args: Args) -> str:
        args.require(0, 1)
        self._outputs_now()
        if len(args):
            bit = args.int(0, 0, 15)
            value = (self._lias >> bit) & 1
            self._lias &= ~(1 << bit)
            return str(value)
        value, self._lias = self._lias, 0
        return str(value)

    def _w_liae(self, ctx: Context, args: Args) -> None:
        args.require(1, 2)
        if len(args) == 2:
            bit = args.int(0, 0, 15)
            on = args.int(1, 0, 1)
            self._liae = (self._liae | (1 << bit)) if on else (self._liae & ~(1 << bit))
        else:
            self._liae = args.int(0, 0, 65535)

    def _q_liae(self, ctx: Context, args: Args) -> str:
        args.require(0, 1)
        if len(args):
            return str((self._liae >> args.int(0, 0, 15)) & 1)
        return str(self._liae)

    def _q_curovld(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        self._outputs_now()
        return str(self._current_ovld)

    def _register(self, which: str) -> int:
        return {"ese": self.ese, "sre": self.sre, "erre": self._errs_enable}[which]

    def _bit_writer(self, which: str) -> Callable[[Context, Args], None]:
        """``REG n`` sets the whole 8-bit register; ``REG n,b`` sets bit n to b (0/1)."""

        def write(ctx: Context, args: Args) -> None:
            args.require(1, 2)
            if len(args) == 2:
                bit = args.int(0, 0, 7)
                on = args.int(1, 0, 1)
                old = self._register(which)
                value = (old | (1 << bit)) if on else (old & ~(1 << bit))
            else:
                value = args.int(0, 0, 255)
            if which == "ese":
                self._status.ese = value
            elif which == "sre":
                self._status.sre = value & ~(1 << 6)  # bit 6 (MSS) cannot be enabled
            else:
                self._errs_enable = value

        return write

    def _bit_reader(self, which: str) -> Callable[[Context, Args], str]:
        """``REG?`` the register; ``REG? n`` its bit n (0/1)."""

        def query(ctx: Context, args: Args) -> str:
            args.require(0, 1)
            value = self._register(which)
            if len(args):
                return str((value >> args.int(0, 0, 7)) & 1)
            return str(value)

        return query

    def _q_esr_bits(self, ctx: Context, args: Args) -> str:
        """``*ESR?`` reads and clears the register; ``*ESR? n`` reads and clears bit n."""
        args.require(0, 1)
        if len(args):
            bit = args.int(0, 0, 7)
            value = (self.esr >> bit) & 1
            self.esr = self.esr & ~(1 << bit)
            return str(value)
        value, self.esr = self.esr, 0
        return str(value)

    def _q_stb_bits(self, ctx: Context, args: Args) -> str:
        """``*STB?`` the status byte; ``*STB? n`` its bit n (reading does not clear it)."""
        args.require(0, 1)
        stb = self.status_byte()
        if len(args):
            return str((stb >> args.int(0, 0, 7)) & 1)
        return str(stb)

    def _w_oaut(self, ctx: Context, args: Args) -> None:
        """``OAUT i``: auto offset of X, Y or R: the offset that brings it to zero, in % of
        the sensitivity, and the offset switched on."""
        args.require(1, 1)
        i = _xyr(args, 0)
        z = self._outputs_now()
        full = SENSITIVITY_V[int(self._settings["scal"])]  # type: ignore[call-overload]
        if int(self._settings["ivmd"]) == 1:  # type: ignore[call-overload]
            full *= 1e-6
        value = (z.real, z.imag, abs(z))[i]
        percent = max(-999.99, min(999.99, round(100.0 * value / full, 2)))
        self._settings["cofp"][i] = percent  # type: ignore[index]
        self._settings["cofa"][i] = 1  # type: ignore[index]

    # ------------------------------------------------------------------ capture commands
    def _w_caplen(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        n = args.int(0, 1, 4096)
        self._capture.length_kb = n + (n % 2)
        self._capture.data = None

    def _q_caplen(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return str(self._capture.length_kb)

    def _w_capcfg(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        cfg = CAPTURE_CONFIGS.index(args.enum(0, list(CAPTURE_CONFIGS), allow_index=True))
        cap = self._capture
        cap.config = cfg
        cap.started = cap.wrapped = False  # setting the configuration clears the status bits

    def _q_capcfg(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return str(self._capture.config)

    def _q_caprate_max(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return _fmt(self._capture_rate_max())

    def _w_caprate(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self._capture.rate_exponent = args.int(0, 0, 20)

    def _q_caprate(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return _fmt(self._capture_rate_max() / 2.0**self._capture.rate_exponent)

    def _w_capstart(self, ctx: Context, args: Args) -> None:
        args.require(0, 2)
        acq = args.enum(0, ["ONE", "CONTinuous"], allow_index=True, default="ONE")
        trig = args.enum(
            1, ["IMMediate", "TRIGstart", "SAMPpertrig"], allow_index=True, default="IMMediate"
        )
        self._advance_and_capture()
        cap = self._capture
        cap.buffer()[:] = 0.0
        cap.running = True
        cap.continuous = acq == "CONTinuous"
        cap.waiting_trigger = trig != "IMMediate"
        cap.started = not cap.waiting_trigger
        cap.wrapped = False
        cap.samples_done = 0
        cap.rate_hz = self._capture_rate_max() / 2.0**cap.rate_exponent
        cap.start_time = self.bench.clock.now

    def _w_capstop(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        self._advance_and_capture()
        self._capture.running = False
        self._capture.waiting_trigger = False

    def _q_capstat(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        self._advance_and_capture()
        cap = self._capture
        bits = (1 if cap.running and not cap.waiting_trigger else 0) | (2 if cap.started else 0)
        return str(bits | (4 if cap.wrapped else 0))

    def _captured_bytes(self) -> int:
        cap = self._capture
        return min(cap.samples_done, cap.capacity) * cap.per_sample * 4

    def _q_capbytes(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        self._advance_and_capture()
        return str(self._captured_bytes())

    def _q_capprog(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        self._advance_and_capture()
        return str(2 * (self._captured_bytes() // 2048))

    def _q_capval(self, ctx: Context, args: Args) -> str:
        args.require(1, 1)
        self._advance_and_capture()
        cap = self._capture
        n = args.int(0, 0, cap.capacity - 1)
        # Sample 0 is the oldest: after a wrap that is the one after the newest.
        slot = (cap.samples_done + n) % cap.capacity if cap.wrapped else n
        row = cap.buffer()[slot * cap.per_sample : (slot + 1) * cap.per_sample]
        return ",".join(_fmt(float(v)) for v in row)

    def _q_capget(self, ctx: Context, args: Args) -> bytes:
        args.require(2, 2)
        self._advance_and_capture()
        cap = self._capture
        if cap.running:
            raise ScpiError(-221, detail="CAPTUREGET? while capturing: CAPTURESTOP first")
        offset = args.int(0, 0, cap.length_kb - 1)
        length = args.int(1, 1, 64)
        raw = cap.buffer().astype("<f4").tobytes()
        start = offset * 1024
        idx = (start + np.arange(length * 1024)) % len(raw)
        # Framing: the SR860 sends the block with no line feed after it (the manual's example
        # shows only "#532768" and the bytes; QCoDeS' SR86x driver reads it with
        # expect_termination=False). A trailing LF would leave every later reply one behind.
        return format_block(np.frombuffer(raw, dtype=np.uint8)[idx].tobytes(), terminated=False)
