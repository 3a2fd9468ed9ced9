"""Characterisation procedures: the DNPU's I-V curve, the reservoir's transfer curve.

``iv`` (DNPU rig): sweep one electrode through a range while the others sit at a fixed voltage;
at each point ramp (within the slew limit), let the device settle, digitise the transimpedance
amplifier's output and convert it to current, ``I = V_tia * gain``.

``transfer`` (reservoir rig, also ``labrig calibrate``): measure the optics without assuming them
(:func:`measure_reservoir`): the loop's settled transfer curve (a staircase of drives, the
first one held until the loop has settled), the modulator's own ``sin^2`` from a dark loop
(each level read before its light returns), fitted for V_pi, the null drive and the
photodetector's dark and bright levels; the loop's feedback strength; and the impulse response
at the steepest operating point (echoes every loop delay, each scaled by the loop's
small-signal gain), which gives the loop delay. The result is a
:class:`~labrig.calibration.ReservoirCalibration`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from instruments.roles import Digitizer
from labrig.calibration import ReservoirCalibration, fit_feedback, fit_mzm, save_calibration
from labrig.errors import ProcedureError
from labrig.procedures.base import (
    FloatParameter,
    IntegerParameter,
    ParameterError,
    StrParameter,
    register_procedure,
)
from labrig.procedures.plan import ChannelPlan, RunPlan
from labrig.procedures.rig_procedure import RigProcedure, RigRoles
from labrig.runs.documents import DataKey, PlotHint, StreamDeclaration

if TYPE_CHECKING:
    from labrig.station import ReservoirRig

FloatArray = npt.NDArray[np.float64]
Retry = Callable[[Callable[[], tuple[FloatArray, FloatArray]]], tuple[FloatArray, FloatArray]]

if TYPE_CHECKING:
    from labrig.station import Station

TIA_FULL_SCALE_V = 4.0  # digitiser half-window, V: a little beyond the TIA's rails


@register_procedure
class IvSweep(RigProcedure):
    """Sweep one DNPU electrode and measure the output current at each voltage."""

    name = "iv"
    rig_kind = "dnpu"
    electrode = IntegerParameter("Swept electrode", default=3, minimum=0, maximum=6)
    start_v = FloatParameter("Start", units="V", default=-1.2, minimum=-1.6, maximum=1.6)
    stop_v = FloatParameter("Stop", units="V", default=0.6, minimum=-1.6, maximum=1.6)
    points = IntegerParameter("Points", default=41, minimum=2, maximum=5001)
    others_v = FloatParameter(
        "Other electrodes",
        units="V",
        default=0.0,
        minimum=-1.6,
        maximum=1.6,
        help="DC level of every electrode not swept",
    )
    settle_s = FloatParameter("Settle time", units="s", default=0.01, minimum=0.0, maximum=10.0)
    acquisition_s = FloatParameter(
        "Acquisition",
        units="s",
        default=0.01,
        minimum=1e-4,
        maximum=1.0,
        help="digitised record per point; the current is its mean",
    )

    _next_point = 0

    def startup(self) -> None:
        super().startup()
        self._currents: list[float] = []
        self._stds: list[float] = []

    def execute(self) -> None:
        rig = self.require_rig()
        dnpu = rig.station.dnpu
        if dnpu is None:
            raise ProcedureError("the iv procedure needs a [dnpu] station")
        k = self.electrode
        lo, hi = dnpu.activation_ranges_v[k]
        for label, value in (("start_v", self.start_v), ("stop_v", self.stop_v)):
            if not lo <= value <= hi:
                raise ProcedureError(
                    f"{label} = {value} V is outside electrode {k}'s activation range "
                    f"[{lo}, {hi}] V ({rig.station.source})"
                )
        fixed: dict[int, float] = {}
        for j, channel in enumerate(dnpu.electrode_channels):
            if j == k:
                continue
            jlo, jhi = dnpu.activation_ranges_v[j]
            if not jlo <= self.others_v <= jhi:
                raise ProcedureError(
                    f"others_v = {self.others_v} V is outside electrode {j}'s activation range "
                    f"[{jlo}, {jhi}] V ({rig.station.source})"
                )
            fixed[channel] = self.others_v
        if self._next_point >= self.points:
            return  # resumed after every point was measured: nothing left to sweep
        voltages = np.linspace(self.start_v, self.stop_v, self.points)
        channel = dnpu.electrode_channels[k]
        self.with_retry(
            lambda: rig.digitizer.configure_acquisition(
                dnpu.digitizer_channel,
                volts_range=2 * TIA_FULL_SCALE_V,
                offset_v=0.0,
                duration_s=self.acquisition_s,
                trigger="immediate",
            ),
            [dnpu.digitizer],
            what="digitiser configuration",
        )
        self.with_retry(
            lambda: rig.dac.ramp_to({**fixed, channel: float(voltages[self._next_point])}),
            [dnpu.dac],
            what="starting levels",
        )
        for i in range(self._next_point, self.points):
            if self.should_stop():
                return
            v = float(voltages[i])

            def point(v: float = v) -> Any:
                # repeated whole after a dropped connection: the level is re-set, then measured
                rig.dac.ramp_to({channel: v})
                self.wait(self.settle_s)
                return rig.digitizer.acquire(dnpu.digitizer_channel)

            trace = self.with_retry(
                point, [dnpu.dac, dnpu.digitizer], what=f"acquisition at point {i}"
            )
            current = np.asarray(trace.volts) * dnpu.tia_gain_na_per_v
            self._next_point = i + 1
            self._currents.append(float(current.mean()))
            self._stds.append(float(current.std()))
            self.emit_event(
                {
                    "voltage_v": v,
                    "current_na": float(current.mean()),
                    "current_std_na": float(current.std()),
                    "device_time_s": self.device_time_s(),
                },
                {},
            )

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        currents = np.asarray(self._currents, dtype=float)
        if currents.size < 2:
            return {**out, "points": int(currents.size)}
        # A reversal is a change in the sign of the slope beyond the noise of the points.
        steps = np.diff(currents)
        noise = float(np.median(self._stds)) if self._stds else 0.0
        signs = np.sign(steps[np.abs(steps) > 2.0 * noise])
        reversals = int(np.count_nonzero(np.diff(signs) != 0)) if signs.size > 1 else 0
        return {
            **out,
            "points": int(currents.size),
            "current_min_na": float(currents.min()),
            "current_max_na": float(currents.max()),
            "reversals": reversals,
            "monotonic": reversals == 0,
        }

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "next_point": self._next_point,
            "currents": np.asarray(self._currents, dtype=float),
            "stds": np.asarray(self._stds, dtype=float),
            **self.rig_state(),
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        self._next_point = int(state["next_point"])
        self._currents = [float(x) for x in np.asarray(state["currents"]).ravel()]
        self._stds = [float(x) for x in np.asarray(state["stds"]).ravel()]
        self.restore_rig_state(state)

    def describe_data(self) -> list[StreamDeclaration]:
        """One point per event: the swept electrode's voltage, the mean current and its
        spread over the record (drawn as error bars)."""
        name = electrode_names(self.require_rig())[self.electrode]
        return [
            StreamDeclaration(
                (
                    DataKey("voltage_v", "V", description=f"{name} voltage"),
                    DataKey("current_na", "nA", description="output current"),
                    DataKey("current_std_na", "nA", description="current spread (1 sigma)"),
                    DataKey("device_time_s", "s", description="device time"),
                ),
                (
                    PlotHint(
                        "xy:current_na",
                        "xy",
                        ("current_na",),
                        f"I-V curve, {name} swept",
                        x="voltage_v",
                        error="current_std_na",
                    ),
                ),
                status=("device_time_s",),
            )
        ]

    def plan(self, station: Station) -> RunPlan:
        """What this sweep will do on ``station`` (parameters and wiring only): the swept
        electrode from ``start_v`` to ``stop_v``, the others at ``others_v``, the device time.
        Raises :class:`ParameterError` for a voltage outside an activation range. Opens nothing.
        """
        dnpu = station.dnpu
        if dnpu is None:
            raise ProcedureError(f"the iv procedure needs a [dnpu] station ({station.source})")
        k = self.electrode
        if k >= len(dnpu.electrode_channels):
            raise ParameterError(
                "electrode",
                k,
                f"is not among the {len(dnpu.electrode_channels)} electrodes",
                station.source,
            )
        lo, hi = dnpu.activation_ranges_v[k]
        for name in ("start_v", "stop_v"):
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ParameterError(
                    name,
                    value,
                    f"is outside electrode {k}'s activation range [{lo:g}, {hi:g}] V",
                    station.source,
                )
        channels = [
            ChannelPlan(
                dnpu.dac,
                dnpu.electrode_channels[k],
                f"electrode {k} (swept)",
                min(self.start_v, self.stop_v),
                max(self.start_v, self.stop_v),
                f"{self.points} points from {self.start_v:+g} V to {self.stop_v:+g} V",
            )
        ]
        for j, channel in enumerate(dnpu.electrode_channels):
            if j == k:
                continue
            jlo, jhi = dnpu.activation_ranges_v[j]
            if not jlo <= self.others_v <= jhi:
                raise ParameterError(
                    "others_v",
                    self.others_v,
                    f"is outside electrode {j}'s activation range [{jlo:g}, {jhi:g}] V",
                    station.source,
                )
            channels.append(
                ChannelPlan(
                    dnpu.dac, channel, f"electrode {j}", self.others_v, self.others_v, "held"
                )
            )
        per_point_s = self.settle_s + self.acquisition_s
        return RunPlan(
            procedure=self.name,
            step_name="point",
            steps=self.points,
            channels=tuple(channels),
            device_time_s=self.points * per_point_s,
            details=(
                f"{self.points} points x ({self.settle_s:g} s settle + "
                f"{self.acquisition_s:g} s acquisition)",
            ),
        )


# ------------------------------------------------------------------------------ reservoir optics
OVERSAMPLING = 4  # scope samples per drive sample: linear interpolation then stays exact
SETTLE_PERIODS = 40  # loop delays the first level is held before any reading (settling)
OPEN_LOOP_GUARD_PERIODS = 6  # dark loop delays between open-loop pulses: the echoes die out
WIDE_RANGE_V = 16.0  # scope full screen for the first, unscaled look at the photodetector


def scope_points(scope: Digitizer, duration_s: float, drive_rate_hz: float) -> int:
    """The record of ``scope`` that samples a ``duration_s`` drive at ``OVERSAMPLING`` times its
    rate (too sparse a record attenuates the drive's top frequencies when resampled)."""
    try:
        return scope.record_points_for(duration_s, OVERSAMPLING * drive_rate_hz)
    except ValueError as exc:
        raise ProcedureError(f"this drive does not fit one scope record: {exc}") from exc


def completion_timeout_s(duration_s: float) -> float:
    """How long to wait for a record of ``duration_s`` to complete once it has been played: the
    record itself twice over, plus 10 s for transfers and a slow link."""
    return 10.0 + 2.0 * duration_s


@dataclass
class ReservoirMeasurement:
    """What :func:`measure_reservoir` found. Volts and seconds.

    ``steady_pd_v``: the settled closed-loop photodetector level per drive level;
    ``open_pd_v``: the open-loop level (read before the light has been round the loop) per
    drive level; ``open_fit``: :func:`~labrig.calibration.fit_mzm` of the open-loop curve;
    ``impulse``: loop delay, echo peaks and ratio, the trace around the pulse.
    """

    levels_v: FloatArray
    steady_pd_v: FloatArray
    open_pd_v: FloatArray
    open_fit: dict[str, float]
    open_fit_rms_v: float
    feedback_rad_per_v: float
    feedback_fit_rms_v: float
    impulse: dict[str, Any]
    impulse_t_s: FloatArray
    impulse_pd_v: FloatArray

    def calibration(self, res: ReservoirRig, run: str = "") -> ReservoirCalibration:
        """The calibration these measurements give for the station's loop ``res``."""
        return ReservoirCalibration(
            v_pi_v=self.open_fit["v_pi_v"],
            null_drive_v=self.open_fit["null_drive_v"],
            bias_dac_v=res.bias_v,
            dark_v=self.open_fit["dark_v"],
            bright_v=self.open_fit["bright_v"],
            loop_delay_s=float(self.impulse["loop_delay_s"]),
            node_duration_s=res.node_duration_s,
            node_count=res.node_count,
            feedback_rad_per_v=self.feedback_rad_per_v,
            fit_rms_v=self.open_fit_rms_v,
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
            run=run,
        )


class ReservoirProbe:
    """Plays drive waveforms on the reservoir rig's AWG (at the node rate) and records the
    photodetector from the waveform's start: the measurements a calibration needs."""

    def __init__(
        self,
        rig: RigRoles,
        wait: Callable[[float], None],
        retry: Retry | None = None,
    ) -> None:
        # ``retry(call)`` repeats a play after a dropped connection (RigProcedure.with_retry).
        self.retry: Retry = retry if retry is not None else (lambda call: call())
        res = rig.station.reservoir
        if res is None:
            raise ProcedureError(f"{rig.station.source} has no [reservoir] table")
        self.rig, self.res, self.wait = rig, res, wait
        self.fs = 1.0 / res.node_duration_s
        self.period_s = res.node_count * res.node_duration_s
        self.range_v, self.offset_v = WIDE_RANGE_V, 0.0

    def play(self, drive: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Play ``drive`` (V, one value per node slot) once; the PD record (times, volts).
        Repeated on fresh connections after a transport fault (the play sets up everything)."""
        return self.retry(lambda: self._play_once(drive))

    def _play_once(self, drive: FloatArray) -> tuple[FloatArray, FloatArray]:
        rig, res, fs = self.rig, self.res, self.fs
        awg, scope = rig.awg, rig.digitizer
        awg.load_waveform(res.awg_channel, drive, fs, name="LABRIGXFER")
        awg.configure_burst(res.awg_channel, 1, "bus")
        awg.set_output(res.awg_channel, True)
        duration = drive.size / fs
        scope.configure_acquisition(
            res.digitizer_channel,
            volts_range=self.range_v,
            offset_v=self.offset_v,
            duration_s=duration,
            trigger="external",
            trigger_level_v=1.0,
        )
        scope.set_points(scope_points(scope, duration, fs))
        scope.arm()
        awg.trigger()
        self.wait(duration)
        scope.wait_complete(timeout_s=completion_timeout_s(duration))
        record = scope.read_waveform(res.digitizer_channel)
        awg.set_output(res.awg_channel, False)
        return np.asarray(record.times_s, dtype=float), np.asarray(record.volts, dtype=float)

    def _mean(self, t: FloatArray, v: FloatArray, t0: float, t1: float, what: str) -> float:
        sel = (t >= t0) & (t < t1)
        if not np.any(sel):
            raise ProcedureError(f"the record holds no samples of {what}")
        return float(v[sel].mean())

    def steady_curve(self, levels: FloatArray, hold_periods: int) -> FloatArray:
        """The settled PD level at each drive: a staircase, each step held ``hold_periods``
        loop periods and read over its last fifth. The first level is held
        :data:`SETTLE_PERIODS` periods first, so the first reading is as settled as the rest
        (the loop converges geometrically; from a dark start it needs tens of periods)."""
        per = max(1, round(hold_periods * self.period_s * self.fs))
        lead = max(per, round(SETTLE_PERIODS * self.period_s * self.fs))
        drive = np.concatenate([np.full(lead, levels[0]), np.repeat(levels, per)])
        t, v = self.play(drive)
        out = np.empty(levels.size)
        for i in range(levels.size):
            t1 = (lead + (i + 1) * per) / self.fs
            out[i] = self._mean(t, v, t1 - per / self.fs / 5.0, t1, f"drive step {i}")
        return out

    def autorange(self, steady: FloatArray) -> None:
        """Fit the scope's window to the PD levels seen (a quarter of the swing spare)."""
        lo, hi = float(steady.min()), float(steady.max())
        swing = max(hi - lo, 0.05)
        self.range_v = 1.5 * swing
        self.offset_v = 0.5 * (lo + hi)

    def open_loop_curve(self, levels: FloatArray, dark_v: float) -> FloatArray:
        """The modulator's own transfer curve: each level played for half a loop period from a
        dark loop (the drive ``dark_v`` for :data:`OPEN_LOOP_GUARD_PERIODS` periods before
        it), read over the middle half of the pulse, before any of its light has come back."""
        n = self.res.node_count
        half = max(2, n // 2)
        guard = OPEN_LOOP_GUARD_PERIODS * n
        slot = guard + half
        drive = np.full(levels.size * slot + guard, dark_v)
        for i, level in enumerate(levels):
            drive[i * slot + guard : (i + 1) * slot] = level
        t, v = self.play(drive)
        out = np.empty(levels.size)
        for i in range(levels.size):
            s0 = i * slot + guard
            out[i] = self._mean(
                t, v, (s0 + half / 4) / self.fs, (s0 + 3 * half / 4) / self.fs, f"pulse {i}"
            )
        return out

    def impulse(
        self, base_v: float, pulse_v: float, echoes: int
    ) -> tuple[dict[str, Any], FloatArray, FloatArray]:
        """The loop's impulse response around the operating drive ``base_v``: the loop settles
        at ``base_v``, then one node slot is driven at ``base_v + pulse_v``; the PD shows the
        pulse and its echoes every loop delay, each scaled by the loop's small-signal gain at
        this operating point (biased on the slope, the gain is largest, so echoes last)."""
        period = self.res.node_count
        lead = SETTLE_PERIODS * period
        tail = round((echoes + 1.5) * period * 1.2)
        drive = np.full(lead + 1 + tail, base_v)
        drive[lead] = base_v + pulse_v
        t, v = self.play(drive)
        t_pulse = lead / self.fs
        before = (t < t_pulse) & (t > t_pulse - 5 * self.period_s)
        baseline = float(np.median(v[before]))
        noise = float(np.std(v[before]))
        r = v - baseline
        sign = 1.0 if r[np.abs(t - t_pulse - 0.5 / self.fs) < 1.0 / self.fs].mean() >= 0 else -1.0
        r_abs = sign * r
        # The first echo: the strongest response between half and 1.5 periods after the pulse;
        # its time by the centroid of the response over one node slot around the peak.
        win = (t > t_pulse + 0.5 * self.period_s) & (t < t_pulse + 1.5 * self.period_s)
        if not np.any(win):
            raise ProcedureError("the impulse record ends before the first echo")
        k = int(np.argmax(np.where(win, r_abs, -np.inf)))
        near = np.abs(t - t[k]) <= 1.0 / self.fs
        w = np.clip(r_abs[near], 0.0, None)
        t_echo = float(np.sum(t[near] * w) / np.sum(w)) if np.sum(w) > 0 else float(t[k])
        t_peak0 = np.abs(t - t_pulse - 0.5 / self.fs) <= 1.0 / self.fs
        w0 = np.clip(r_abs[t_peak0], 0.0, None)
        t_p = float(np.sum(t[t_peak0] * w0) / np.sum(w0)) if np.sum(w0) > 0 else t_pulse
        delay = t_echo - t_p
        pulse_peak = float(r_abs[t_peak0].max())
        peaks = []
        for m in range(1, echoes + 1):
            window = np.abs(t - (t_p + m * delay)) < 0.25 * delay
            peaks.append(float(r_abs[window].max()) if np.any(window) else float("nan"))
        # Only echoes well above the noise say anything about the loop: 5 sigma of the
        # settled record before the pulse.
        significant = [p for p in peaks if p > 5.0 * noise]
        ratios = [b / a for a, b in zip([pulse_peak, *peaks], peaks, strict=False) if a > 0]
        result: dict[str, Any] = {
            "loop_delay_s": delay,
            "impulse_base_v": base_v,
            "echo_ratio": float(np.median(ratios[: max(1, len(significant))]))
            if ratios
            else float("nan"),
            "echoes_above_noise": len(significant),
            "echo_peaks_v": peaks,
            "pulse_peak_v": pulse_peak,
            "noise_v": noise,
        }
        keep = (t > t_pulse - 0.5 * self.period_s) & (t < t_pulse + (echoes + 0.5) * delay)
        return result, t[keep] - t_pulse, r[keep]


def measure_reservoir(
    rig: RigRoles,
    wait: Callable[[float], None],
    levels: FloatArray,
    hold_periods: int = 5,
    pulse_v: float = 1.0,
    echoes: int = 6,
    window_v: float = 4.9,
    retry: Retry | None = None,
) -> ReservoirMeasurement:
    """Measure the reservoir's optics on the rig, assuming nothing of them:

    1. a settled staircase at a wide scope range: the loop's steady-state curve. Its minimum
       is the modulator's null (there ``x = 0`` is the loop's fixed point), a first guess of
       the dark drive; the scope is then ranged to the levels seen and the staircase repeated;
    2. the open-loop curve from a dark loop (guard at that null), fitted by ``sin^2``
       (:func:`~labrig.calibration.fit_mzm`): V_pi, the null drive, dark and bright levels;
    3. the loop's feedback strength from the steady curve (:func:`fit_feedback`);
    4. the impulse response at the steady curve's steepest point: the loop delay.
    """
    probe = ReservoirProbe(rig, wait, retry)
    res = probe.res
    rig.dac.ramp_to({res.bias_channel: res.bias_v})
    probe.autorange(probe.steady_curve(levels, hold_periods))
    steady = probe.steady_curve(levels, hold_periods)
    i_min = int(np.argmin(steady))
    dark_guess = float(levels[i_min])
    open_pd = probe.open_loop_curve(levels, dark_guess)
    fit, fit_rms = fit_mzm(levels, open_pd)
    beta, beta_rms = fit_feedback(levels, steady, fit)
    slope = np.gradient(steady, levels)
    base = float(levels[int(np.argmax(np.abs(slope)))])
    pulse = float(np.clip(base + pulse_v, -window_v, window_v) - base)
    if pulse == 0.0:
        pulse = float(np.clip(base - pulse_v, -window_v, window_v) - base)
    impulse, t_imp, r_imp = probe.impulse(base, pulse, echoes)
    return ReservoirMeasurement(
        levels_v=np.asarray(levels, dtype=float),
        steady_pd_v=steady,
        open_pd_v=open_pd,
        open_fit=fit,
        open_fit_rms_v=fit_rms,
        feedback_rad_per_v=beta,
        feedback_fit_rms_v=beta_rms,
        impulse=impulse,
        impulse_t_s=t_imp,
        impulse_pd_v=r_imp,
    )


@register_procedure
class TransferCurve(RigProcedure):
    """Characterise and calibrate the reservoir: transfer curves, ``sin^2`` fit, impulse response.

    See :func:`measure_reservoir`. Events: one per drive level (``drive_v``, the settled
    ``pd_v``, the open-loop ``pd_open_loop_v`` and the fitted ``pd_fit_v``), then one with the
    impulse response. The summary holds the calibration (``calibration``: V_pi, null drive,
    dark/bright levels, loop delay, feedback) and the fit's residual; ``labrig calibrate``
    saves it to the station's calibration file.
    """

    name = "transfer"
    rig_kind = "reservoir"
    station = StrParameter(
        "Station", default="sim-reservoir", help="a built-in station or a station file"
    )
    points = IntegerParameter("Drive levels", default=201, minimum=8, maximum=5001)
    drive_min_v = FloatParameter("Lowest drive", units="V", default=-4.5, minimum=-4.9, maximum=4.9)
    drive_max_v = FloatParameter("Highest drive", units="V", default=4.5, minimum=-4.9, maximum=4.9)
    hold_periods = IntegerParameter("Hold per level", default=5, minimum=1, maximum=100)
    pulse_v = FloatParameter(
        "Impulse height",
        units="V",
        default=1.0,
        minimum=-5,
        maximum=5,
        help="added for one node slot to the operating drive (the steepest point)",
    )
    echoes = IntegerParameter("Echoes recorded", default=8, minimum=1, maximum=50)
    save_calibration = StrParameter(
        "Save calibration",
        default="",
        help="write the calibration to this file ('station': the file the station references, "
        "[reservoir] calibration); it is always in the run's summary and calibration.toml",
    )

    _done = False

    def execute(self) -> None:
        if self._done:
            return
        if not self.drive_min_v < self.drive_max_v:
            raise ProcedureError(
                f"drive_min_v = {self.drive_min_v} V must be below drive_max_v = "
                f"{self.drive_max_v} V"
            )
        rig = self.require_rig()
        levels = np.linspace(self.drive_min_v, self.drive_max_v, self.points)
        m = measure_reservoir(
            rig,
            self.wait,
            levels,
            self.hold_periods,
            self.pulse_v,
            self.echoes,
            retry=lambda call: self.with_retry(call, list(self.instruments), "transfer playback"),
        )
        self._measurement = m
        fit = m.open_fit
        kappa = math.pi / (2.0 * fit["v_pi_v"])
        model = (
            fit["dark_v"]
            + (fit["bright_v"] - fit["dark_v"])
            * np.sin(kappa * (m.levels_v - fit["null_drive_v"])) ** 2
        )
        for i, level in enumerate(m.levels_v):
            self.emit_event(
                {
                    "drive_v": float(level),
                    "pd_v": float(m.steady_pd_v[i]),
                    "pd_open_loop_v": float(m.open_pd_v[i]),
                    "pd_fit_v": float(model[i]),
                },
                {},
            )
        self.emit_event(
            {
                "loop_delay_s": float(m.impulse["loop_delay_s"]),
                "echo_ratio": float(m.impulse["echo_ratio"]),
            },
            {"impulse_t_s": m.impulse_t_s, "impulse_pd_v": m.impulse_pd_v},
        )
        self._done = True
        target = self._calibration_target()
        cal = self.calibration()
        if target is not None and cal is not None:
            self._saved_to = save_calibration(cal, target)
            self.log(f"calibration saved to {self._saved_to}")

    def _calibration_target(self) -> Path | None:
        if not self.save_calibration:
            return None
        if self.save_calibration != "station":
            return Path(self.save_calibration)
        res = self.require_rig().station.reservoir
        if res is None or res.calibration is None:
            raise ProcedureError(
                f"save_calibration = 'station', but {self.require_rig().station.source} "
                'references no calibration file ([reservoir] calibration = "...")'
            )
        return res.calibration

    def calibration(self) -> ReservoirCalibration | None:
        """The calibration this run measured (None before it ran)."""
        m: ReservoirMeasurement | None = getattr(self, "_measurement", None)
        if m is None or self.rig is None or self.rig.station.reservoir is None:
            return None
        return m.calibration(self.rig.station.reservoir)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        m: ReservoirMeasurement | None = getattr(self, "_measurement", None)
        if m is None:
            return out
        cal = getattr(self, "_calibration", None) or self.calibration()
        self._calibration = cal
        pd = m.steady_pd_v
        out.update(
            pd_min_v=float(pd.min()),
            pd_max_v=float(pd.max()),
            drive_at_max_v=float(m.levels_v[int(np.argmax(pd))]),
            drive_at_min_v=float(m.levels_v[int(np.argmin(pd))]),
            open_loop_fit_rms_v=m.open_fit_rms_v,
            feedback_fit_rms_v=m.feedback_fit_rms_v,
        )
        out.update(m.impulse)
        if cal is not None:
            out["calibration"] = cal.as_dict()
        saved = getattr(self, "_saved_to", None)
        if saved is not None:
            out["calibration_file"] = str(saved)
        return out

    def checkpoint_state(self) -> dict[str, Any]:
        return {"done": self._done, **self.rig_state()}

    def restore_state(self, state: dict[str, Any]) -> None:
        self._done = bool(state["done"])
        self.restore_rig_state(state)

    def describe_data(self) -> list[StreamDeclaration]:
        """Two streams: the transfer curve (a point per drive level) and the impulse response
        (one event: the photodetector on a time axis, and the delay and echo ratio)."""
        return [
            StreamDeclaration(
                (
                    DataKey("drive_v", "V", description="modulator drive"),
                    DataKey("pd_v", "V", description="photodetector, loop settled"),
                    DataKey("pd_open_loop_v", "V", description="photodetector, open loop"),
                    DataKey("pd_fit_v", "V", description="sin² fit of the open-loop curve"),
                ),
                (
                    PlotHint(
                        "lines:transfer",
                        "lines",
                        ("pd_v", "pd_open_loop_v", "pd_fit_v"),
                        "Transfer curve: settled, open loop and its sin² fit",
                    ),
                ),
                x="drive_v",
            ),
            StreamDeclaration(
                (
                    DataKey("loop_delay_s", "s", description="loop delay"),
                    DataKey("echo_ratio", description="first echo / pulse"),
                    DataKey("impulse_t_s", "s", (None,), ("time",), description="time"),
                    DataKey(
                        "impulse_pd_v",
                        "V",
                        (None,),
                        ("time",),
                        description="photodetector - baseline",
                    ),
                ),
                (
                    PlotHint(
                        "trace:impulse_pd_v",
                        "trace",
                        ("impulse_pd_v",),
                        "Impulse response of the delay loop",
                        x="impulse_t_s",
                    ),
                ),
                name="impulse",
            ),
        ]

    def plan(self, station: Station) -> RunPlan:
        """What this measurement will do on ``station`` (parameters and wiring only): the AWG
        drive's staircase and impulse, the modulator bias, and the play time. Opens nothing."""
        res = station.reservoir
        if res is None:
            raise ProcedureError(
                f"the transfer procedure needs a [reservoir] station ({station.source})"
            )
        period_s = res.node_count * res.node_duration_s
        # Two settled staircases (a wide look, then ranged), the open-loop pulses, the impulse.
        staircase_s = 2 * (SETTLE_PERIODS + self.points * self.hold_periods) * period_s
        open_loop_s = (self.points * (OPEN_LOOP_GUARD_PERIODS + 0.5) + 6) * period_s
        impulse_s = (SETTLE_PERIODS + 1.2 * (self.echoes + 1.5)) * period_s
        staircase_s += open_loop_s
        levels = (self.drive_min_v, self.drive_max_v, -4.9, 4.9)
        channels = (
            ChannelPlan(
                res.awg,
                res.awg_channel,
                "modulator RF drive",
                min(levels),
                max(levels),
                f"{self.points} levels from {self.drive_min_v:+g} V to {self.drive_max_v:+g} V "
                f"(settled and open-loop), a {self.pulse_v:+g} V impulse at the steepest level "
                "(within +/-4.9 V)",
            ),
            modulator_bias_plan(res),
        )
        return RunPlan(
            procedure=self.name,
            step_name="point",
            steps=self.points + 1,
            channels=channels,
            device_time_s=staircase_s + impulse_s,
            details=(
                f"staircase: {self.points} levels x {self.hold_periods} loop periods of "
                f"{period_s * 1e6:g} us; impulse: {self.echoes} echoes",
            ),
        )


def electrode_names(rig: Any) -> list[str]:
    """The DNPU's electrodes by the station's names (its DAC channels' labels), in order."""
    dnpu = rig.station.dnpu
    labels = {(c.instrument, c.channel): c.limits.label for c in rig.station.channels}
    return [
        labels.get((dnpu.dac, ch), f"electrode {k}") for k, ch in enumerate(dnpu.electrode_channels)
    ]


def modulator_bias_plan(res: ReservoirRig) -> ChannelPlan:
    """The plan of the modulator's bias channel: held at the station's DC bias."""
    return ChannelPlan(
        res.bias_dac,
        res.bias_channel,
        "modulator bias",
        res.bias_v,
        res.bias_v,
        f"DC bias {res.bias_v:+g} V (ramped there from the safe level)",
    )


# ------------------------------------------------------------------------------------ outputs
def write_iv_outputs(run_dir: Path) -> dict[str, Path]:
    """Write ``iv.csv`` and ``iv.png`` (current vs voltage) into the run folder."""
    from labrig.runs.record import RunRecord

    record = RunRecord.open(run_dir)
    v = np.asarray(record.events.scalars["voltage_v"])
    i = np.asarray(record.events.scalars["current_na"])
    s = np.asarray(record.events.scalars.get("current_std_na", np.full_like(i, np.nan)))
    csv = Path(run_dir) / "iv.csv"
    np.savetxt(
        csv,
        np.column_stack([v, i, s]),
        delimiter=",",
        header="voltage_v,current_na,current_std_na",
        comments="",
        fmt="%.9g",
    )
    params = record.start.parameters if record.start else {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.errorbar(v, i, yerr=s, fmt="o-", ms=3, lw=1, capsize=0)
    ax.set_xlabel(f"electrode {params.get('electrode', '?')} voltage (V)")
    ax.set_ylabel("output current (nA)")
    ax.set_title(f"DNPU I-V, others at {params.get('others_v', 0.0)} V")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    png = Path(run_dir) / "iv.png"
    fig.savefig(png)
    plt.close(fig)
    return {"csv": csv, "png": png}


def write_transfer_outputs(run_dir: Path) -> dict[str, Path]:
    """Write ``transfer.csv`` and ``transfer.png`` (transfer curves, fit, impulse response)."""
    from labrig.runs.record import RunRecord

    record = RunRecord.open(run_dir)
    sc = record.events.scalars
    drive = np.asarray(sc.get("drive_v", []), dtype=float)
    keep = np.isfinite(drive)
    cols = ["drive_v", "pd_v", "pd_open_loop_v", "pd_fit_v"]
    data = [np.asarray(sc.get(c, np.full(drive.shape, np.nan)), dtype=float)[keep] for c in cols]
    csv = Path(run_dir) / "transfer.csv"
    np.savetxt(
        csv, np.column_stack(data), delimiter=",", header=",".join(cols), comments="", fmt="%.9g"
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d, steady, open_loop, fit = data
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    a1.plot(d, steady, ".-", ms=3, lw=0.8, label="closed loop, settled")
    if np.any(np.isfinite(open_loop)):
        a1.plot(d, open_loop, "o", ms=2.5, label="open loop (dark loop)")
        a1.plot(d, fit, "-", lw=1, label="sin² fit")
    a1.set_xlabel("modulator drive (V)")
    a1.set_ylabel("photodetector (V)")
    a1.set_title("transfer curves")
    a1.legend(fontsize=8)
    a1.grid(True, alpha=0.3)
    events = record.events
    if "impulse_t_s" in events.arrays or "impulse_t_s" in events.ragged_arrays:
        t = np.asarray(events.last("impulse_t_s")) * 1e6
        r = np.asarray(events.last("impulse_pd_v"))
        a2.plot(t, r, lw=0.8)
        a2.set_xlabel("time after the pulse (µs)")
        a2.set_ylabel("photodetector - baseline (V)")
        a2.set_title("impulse response at the steepest drive")
        a2.grid(True, alpha=0.3)
    fig.tight_layout()
    png = Path(run_dir) / "transfer.png"
    fig.savefig(png)
    plt.close(fig)
    out = {"csv": csv, "png": png}
    values = record.stop.summary.get("calibration") if record.stop is not None else None
    if values:  # the calibration beside the record it was measured in
        cal = ReservoirCalibration(**{**values, "run": str(run_dir)})
        out["calibration"] = save_calibration(cal, Path(run_dir) / "calibration.toml")
    return out
