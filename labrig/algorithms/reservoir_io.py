"""Host side of the delay reservoir: node drives -> AWG waveform, scope trace -> node states.

Pure numpy; knows nothing of the instruments or the physics model. A waveform is a sequence of
node *slots* of duration ``theta`` (``node_duration_s``); ``N`` slots make one *period*::

    | lead dark | sync (Barker-13) | dark gap | bright cal | sample 0 | sample 1 | ... | tail |
                                                            \\
                                     guard (dark) x G periods, then J_b held x P periods

* *dark* slots drive the modulator at its null (``guard_drive_v``, i.e. ``-bias_v`` for a
  ``sin^2`` MZM), so no light circulates and the loop forgets the previous sample: each sample
  starts from a dark loop, as the node-level twin assumes.
* the *sync* is a Barker-13 code of bright (``bright_drive_v``) and dark chips, one slot each; the
  decoder finds it by cross-correlation, so the trigger may fire anywhere before it and the scope
  may run at any rate.
* the *bright calibration* plateau (``cal_nodes`` slots) follows a dark gap, so the loop feedback is
  zero under it; with the dark slots just before it, it gives two known levels. Given their
  expected node states (e.g. from a characterisation or the twin) the decoder maps scope volts to
  node states with ``x = x_dark + (r - r_dark) (x_bright - x_dark) / (r_bright - r_dark)``, which
  cancels the scope's vertical offset and gain and slow laser-power drift.
* each sample's drive ``drive_offset_v + volts_per_unit * J`` is held for ``settle_periods``
  periods; the last one is read: node ``i``'s state is the mean of the trace over the central part
  ``read_window`` of its slot.

Usage::

    spec = FrameSpec(node_count=100, node_duration_s=40e-9, guard_drive_v=-1.0)
    for sl in chunk(len(J), spec, fs_awg, fs_scope, 1_000_000, 4_000_000):
        drive_v, layout = encode(J[sl], spec, fs_awg)
        ...  # upload, trigger, acquire
        states = decode(trace_v, fs_scope, layout, cal_states=(x_dark, x_bright))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.signal import correlate

FloatArray = npt.NDArray[np.float64]

BARKER13 = (1, 1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1)
"""Barker code: autocorrelation sidelobes of at most 1/13 of the peak."""


@dataclass(frozen=True)
class FrameSpec:
    """How node drives are laid out in time. Volts and seconds.

    ``node_count``, ``node_duration_s``, ``desync_nodes`` must match the rig's loop
    (delay ``(N + k) * theta``). ``guard_periods`` dark periods before each sample must span at
    least two loop delays so the loop is dark again; ``settle_periods`` is how many periods each
    sample's drive is held (the last is read). ``volts_per_unit`` and ``drive_offset_v`` map the
    learner's ``J`` to AWG volts; nothing is rescaled per batch, so the physical layer stays one
    fixed function. ``v_min``/``v_max`` is the AWG's output window: a drive outside raises.
    """

    node_count: int
    node_duration_s: float
    desync_nodes: int = 1
    settle_periods: int = 3
    guard_periods: int = 5
    guard_drive_v: float = 0.0
    bright_drive_v: float = 2.0
    drive_offset_v: float = 0.0
    volts_per_unit: float = 1.0
    cal_nodes: int = 8
    read_window: tuple[float, float] = (0.25, 0.75)
    v_min: float = -5.0
    v_max: float = 5.0

    def __post_init__(self) -> None:
        for name in ("node_count", "settle_periods", "guard_periods", "cal_nodes"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"FrameSpec.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.desync_nodes, int | np.integer) or self.desync_nodes < 0:
            raise ValueError(
                f"FrameSpec.desync_nodes must be an integer >= 0, got {self.desync_nodes!r}"
            )
        if not (np.isfinite(self.node_duration_s) and self.node_duration_s > 0):
            raise ValueError(f"FrameSpec.node_duration_s must be > 0, got {self.node_duration_s!r}")
        delay_slots = self.node_count + self.desync_nodes
        if self.guard_periods * self.node_count < 2 * delay_slots:
            raise ValueError(
                f"FrameSpec.guard_periods={self.guard_periods} gives "
                f"{self.guard_periods * self.node_count} dark slots, fewer than two loop delays "
                f"(2 * {delay_slots}); the loop would not be dark when a sample starts"
            )
        if self.cal_nodes > delay_slots:
            raise ValueError(
                f"FrameSpec.cal_nodes={self.cal_nodes} exceeds one loop delay "
                f"({delay_slots} slots): feedback would reach the calibration plateau"
            )
        w0, w1 = self.read_window
        if not (0.0 <= w0 < w1 <= 1.0):
            raise ValueError(
                "FrameSpec.read_window must satisfy 0 <= start < stop <= 1, "
                f"got {self.read_window!r}"
            )
        if not (self.v_min < self.v_max):
            raise ValueError(f"FrameSpec.v_min={self.v_min!r} must be below v_max={self.v_max!r}")
        for name in ("guard_drive_v", "bright_drive_v"):
            value = getattr(self, name)
            if not (self.v_min <= value <= self.v_max):
                raise ValueError(
                    f"FrameSpec.{name}={value!r} V is outside the AWG window "
                    f"[{self.v_min!r}, {self.v_max!r}] V"
                )
        if not (np.isfinite(self.volts_per_unit) and self.volts_per_unit != 0):
            raise ValueError(
                f"FrameSpec.volts_per_unit must be finite and non-zero, got {self.volts_per_unit!r}"
            )

    @property
    def preamble_slots(self) -> int:
        """Slots before the first sample: lead dark, sync, dark gap, bright calibration."""
        g = self.guard_periods * self.node_count
        return g + len(BARKER13) + g + self.cal_nodes

    @property
    def sample_slots(self) -> int:
        """Slots per sample: guard plus held periods."""
        return (self.guard_periods + self.settle_periods) * self.node_count

    @property
    def tail_slots(self) -> int:
        """Dark slots after the last sample, so its read period is not at the record's end."""
        return self.node_count

    def total_slots(self, batch: int) -> int:
        """Slots in a waveform holding ``batch`` samples."""
        return self.preamble_slots + batch * self.sample_slots + self.tail_slots

    def waveform_points(self, batch: int, fs_awg: float) -> int:
        """AWG points for ``batch`` samples at ``fs_awg``."""
        return math.ceil(self.total_slots(batch) * self.node_duration_s * fs_awg - 1e-9)

    def duration_s(self, batch: int) -> float:
        """Waveform duration in seconds."""
        return self.total_slots(batch) * self.node_duration_s


