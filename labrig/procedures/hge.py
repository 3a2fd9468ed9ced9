"""Homodyne gradient extraction (Boon et al.): gradient descent *in materia* on a DNPU.

Each iteration plays every input case of the task on the electrodes — inputs at their case
values, controls at their DC levels plus small sines, each control at its own frequency,
restarted at phase 0 in every case — and reads the output current. The component of the current
at ``f_j`` is ``dI/dV_j`` (see :mod:`labrig.algorithms.hge`); the chain rule over the cases gives
``dL/dV_j`` and the trainer (:mod:`labrig.algorithms.hge_trainer`) steps the controls.

Three ways to read the gradient, chosen with ``mode``:

``digital``
    The DAC bank plays all cases as one trace (1 MS/s) and pulses a marker; the digitiser,
    triggered by it, records the transimpedance amplifier's output; a digital lock-in
    demodulates every control's frequency from the one record (all gradients in parallel).
``lockin``
    For each case the controls sit at DC plus continuous sines; one hardware lock-in per control
    electrode, referenced to that electrode's DAC channel, reads ``R`` and ``theta`` after the
    filter settles; ``dI/dV_j = +-sqrt(2) R_j / A_j`` (sign from the phase).
``sequential``
    As ``digital``, but one control at a time carries a sine (five records per iteration): the
    reference against which parallel extraction is judged.

The transimpedance amplifier's first-order bandwidth ``fc`` delays and attenuates the signal at
``f``: the phase is corrected by ``atan(f/fc)`` and the magnitude by ``sqrt(1 + (f/fc)^2)``.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from labrig.algorithms.hge import (
    AUTHORS_PLAN,
    CaseSchedule,
    FrequencyPlan,
    build_case_waveforms,
    demodulate,
    first_order_response,
    gradient_from_lockin,
    gradient_from_xy,
)
from labrig.algorithms.hge_trainer import (
    HgeConfig,
    HgeTrainer,
    Measurement,
    parallel_measurement,
)
from labrig.algorithms.tasks import (
    Task,
    accuracy,
    best_threshold,
    boolean_task,
    input_voltages,
    ring_task,
    separable,
    sphere_task,
)
from labrig.errors import ProcedureError
from labrig.procedures.base import (
    ChoiceParameter,
    FloatParameter,
    IntegerParameter,
    ParameterError,
    StrParameter,
    register_procedure,
)
from labrig.procedures.characterise import (
    TIA_FULL_SCALE_V,
    completion_timeout_s,
    electrode_names,
    scope_points,
)
from labrig.procedures.plan import ChannelPlan, RunPlan
from labrig.procedures.rig_procedure import RigProcedure
from labrig.runs.documents import DataKey, PlotHint, StreamDeclaration

if TYPE_CHECKING:
    from labrig.station import Station

FloatArray = npt.NDArray[np.float64]

TIA_CLIP_FRACTION = 0.97  # a trace this close to the TIA's rails is taken as saturated
LOCKIN_SETTLE_TIME_CONSTANTS = 10.0


def make_task(name: str, seed: int) -> Task:
    """A Boolean gate by name or truth table ("XOR", "0110"), or ``sphere`` / ``ring``."""
    key = name.strip().lower()
    if key == "sphere":
        return sphere_task(24, seed)
    if key == "ring":
        return ring_task(24, seed)
    return boolean_task(name.strip().upper() if not set(key) <= {"0", "1"} else key)


#: The panels of an HGE run (dashboard and report), declared once.
HGE_PLOTS: tuple[PlotHint, ...] = (
    PlotHint("loss", "lines", ("loss",), "Loss", log_y=True),
    PlotHint("accuracy", "lines", ("accuracy",), "Accuracy"),
    PlotHint("history:controls_v", "history", ("controls_v",), "Control voltages"),
    PlotHint("bars:gradient", "bars", ("gradient",), "Loss gradient per electrode"),
    PlotHint(
        "cases",
        "cases",
        ("case_outputs_na",),
        "Case outputs vs decision threshold",
        targets="targets",
        threshold="threshold_na",
    ),
    PlotHint("trace:trace_na", "trace", ("trace_na",), "TIA trace", x="trace_t_s"),
)


@register_procedure
class HgeTraining(RigProcedure):
    """Train a DNPU's control voltages to realise a task by homodyne gradient extraction."""

    name = "hge"
    rig_kind = "dnpu"
    supports_pause = True
    task = StrParameter(
        "Task",
        default="XOR",
        help="Boolean gate (AND OR NAND NOR XOR XNOR, or a truth table like 0110), sphere, ring",
    )
    mode = ChoiceParameter(
        "Gradient read-out", choices=["digital", "lockin", "sequential"], default="digital"
    )
    seed = IntegerParameter("Seed", default=0, minimum=0, maximum=2**31 - 1)
    max_iterations = IntegerParameter(
        "Iterations per start", default=100, minimum=1, maximum=10_000
    )
    initializations = IntegerParameter("Random starts", default=3, minimum=1, maximum=100)
    probes = IntegerParameter(
        "Random probes per start",
        default=20,
        minimum=0,
        maximum=1000,
        help="each start first measures this many random control sets (at most a quarter of its "
        "iterations, within the same budget) and descends from the best; 0: the authors' plan",
    )
    learning_rate = FloatParameter("Learning rate", default=0.02, minimum=1e-6, maximum=10.0)
    optimizer = ChoiceParameter("Optimiser", choices=["adam", "sgd"], default="adam")
    loss = ChoiceParameter("Loss", choices=["corsig", "mse_with_fit", "fisher"], default="corsig")
    min_gap_na = FloatParameter(
        "Separation gap",
        units="nA",
        default=2.0,
        minimum=0.0,
        maximum=1000.0,
        help="a gate counts as found when a threshold separates the cases by this much",
    )
    plateau_s = FloatParameter("Window per case", units="s", default=0.05, minimum=1e-3, maximum=10)
    ramp_s = FloatParameter("Ramp between cases", units="s", default=0.02, minimum=0, maximum=10)
    sample_rate_hz = FloatParameter(
        "Waveform rate", units="Hz", default=10_000.0, minimum=1_000.0, maximum=1_000_000.0
    )
    lockin_time_constant_s = FloatParameter(
        "Lock-in time constant", units="s", default=0.03, minimum=1e-5, maximum=10.0
    )

    def startup(self) -> None:
        super().startup()
        rig = self.require_rig()
        dnpu = rig.station.dnpu
        if dnpu is None:
            raise ProcedureError("the hge procedure needs a [dnpu] station")
        self._task = make_task(self.task, self.seed)
        n_inputs = self._task.case_inputs01.shape[1]
        inputs = list(dnpu.input_electrodes)
        for k in range(len(dnpu.electrode_channels)):  # tasks with more inputs borrow controls
            if len(inputs) >= n_inputs:
                break
            if k not in inputs:
                inputs.append(k)
        self._inputs = tuple(inputs[:n_inputs])
        self._controls = tuple(
            k for k in range(len(dnpu.electrode_channels)) if k not in self._inputs
        )
        self._plan = self._frequency_plan(len(self._controls))
        ranges = dnpu.activation_ranges_v
        self._case_inputs_v = input_voltages(
            self._task.case_inputs01, [ranges[k] for k in self._inputs]
        )
        # Controls stay inside their activation range even at the crest of their sine.
        amp = self._plan.amplitudes_v
        self._control_ranges = tuple(
            (ranges[k][0] + a, ranges[k][1] - a) for k, a in zip(self._controls, amp, strict=True)
        )
        if self.mode == "lockin" and len(rig.lockins) < len(self._controls):
            raise ProcedureError(
                f"mode 'lockin' needs one lock-in per control electrode ({len(self._controls)}); "
                f"{rig.station.source} lists {len(rig.lockins)}"
            )
        config = HgeConfig(
            control_ranges_v=self._control_ranges,
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,
            max_iterations=self.max_iterations,
            n_initializations=self.initializations,
            loss=self.loss,
            min_gap=self.min_gap_na,
            probes_per_start=self.probes,
        )
        self._trainer = HgeTrainer(
            self._measure,
            self._task.targets,
            config,
            self.seed,
            found_fn=self._found,
            on_iteration=self._on_iteration,
        )
        self._last_controls: FloatArray | None = None
        # The last controls the stop criterion measured at DC, and those DC case outputs (nA).
        self._confirmed: tuple[FloatArray, FloatArray] | None = None
        self._last_trace: tuple[FloatArray, FloatArray] | None = None
        self._dc_now = np.zeros(len(self._inputs) + len(self._controls))
        self._last_kind = ""  # what the DAC's traces hold: "", "sines", "dc" or "seq<j>"
        self._relative_cache: dict[tuple[object, ...], FloatArray] = {}
        self._last_lockin: FloatArray | None = None

    # ----------------------------------------------------------------------------- planning
    def _frequency_plan(self, n_controls: int) -> FrequencyPlan:
        """The authors' plan (for up to 5 controls), on this run's sample rate and window."""
        base = AUTHORS_PLAN
        if n_controls > len(base.frequencies_hz):
            raise ProcedureError(f"{n_controls} controls: the frequency plan has only 5")
        plan = FrequencyPlan(
            frequencies_hz=tuple(base.frequencies_hz[:n_controls]),
            amplitudes_v=tuple(base.amplitudes_v[:n_controls]),
            window_s=self.plateau_s,
            sample_rate_hz=self.sample_rate_hz,
        )
        plan.validate()
        return plan

    def _tia_correction(self, freqs: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Phase lag (rad) and gain of the TIA's first-order response at ``freqs``."""
        dnpu = self.require_rig().station.dnpu
        assert dnpu is not None
        gain, lag = first_order_response(np.asarray(freqs, dtype=float), dnpu.tia_bandwidth_hz)
        return lag, gain

    # ----------------------------------------------------------------------------- measuring
    def _voltages(self, kind: str, controls_v: FloatArray) -> FloatArray:
        """Electrode sequences (absolute volts) of one kind of playback: ``"sines"`` (all
        controls perturbed), ``"dc"`` (no perturbation) or ``"seq<j>"`` (control j alone)."""
        if kind == "sines":
            return np.asarray(self._schedule(controls_v).voltages_v)
        dc = self._schedule(controls_v, with_sines=False)
        voltages = np.array(dc.voltages_v)
        if kind.startswith("seq"):
            j = int(kind[3:])
            f, amp = self._plan.frequencies_hz[j], self._plan.amplitudes_v[j]
            phase_t = np.nan_to_num(dc.reference_time_s, nan=0.0)
            on_plateau = ~np.isnan(dc.reference_time_s)
            voltages[self._controls[j]] += np.where(
                on_plateau, amp * np.sin(2 * np.pi * f * phase_t), 0.0
            )
        return voltages

    def _dc_levels(self, controls_v: FloatArray) -> FloatArray:
        """The electrodes' DC levels while a schedule plays: controls at their voltages,
        inputs at 0 V. The DAC's traces add to these."""
        dc = np.zeros(len(self._inputs) + len(self._controls))
        dc[list(self._controls)] = controls_v
        return dc

    def _schedule(self, controls_v: FloatArray, with_sines: bool = True) -> CaseSchedule:
        """All cases as one schedule, starting from the electrodes' DC levels."""
        return build_case_waveforms(
            self._case_inputs_v,
            controls_v,
            self._plan,
            self.plateau_s,
            self.ramp_s,
            self.sample_rate_hz,
            with_sines=with_sines,
            input_electrodes=self._inputs,
            control_electrodes=self._controls,
            start_v=self._dc_levels(controls_v),
        )

    def _return_ramp(self, voltages_v: FloatArray) -> FloatArray:
        """Append a ramp from the last sample back to 0 V, so playback ends where it began
        (the DAC's DC level) instead of jumping there."""
        n = max(2, round(max(self.ramp_s, 1e-3) * self.sample_rate_hz))
        weights = np.linspace(1.0, 0.0, n + 1)[1:]
        tail = voltages_v[:, -1:] * weights[None, :]
        return np.concatenate([voltages_v, tail], axis=1)

    def _play(self, kind: str, controls_v: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Play one ``kind`` of schedule (see :meth:`_voltages`) at ``controls_v`` and record
        it; repeated after a transport fault (a playback is repeatable)."""
        dnpu = self.require_rig().station.dnpu
        assert dnpu is not None
        dc_v = self._dc_levels(controls_v)
        times, current = self.with_retry(
            lambda: self._play_once(kind, dc_v), [dnpu.dac, dnpu.digitizer], what="playback"
        )
        self._last_kind = kind
        return times, current

    def _relative(self, kind: str) -> FloatArray:
        """The traces of one kind of playback relative to the DC levels: the sequences with
        every control at 0 V (inputs and sines only). Built once per kind, so they are
        bit-identical every iteration."""
        # Keyed by everything the traces depend on, so changing the plan or the cases (as the
        # benchmarks do between configurations) can never replay stale traces.
        key = (
            kind,
            self._plan,
            self._case_inputs_v.tobytes(),
            self._inputs,
            self._controls,
            self.plateau_s,
            self.ramp_s,
            self.sample_rate_hz,
        )
        cached = self._relative_cache.get(key)
        if cached is None:
            zeros = np.zeros(len(self._controls))
            cached = self._return_ramp(self._voltages(kind, zeros))
            cached.setflags(write=False)
            self._relative_cache[key] = cached
        return cached

    def _load_traces(self, kind: str, dc_v: FloatArray) -> float:
        """Set the DC levels ``dc_v`` and load the ``kind`` traces on top, armed on the bus
        trigger; returns the playback time.

        The QDAC-II adds a channel's trace to its DC level: with the controls as DC levels,
        the traces hold only the input cases and the perturbation sines, which do not change
        from one iteration to the next, so the driver uploads them once and then only re-arms
        them (an upload of seven 1 MS/s traces is most of an iteration's instrument time)."""
        rig = self.require_rig()
        dnpu = rig.station.dnpu
        assert dnpu is not None
        levels = {dnpu.electrode_channels[e]: float(v) for e, v in enumerate(dc_v)}
        rig.dac.ramp_to(levels)
        self._dc_now = np.array(dc_v, dtype=float)
        relative = self._relative(kind)
        traces = {
            dnpu.electrode_channels[e]: np.ascontiguousarray(relative[e])
            for e in range(relative.shape[0])
        }
        return float(
            rig.dac.play_traces(
                traces, self.sample_rate_hz, trigger="bus", marker_output=dnpu.marker_output
            )
        )

    def _play_once(self, kind: str, dc_v: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Play the ``kind`` traces on top of the DC levels ``dc_v`` and record the output
        current (nA). Returns the record's times (s from the start of playback) and currents.
        """
        rig = self.require_rig()
        dnpu = rig.station.dnpu
        assert dnpu is not None
        duration = self._load_traces(kind, dc_v)
        scope = rig.digitizer
        # Configured for every playback (a few short commands): the scope's state then never
        # depends on what ran before, so a resumed run repeats the uninterrupted one exactly.
        scope.configure_acquisition(
            dnpu.digitizer_channel,
            volts_range=2 * TIA_FULL_SCALE_V,
            offset_v=0.0,
            duration_s=duration,
            trigger="external",
        )
        # The default record (1000 points) samples a 0.3 s schedule at 3.3 kHz, and the linear
        # interpolation onto the schedule's grid then attenuates the top frequencies (by 25 % at
        # 920 Hz): sample at least 4x the schedule's rate.
        scope.set_points(scope_points(scope, duration, self.sample_rate_hz))
        scope.arm()
        rig.dac.trigger()
        self.wait(duration)
        scope.wait_complete(timeout_s=completion_timeout_s(duration))
        record = scope.read_waveform(dnpu.digitizer_channel)
        current = np.asarray(record.volts, dtype=float) * dnpu.tia_gain_na_per_v
        return np.asarray(record.times_s, dtype=float), current

    def _on_grid(
        self, schedule: CaseSchedule, times: FloatArray, current: FloatArray
    ) -> FloatArray:
        """Resample a record onto the schedule's sample grid (the record must cover it)."""
        grid = schedule.time_s
        if times[0] > grid[0] + 1.0 / schedule.sample_rate_hz or times[-1] < grid[-1]:
            raise ProcedureError(
                f"the digitiser record [{times[0]:.6g}, {times[-1]:.6g}] s does not cover the "
                f"playback [0, {grid[-1]:.6g}] s: check the trigger wiring"
            )
        return np.interp(grid, times, current)

    def _clipped(self, current_na: FloatArray) -> bool:
        dnpu = self.require_rig().station.dnpu
        assert dnpu is not None
        limit = TIA_CLIP_FRACTION * dnpu.tia_saturation_v * dnpu.tia_gain_na_per_v
        return bool(np.max(np.abs(current_na)) >= limit)

    def _measure(self, controls_v: FloatArray) -> Measurement:
        self.wait_if_paused()
        if self.should_stop():
            raise _Stopped
        self._last_controls = np.array(controls_v, dtype=float)
        measure = {
            "digital": self._measure_parallel,
            "sequential": self._measure_sequential,
        }.get(self.mode, self._measure_lockin)
        # A dropped connection to any instrument: reconnect them all and repeat the whole
        # measurement (each sets every instrument it uses, so a fresh connection is enough).
        return self.with_retry(
            lambda: measure(controls_v),
            list(self.instruments),
            what=f"{self.mode} measurement",
        )

    def _measure_parallel(self, controls_v: FloatArray) -> Measurement:
        schedule = self._schedule(controls_v)
        times, current = self._play("sines", controls_v)
        trace = self._on_grid(schedule, times, current)
        lag, gain = self._tia_correction(self._plan.frequencies_hz)
        self._last_trace = (schedule.time_s, trace)
        return parallel_measurement(
            trace,
            schedule,
            self._plan,
            phase_correction_rad=lag,
            readout_gain=gain,
            clipped=self._clipped(current),
        )

    def _measure_sequential(self, controls_v: FloatArray) -> Measurement:
        dc = self._schedule(controls_v, with_sines=False)
        n_cases, n_controls = len(dc.case_windows), len(self._controls)
        jac = np.empty((n_cases, n_controls))
        means = np.zeros(n_cases)
        clipped = False
        lag, gain = self._tia_correction(self._plan.frequencies_hz)
        for j in range(n_controls):
            f, amp = self._plan.frequencies_hz[j], self._plan.amplitudes_v[j]
            single = FrequencyPlan((f,), (amp,), self._plan.window_s, self._plan.sample_rate_hz)
            times, current = self._play(f"seq{j}", controls_v)
            clipped |= self._clipped(current)
            trace = self._on_grid(dc, times, current)
            for c, w in enumerate(dc.case_windows):
                x, y = demodulate(
                    trace[w],
                    dc.sample_rate_hz,
                    single,
                    start_time_s=float(dc.reference_time_s[w.start]),
                )
                jac[c, j] = gradient_from_xy(
                    x, y, (amp,), float(lag[j]), readout_gain=float(gain[j])
                )[0]
                means[c] += trace[w].mean() / n_controls
            self._last_trace = (dc.time_s, trace)
        return Measurement(means, jac, clipped)

    def _measure_lockin(self, controls_v: FloatArray) -> Measurement:
        rig = self.require_rig()
        dnpu = rig.station.dnpu
        assert dnpu is not None
        lockins = rig.lockins[: len(self._controls)]
        freqs = self._plan.frequencies_hz
        amps = self._plan.amplitudes_v
        lag, gain = self._tia_correction(freqs)
        for lockin, f in zip(lockins, freqs, strict=True):
            lockin.configure(f, self.lockin_time_constant_s, reference="external")
        tau = max(lockin.time_constant_s for lockin in lockins)
        n_cases = self._case_inputs_v.shape[0]
        jac = np.empty((n_cases, len(self._controls)))
        means = np.empty(n_cases)
        r_all = np.empty((n_cases, len(self._controls)))
        clipped = False
        sines = {
            dnpu.electrode_channels[k]: (f, a)
            for k, f, a in zip(self._controls, freqs, amps, strict=True)
        }
        scope = rig.digitizer
        scope.configure_acquisition(
            dnpu.digitizer_channel,
            volts_range=2 * TIA_FULL_SCALE_V,
            offset_v=0.0,
            duration_s=self.plateau_s,
            trigger="immediate",
        )
        for c in range(n_cases):
            levels = {
                dnpu.electrode_channels[k]: float(v)
                for k, v in zip(self._inputs, self._case_inputs_v[c], strict=True)
            }
            levels.update(
                {
                    dnpu.electrode_channels[k]: float(v)
                    for k, v in zip(self._controls, controls_v, strict=True)
                }
            )
            rig.dac.stop_generators()
            rig.dac.ramp_to(levels)
            rig.dac.start_sines(sines, trigger="immediate")
            self.wait(LOCKIN_SETTLE_TIME_CONSTANTS * tau)
            for j, lockin in enumerate(lockins):
                r, theta = lockin.read_r_theta()
                # The lock-in reads amperes in current mode; here it reads the TIA's volts.
                r_na = r * dnpu.tia_gain_na_per_v
                r_all[c, j] = r_na
                jac[c, j] = gradient_from_lockin(
                    r_na, theta, amps[j], math.degrees(float(lag[j])), readout_gain=float(gain[j])
                )
            record = scope.acquire(dnpu.digitizer_channel)
            current = np.asarray(record.volts) * dnpu.tia_gain_na_per_v
            clipped |= self._clipped(current)
            means[c] = float(current.mean())
            self._last_trace = (np.asarray(record.times_s), current)
        rig.dac.stop_generators()
        # Back to the DC level the traces of other modes (and the final measurement) start from.
        rig.dac.ramp_to({dnpu.electrode_channels[k]: 0.0 for k in (*self._inputs, *self._controls)})
        self._dc_now = np.zeros(len(self._inputs) + len(self._controls))
        self._last_lockin = r_all[-1]
        return Measurement(means, jac, clipped)

    # ----------------------------------------------------------------------------- the loop
    def _on_iteration(self, record: dict[str, Any]) -> None:
        targets = self._task.targets
        outputs = np.asarray(record["outputs"], dtype=float)
        arrays: dict[str, np.ndarray] = {
            "controls_v": np.asarray(record["controls_v"], dtype=float),
            "gradient": np.asarray(record["gradient"], dtype=float),
            "case_outputs_na": outputs,
            "targets": np.asarray(targets, dtype=float),
        }
        if self._last_trace is not None:
            arrays["trace_t_s"], arrays["trace_na"] = self._last_trace
        if self._last_lockin is not None:
            arrays["lockin_r"] = self._last_lockin
        acc = float("nan")
        if np.all(np.isfinite(outputs)):
            acc = best_threshold(outputs, targets)[0]
        self.emit_event(
            {
                "loss": float(record["loss"]),
                "accuracy": acc,
                "found": float(record["found"]),
                "iteration": float(record["iteration"]),
                "initialization": float(record["init"]),
                "threshold_na": float(record["threshold"]),
                "restart": float(record["restart"]),
                "device_time_s": self.device_time_s(),
            },
            arrays,
        )

    def execute(self) -> None:
        started = time.monotonic()
        try:
            while not self._trainer.done:
                self._trainer.step()
        except _Stopped:
            self.log("stop requested: ending training early", "warning")
            return
        self._final = self._final_measurement()
        final = self._final
        self.log(
            f"{self._task.name}: found={final['found']} accuracy={final['accuracy']:.2f} after "
            f"{self._trainer.n_measurements} measurements in {time.monotonic() - started:.1f} s"
        )

    def _found(self, outputs: FloatArray, targets: FloatArray) -> tuple[bool, float]:
        """The trainer's stop criterion: separable with the gap, confirmed without the sines.

        The perturbations shift each case's mean by its curvature (``H_jj A_j^2 / 4``, a few nA
        for 30 mV on a steep electrode), so a gap seen with the sines on can vanish at DC,
        where the final measurement judges the gate: confirm there before stopping.
        """
        found, threshold = separable(outputs, targets, self.min_gap_na)
        if not found or self._last_controls is None:
            return found, threshold
        dc = self._dc_outputs(self._last_controls)
        self._confirmed = (self._last_controls.copy(), dc)
        return separable(dc, targets, self.min_gap_na)

    def _dc_outputs(self, controls_v: FloatArray) -> FloatArray:
        """Each case's mean output (nA) at ``controls_v`` with no perturbation."""
        schedule = self._schedule(controls_v, with_sines=False)
        times, current = self._play("dc", controls_v)
        trace = self._on_grid(schedule, times, current)
        return np.array([trace[w].mean() for w in schedule.case_windows])

    def _final_measurement(self) -> dict[str, Any]:
        """Measure the best controls once more, without perturbations, and judge the gate.

        Where the stop criterion already measured these controls at DC, the two DC readings
        are averaged (half the noise variance): judging one fresh reading alone let a gate
        confirmed with a gap just above ``min_gap_na`` be reported missed on the noise of the
        second window.
        """
        try:
            best = self._trainer.result()
        except ValueError:
            return {"found": False, "accuracy": 0.0, "outputs_na": [], "controls_v": []}
        outputs = self._dc_outputs(best.best_controls_v)
        confirmed = self._confirmed
        if confirmed is not None and np.array_equal(confirmed[0], best.best_controls_v):
            outputs = 0.5 * (outputs + confirmed[1])
        targets = self._task.targets
        found, threshold = separable(outputs, targets, self.min_gap_na)
        if not np.isfinite(threshold):
            threshold = best_threshold(outputs, targets)[1]
        return {
            "found": bool(found),
            "accuracy": float(accuracy(outputs, targets, threshold)),
            "threshold_na": float(threshold),
            "outputs_na": outputs.tolist(),
            "controls_v": best.best_controls_v.tolist(),
            "best_loss": best.best_loss,
        }

    def summary(self) -> dict[str, Any]:
        final = getattr(self, "_final", None)
        trainer = getattr(self, "_trainer", None)
        out = super().summary()
        out["task"] = self._task.name if hasattr(self, "_task") else self.task
        out["mode"] = self.mode
        if trainer is not None:
            out["iterations"] = trainer.n_measurements
            out["restarts"] = trainer.n_restarts
            if trainer.best is not None:
                out["final_loss"] = float(trainer.best["loss"])
        if final is not None:
            out.update(
                found=final["found"],
                accuracy=final["accuracy"],
                outputs_na=final["outputs_na"],
                controls_v=final["controls_v"],
            )
        else:
            out.update(found=False, accuracy=float("nan"))
        return out

    # ----------------------------------------------------------------------------- resume
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "trainer": self._trainer.state_dict(),
            "dc_levels_v": np.array(self._dc_now),
            "last_kind": self._last_kind,
            **self.rig_state(),
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Continue where the checkpoint was taken, with the rig as it was then: the DC levels
        set and the last playback's traces loaded (so the next playback is a re-arm, as it
        would have been), and only then the bench clock at the checkpoint's time."""
        self._trainer.load_state_dict(state["trainer"])
        dc = np.asarray(state["dc_levels_v"], dtype=float)
        kind = str(state["last_kind"])
        if kind and self.mode != "lockin":
            self._load_traces(kind, dc)
            self._last_kind = kind
        self.restore_rig_state(state)

    def seeds(self) -> dict[str, int]:
        bench = self.require_rig().station.bench if self.rig is not None else None
        seeds = {"training": self.seed}
        if bench is not None:
            seeds.update(bench=bench.seed, device=bench.device_seed)
        return seeds

    def describe_data(self) -> list[StreamDeclaration]:
        """One event per iteration: loss and accuracy, the controls and the loss gradient per
        control electrode (by the station's names), every input case's output against the
        decision threshold, and the last TIA record on its time axis."""
        names = electrode_names(self.require_rig())
        controls = {"electrode": [names[k] for k in self._controls]}
        inputs = self._task.case_inputs01
        binary = bool(np.all((inputs == 0) | (inputs == 1)))
        cases = {
            "case": [
                "".join(str(int(v)) for v in row) if binary else str(c)
                for c, row in enumerate(inputs)
            ]
        }
        n_c, n_k = len(self._controls), self._task.n_cases
        loss_units = "nA^2" if self.loss == "mse_with_fit" else ""
        keys = [
            DataKey("loss", loss_units, description=f"{self.loss} loss"),
            DataKey("accuracy", description="accuracy (best threshold)"),
            DataKey("found", description="gate found"),
            DataKey("iteration", description="iteration"),
            DataKey("initialization", description="random start"),
            DataKey("threshold_na", "nA", description="decision threshold"),
            DataKey("restart", description="restart after clipping"),
            DataKey("device_time_s", "s", description="device time"),
            DataKey("controls_v", "V", (n_c,), ("electrode",), controls, description="control"),
            DataKey(
                "gradient",
                f"{loss_units}/V" if loss_units else "1/V",
                (n_c,),
                ("electrode",),
                controls,
                description="dL/dV",
            ),
            DataKey("case_outputs_na", "nA", (n_k,), ("case",), cases, description="output"),
            DataKey("targets", "", (n_k,), ("case",), cases, description="target"),
            DataKey("trace_t_s", "s", (None,), ("time",), description="time", optional=True),
            DataKey(
                "trace_na",
                "nA",
                (None,),
                ("time",),
                description="TIA output current",
                optional=True,
            ),
        ]
        plots = list(HGE_PLOTS)
        if self.mode == "lockin":
            keys.append(
                DataKey("lockin_r", "nA", (n_c,), ("electrode",), controls, description="R")
            )
            plots.append(
                PlotHint("bars:lockin_r", "bars", ("lockin_r",), "Lock-in R per electrode")
            )
        return [
            StreamDeclaration(
                tuple(keys),
                tuple(plots),
                x="iteration",
                status=("found", "initialization", "restart", "device_time_s"),
            )
        ]

    # ----------------------------------------------------------------------------- plan
    def plan(self, station: Station) -> RunPlan:
        """What this run will do on ``station``, from the parameters and the wiring alone:
        every electrode's voltage extremes (inputs at their case levels and the 0 V DC level
        under the traces; controls anywhere in their activation range, sines included), the
        iterations and the device time at most. Raises :class:`ParameterError` for a task or
        mode the station cannot run. Opens nothing."""
        dnpu = station.dnpu
        if dnpu is None:
            raise ProcedureError(f"the hge procedure needs a [dnpu] station ({station.source})")
        try:
            task = make_task(self.task, self.seed)
        except ValueError as exc:
            raise ParameterError(
                "task", self.task, f"is not a task; choose {type(self).task.help}"
            ) from exc
        # The same choice of electrodes as startup(): inputs first, controls the rest.
        n_inputs = task.case_inputs01.shape[1]
        inputs = list(dnpu.input_electrodes)
        for k in range(len(dnpu.electrode_channels)):
            if len(inputs) >= n_inputs:
                break
            if k not in inputs:
                inputs.append(k)
        inputs = inputs[:n_inputs]
        controls = [k for k in range(len(dnpu.electrode_channels)) if k not in inputs]
        if self.mode == "lockin" and len(dnpu.lockins) < len(controls):
            raise ParameterError(
                "mode",
                self.mode,
                f"needs one lock-in per control electrode ({len(controls)}); "
                f"{station.source} lists {len(dnpu.lockins)}",
            )
        try:
            freq_plan = self._frequency_plan(len(controls))
        except (ProcedureError, ValueError) as exc:
            raise ParameterError("task", self.task, str(exc), station.source) from exc
        ranges = dnpu.activation_ranges_v
        case_v = input_voltages(task.case_inputs01, [ranges[k] for k in inputs])
        channels: list[ChannelPlan] = []
        for i, k in enumerate(inputs):
            levels = [*case_v[:, i].tolist(), 0.0]  # 0 V: the DC level the traces start from
            channels.append(
                ChannelPlan(
                    dnpu.dac,
                    dnpu.electrode_channels[k],
                    f"electrode {k} (input)",
                    min(levels),
                    max(levels),
                    f"{len(case_v)} case levels and the 0 V DC level",
                )
            )
        for j, k in enumerate(controls):
            lo, hi = ranges[k]
            amp, freq = freq_plan.amplitudes_v[j], freq_plan.frequencies_hz[j]
            low, high = lo, hi
            if self.mode == "lockin":  # every measurement ends with a ramp to 0 V
                low, high = min(low, 0.0), max(high, 0.0)
            channels.append(
                ChannelPlan(
                    dnpu.dac,
                    dnpu.electrode_channels[k],
                    f"electrode {k} (control)",
                    low,
                    high,
                    f"DC in [{lo + amp:+.4g}, {hi - amp:+.4g}] V plus a {amp * 1e3:g} mV sine "
                    f"at {freq:g} Hz",
                )
            )
        n_cases = case_v.shape[0]
        schedule = build_case_waveforms(
            case_v,
            np.zeros(len(controls)),
            freq_plan,
            self.plateau_s,
            self.ramp_s,
            self.sample_rate_hz,
            input_electrodes=inputs,
            control_electrodes=controls,
        )
        playback_s = schedule.time_s.size / self.sample_rate_hz + max(self.ramp_s, 1e-3)
        if self.mode == "digital":
            per_iteration_s = playback_s
            how = f"one playback of {playback_s:.3g} s"
        elif self.mode == "sequential":
            per_iteration_s = len(controls) * playback_s
            how = f"{len(controls)} playbacks of {playback_s:.3g} s"
        else:
            settle = LOCKIN_SETTLE_TIME_CONSTANTS * self.lockin_time_constant_s
            per_iteration_s = n_cases * (settle + self.plateau_s)
            how = f"{n_cases} cases x ({settle:.3g} s lock-in settling + {self.plateau_s:g} s)"
        steps = self.max_iterations * self.initializations
        # Each iteration may add a DC confirmation playback; the final check is one more.
        device_s = steps * (per_iteration_s + playback_s) + playback_s
        return RunPlan(
            procedure=self.name,
            step_name="iteration",
            steps=steps,
            channels=tuple(channels),
            device_time_s=device_s,
            details=(
                f"task {task.name}: {n_cases} input cases on electrodes {inputs}, "
                f"controls {controls}",
                f"mode {self.mode}: per iteration {how}",
                f"at most {self.max_iterations} iterations x {self.initializations} random "
                "starts, each possibly confirmed at DC; one final DC measurement",
            ),
        )


class _Stopped(Exception):
    """Raised inside a measurement when a stop was requested, to leave the trainer's loop."""
