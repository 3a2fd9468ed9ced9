"""In-the-loop training of the deep optoelectronic reservoir by augmented DFA (procedure ``dfa``).

The network (see :mod:`labrig.algorithms.dfa`)::

    a^(l) = [h^(l-1), 1] W^(l)^T            digital, on the host (W^(1) is the input mask)
    h^(l) = f_phys(a^(l))                   the reservoir rig: the same hardware for every layer
    y     = [h^(L), 1] W_out^T              digital readout

One physical pass (:class:`ReservoirLayer`) for a batch of pre-activations ``a`` (batch, nodes):

1. drive map: ``V = drive_offset + volts_per_unit * a`` (V of AWG drive per node). The AWG's
   window ``[v_min, v_max]`` is part of ``f_phys``: drives beyond it are limited to it, as the
   instrument's full scale would, and the fraction limited is reported in every event
   (``clipped_fraction``), never hidden. Nodes beyond ``nodes`` (when fewer than the loop's
   ``node_count`` are used) get the dark drive and are ignored.
2. :func:`labrig.algorithms.reservoir_io.encode` lays the batch out as one arbitrary waveform
   (sync preamble, calibration plateaus, each sample behind dark guard periods and held for
   ``settle_periods`` periods); :func:`~labrig.algorithms.reservoir_io.chunk` splits batches that
   exceed the AWG's or the scope's memory.
3. the AWG plays it once (binary-block upload, bus-triggered burst); its sync output triggers the
   scope, which records the photodetector;
4. :func:`~labrig.algorithms.reservoir_io.decode` finds the sync, samples the centre of every node
   slot of each sample's last held period and maps scope volts to node states with the dark and
   bright calibration plateaus: ``x = x_dark + (r - r_dark)(x_bright - x_dark)/(r_bright -
   r_dark)``, with ``x_dark = 0`` (modulator at its null) and ``x_bright = eta`` (full
   transmission, the measured swing).

Calibration: nothing about the optics is assumed. The station's calibration file
(``[reservoir] calibration``, written by ``labrig calibrate``) or, without one, a measurement at
start-up (:func:`~labrig.procedures.characterise.measure_reservoir`: settled and open-loop
transfer curves, ``sin^2`` fit, impulse response) gives V_pi, the null drive, the
photodetector's dark and bright levels and the loop delay. They set the dark guard drive (the
null), the bright plateau (null + V_pi), the operating point ``drive_offset = null +
operating_point * V_pi`` (quadrature by default), the default drive scale (V_pi / 4 per unit),
the scope's window and the loop's desynchronisation. The calibration is in the summary (and
so in the run record) and in every checkpoint.

Learning (``method``):

- ``aug-dfa``: ``delta^(l) = (e B^(l)^T) * g(a^(l))`` with fixed random ``B^(l)`` and ``g`` from
  :data:`~labrig.algorithms.dfa.G_LIBRARY`; ``f_phys`` is never differentiated nor modelled.
- ``readout``: the masks ``W^(l)`` stay random; only the readout is fitted (ridge regression).
- ``dfa``: plain DFA, ``g = f'`` from the digital twin's diagonal derivative.
- ``bp-twin``: backpropagation with the noise-free twin's vector-Jacobian product, the forward
  pass still on the rig.

  Both need a model of the rig: the twin is an explicit input that only an in-process simulated
  station supplies (:attr:`labrig.rig.Rig.twin`); elsewhere they are refused with a message.

``physical_projection``: the product ``e B^(l)^T`` is itself computed by the rig: the error is
masked by a fixed random ``M^(l)`` (nodes x n_out) into drives
``V = drive_offset + projection_volts_per_unit * (e M^(l)^T)``, sent through the reservoir with
a zero-error reference sample in the same waveform, and the centred node states
``(x(e) - x(0)) / projection_volts_per_unit`` are the projected error (to first order
``diag(f'(V_0)) M e``: a fixed random projection, which is all DFA asks of ``B``). Its device
time is reported separately (``projection_device_time_s``).

Tasks (``task``): ``digits`` (scikit-learn 8x8, 1347 train / 450 test), ``mnist1d`` (40-step
sequences, 4000 / 1000), ``mnist:PATH`` and ``fmnist:PATH`` (IDX folder or ``.npz``), and
``narma10`` (2000 training steps, a held-out series of 2000). Inputs are centred on the
training set's mean of each input and scaled by one deviation over all inputs (they share a
unit). NARMA10's samples are the last ``narma_window`` inputs ``u(n-w+1..n)`` (the test windows
reach back into the training inputs), the target is ``y(n+1)`` (standardised for training), the
loss is the squared error and the score the test NMSE.

Sequences (``sequence_mode``; ``auto`` = ``temporal`` for ``mnist1d`` and ``narma10``, ``static``
otherwise). *static*: the whole sequence is one input vector, masked onto the nodes and held from
a dark loop, so the loop never sees its time structure (MNIST-1D on the bench: 37 %).
*temporal*: the reservoir is run as the recurrent network it physically is. Step ``t`` of a
``T``-step sample drives one loop period, ``J_t = [u_t, 1] W^(1)^T`` (``W^(1)``: the input mask
and bias per node); the periods of one sample follow each other with no dark between them, so
the delay loop's feedback carries the state from step to step; the guard periods separate
samples only. Every period is read. Layer ``l + 1`` gets layer ``l``'s states of period ``t`` as
its period-``t`` input, ``a_t^(l+1) = [h_t^(l), 1] W^(l+1)^T``. The readout sees the last layer's
states averaged over ``time_windows`` consecutive windows of periods
(:func:`~labrig.algorithms.dfa.time_pool`). Aug-DFA projects a sample's one error to every
period, ``delta_t^(l) = (e B^(l)^T) * g(a_t^(l))``, and averages the updates over periods: the
sample has one label, so there is one error, and DFA needs no credit assignment through time
(no unrolling, no model of the loop). ``dfa`` and ``bp-twin`` have no temporal form and are
refused. ``settle_periods`` is ignored in temporal mode (a sample occupies its ``T`` periods;
a physical projection's static drive is held for those ``T`` periods).

Events (one per epoch): scalars ``epoch``, ``loss``, ``train_accuracy`` (classification) or
``train_nmse``, ``test_accuracy`` or ``test_nmse``, ``device_time_s``, ``wall_time_s``,
``projection_device_time_s``, ``clipped_fraction``; arrays ``awg_drive_v`` and ``pd_trace_v`` (the
same stretch of the last waveform and its recorded photodetector trace, downsampled),
``node_states`` (the last pass's first samples x nodes), ``readout_error`` (test error rate per
class; absolute test error quantiles for NARMA10). Checkpoints hold the network, the optimiser,
every random generator and the epoch, so ``labrig resume`` continues at the next epoch.

Usage::

    labrig train dfa --task digits --layers 2 --nodes 100 --epochs 10 --json
    run_procedure(DfaTraining(task="digits", layers=2, epochs=5))
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from labrig.algorithms import dfa as dfa_alg
from labrig.algorithms import reservoir_io as rio
from labrig.algorithms.datasets import (
    Task,
    load_digits_task,
    load_mnist1d,
    load_mnist_files,
    narma10,
    nmse,
)
from labrig.algorithms.optim import Optimizer, make_optimizer
from labrig.calibration import (
    CalibrationError,
    ReservoirCalibration,
    ReservoirTwin,
    load_calibration,
)
from labrig.errors import ProcedureError
from labrig.procedures.base import (
    BoolParameter,
    ChoiceParameter,
    FloatParameter,
    IntegerParameter,
    ParameterError,
    StrParameter,
    register_procedure,
)
from labrig.procedures.characterise import (
    completion_timeout_s,
    measure_reservoir,
    modulator_bias_plan,
)
from labrig.procedures.plan import ChannelPlan, RunPlan
from labrig.procedures.rig_procedure import RigProcedure
from labrig.runs.documents import DataKey, PlotHint, StreamDeclaration

if TYPE_CHECKING:
    from labrig.station import Station

FloatArray = npt.NDArray[np.float64]

METHODS = ("aug-dfa", "readout", "dfa", "bp-twin")
SEQUENCE_TASKS = ("mnist1d", "narma10")  # sequence_mode "auto" presents these in time
AWG_MAX_POINTS = 1_000_000  # 33500B arbitrary-waveform memory without option MEM
AWG_WAVEFORM_NAME = "LABRIGDFA"
# The 33500B into 50 ohm reaches +/-5 V; the amplitude and offset it is sent are rounded, so a
# waveform touching exactly 5 V can be refused. Keep 0.1 V inside.
AWG_WINDOW_V = 4.9
PLAN_SCOPE_POINTS = 4_000_000  # a scope record's length for the plan's estimate only
STARTUP_LEVELS = 81  # drive levels of the start-up calibration (no calibration file)
SYNC_TRIGGER_LEVEL_V = 1.0  # the AWG's sync output is a 0 / 3.3 V marker
EVENT_TRACE_POINTS = 1000  # at most this many points of drive and PD trace per event
EVENT_NODE_ROWS = 16  # samples shown in the node-state image of an event
DRIVE_BINS = 40  # bins of the per-layer drive histogram over the AWG window


# ------------------------------------------------------------------------------ task loading

#: Settings measured to work per task (scripts/bench_dfa.py), used when a run leaves the
#: learning rate or the ridge penalty at 0. MNIST-1D runs in temporal mode with a ridge
#: readout, where larger steps push the drives out of the AWG's window.
TASK_SETTINGS: dict[str, dict[str, float]] = {
    "default": {
        "learning_rate": 0.01,
        "ridge_lambda": 0.01,
        "drive_per_v_pi": 0.25,
        "operating_point": 0.5,
    },
    "mnist1d": {"learning_rate": 3e-4, "ridge_lambda": 1.0},
    # NARMA10 (readout-only, 100 nodes, NMSE on 2000 held-out steps, scripts/bench_dfa.py): a
    # gentle drive where the closed loop has slope. At 0.75 V_pi: V_pi/16 per unit 0.16,
    # V_pi/8 0.24, V_pi/4 0.23, V_pi/2 0.74; at quadrature (0.5 V_pi) the feedback pushes the
    # closed loop to the top of the fringe and the states carry nothing (NMSE 1.0 at V_pi/16).
    "narma10": {
        "learning_rate": 3e-3,
        "ridge_lambda": 1.0,
        "drive_per_v_pi": 0.0625,
        "operating_point": 0.75,
    },
}


@dataclass(frozen=True)
class PreparedTask:
    """A task ready for the network: standardised inputs, integer labels or standardised
    targets (``y_scale``/``y_offset`` undo the target standardisation for regression)."""

    name: str
    x_train: FloatArray
    y_train: np.ndarray
    x_test: FloatArray
    y_test: np.ndarray
    n_out: int
    regression: bool
    y_offset: float = 0.0
    y_scale: float = 1.0


def _narma_windows(u: FloatArray, window: int) -> FloatArray:
    """Rows ``[u(n-w+1), ..., u(n)]`` for every ``n >= w-1``: shape ``(len(u) - w + 1, w)``."""
    return np.lib.stride_tricks.sliding_window_view(u, window).copy()


def load_task(
    spec: str, seed: int, narma_window: int = 20, narma_steps: tuple[int, int] = (2000, 2000)
) -> PreparedTask:
    """Load and standardise a task named as on the command line (see the module docstring)."""
    key = spec.strip()
    task: Task
    if key == "narma10":
        n_train, n_test = narma_steps
        # One series: the first n_train + w - 1 steps train, the rest test (windows overlap the
        # boundary by w - 1 inputs, exactly as a model running along the series would see).
        u, y = narma10(n_train + n_test + narma_window - 1, seed=seed)
        xs = _narma_windows(u, narma_window)
        ys = y[narma_window - 1 :]
        x_tr, x_te, y_tr, y_te = xs[:n_train], xs[n_train:], ys[:n_train], ys[n_train:]
        mu, sd = x_tr.mean(axis=0), x_tr.std(axis=0)
        y_mu, y_sd = float(y_tr.mean()), float(y_tr.std())
        return PreparedTask(
            "narma10",
            (x_tr - mu) / sd,
            (y_tr - y_mu) / y_sd,
            (x_te - mu) / sd,
            np.asarray(y_te, dtype=float),
            1,
            True,
            y_mu,
            y_sd,
        )
    if key == "digits":
        task = load_digits_task(seed=seed)
    elif key == "mnist1d":
        task = load_mnist1d()
    elif key.startswith(("mnist:", "fmnist:")):
        name, _, path = key.partition(":")
        if not path:
            raise ProcedureError(f"task {spec!r}: give the data as {name}:PATH")
        try:
            task = load_mnist_files(path, name=name)
        except (OSError, ValueError) as exc:
            raise ProcedureError(f"task {spec!r}: {exc}") from exc
    else:
        raise ProcedureError(
            f"unknown task {spec!r}; choose digits, mnist1d, mnist:PATH, fmnist:PATH or narma10"
        )
    # Centre every input, then scale all by one deviation (of every training value): pixels
    # (and MNIST-1D's samples) share one unit, so their relative scale is information.
    # Per-input deviations would blow a pixel that is lit in a handful of training images up to
    # tens of deviations: those outliers drive the first layer out of its window and the
    # network fits them (digits, aug-DFA, 15 epochs, host twin, five seeds: 95.6 % per input,
    # 97.5 % one scale).
    mu = task.x_train.mean(axis=0)
    sd = float(task.x_train.std()) or 1.0
    return PreparedTask(
        task.name,
        (task.x_train - mu) / sd,
        np.asarray(task.y_train),
        (task.x_test - mu) / sd,
        np.asarray(task.y_test),
        task.n_classes,
        False,
    )


# ------------------------------------------------------------------------- the physical layer
@dataclass
class LayerPassStats:
    """Counters of the physical passes: waveforms played, samples sent, drives limited."""

    waveforms: int = 0
    samples: int = 0
    drives: int = 0
    clipped: int = 0


class ReservoirLayer:
    """The reservoir rig as a function of node drives: ``states = layer(drive_v)``.

    ``drive_v`` is ``(batch, nodes)`` in volts of AWG drive, already inside the window; the
    result is the node states ``(batch, nodes)`` in the calibrated units of ``cal_states``. A
    sequence ``(batch, T, nodes)`` (``T`` = the spec's ``settle_periods``) drives one period per
    step and returns every period's states, ``(batch, T, nodes)``. Each
    call plays as few waveforms as the AWG and scope memories allow (many samples per waveform,
    so the instrument I/O is paid once per chunk, not per sample).

    ``wait(seconds)`` lets device time pass (``RigProcedure.wait``); the AWG output is switched
    on by :meth:`switch_on` (or the first call) and left on (it idles at the dark guard level
    between waveforms); the runner's safe state switches it off.
    """

    def __init__(
        self,
        rig: Any,
        spec: rio.FrameSpec,
        nodes: int,
        fs_awg: float,
        fs_scope: float,
        cal_states: tuple[float, float],
        wait: Callable[[float], None],
        scope_range_v: float = 1.6,
        scope_offset_v: float = 0.5,
        retry: Callable[[Callable[[], FloatArray]], FloatArray] | None = None,
    ) -> None:
        res = rig.station.reservoir
        if res is None:
            raise ProcedureError("ReservoirLayer needs a station with a [reservoir] table")
        self.rig = rig
        self.res = res
        self.spec = spec
        self.nodes = nodes
        self.fs_awg = fs_awg
        self.fs_scope = fs_scope
        self.cal_states = cal_states
        self.wait = wait
        self.scope_range_v = scope_range_v
        self.scope_offset_v = scope_offset_v
        self.stats = LayerPassStats()
        self.last_drive: FloatArray | None = None
        self.last_trace: FloatArray | None = None
        self.last_layout: rio.FrameLayout | None = None
        self.last_decoded: rio.Decoded | None = None
        self.last_fs_trace = 0.0
        self.last_states: FloatArray | None = None
        self._output_on = False
        self._scope_setup: tuple[float, int] | None = None
        # Repeats a chunk after a dropped connection (RigProcedure.with_retry), or calls once.
        self._retry = retry if retry is not None else (lambda call: call())

    def __call__(self, drive_v: FloatArray) -> FloatArray:
        drive = np.asarray(drive_v, dtype=float)
        batch = drive.shape[0]
        n_loop = self.spec.node_count
        # (batch, nodes) static drives, or (batch, T, nodes) sequences (one period per step).
        full = np.full((*drive.shape[:-1], n_loop), self.spec.guard_drive_v)
        full[..., : self.nodes] = drive
        out = np.empty((*drive.shape[:-1], self.nodes))
        slices = rio.chunk(
            batch,
            self.spec,
            self.fs_awg,
            self.fs_scope,
            AWG_MAX_POINTS,
            self.rig.digitizer.max_record_points,
        )
        for sl in slices:
            out[sl] = self._play_repeatable(full[sl])[..., : self.nodes]
        self.last_states = out
        return out

    def switch_on(self) -> None:
        """Arm the AWG for bus-triggered single bursts and switch its output on (once)."""
        if not self._output_on:
            awg = self.rig.awg
            awg.configure_burst(self.res.awg_channel, 1, "bus")
            awg.set_output(self.res.awg_channel, True)
            self._output_on = True

    def forget_setup(self) -> None:
        """Configure the scope afresh at the next pass. Called at every epoch boundary, so the
        instrument traffic of an epoch (and with it the bench clock) does not depend on what
        the previous epoch played: a resumed run repeats the uninterrupted one exactly."""
        self._scope_setup = None

    def _play_repeatable(self, drive: FloatArray) -> FloatArray:
        """:meth:`_play`, repeated after a transport fault on a fresh connection: the scope is
        then configured afresh (the AWG waveform is loaded by every play)."""
        attempts = 0

        def attempt() -> FloatArray:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                self._scope_setup = None
            return self._play(drive)

        return self._retry(attempt)

    def _play(self, drive: FloatArray) -> FloatArray:
        res = self.res
        awg, scope = self.rig.awg, self.rig.digitizer
        wave, layout = rio.encode(drive, self.spec, self.fs_awg)
        duration = wave.size / self.fs_awg
        awg.load_waveform(res.awg_channel, wave, self.fs_awg, name=AWG_WAVEFORM_NAME)
        self.switch_on()
        points = _record_points(scope, duration, self.fs_scope)
        if self._scope_setup != (duration, points):
            # Reconfigure only when the waveform length changes (a new batch size): a chunk
            # of the same size reuses the acquisition set-up.
            scope.configure_acquisition(
                res.digitizer_channel,
                volts_range=self.scope_range_v,
                offset_v=self.scope_offset_v,
                duration_s=duration,
                trigger="external",
                trigger_level_v=SYNC_TRIGGER_LEVEL_V,
            )
            scope.set_points(points)
            self._scope_setup = (duration, points)
        scope.arm()
        awg.trigger()
        self.wait(duration)
        scope.wait_complete(timeout_s=completion_timeout_s(duration))
        record = scope.read_waveform(res.digitizer_channel)
        times = np.asarray(record.times_s, dtype=float)
        trace = np.asarray(record.volts, dtype=float)
        fs_trace = (times.size - 1) / (times[-1] - times[0])
        decoded = rio.decode_detailed(trace, fs_trace, layout, cal_states=self.cal_states)
        self.last_drive, self.last_trace, self.last_layout = wave, trace, layout
        self.last_decoded, self.last_fs_trace = decoded, fs_trace
        self.stats.waveforms += 1
        self.stats.samples += drive.shape[0]
        return decoded.states

    def event_traces(self) -> dict[str, FloatArray]:
        """The first sample of the last waveform (calibration plateau to the end of its read
        period) as driven and as recorded, on the same time points, at most
        :data:`EVENT_TRACE_POINTS` long."""
        if self.last_drive is None or self.last_layout is None or self.last_decoded is None:
            return {}
        assert self.last_trace is not None
        spec, layout = self.spec, self.last_layout
        theta = spec.node_duration_s
        s0 = layout.cal_start_slot - spec.cal_nodes
        s1 = layout.first_read_slot + spec.node_count
        i0 = max(0, math.floor(s0 * theta * self.fs_awg))
        i1 = min(self.last_drive.size, math.ceil(s1 * theta * self.fs_awg))
        step = max(1, (i1 - i0) // EVENT_TRACE_POINTS)
        idx = np.arange(i0, i1, step)
        # Read the PD at the middle of each AWG point, in trace time.
        t = self.last_decoded.start_s + (idx + 0.5) / self.fs_awg
        t_trace = np.arange(self.last_trace.size) / self.last_fs_trace
        return {
            "awg_drive_v": self.last_drive[idx].copy(),
            "pd_trace_v": np.interp(t, t_trace, self.last_trace),
        }


def _record_points(scope: Any, duration_s: float, fs_scope: float) -> int:
    """The smallest allowed scope record that samples ``duration_s`` at ``fs_scope`` or faster."""
    try:
        return int(scope.record_points_for(duration_s, fs_scope))
    except ValueError as exc:
        raise ProcedureError(f"this waveform does not fit one scope record: {exc}") from exc


# ------------------------------------------------------------------------------ the procedure
@register_procedure
class DfaTraining(RigProcedure):
    """Train the deep optoelectronic reservoir in the loop by aug-DFA (or a baseline method).

    Every forward pass of every layer goes through the rig (AWG -> modulator -> delay loop ->
    photodetector -> scope); see the module docstring for the encoding, the methods and tasks.
    """

    name = "dfa"
    rig_kind = "reservoir"
    station = StrParameter(
        "Station", default="sim-reservoir", help="a built-in station or a station file"
    )
    task = StrParameter(
        "Task", default="digits", help="digits, mnist1d, mnist:PATH, fmnist:PATH or narma10"
    )
    method = ChoiceParameter("Method", choices=METHODS, default="aug-dfa")
    layers = IntegerParameter("Physical layers", default=2, minimum=1, maximum=16)
    nodes = IntegerParameter(
        "Nodes per layer", default=100, minimum=1, maximum=10_000, help="<= station node_count"
    )
    g = ChoiceParameter("Aug-DFA g", choices=tuple(dfa_alg.G_LIBRARY), default="cos")
    epochs = IntegerParameter("Epochs", default=15, minimum=1, maximum=10_000)
    seed = IntegerParameter("Seed", default=0, minimum=0, maximum=2**31 - 1)
    train_samples = IntegerParameter(
        "Training samples", default=0, minimum=0, help="0: the whole training set"
    )
    test_samples = IntegerParameter("Test samples", default=0, minimum=0, help="0: all")
    batch_size = IntegerParameter("Mini-batch", default=32, minimum=1, maximum=100_000)
    optimizer = ChoiceParameter("Optimiser", choices=("adam", "sgd"), default="adam")
    learning_rate = FloatParameter(
        "Learning rate",
        default=0.0,
        minimum=0.0,
        maximum=100.0,
        help="0: the task's tuned value (TASK_SETTINGS)",
    )
    lr_schedule = ChoiceParameter(
        "Learning-rate schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="cosine: lr * (1 + cos(pi * epoch / epochs)) / 2 per epoch; constant: lr throughout",
    )
    readout = ChoiceParameter(
        "Readout training",
        choices=("auto", "gradient", "ridge"),
        default="auto",
        help="gradient: trained with the layers; ridge: refitted on the train set every epoch; "
        "auto: ridge for a temporal sequence task, gradient otherwise",
    )
    ridge_lambda = FloatParameter(
        "Ridge lambda", default=0.0, minimum=0.0, help="0: the task's tuned value (TASK_SETTINGS)"
    )
    operating_point = FloatParameter(
        "Operating point",
        default=0.0,
        minimum=-1.0,
        maximum=1.0,
        help="drive at a = 0, in units of the measured V_pi above the modulator's null "
        "(0.5: quadrature on the rising slope; 0, the dark null itself: the task's value, "
        "TASK_SETTINGS: quadrature, NARMA10 0.75)",
    )
    volts_per_unit = FloatParameter(
        "Drive scale",
        units="V",
        default=0.0,
        minimum=0.0,
        maximum=10.0,
        help="V of drive per unit of a (0: the task's fraction of the measured V_pi, "
        "TASK_SETTINGS: a quarter; NARMA10 a sixteenth)",
    )
    weight_scale = FloatParameter("Initial weight scale", default=1.0, minimum=0.0)
    feedback_scale = FloatParameter("Feedback (B) scale", default=1.0, minimum=0.0)
    physical_projection = BoolParameter("Physical projection of e", default=False)
    projection_volts_per_unit = FloatParameter(
        "Projection drive scale", units="V", default=1.0, minimum=1e-3, maximum=10.0
    )
    projection_noise = FloatParameter(
        "Projection noise",
        default=0.0,
        minimum=0.0,
        help="Gaussian noise added to e B^T, rms relative to its rms (a robustness study)",
    )
    awg_rate_hz = FloatParameter(
        "AWG sample rate", units="Hz", default=25e6, minimum=1e3, maximum=250e6
    )
    scope_rate_hz = FloatParameter(
        "Scope sample rate (least)", units="Hz", default=100e6, minimum=1e3, maximum=5e9
    )
    settle_periods = IntegerParameter("Held periods per sample", default=3, minimum=1)
    guard_periods = IntegerParameter("Dark guard periods", default=3, minimum=1)
    narma_window = IntegerParameter("NARMA10 input window", default=20, minimum=10, maximum=200)
    narma_train_steps = IntegerParameter(
        "NARMA10 training steps",
        default=2000,
        minimum=100,
        maximum=100_000,
        help="training windows before the held-out series of 2000 steps",
    )
    sequence_mode = ChoiceParameter(
        "Sequence presentation",
        choices=("auto", "static", "temporal"),
        default="auto",
        help="temporal: one sequence step per loop period, every period read (auto: temporal "
        "for mnist1d and narma10); static: the whole sequence masked onto the nodes and held",
    )
    time_windows = IntegerParameter(
        "Readout time windows",
        default=0,
        minimum=0,
        maximum=10_000,
        help="temporal: the readout sees the last layer's states averaged over this many "
        "windows of periods (0: 8 for classification, every period for regression)",
    )

    # ---------------------------------------------------------------- set-up
    def check_station(self, station: Station) -> None:
        """Refuse before anything is connected: plain DFA or bp-twin where no twin can be had
        (they need a model of the rig), a station without a reservoir, more nodes than the
        loop has."""
        super().check_station(station)
        if self.method in ("dfa", "bp-twin") and station.bench is None:
            need = "derivative f'" if self.method == "dfa" else "vector-Jacobian product"
            raise ProcedureError(
                f"method {self.method!r} needs the reservoir's {need}, which only the digital "
                f"twin of a simulated station provides; {station.source} has no [bench] (real "
                "hardware or a served bench). Use 'aug-dfa' (no model needed) or 'readout'."
            )
        if station.reservoir is None:
            raise ProcedureError(
                f"the dfa procedure needs a [reservoir] station ({station.source})"
            )
        if self.nodes > station.reservoir.node_count:
            raise ProcedureError(
                f"nodes = {self.nodes} exceeds the loop's node_count = "
                f"{station.reservoir.node_count} ({station.source})"
            )

    def startup(self) -> None:
        # Checks that need no instrument come first: a refused run touches nothing.
        self._task = load_task(
            self.task, self.seed, self.narma_window, (self.narma_train_steps, 2000)
        )
        self._temporal = self.sequence_mode == "temporal" or (
            self.sequence_mode == "auto" and self._task.name in SEQUENCE_TASKS
        )
        if self._temporal:
            if self.method in ("dfa", "bp-twin"):
                raise ProcedureError(
                    f"method {self.method!r} has no sequence (temporal) form; use aug-dfa or "
                    "readout, or sequence_mode='static'"
                )
            # One input per step: (samples, T) -> (samples, T, 1); W^(1) is the input mask M.
            self._task = dataclasses.replace(
                self._task,
                x_train=self._task.x_train[:, :, None],
                x_test=self._task.x_test[:, :, None],
            )
        super().startup()
        rig = self.require_rig()
        res = rig.station.reservoir
        if res is None:
            raise ProcedureError(
                f"the dfa procedure needs a [reservoir] station ({rig.station.source})"
            )
        if self.nodes > res.node_count:
            raise ProcedureError(
                f"nodes = {self.nodes} exceeds the loop's node_count = "
                f"{res.node_count} ({rig.station.source})"
            )
        # A model of the rig is an explicit input that only a simulated station supplies.
        self._twin: ReservoirTwin | None = None
        if self.method in ("dfa", "bp-twin"):
            self._twin = rig.twin
            if self._twin is None:
                need = "derivative f'" if self.method == "dfa" else "vector-Jacobian product"
                raise ProcedureError(
                    f"method {self.method!r} needs the reservoir's {need}, which only the "
                    f"digital twin of a simulated station provides; {rig.station.source} has no "
                    "twin (real hardware or a served bench). Use 'aug-dfa' (no model needed) "
                    "or 'readout'."
                )
        rig.dac.ramp_to({res.bias_channel: res.bias_v})
        cal = rig.calibration
        if cal is None:
            # No calibration file: measure what the encoding needs (null and bright drives,
            # the photodetector's levels, the loop delay) before the first pass, and record it.
            levels = np.linspace(-AWG_WINDOW_V + 0.4, AWG_WINDOW_V - 0.4, STARTUP_LEVELS)
            cal = measure_reservoir(
                rig, self.wait, levels, echoes=2, retry=self._retry_calibration
            ).calibration(res)
            self._calibration_source = "measured at start-up"
        else:
            self._calibration_source = str(res.calibration)
        self.log(f"calibration ({self._calibration_source}): {cal.as_dict()}")
        self.__dict__.pop("_layer", None)  # a fresh layer for this run
        self._configure(cal)
        # Output on before any checkpoint is restored, so a resumed run's clock restarts from
        # the same instrument state as the uninterrupted run's (see ReservoirLayer.forget_setup).
        self._layer.switch_on()
        self._init_learning()

    def _configure(self, cal: ReservoirCalibration) -> None:
        """Set the encoding, the drive map and the state units from the calibration ``cal``:
        dark guard at the modulator's null, bright plateau at full transmission, ``a = 0`` at
        ``operating_point`` V_pi above the null, states scaled by the dark/bright levels."""
        rig = self.require_rig()
        res = rig.station.reservoir
        assert res is not None
        where = f"calibration ({self._calibration_source})"
        if cal.node_count != res.node_count or not math.isclose(
            cal.node_duration_s, res.node_duration_s, rel_tol=1e-6
        ):
            raise ProcedureError(
                f"{where} is for {cal.node_count} nodes of {cal.node_duration_s:g} s; the "
                f"station's loop has {res.node_count} of {res.node_duration_s:g} s"
            )
        if not math.isclose(cal.bias_dac_v, res.bias_v, abs_tol=1e-6):
            raise ProcedureError(
                f"{where} was measured with the bias DAC at {cal.bias_dac_v:g} V; the station "
                f"biases at {res.bias_v:g} V: recalibrate (labrig calibrate)"
            )
        desync = cal.desync_nodes
        if not 0 <= desync < res.node_count:
            raise ProcedureError(
                f"{where}: loop delay {cal.loop_delay_s:g} s is {desync} node slots beyond one "
                f"period of {res.node_count}; the encoding needs 0 <= desync < node_count"
            )
        v_min, v_max = -AWG_WINDOW_V, AWG_WINDOW_V
        try:
            dark = cal.null_near(0.0)
            if abs(dark) > AWG_WINDOW_V:
                raise CalibrationError(f"the null drive {dark:g} V is outside +/-{AWG_WINDOW_V} V")
            bright = cal.bright_drive(AWG_WINDOW_V)
            op = self.operating_point or self._task_setting("operating_point")
            self._drive_offset_v = cal.drive_at(op, AWG_WINDOW_V)
        except CalibrationError as exc:
            raise ProcedureError(f"{where}: {exc}") from exc
        self._volts_per_unit = self.volts_per_unit or cal.v_pi_v * self._task_setting(
            "drive_per_v_pi"
        )
        self._calibration = cal
        self._spec = rio.FrameSpec(
            node_count=res.node_count,
            node_duration_s=res.node_duration_s,
            desync_nodes=desync,
            settle_periods=self._task.x_train.shape[1] if self._temporal else self.settle_periods,
            guard_periods=max(self.guard_periods, _min_guard(res.node_count, desync)),
            guard_drive_v=dark,
            bright_drive_v=bright,
            v_min=v_min,
            v_max=v_max,
        )
        cal_states = (0.0, cal.eta_v)
        # The learner sees node states centred on the middle of the calibrated range and scaled
        # to +/-1. Raw states are all positive (light intensities, ~0.5 eta on average), so a
        # DFA update delta h^T moves every weight of a row the same way and the next layer's
        # drive drifts as a whole out of the AWG window (a quarter of layer-2 drives clipped
        # with raw states, under 1 % centred). Centring is a fixed change of units, the same
        # for every pass: f_phys stays one fixed function.
        self._state_mid = 0.5 * (cal_states[0] + cal_states[1])
        self._state_half = 0.5 * (cal_states[1] - cal_states[0])
        scope_range = 1.6 * cal.eta_v
        scope_offset = cal.dark_v + 0.5 * cal.eta_v
        layer: ReservoirLayer | None = self.__dict__.get("_layer")
        if layer is None:
            self._layer = ReservoirLayer(
                rig,
                self._spec,
                self.nodes,
                self.awg_rate_hz,
                self.scope_rate_hz,
                cal_states,
                self.wait,
                scope_range_v=scope_range,
                scope_offset_v=scope_offset,
                retry=lambda call: self.with_retry(call, list(self.instruments), "reservoir pass"),
            )
        else:
            layer.spec, layer.cal_states = self._spec, cal_states
            layer.scope_range_v, layer.scope_offset_v = scope_range, scope_offset
            layer.forget_setup()

    def _retry_calibration(
        self, call: Callable[[], tuple[FloatArray, FloatArray]]
    ) -> tuple[FloatArray, FloatArray]:
        return self.with_retry(call, list(self.instruments), "reservoir pass")

    def twin(self) -> ReservoirTwin | None:
        """The digital twin the rig supplied (``dfa`` and ``bp-twin`` only; None otherwise)."""
        return self._twin

    def _init_learning(self) -> None:
        task = self._task
        n_train = len(task.x_train) if not self.train_samples else self.train_samples
        n_test = len(task.x_test) if not self.test_samples else self.test_samples
        self._n_train = min(n_train, len(task.x_train))
        self._n_test = min(n_test, len(task.x_test))
        sizes = [task.x_train.shape[-1], *([self.nodes] * self.layers), task.n_out]
        windows = 1
        if self._temporal:
            steps = task.x_train.shape[1]
            windows = self.time_windows or (steps if task.regression else min(8, steps))
            if windows > steps:
                raise ProcedureError(
                    f"time_windows = {windows} exceeds the sequence's {steps} steps"
                )
        self._net = dfa_alg.DeepNetwork.create(
            sizes,
            self.seed,
            weight_scale=self.weight_scale,
            feedback_scale=self.feedback_scale,
            time_windows=windows,
        )
        self._opt: Optimizer = make_optimizer(self.optimizer, self.base_learning_rate)
        self._shuffle_rng = np.random.default_rng([self.seed, 1])
        self._noise_rng = np.random.default_rng([self.seed, 2])
        mask_rng = np.random.default_rng([self.seed, 3])
        self._proj_masks = [
            mask_rng.normal(0.0, 1.0 / math.sqrt(task.n_out), size=(self.nodes, task.n_out))
            for _ in range(self.layers)
        ]
        self._epoch = 0
        self._history: list[dict[str, float]] = []
        self._projection_device_s = 0.0

    # ---------------------------------------------------------------- the physical function
    def _drive(self, a: FloatArray) -> FloatArray:
        """``V = offset + volts_per_unit * a``, limited to the AWG window (counted)."""
        v = self._drive_offset_v + self._volts_per_unit * a
        lo, hi = self._spec.v_min, self._spec.v_max
        stats = self._layer.stats
        stats.drives += v.size
        stats.clipped += int(np.count_nonzero((v < lo) | (v > hi)))
        return np.clip(v, lo, hi)

    def physical_layer(self, l: int, a: FloatArray) -> FloatArray:
        """``h = f_phys(a)``: one pass through the rig (the same for every layer ``l``), node
        states centred and scaled to the calibrated range, ``h = (x - x_mid) / x_half``."""
        return (self._layer(self._drive(a)) - self._state_mid) / self._state_half

    def _twin_drive(self, a: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Drives padded to the loop's node count and the in-window mask (d clip / d V)."""
        v = self._drive_offset_v + self._volts_per_unit * a
        inside = ((v >= self._spec.v_min) & (v <= self._spec.v_max)).astype(float)
        full = np.full((a.shape[0], self._spec.node_count), self._spec.guard_drive_v)
        full[:, : self.nodes] = np.clip(v, self._spec.v_min, self._spec.v_max)
        return full, inside

    def _twin_fprime(self, a: FloatArray) -> FloatArray:
        """``dh_i/da_i`` of the twin (plain DFA's ``f'``)."""
        full, inside = self._twin_drive(a)
        assert self._twin is not None  # dfa's startup refused a rig without one
        diag = self._twin.layer_derivative_diag(full, periods=self._spec.settle_periods)
        return self._volts_per_unit / self._state_half * inside * diag[:, : self.nodes]

    def _twin_vjp(self, l: int, a: FloatArray, grad_h: FloatArray) -> FloatArray:
        """``grad_a`` from ``grad_h`` by the twin's exact VJP (backprop through the twin)."""
        full, inside = self._twin_drive(a)
        g_full = np.zeros_like(full)
        g_full[:, : self.nodes] = grad_h
        assert self._twin is not None  # bp-twin's startup refused a rig without one
        g = self._twin.layer_vjp(full, g_full, periods=self._spec.settle_periods)
        return self._volts_per_unit / self._state_half * inside * g[:, : self.nodes]

    def _physical_projection(self, e: FloatArray) -> list[FloatArray]:
        """``e B^(l)^T`` for every layer from one waveform: each layer's masked error plus one
        zero-error reference sample; centred node states divided by the drive scale."""
        t0 = self.device_time_s()
        k = self.projection_volts_per_unit
        rows = [e @ m.T for m in self._proj_masks]
        stacked = np.concatenate([*rows, np.zeros((1, self.nodes))], axis=0)
        v = self._drive_offset_v + k * stacked
        lo, hi = self._spec.v_min, self._spec.v_max
        self._layer.stats.drives += v.size
        self._layer.stats.clipped += int(np.count_nonzero((v < lo) | (v > hi)))
        x = self._layer(np.clip(v, lo, hi))
        ref = x[-1]
        b = e.shape[0]
        out = [(x[i * b : (i + 1) * b] - ref) / k for i in range(self.layers)]
        self._projection_device_s += self.device_time_s() - t0
        return out

    def _projection(self) -> dfa_alg.Projection | None:
        """The ``projection(l, e)`` hook: physical and/or noisy, or None (digital ``e B^T``)."""
        if not self.physical_projection and self.projection_noise == 0.0:
            return None
        cache: dict[int, list[FloatArray]] = {}

        def project(l: int, e: FloatArray) -> FloatArray:
            if self.physical_projection:
                if l == 0 or id(e) not in cache:
                    cache.clear()
                    cache[id(e)] = self._physical_projection(e)
                p = cache[id(e)][l]
            else:
                p = e @ self._net.feedback[l].T
            if self.projection_noise > 0.0:
                rms = float(np.sqrt(np.mean(p * p))) or 1.0
                p = p + self.projection_noise * rms * self._noise_rng.normal(size=p.shape)
            return p

        return project

    # ---------------------------------------------------------------- training
    def _readout_kind(self) -> str:
        """``readout`` with ``auto`` resolved. A temporal task's readout sees hundreds of pooled
        states per sample; Adam on softmax fits them slowly (MNIST-1D, host twin: 64 % after
        15 epochs) where the ridge solution gets 88 % at once, so ``auto`` refits it by ridge."""
        if self.readout != "auto":
            return str(self.readout)
        return "ridge" if self._temporal else "gradient"

    def _loss_name(self) -> dfa_alg.LossName:
        return "mse" if self._task.regression else "softmax_ce"

    def _targets(self, y: np.ndarray) -> np.ndarray:
        return y[:, None] if self._task.regression else y

    def _ridge_targets(self, y: np.ndarray) -> FloatArray:
        if self._task.regression:
            return np.asarray(y, dtype=float)[:, None]
        return dfa_alg.one_hot(y, self._task.n_out)

    def _forward(self, x: FloatArray) -> dfa_alg.Forward:
        return dfa_alg.forward(self._net, x, self.physical_layer)

    def execute(self) -> None:
        if self.method == "readout":
            if self._epoch == 0:
                self._readout_only()
            return
        while self._epoch < self.epochs:
            if self.should_stop():
                return
            wall0, dev0, proj0 = (
                time.perf_counter(),
                self.device_time_s(),
                self._projection_device_s,
            )
            stats0 = (self._layer.stats.drives, self._layer.stats.clipped)
            self._opt.learning_rate = self.epoch_learning_rate(self._epoch)
            self._layer.forget_setup()
            trained = self._train_epoch()
            if trained is None:
                return  # stopped mid-epoch: the checkpoint is at the last epoch boundary
            loss, train_score = trained
            if self._readout_kind() == "ridge":
                x = self._task.x_train[: self._n_train]
                fwd = self._forward(x)
                self._net.readout = dfa_alg.ridge_readout(
                    fwd.readout_input,
                    self._ridge_targets(self._task.y_train[: self._n_train]),
                    self.effective_ridge_lambda,
                )
                train_score = self._score(fwd.y, self._task.y_train[: self._n_train])
            self._epoch += 1
            self._finish_epoch(loss, train_score, wall0, dev0, proj0, stats0)

    def _task_setting(self, name: str) -> float:
        family = self.task.split(":", 1)[0].lower()
        return TASK_SETTINGS.get(family, {}).get(name, TASK_SETTINGS["default"][name])

    @property
    def base_learning_rate(self) -> float:
        """The learning rate: the parameter, or the task's tuned value when it is 0."""
        return self.learning_rate or self._task_setting("learning_rate")

    @property
    def effective_ridge_lambda(self) -> float:
        """The ridge penalty: the parameter, or the task's tuned value when it is 0."""
        return self.ridge_lambda or self._task_setting("ridge_lambda")

    def epoch_learning_rate(self, epoch: int) -> float:
        """The learning rate of 0-based ``epoch``: a function of the epoch alone, so a resumed
        run continues the same schedule."""
        if self.lr_schedule == "constant":
            return self.base_learning_rate
        # Cosine annealing (Loshchilov & Hutter 2017), one value per epoch: the last epochs take
        # small steps, so the final weights settle instead of rattling at the noise floor
        # of the updates (fixed B and the rig's noise make aug-DFA's steps noisy).
        return self.base_learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))

    def _train_epoch(self) -> tuple[float, float] | None:
        task = self._task
        x_all, y_all = task.x_train[: self._n_train], task.y_train[: self._n_train]
        order = self._shuffle_rng.permutation(self._n_train)
        projection = self._projection()
        losses, weights = [], []
        correct = 0.0
        preds: list[FloatArray] = []
        targets: list[np.ndarray] = []
        for start in range(0, self._n_train, self.batch_size):
            if self.should_stop():
                return None
            idx = order[start : start + self.batch_size]
            xb, yb = x_all[idx], y_all[idx]
            fwd = self._forward(xb)
            target = self._targets(yb)
            train_readout = self._readout_kind() == "gradient"
            if self.method == "aug-dfa":
                loss = dfa_alg.aug_dfa_step(
                    self._net,
                    fwd,
                    target,
                    self.g,
                    self._opt,
                    loss=self._loss_name(),
                    projection=projection,
                    train_readout=train_readout,
                )
            elif self.method == "dfa":
                loss = dfa_alg.dfa_step(
                    self._net,
                    fwd,
                    target,
                    self._twin_fprime,
                    self._opt,
                    loss=self._loss_name(),
                    train_readout=train_readout,
                )
            else:  # bp-twin
                loss = dfa_alg.bp_step(
                    self._net,
                    fwd,
                    target,
                    self._opt,
                    vjp=self._twin_vjp,
                    loss=self._loss_name(),
                    train_readout=train_readout,
                )
            losses.append(loss)
            weights.append(len(idx))
            if task.regression:
                preds.append(fwd.y[:, 0])
                targets.append(yb)
            else:
                correct += float(np.sum(np.argmax(fwd.y, axis=1) == yb))
        loss_mean = float(np.average(losses, weights=weights))
        if task.regression:
            score = nmse(np.concatenate(preds), np.concatenate(targets))
        else:
            score = correct / self._n_train
        return loss_mean, score

    def _score(self, y: FloatArray, labels: np.ndarray) -> float:
        if self._task.regression:
            return nmse(y[:, 0], labels)
        return dfa_alg.accuracy(y, labels)

    def _readout_only(self) -> None:
        """Random fixed masks, ridge readout: the reservoir-computing baseline (one pass)."""
        wall0, dev0 = time.perf_counter(), self.device_time_s()
        stats0 = (self._layer.stats.drives, self._layer.stats.clipped)
        x, y = self._task.x_train[: self._n_train], self._task.y_train[: self._n_train]
        fwd = self._forward(x)
        self._net.readout = dfa_alg.ridge_readout(
            fwd.readout_input, self._ridge_targets(y), self.effective_ridge_lambda
        )
        y_fit = fwd.readout_input @ self._net.readout[:, :-1].T + self._net.readout[:, -1]
        loss, _ = dfa_alg.loss_and_error(y_fit, self._targets(y), self._loss_name())
        self._epoch = 1
        self._finish_epoch(loss, self._score(y_fit, y), wall0, dev0, 0.0, stats0)

    def _test(self) -> tuple[float, FloatArray]:
        """Test score (accuracy or NMSE in the task's units) and the per-class error array."""
        task = self._task
        x, y = task.x_test[: self._n_test], task.y_test[: self._n_test]
        fwd = self._forward(x)
        self._test_pass = (fwd, y)  # for the epoch's event (per-layer views, confusion)
        if task.regression:
            pred = fwd.y[:, 0] * task.y_scale + task.y_offset
            err = np.abs(pred - y)
            return nmse(pred, y), np.quantile(err, [0.5, 0.9, 0.99]).astype(float)
        guess = np.argmax(fwd.y, axis=1)
        per_class = np.array(
            [
                float(np.mean(guess[y == c] != c)) if np.any(y == c) else float("nan")
                for c in range(task.n_out)
            ]
        )
        return float(np.mean(guess == y)), per_class

    def _finish_epoch(
        self,
        loss: float,
        train_score: float,
        wall0: float,
        dev0: float,
        proj0: float,
        stats0: tuple[int, int],
    ) -> None:
        train_device = self.device_time_s() - dev0
        test_score, per_class = self._test()
        wall = time.perf_counter() - wall0
        device = self.device_time_s() - dev0
        drives = self._layer.stats.drives - stats0[0]
        clipped = self._layer.stats.clipped - stats0[1]
        key = "nmse" if self._task.regression else "accuracy"
        scalars: dict[str, float] = {
            "epoch": float(self._epoch),
            "loss": float(loss),
            f"train_{key}": float(train_score),
            f"test_{key}": float(test_score),
            "device_time_s": self.device_time_s(),
            "epoch_device_time_s": device,
            "epoch_train_device_time_s": train_device,
            "epoch_wall_time_s": wall,
            "projection_device_time_s": self._projection_device_s - proj0,
            "clipped_fraction": clipped / drives if drives else 0.0,
        }
        self._history.append(scalars)
        arrays: dict[str, np.ndarray] = dict(self._layer.event_traces())
        if self._layer.last_states is not None:
            states = self._layer.last_states
            if states.ndim == 3:
                states = states[:, -1]  # a sequence: each sample's last period
            arrays["node_states"] = states[:EVENT_NODE_ROWS].copy()
        arrays["readout_error"] = per_class
        arrays.update(self._layer_views())
        self.emit_event(scalars, arrays)

    def _layer_views(self) -> dict[str, np.ndarray]:
        """From the epoch's test pass: each layer's drive histogram (AWG volts), the node
        states of a few samples per layer, and the confusion matrix (classification)."""
        fwd, y = self._test_pass
        edges = np.linspace(-AWG_WINDOW_V, AWG_WINDOW_V, DRIVE_BINS + 1)
        volts = [
            np.clip(self._drive_offset_v + self._volts_per_unit * np.ravel(a), edges[0], edges[-1])
            for a in fwd.a[: self.layers]
        ]
        views: dict[str, np.ndarray] = {
            "drive_histogram": np.array([np.histogram(v, edges)[0] for v in volts]),
            "layer_states": np.array(
                [
                    (h[:, -1] if h.ndim == 3 else h)[:EVENT_NODE_ROWS]
                    for h in fwd.h[1 : self.layers + 1]
                ]
            ),
        }
        if not self._task.regression:
            guess = np.argmax(fwd.y, axis=1)
            n = self._task.n_out
            views["confusion"] = np.bincount(
                np.asarray(y, dtype=int) * n + guess, minlength=n * n
            ).reshape(n, n)
        return views

    # ---------------------------------------------------------------- results and resume
    def summary(self) -> dict[str, Any]:
        task = getattr(self, "_task", None)
        out: dict[str, Any] = {
            "method": self.method,
            "layers": self.layers,
            "nodes": self.nodes,
            "g": self.g,
            "epochs": int(getattr(self, "_epoch", 0)),
            "physical_projection": self.physical_projection,
        }
        history = getattr(self, "_history", [])
        if history and task is not None:
            last = history[-1]
            key = "nmse" if task.regression else "accuracy"
            out[f"test_{key}"] = last[f"test_{key}"]
            out[f"train_{key}"] = last[f"train_{key}"]
            scores = [h[f"test_{key}"] for h in history]
            out[f"best_test_{key}"] = min(scores) if task.regression else max(scores)
            out["loss"] = last["loss"]
            out["clipped_fraction"] = float(np.mean([h["clipped_fraction"] for h in history]))
        out["projection_device_time_s"] = float(getattr(self, "_projection_device_s", 0.0))
        if history:  # every epoch's, also those before a resume
            out["wall_time_per_epoch_s"] = float(np.mean([h["epoch_wall_time_s"] for h in history]))
            out["device_time_per_epoch_s"] = float(
                np.mean([h["epoch_device_time_s"] for h in history])
            )
        cal = getattr(self, "_calibration", None)
        if cal is not None:
            out["calibration"] = {**cal.as_dict(), "source": self._calibration_source}
            out["drive_offset_v"] = self._drive_offset_v
            out["volts_per_unit"] = self._volts_per_unit
        layer = getattr(self, "_layer", None)
        if layer is not None:
            out["waveforms"] = layer.stats.waveforms
            out["samples_through_rig"] = layer.stats.samples
        return out

    def seeds(self) -> dict[str, int]:
        return {"seed": self.seed}

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            **self.rig_state(),
            "epoch": self._epoch,
            "network": self._net.state_dict(),
            "optimizer": self._opt.state_dict(),
            "shuffle_rng": self._shuffle_rng.bit_generator.state,
            "noise_rng": self._noise_rng.bit_generator.state,
            "projection_device_time_s": self._projection_device_s,
            "calibration": {
                k: v for k, v in self._calibration.as_dict().items() if not isinstance(v, str)
            },
            "history": {
                k: np.asarray([h[k] for h in self._history], dtype=float)
                for k in (self._history[0] if self._history else {})
            },
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        # The bench's noise is keyed on its clock: restoring it makes the resumed run see the
        # noise the uninterrupted run saw, so both end bit for bit alike.
        self.restore_rig_state(state)
        if "calibration" in state:  # the run goes on with the calibration it started with
            values = {k: _plain(v) for k, v in dict(state["calibration"]).items()}
            values["node_count"] = int(values["node_count"])
            self._calibration_source = "restored from the checkpoint"
            self._configure(ReservoirCalibration(**values))
        self._epoch = int(state["epoch"])
        self._net.load_state_dict(dict(state["network"]))
        self._opt.load_state_dict(dict(state["optimizer"]))
        self._shuffle_rng.bit_generator.state = _plain(state["shuffle_rng"])
        self._noise_rng.bit_generator.state = _plain(state["noise_rng"])
        self._projection_device_s = float(state["projection_device_time_s"])
        hist = state.get("history") or {}
        n = len(next(iter(hist.values()))) if hist else 0
        self._history = [{k: float(np.asarray(v)[i]) for k, v in hist.items()} for i in range(n)]

    def describe_data(self) -> list[StreamDeclaration]:
        """One event per epoch: loss, train and test score, device and wall time, the last
        waveform as driven and as recorded, node states of a few samples, and the test error
        per class (per quantile for a regression task)."""
        task = self._task
        score = "nmse" if task.regression else "accuracy"
        per = (
            ("quantile", ["50 %", "90 %", "99 %"])
            if task.regression
            else ("class", [str(c) for c in range(task.n_out)])
        )
        keys: tuple[DataKey, ...] = (
            DataKey("epoch", dtype="float64", description="epoch"),
            DataKey("loss", description="training loss"),
            DataKey(f"train_{score}", description=f"train {score}"),
            DataKey(f"test_{score}", description=f"test {score}"),
            DataKey("device_time_s", "s", description="device time"),
            DataKey("epoch_device_time_s", "s", description="device time per epoch"),
            DataKey("epoch_train_device_time_s", "s", description="training device time"),
            DataKey("epoch_wall_time_s", "s", description="wall time per epoch"),
            DataKey("projection_device_time_s", "s", description="projection device time"),
            DataKey("clipped_fraction", description="drives clipped (fraction)"),
            DataKey(
                "awg_drive_v",
                "V",
                (None,),
                ("sample",),
                description="AWG drive",
                optional=True,
            ),
            DataKey(
                "pd_trace_v",
                "V",
                (None,),
                ("sample",),
                description="photodetector",
                optional=True,
            ),
            DataKey(
                "node_states",
                "",
                (None, None),
                ("sample", "node"),
                description="node states",
                optional=True,
            ),
            DataKey(
                "readout_error",
                "",
                (len(per[1]),),
                (per[0],),
                {per[0]: per[1]},
                description="test error" if not task.regression else "|error| quantile",
            ),
        )
        edges = np.linspace(-AWG_WINDOW_V, AWG_WINDOW_V, DRIVE_BINS + 1)
        centres = [round(float(c), 4) for c in 0.5 * (edges[1:] + edges[:-1])]
        layer_names = [f"layer {k + 1}" for k in range(self.layers)]
        keys += (
            DataKey(
                "drive_histogram",
                "",
                (self.layers, DRIVE_BINS),
                ("layer", "AWG drive (V)"),
                {"layer": layer_names, "AWG drive (V)": centres},
                dtype="int64",
                description="test-set drives (count)",
                optional=True,
            ),
            DataKey(
                "layer_states",
                "",
                (self.layers, None, self.nodes),
                ("layer", "sample", "node"),
                {"layer": layer_names},
                description="node states (centred)",
                optional=True,
            ),
        )
        if not task.regression:
            classes = [str(c) for c in range(task.n_out)]
            keys += (
                DataKey(
                    "confusion",
                    "",
                    (task.n_out, task.n_out),
                    ("true class", "predicted class"),
                    {"true class": classes, "predicted class": classes},
                    dtype="int64",
                    description="test samples (count)",
                    optional=True,
                ),
            )
        plots: tuple[PlotHint, ...] = (
            PlotHint("loss", "lines", ("loss",), "Loss", log_y=True),
            PlotHint(
                "accuracy" if score == "accuracy" else "nmse",
                "lines",
                (f"train_{score}", f"test_{score}"),
                score.capitalize(),
            ),
            PlotHint("trace:awg_drive_v", "trace", ("awg_drive_v",), "AWG drive (last waveform)"),
            PlotHint("trace:pd_trace_v", "trace", ("pd_trace_v",), "Photodetector (last waveform)"),
            PlotHint("image:node_states", "image", ("node_states",), "Node states"),
            PlotHint("bars:readout_error", "bars", ("readout_error",), "Test error per " + per[0]),
            PlotHint("scalar:clipped_fraction", "lines", ("clipped_fraction",), "Clipped drives"),
            PlotHint(
                "histogram:drive", "histogram", ("drive_histogram",), "Drive histogram per layer"
            ),
            PlotHint("image:layer_states", "image", ("layer_states",), "Node states per layer"),
        )
        if not task.regression:
            plots += (
                PlotHint("image:confusion", "image", ("confusion",), "Confusion matrix (test)"),
            )
        status = (
            "device_time_s",
            "epoch_device_time_s",
            "epoch_train_device_time_s",
            "epoch_wall_time_s",
            "projection_device_time_s",
        )
        return [StreamDeclaration(keys, plots, x="epoch", status=status)]

    # ---------------------------------------------------------------- plan
    def plan(self, station: Station) -> RunPlan:
        """What this run will do on ``station``, from the parameters and the wiring alone: the
        AWG drive's extremes (the AWG window the drives are limited to, the dark and bright
        calibration levels), the modulator bias, the epochs and the device time at most (the
        waveforms' play time; instrument I/O not included). Loads the task (so a bad task or
        data path is refused here) and raises :class:`ParameterError` for settings the station
        cannot run. Opens nothing."""
        res = station.reservoir
        if res is None:
            raise ProcedureError(
                f"the dfa procedure needs a [reservoir] station ({station.source})"
            )
        try:
            task = load_task(self.task, self.seed, self.narma_window)
        except ProcedureError as exc:
            problem = str(exc)
            if problem.startswith("unknown task"):
                problem = "is not a task; " + problem.split("; ", 1)[-1]
            else:
                problem = "cannot be loaded: " + problem.split(": ", 1)[-1]
            raise ParameterError("task", self.task, problem) from exc
        temporal = self.sequence_mode == "temporal" or (
            self.sequence_mode == "auto" and task.name in SEQUENCE_TASKS
        )
        if temporal and self.method in ("dfa", "bp-twin"):
            raise ParameterError(
                "method",
                self.method,
                "has no sequence (temporal) form; use aug-dfa or readout, or sequence-mode static",
            )
        if self.method in ("dfa", "bp-twin") and station.bench is None:
            raise ParameterError(
                "method",
                self.method,
                "needs a model of the rig, which only the digital twin of a simulated station "
                f"provides; {station.source} has no [bench] (use aug-dfa or readout)",
            )
        if self.nodes > res.node_count:
            raise ParameterError(
                "nodes",
                self.nodes,
                f"exceeds the loop's node_count {res.node_count}",
                station.source,
            )
        # The optics are measured, not assumed: the station's calibration file if it has one,
        # else the start-up measurement (its play time is added; the loop's desynchronisation
        # is taken as one node for this estimate).
        cal = None
        if res.calibration is not None:
            try:
                cal = load_calibration(res.calibration)
            except CalibrationError as exc:
                raise ProcedureError(f"{station.source}: {exc}") from exc
        desync = cal.desync_nodes if cal is not None else 1
        steps_per_sample = task.x_train.shape[1] if temporal else self.settle_periods
        spec = rio.FrameSpec(
            node_count=res.node_count,
            node_duration_s=res.node_duration_s,
            desync_nodes=max(desync, 0),
            settle_periods=steps_per_sample,
            guard_periods=max(self.guard_periods, _min_guard(res.node_count, max(desync, 0))),
            v_min=-AWG_WINDOW_V,
            v_max=AWG_WINDOW_V,
        )
        scope_points = PLAN_SCOPE_POINTS

        def pass_s(samples: int) -> float:
            """Play time of one physical pass of ``samples`` samples (chunked as the layer)."""
            chunks = rio.chunk(
                samples, spec, self.awg_rate_hz, self.scope_rate_hz, AWG_MAX_POINTS, scope_points
            )
            return sum(spec.duration_s(sl.stop - sl.start) for sl in chunks)

        n_train = min(self.train_samples or len(task.x_train), len(task.x_train))
        n_test = min(self.test_samples or len(task.x_test), len(task.x_test))
        if self.method == "readout":
            epochs = 1
            epoch_s = self.layers * (pass_s(n_train) + pass_s(n_test))
        else:
            epochs = self.epochs
            batches = [
                min(self.batch_size, n_train - start)
                for start in range(0, n_train, self.batch_size)
            ]
            train_s = sum(pass_s(b) for b in batches)
            if self.physical_projection:  # one more pass per batch, with a reference sample
                train_s += sum(pass_s(b + 1) for b in batches)
            epoch_s = self.layers * (train_s + pass_s(n_test))
            ridge = self.readout == "ridge" or (self.readout == "auto" and temporal)
            if ridge:  # the readout is refitted on the whole training set every epoch
                epoch_s += self.layers * pass_s(n_train)
        startup_s = 0.0
        if cal is None:
            period_s = res.node_count * res.node_duration_s
            startup_s = period_s * (
                2 * (40 + STARTUP_LEVELS * 5) + STARTUP_LEVELS * 6.5 + 40 + 1 + 3.5 * 1.2
            )
        optics = (
            f"calibration {res.calibration}"
            if cal is not None
            else "the optics measured at start-up (no calibration file)"
        )
        levels = (-AWG_WINDOW_V, AWG_WINDOW_V)
        channels = (
            ChannelPlan(
                res.awg,
                res.awg_channel,
                "modulator RF drive",
                min(levels),
                max(levels),
                f"drive at the operating point + a scale per unit, both from {optics}, limited "
                f"to the AWG window +/-{AWG_WINDOW_V:g} V",
            ),
            modulator_bias_plan(res),
        )
        return RunPlan(
            procedure=self.name,
            step_name="epoch",
            steps=epochs,
            channels=channels,
            device_time_s=epochs * epoch_s,
            details=(
                f"task {task.name}: {n_train} training / {n_test} test samples, "
                f"{'temporal' if temporal else 'static'} presentation",
                f"{self.method}, {self.layers} physical layer(s) x {self.nodes} nodes of "
                f"{res.node_count} in the loop ({res.node_duration_s * 1e9:g} ns per node)",
                f"{epochs} epoch(s) of {epoch_s:.3g} s play time each",
                *(
                    (f"first, the optics measured at start-up: {startup_s * 1e3:.3g} ms play time",)
                    if startup_s
                    else ()
                ),
            ),
        )


def _min_guard(node_count: int, desync: int) -> int:
    """Fewest dark guard periods that span two loop delays (the loop is dark again)."""
    return math.ceil(2 * (node_count + desync) / node_count)


def _plain(value: Any) -> Any:
    """A checkpointed generator state back as Python ints and dicts (numpy scalars -> int)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, bytes):
        return value.decode()
    return value