@dataclass(frozen=True)
class FrameLayout:
    """What :func:`decode` needs to know about one encoded waveform (slots from its start)."""

    spec: FrameSpec
    batch: int
    fs_awg: float
    n_points: int
    sync_start_slot: int
    cal_start_slot: int
    first_read_slot: int
    read_periods: int = 1
    sequence: bool = False

    @property
    def duration_s(self) -> float:
        return self.spec.duration_s(self.batch)


@dataclass(frozen=True)
class Decoded:
    """Result of :func:`decode_detailed`.

    ``states`` (batch, N), or (batch, T, N) for a sequence layout (every held period read);
    ``start_s`` the waveform's start in trace time (the first trace sample
    is at 0); ``r_dark``/``r_bright`` the raw calibration readings (V); ``gain``/``offset`` the
    applied map ``states = offset + gain * reading``; ``sync_quality`` the normalised correlation
    at the sync peak (1 for a perfect match).
    """

    states: FloatArray
    start_s: float
    r_dark: float
    r_bright: float
    gain: float
    offset: float
    sync_quality: float


def _slot_levels(J: FloatArray, spec: FrameSpec) -> tuple[FloatArray, FrameLayout, int]:
    N = spec.node_count
    batch = J.shape[0]
    g = spec.guard_periods * N
    total = spec.total_slots(batch)
    levels = np.full(total, spec.guard_drive_v)
    sync_start = g
    chips = np.asarray(BARKER13)
    levels[sync_start : sync_start + chips.size] = np.where(
        chips > 0, spec.bright_drive_v, spec.guard_drive_v
    )
    cal_start = sync_start + chips.size + g
    levels[cal_start : cal_start + spec.cal_nodes] = spec.bright_drive_v
    drive = spec.drive_offset_v + spec.volts_per_unit * J
    s0 = spec.preamble_slots
    held = spec.settle_periods * N
    # A static J (batch, N) is held for settle_periods periods; a sequence J (batch, T, N) with
    # T = settle_periods drives one period per step, with no dark between the steps of a sample.
    per_sample = (
        drive.reshape(batch, held) if J.ndim == 3 else np.tile(drive, (1, spec.settle_periods))
    )
    starts = s0 + np.arange(batch) * spec.sample_slots + g
    idx = starts[:, None] + np.arange(held)[None, :]
    levels[idx] = per_sample
    sequence = J.ndim == 3
    first_read = s0 + g + (0 if sequence else (spec.settle_periods - 1) * N)
    layout = FrameLayout(
        spec=spec,
        batch=batch,
        fs_awg=0.0,
        n_points=0,
        sync_start_slot=sync_start,
        cal_start_slot=cal_start,
        first_read_slot=first_read,
        read_periods=spec.settle_periods if sequence else 1,
        sequence=sequence,
    )
    return levels, layout, total


