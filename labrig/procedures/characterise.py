"""Characterisation procedures: the DNPU's I-V curve, the reservoir's transfer curve.

``iv`` (DNPU rig): sweep one electrode through a range while the others sit at a fixed voltage;
at each point ramp (within the slew limit), let the device settle, digitise the transimpedance
amplifier's output and convert it to current, ``I = V_tia * gain``.

``transfer`` (reservoir rig): play a slow ramp of modulator drive on the AWG and record the
photodetector: the modulator's ``sin^2`` transfer curve (drive -> optical power); then play one
node-long pulse and record the impulse response of the delay loop (echoes every delay period,
each smaller by the feedback gain).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from instruments.roles import Digitizer
from labrig.errors import ProcedureError
from labrig.procedures.base import (
    FloatParameter,
    IntegerParameter,
    ParameterError,
    StrParameter,
    register_procedure,
)
from labrig.procedures.plan import ChannelPlan, RunPlan
from labrig.procedures.rig_procedure import RigProcedure
from labrig.runs.documents import DataKey, PlotHint, StreamDeclaration

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


@register_procedure
class TransferCurve(RigProcedure):
    """The reservoir's static transfer curve (drive -> photodetector) and its impulse response.

    Transfer curve: the AWG plays a staircase of drive levels, each held for ``hold_periods``
    loop delays so the loop settles; the photodetector's level at the end of each step is the
    loop's steady-state response to that drive (the MZM's ``sin^2`` shaped by the feedback).

    Impulse response: the loop is kept dark, one node-long pulse is played, and the photodetector
    shows it return every loop delay ``tau``, each echo scaled by the loop's small-signal gain.
    The measured ``tau`` and echo ratio are in the summary.
    """

    name = "transfer"
    rig_kind = "reservoir"
    station = StrParameter(
        "Station", default="sim-reservoir", help="a built-in station or a station file"
    )
    points = IntegerParameter("Drive levels", default=201, minimum=5, maximum=5001)
    drive_min_v = FloatParameter("Lowest drive", units="V", default=-4.0, minimum=-5, maximum=5)
    drive_max_v = FloatParameter("Highest drive", units="V", default=4.0, minimum=-5, maximum=5)
    hold_periods = IntegerParameter("Hold per level", default=5, minimum=1, maximum=100)
    pulse_v = FloatParameter("Impulse height", units="V", default=2.0, minimum=-5, maximum=5)
    echoes = IntegerParameter("Echoes recorded", default=6, minimum=1, maximum=50)

    _phase = 0  # 0: transfer curve next, 1: impulse next, 2: done

    def _node_rate(self) -> tuple[float, float]:
        rig = self.require_rig()
        res = rig.station.reservoir
        if res is None:
            raise ProcedureError("the transfer procedure needs a [reservoir] station")
        node_s = res.node_duration_s
        period_s = res.node_count * node_s
        return 1.0 / node_s, period_s

    def _play_and_record(self, drive: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
        """Play ``drive`` (V at ``fs``) once on the AWG; record the photodetector from its start.
        Repeated on fresh connections after a transport fault (the play sets up everything)."""
        return self.with_retry(
            lambda: self._play_and_record_once(drive, fs),
            list(self.instruments),
            what="transfer playback",
        )

    def _play_and_record_once(self, drive: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
        rig = self.require_rig()
        res = rig.station.reservoir
        assert res is not None
        awg, scope = rig.awg, rig.digitizer
        awg.load_waveform(res.awg_channel, drive, fs, name="LABRIGXFER")
        awg.configure_burst(res.awg_channel, 1, "bus")
        awg.set_output(res.awg_channel, True)
        duration = drive.size / fs
        scope.configure_acquisition(
            res.digitizer_channel,
            volts_range=2.4,
            offset_v=0.5,
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

    def execute(self) -> None:
        rig = self.require_rig()
        res = rig.station.reservoir
        assert res is not None
        rig.dac.ramp_to({res.bias_channel: res.bias_v})
        fs, period_s = self._node_rate()
        if self._phase == 0:
            self._transfer_curve(fs, period_s)
            self._phase = 1
        if self.should_stop():
            return
        if self._phase == 1:
            self._impulse(fs, period_s)
            self._phase = 2

    def _transfer_curve(self, fs: float, period_s: float) -> None:
        levels = np.linspace(self.drive_min_v, self.drive_max_v, self.points)
        per_level = max(1, round(self.hold_periods * period_s * fs))
        lead = per_level  # start dark, so the record's first step is a clean one
        drive = np.concatenate([np.zeros(lead), np.repeat(levels, per_level)])
        t, v = self._play_and_record(drive, fs)
        self._curve = []
        for i, level in enumerate(levels):
            # read the last fifth of each step, when the loop has settled
            t1 = (lead + (i + 1) * per_level) / fs
            t0 = t1 - per_level / fs / 5.0
            sel = (t >= t0) & (t < t1)
            if not np.any(sel):
                raise ProcedureError(f"the record holds no samples of drive step {i}")
            pd = float(v[sel].mean())
            self._curve.append((float(level), pd))
            self.emit_event({"drive_v": float(level), "pd_v": pd}, {})

    def _impulse(self, fs: float, period_s: float) -> None:
        lead = round(2 * period_s * fs)
        tail = round((self.echoes + 1.5) * period_s * fs)
        drive = np.zeros(lead + 1 + tail)
        drive[lead] = self.pulse_v
        t, v = self._play_and_record(drive, fs)
        t_pulse = lead / fs
        baseline = float(np.median(v[t < t_pulse]))
        response = v - baseline
        # Echoes: the largest response within half a period around each multiple of the delay,
        # the delay itself found from the first echo.
        after = t > t_pulse + 0.5 * period_s
        first = int(np.argmax(np.where(after & (t < t_pulse + 1.5 * period_s), response, -np.inf)))
        delay = float(t[first] - t_pulse)
        peaks = []
        for m in range(1, self.echoes + 1):
            window = np.abs(t - (t_pulse + m * delay)) < 0.25 * delay
            peaks.append(float(response[window].max()) if np.any(window) else float("nan"))
        # Only echoes well above the noise say anything about the loop: 5 sigma of the
        # pre-pulse record. At the modulator's null the loop is quadratic, so each echo is
        # far smaller than the last; biased on the slope it is a constant fraction.
        noise = float(np.std(v[t < t_pulse]))
        pulse_peak = float(response[np.abs(t - t_pulse) < 0.25 * delay].max())
        significant = [p for p in peaks if p > 5.0 * noise]
        echo_ratio = significant[0] / pulse_peak if significant and pulse_peak > 0 else float("nan")
        self._impulse_result: dict[str, Any] = {
            "loop_delay_s": delay,
            "echo_ratio": echo_ratio,
            "echoes_above_noise": len(significant),
            "echo_peaks_v": peaks,
            "noise_v": noise,
        }
        self.emit_event(
            {"loop_delay_s": delay, "echo_ratio": echo_ratio},
            {"impulse_t_s": t - t_pulse, "impulse_pd_v": response},
        )

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        curve = getattr(self, "_curve", [])
        if curve:
            pd = np.array([p for _, p in curve])
            drive = np.array([d for d, _ in curve])
            out.update(
                pd_min_v=float(pd.min()),
                pd_max_v=float(pd.max()),
                drive_at_max_v=float(drive[int(np.argmax(pd))]),
                drive_at_min_v=float(drive[int(np.argmin(pd))]),
            )
        out.update(getattr(self, "_impulse_result", {}))
        return out

    def checkpoint_state(self) -> dict[str, Any]:
        return {"phase": self._phase, **self.rig_state()}

    def restore_state(self, state: dict[str, Any]) -> None:
        self._phase = int(state["phase"])
        self.restore_rig_state(state)

    def describe_data(self) -> list[StreamDeclaration]:
        """Two streams: the transfer curve (a point per drive level) and the impulse response
        (one event: the photodetector on a time axis, and the delay and echo ratio)."""
        return [
            StreamDeclaration(
                (
                    DataKey("drive_v", "V", description="modulator drive"),
                    DataKey("pd_v", "V", description="photodetector"),
                ),
                (PlotHint("xy:pd_v", "xy", ("pd_v",), "Transfer curve", x="drive_v"),),
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
        staircase_s = (self.points + 1) * self.hold_periods * period_s
        impulse_s = (2 + self.echoes + 1.5) * period_s
        levels = (self.drive_min_v, self.drive_max_v, self.pulse_v, 0.0)
        channels = (
            ChannelPlan(
                res.awg,
                res.awg_channel,
                "modulator RF drive",
                min(levels),
                max(levels),
                f"{self.points} levels from {self.drive_min_v:+g} V to {self.drive_max_v:+g} V, "
                f"a {self.pulse_v:+g} V impulse, dark 0 V",
            ),
            ChannelPlan(
                res.bias_dac,
                res.bias_channel,
                "modulator bias",
                res.bias_v,
                res.bias_v,
                f"DC bias {res.bias_v:+g} V (ramped there from the safe level)",
            ),
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


OVERSAMPLING = 4  # scope samples per drive sample: linear interpolation then stays exact


def completion_timeout_s(duration_s: float) -> float:
    """How long to wait for a record of ``duration_s`` to complete once it has been played: the
    record itself twice over, plus 10 s for transfers and a slow link."""
    return 10.0 + 2.0 * duration_s


def scope_points(scope: Digitizer, duration_s: float, drive_rate_hz: float) -> int:
    """The record of ``scope`` that samples a ``duration_s`` drive at ``OVERSAMPLING`` times its
    rate (too sparse a record attenuates the drive's top frequencies when resampled)."""
    return scope.record_points_for(duration_s, OVERSAMPLING * drive_rate_hz)


def electrode_names(rig: Any) -> list[str]:
    """The DNPU's electrodes by the station's names (its DAC channels' labels), in order."""
    dnpu = rig.station.dnpu
    labels = {(c.instrument, c.channel): c.limits.label for c in rig.station.channels}
    return [
        labels.get((dnpu.dac, ch), f"electrode {k}") for k, ch in enumerate(dnpu.electrode_channels)
    ]


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
    """Write ``transfer.csv`` and ``transfer.png`` (transfer curve and impulse response)."""
    from labrig.runs.record import RunRecord

    record = RunRecord.open(run_dir)
    drive = np.asarray(record.events.scalars.get("drive_v", []))
    pd = np.asarray(record.events.scalars.get("pd_v", []))
    keep = np.isfinite(drive)
    csv = Path(run_dir) / "transfer.csv"
    np.savetxt(
        csv,
        np.column_stack([drive[keep], pd[keep]]),
        delimiter=",",
        header="drive_v,pd_v",
        comments="",
        fmt="%.9g",
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    a1.plot(drive[keep], pd[keep], ".-", ms=3)
    a1.set_xlabel("modulator drive (V)")
    a1.set_ylabel("photodetector (V)")
    a1.set_title("steady-state transfer curve")
    a1.grid(True, alpha=0.3)
    events = record.events
    if "impulse_t_s" in events.arrays or "impulse_t_s" in events.ragged_arrays:
        t = np.asarray(events.last("impulse_t_s")) * 1e6
        r = np.asarray(events.last("impulse_pd_v"))
        a2.plot(t, r, lw=0.8)
        a2.set_xlabel("time after the pulse (µs)")
        a2.set_ylabel("photodetector - baseline (V)")
        a2.set_title("impulse response of the delay loop")
        a2.grid(True, alpha=0.3)
    fig.tight_layout()
    png = Path(run_dir) / "transfer.png"
    fig.savefig(png)
    plt.close(fig)
    return {"csv": csv, "png": png}