def encode(J: npt.ArrayLike, spec: FrameSpec, fs_awg: float) -> tuple[FloatArray, FrameLayout]:
    """AWG waveform (volts, one value per AWG point at ``fs_awg``) carrying the node drives ``J``.

    ``J`` is ``(batch, N)`` in the learner's units, each sample held for ``settle_periods``
    periods and its last period read; or a sequence ``(batch, T, N)`` with ``T ==
    settle_periods``: sample ``b`` drives ``J[b, t]`` in its ``t``-th period, the loop's feedback
    carries the state from one step to the next (no dark between steps, only the guard
    periods between samples), and :func:`decode` reads all ``T`` periods. The drive is
    ``spec.drive_offset_v + spec.volts_per_unit * J``. Raises ValueError if any drive leaves the
    AWG window or a node slot is shorter than one AWG point.
    """
    arr = np.asarray(J, dtype=float)
    seq_ok = arr.ndim == 3 and arr.shape[1] == spec.settle_periods
    if (
        arr.ndim not in (2, 3)
        or (arr.ndim == 3 and not seq_ok)
        or arr.shape[-1] != spec.node_count
        or arr.shape[0] < 1
    ):
        raise ValueError(
            f"encode: J must be (batch >= 1, node_count={spec.node_count}) or a sequence "
            f"(batch >= 1, settle_periods={spec.settle_periods}, node_count), got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("encode: J contains NaN or inf")
    if not (np.isfinite(fs_awg) and fs_awg > 0):
        raise ValueError(f"encode: fs_awg must be finite and > 0, got {fs_awg!r}")
    points_per_node = spec.node_duration_s * fs_awg
    if points_per_node < 1.0 - 1e-9:
        raise ValueError(
            f"encode: node_duration_s={spec.node_duration_s:g} s is {points_per_node:.3g} AWG "
            f"points at fs_awg={fs_awg:g} Sa/s; need >= 1"
        )
    drive = spec.drive_offset_v + spec.volts_per_unit * arr
    lo, hi = float(drive.min()), float(drive.max())
    if lo < spec.v_min or hi > spec.v_max:
        raise ValueError(
            f"encode: drive spans [{lo:.6g}, {hi:.6g}] V, outside the AWG window "
            f"[{spec.v_min!r}, {spec.v_max!r}] V (FrameSpec); reduce volts_per_unit or the weights"
        )
    levels, layout, total = _slot_levels(arr, spec)
    n_points = spec.waveform_points(arr.shape[0], fs_awg)
    # AWG point j is held over [j, j+1) / fs_awg and belongs to the slot holding its start.
    slot = np.floor(np.arange(n_points) / points_per_node + 1e-9).astype(np.int64)
    np.minimum(slot, total - 1, out=slot)
    layout = FrameLayout(
        spec=spec,
        batch=layout.batch,
        fs_awg=float(fs_awg),
        n_points=n_points,
        sync_start_slot=layout.sync_start_slot,
        cal_start_slot=layout.cal_start_slot,
        first_read_slot=layout.first_read_slot,
        read_periods=layout.read_periods,
        sequence=layout.sequence,
    )
    return levels[slot], layout


def _window_means(
    cums: FloatArray, fs: float, start_s: float, slots: FloatArray, spec: FrameSpec, n: int
) -> FloatArray:
    """Mean of the trace over the read window of each slot (slots from the waveform start)."""
    theta = spec.node_duration_s
    w0, w1 = spec.read_window
    i0 = np.ceil((start_s + (slots + w0) * theta) * fs - 1e-9).astype(np.int64)
    i1 = np.ceil((start_s + (slots + w1) * theta) * fs - 1e-9).astype(np.int64)
    if np.any(i1 <= i0):
        raise ValueError(
            f"decode: the read window {spec.read_window} of a {theta:g} s node holds no scope "
            f"sample at fs_scope={fs:g} Sa/s; sample faster or widen FrameSpec.read_window"
        )
    if i0.min() < 0 or i1.max() > n:
        raise ValueError(
            f"decode: trace of {n} samples ends before the waveform does (needs sample "
            f"{int(i1.max())}); record longer or start the scope earlier"
        )
    return (cums[i1] - cums[i0]) / (i1 - i0)


def decode_detailed(
    trace_v: npt.ArrayLike,
    fs_scope: float,
    layout: FrameLayout,
    cal_states: tuple[float, float] | None = None,
) -> Decoded:
    """Node states from a scope trace of the PD voltage; see :func:`decode`."""
    spec = layout.spec
    trace = np.asarray(trace_v, dtype=float)
    if trace.ndim != 1:
        raise ValueError(f"decode: trace_v must be 1-D, got shape {trace.shape}")
    if not np.all(np.isfinite(trace)):
        raise ValueError("decode: trace_v contains NaN or inf (clipped or invalid scope samples?)")
    if not (np.isfinite(fs_scope) and fs_scope > 0):
        raise ValueError(f"decode: fs_scope must be finite and > 0, got {fs_scope!r}")
    theta = spec.node_duration_s
    N = spec.node_count
    # Template: the sync's bright/dark pattern with one period of dark on each side, on the scope
    # grid, zero-mean. Correlating it with the trace peaks where the sync sits.
    t0_slot = layout.sync_start_slot - N
    t_slots = len(BARKER13) + 2 * N
    n_tmpl = math.ceil(t_slots * theta * fs_scope)
    t = np.arange(n_tmpl) / fs_scope / theta
    slot_idx = np.floor(t).astype(np.int64) - N
    chips = np.asarray(BARKER13)
    in_sync = (slot_idx >= 0) & (slot_idx < chips.size)
    tmpl = np.where(in_sync, (chips[np.clip(slot_idx, 0, chips.size - 1)] > 0).astype(float), 0.0)
    tmpl -= tmpl.mean()
    if trace.size < n_tmpl + 2:
        raise ValueError(
            f"decode: trace of {trace.size} samples is shorter than the sync template ({n_tmpl})"
        )
    # The sync must start early enough for the rest of the waveform to fit in the trace, so only
    # that head of the trace is searched (keeps a 4 M-point record cheap).
    rest = math.floor((spec.total_slots(layout.batch) - t0_slot) * theta * fs_scope)
    if trace.size < rest:
        raise ValueError(
            f"decode: trace of {trace.size} samples ends before the waveform does (it needs "
            f"{rest} from the sync on); record longer or start the scope earlier"
        )
    head = min(trace.size, trace.size - rest + n_tmpl + 2)
    corr = correlate(trace[:head], tmpl, mode="valid", method="fft")
    k = int(np.argmax(corr))
    # Normalised correlation at the peak: 1 when the trace is an affine copy of the template.
    seg = trace[k : k + n_tmpl] - trace[k : k + n_tmpl].mean()
    denom = float(np.linalg.norm(seg) * np.linalg.norm(tmpl))
    quality = float(corr[k] / denom) if denom > 0 else 0.0
    frac = 0.0
    if 0 < k < corr.size - 1:
        # Parabola through the peak and its neighbours for a sub-sample lag.
        ym, y0, yp = corr[k - 1], corr[k], corr[k + 1]
        den = ym - 2.0 * y0 + yp
        if den < 0:
            frac = float(np.clip(0.5 * (ym - yp) / den, -0.5, 0.5))
    if quality < 0.5:
        raise ValueError(
            f"decode: sync not found (normalised correlation {quality:.2f} < 0.5); is the PD "
            "signal on the digitised channel and the bright level really bright?"
        )
    start_s = (k + frac) / fs_scope - t0_slot * theta
    cums = np.concatenate([[0.0], np.cumsum(trace)])
    n = trace.size
    cal_slots = layout.cal_start_slot + np.arange(spec.cal_nodes, dtype=float)
    dark_slots = cal_slots - spec.cal_nodes
    r_bright = float(_window_means(cums, fs_scope, start_s, cal_slots, spec, n).mean())
    r_dark = float(_window_means(cums, fs_scope, start_s, dark_slots, spec, n).mean())
    P = layout.read_periods
    read = (
        layout.first_read_slot
        + np.arange(layout.batch)[:, None] * spec.sample_slots
        + np.arange(P * N)[None, :]
    ).astype(float)
    shape = (layout.batch, P, N) if layout.sequence else (layout.batch, N)
    raw = _window_means(cums, fs_scope, start_s, read.ravel(), spec, n).reshape(shape)
    if cal_states is None:
        gain, offset = 1.0, 0.0
    else:
        x_dark, x_bright = (float(v) for v in cal_states)
        contrast = r_bright - r_dark
        if abs(contrast) <= 1e-9:
            raise ValueError(
                f"decode: calibration contrast {contrast:.3g} V (bright {r_bright:.4g} V, dark "
                f"{r_dark:.4g} V) is too small to calibrate against"
            )
        gain = (x_bright - x_dark) / contrast
        offset = x_dark - gain * r_dark
    return Decoded(
        states=offset + gain * raw,
        start_s=start_s,
        r_dark=r_dark,
        r_bright=r_bright,
        gain=gain,
        offset=offset,
        sync_quality=quality,
    )


def decode(
    trace_v: npt.ArrayLike,
    fs_scope: float,
    layout: FrameLayout,
    cal_states: tuple[float, float] | None = None,
) -> FloatArray:
    """Node states ``(batch, N)`` (``(batch, T, N)`` for a sequence) recovered from a scope trace
    of the waveform :func:`encode` made.

    ``trace_v`` is the digitised PD voltage at ``fs_scope``, starting anywhere before the sync
    (trigger offset and AWG/scope rate mismatch are found by cross-correlation). With
    ``cal_states = (x_dark, x_bright)``, the expected node states under the guard and bright
    drives, the result is in node-state units; without, it is in trace volts.
    """
    return decode_detailed(trace_v, fs_scope, layout, cal_states).states


def chunk(
    batch: int,
    spec: FrameSpec,
    fs_awg: float,
    fs_scope: float,
    awg_max_points: int = 1_000_000,
    scope_max_points: int = 4_000_000,
    scope_margin_s: float = 0.0,
) -> list[slice]:
    """Split ``batch`` samples into consecutive slices whose waveforms fit both memories.

    A waveform for ``n`` samples needs ``spec.waveform_points(n, fs_awg)`` AWG points and
    ``(duration + scope_margin_s) * fs_scope`` scope points (the margin covers the trigger
    offset). Raises ValueError if not even one sample fits.
    """
    if not isinstance(batch, int | np.integer) or batch < 0:
        raise ValueError(f"chunk: batch must be an integer >= 0, got {batch!r}")
    if scope_margin_s < 0:
        raise ValueError(f"chunk: scope_margin_s must be >= 0, got {scope_margin_s!r}")
    theta = spec.node_duration_s
    fixed = spec.preamble_slots + spec.tail_slots
    per = spec.sample_slots
    # Largest n with ceil((fixed + n per) theta fs_awg) <= awg_max and
    # ceil(((fixed + n per) theta + margin) fs_scope) <= scope_max.
    n_awg = math.floor((awg_max_points / (theta * fs_awg) - fixed) / per + 1e-9)
    n_scope = math.floor(
        ((scope_max_points / fs_scope - scope_margin_s) / theta - fixed) / per + 1e-9
    )
    n_max = min(n_awg, n_scope)
    while n_max > 0 and (
        spec.waveform_points(n_max, fs_awg) > awg_max_points
        or math.ceil((spec.duration_s(n_max) + scope_margin_s) * fs_scope) > scope_max_points
    ):
        n_max -= 1
    if n_max < 1:
        raise ValueError(
            f"chunk: one sample needs {spec.waveform_points(1, fs_awg)} AWG points (max "
            f"{awg_max_points}) and {math.ceil((spec.duration_s(1) + scope_margin_s) * fs_scope)}"
            f" scope points (max {scope_max_points})"
        )
    return [slice(s, min(s + n_max, batch)) for s in range(0, batch, n_max)]
