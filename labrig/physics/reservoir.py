"""Optoelectronic time-multiplexed delay reservoir (rig A): one nonlinear node, one delay loop.

The rig: a laser feeds a Mach-Zehnder modulator (MZM). The MZM's RF port is driven by the sum of
the AWG output (the masked input) and the loop's own photodetector (PD) signal delayed by the
fibre loop; a DC port is biased by a DAC channel. The light after the loop's attenuator reaches
the PD, whose amplified output is both fed back to the MZM and digitised by the oscilloscope.
Time is cut into node slots of duration ``theta``; ``N`` consecutive slots are one *period* (one
input vector ``J`` of ``N`` node drives), the loop delay is ``tau = (N + k) theta`` (node
desynchronisation ``k``), so node ``i`` of period ``n`` is fed back into node ``i + k``
of period ``n + 1``: this couples the virtual nodes into a ring.

Waveform level (continuous time, :meth:`DelayReservoir.respond`)::

    kappa  = pi / (2 V_pi)                                   [rad/V]
    V(t)   = drive_v(t) + bias_v + G_fb * v(t - tau)         MZM drive     [V]
    w(t)   = eta * sin^2(kappa * V(t)),  eta = P_0 * R_pd    ideal PD out  [V]
    tau_pd * dv/dt = -v(t) + w(t) + n(t),  tau_pd = 1 / (2 pi f_pd)

``P_0`` is the optical power reaching the PD at full transmission (``optical_power_w``), ``R_pd``
the PD + amplifier conversion gain (``pd_gain_v_per_w``), ``G_fb`` the loop's net feedback gain
(attenuator and RF amplifier, V of MZM drive per V of PD output), ``f_pd`` the PD bandwidth; the
first-order low-pass is what couples neighbouring nodes (node inertia). ``n(t)`` is PD + amplifier
noise, white over the PD bandwidth, scaled so ``v`` carries ``noise_v_rms`` of noise; it circulates
in the loop like the signal does. The drive is held between its samples (zero-order hold) and the
loop is simulated at ``internal_rate_hz`` or the drive's rate, whichever is higher (an integer
multiple of it); over each internal step the drive and the fed-back signal are held and the
low-pass is integrated exactly, ``v(t_{j+1}) = a v(t_j) + (1 - a) w_j``, ``a = exp(-dt/tau_pd)``.
Output sample ``j`` is ``v(t_j)``. The step recursion runs in a compiled loop (numba) when numba is
installed, else as one vectorised numpy step per block of one loop delay; both draw the same noise
numbers from ``rng`` (in different chunks of one stream) and agree to rounding.

Node level (the digital twin, :meth:`DelayReservoir.layer_nodes`): one value per node slot,
the state at the end of the slot when the drive and the fed-back signal are constant over it::

    x_i(n) = c * x_{i-1}(n) + (1 - c) * eta * sin^2(alpha * x_{i-k}(n-1) + gamma * J_i(n) + phi)

    alpha = kappa * G_fb,  gamma = kappa,  phi = kappa * bias_v,  c = exp(-theta / tau_pd)

with ``J`` the AWG drive in volts, ``x_{-1}(n) = x_{N-1}(n-1)`` and ``x_{i-k}(n-1)`` for
``i < k`` meaning ``x_{N+i-k}(n-2)`` (the slot exactly ``N + k`` slots earlier). The loop
starts dark (``x = 0``), as it is after the guard periods in which the encoder drives the MZM to
its null. A static input is held for ``periods`` periods and the last one is read. When the PD is
fast (``theta * f_pd >> 1``, so ``c -> 0``) the waveform's node plateaus equal the twin's node
values; slower PDs blur slots together and the twin becomes an approximation.

The twin's exact derivatives (:meth:`layer_vjp`, :meth:`layer_jacobian`) serve the plain-DFA and
backpropagation-through-the-twin baselines and the tests; the in-loop aug-DFA never uses them.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

FloatArray = npt.NDArray[np.float64]
RespondMethod = Literal["auto", "kernel", "reference"]

_LOOP_KERNEL: Any = None

# sin^2 by Cody-Waite reduction and a polynomial, for the compiled loop: x = n pi/2 + r with
# |r| <= pi/4 (pi/2 split in a 33-bit head and its tail, as in fdlibm, so r is exact to ~1e-20
# for any argument the modulator sees), sin(r) by its Taylor series to r^15 (the first omitted
# term, r^17/17!, is under 5e-17 on |r| <= pi/4), and sin^2(x) = sin^2(r) for even n,
# cos^2(r) = 1 - sin^2(r) for odd n. Within a few 1e-16 of numpy's sin(x)**2, and, unlike a
# libm call, vectorised by the compiler.
_TWO_OVER_PI = 2.0 / math.pi
_PIO2_HEAD = 1.57079632673412561417e00
_PIO2_TAIL = 6.07710050650619224932e-11
_SIN_TAYLOR = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(1, 8))


def _loop_kernel() -> Any:
    """The compiled step recursion of :meth:`DelayReservoir.respond` (built on first use), or
    None without numba."""
    global _LOOP_KERNEL
    if _LOOP_KERNEL is None and importlib.util.find_spec("numba") is not None:
        from numba import njit

        c3, c5, c7, c9, c11, c13, c15 = _SIN_TAYLOR
        two_over_pi, head, tail = _TWO_OVER_PI, _PIO2_HEAD, _PIO2_TAIL

        @njit(cache=True, error_model="numpy")  # type: ignore[misc]
        def loop(  # pragma: no cover - compiled
            drive: FloatArray,
            m: int,
            noise: FloatArray,
            noise_std: float,
            e: FloatArray,
            j0: int,
            j1: int,
            d0: int,
            w: float,
            a: float,
            kappa: float,
            eta: float,
            g_fb: float,
            bias: float,
        ) -> None:
            # The recursion of DelayReservoir._respond, in blocks of d0 internal steps (a block
            # only reads e from earlier blocks): first the MZM drive and ideal PD output of the
            # whole block, vectorised,
            #   w_j = eta sin^2(kappa (drive[j // m] + bias + g_fb e_delayed[j])) + n_j,
            # then the exact low-pass step by step, e[j] = a e[j-1] + (1 - a) w_j.
            # Steps j0 .. j1 - 1 (resumable: the state is e itself); n_j = noise_std *
            # noise[j - j0] when noise is given.
            pad = d0 + 2
            has_noise = noise.size > 0
            base = np.empty(d0)
            ideal = np.empty(d0)
            last = e[pad + j0 - 1]
            for start in range(j0, j1, d0):
                size = min(d0, j1 - start)
                # Drive phase kappa (drive + bias), held over m internal steps per AWG sample.
                j = start
                while j < start + size:
                    q = j // m
                    run = min((q + 1) * m, start + size) - j
                    phase = kappa * (drive[q] + bias)
                    for i in range(j - start, j - start + run):
                        base[i] = phase
                    j += run
                k0 = pad + start - d0 - 1
                for i in range(size):
                    delayed = (1.0 - w) * e[k0 + i] + w * e[k0 + i - 1]
                    x = base[i] + kappa * g_fb * delayed
                    n = np.floor(x * two_over_pi + 0.5)
                    r = (x - n * head) - n * tail
                    r2 = r * r
                    p = c13 + r2 * c15
                    p = c11 + r2 * p
                    p = c9 + r2 * p
                    p = c7 + r2 * p
                    p = c5 + r2 * p
                    p = c3 + r2 * p
                    sr = r + r * r2 * p
                    s2 = sr * sr
                    odd = n - 2.0 * np.floor(0.5 * n)
                    ideal[i] = eta * (s2 + odd * (1.0 - 2.0 * s2))
                if has_noise:
                    for i in range(size):
                        ideal[i] += noise_std * noise[start - j0 + i]
                for i in range(size):
                    last = a * last + (1.0 - a) * ideal[i]
                    e[pad + start + i] = last

        _LOOP_KERNEL = loop
    return _LOOP_KERNEL


@dataclass(frozen=True)
class ReservoirParams:
    """Physical constants of one delay-loop reservoir. SI units; see the module docstring.

    Defaults: a 100-node loop with 40 ns nodes (a 250 MSa/s AWG gives 10 points per node),
    V_pi = 4 V, 1 mW at the PD through a 1 kV/W amplified PD (``eta`` = 1 V), feedback gain 2
    (``alpha`` ~ 0.79 rad/V, the loop contracts), a 200 MHz PD (settles within a quarter
    node, so the twin matches the plateaus to ~1e-4 V) and 5 mV of PD noise.
    """

    node_count: int = 100
    node_duration_s: float = 40e-9
    desync_nodes: int = 1
    feedback_gain: float = 2.0
    v_pi: float = 4.0
    bias_v: float = 1.0
    optical_power_w: float = 1e-3
    pd_gain_v_per_w: float = 1000.0
    pd_bandwidth_hz: float = 200e6
    noise_v_rms: float = 5e-3
    internal_rate_hz: float = 1e9

    def __post_init__(self) -> None:
        if not isinstance(self.node_count, int | np.integer) or self.node_count < 1:
            raise ValueError(
                f"ReservoirParams.node_count must be an integer >= 1, got {self.node_count!r}"
            )
        if not isinstance(self.desync_nodes, int | np.integer) or self.desync_nodes < 0:
            raise ValueError(
                f"ReservoirParams.desync_nodes must be an integer >= 0, got {self.desync_nodes!r}"
            )
        positive = {
            "node_duration_s": self.node_duration_s,
            "v_pi": self.v_pi,
            "optical_power_w": self.optical_power_w,
            "pd_gain_v_per_w": self.pd_gain_v_per_w,
            "pd_bandwidth_hz": self.pd_bandwidth_hz,
        }
        for name, value in positive.items():
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"ReservoirParams.{name} must be finite and > 0, got {value!r}")
        for name, value in {
            "feedback_gain": self.feedback_gain,
            "bias_v": self.bias_v,
            "noise_v_rms": self.noise_v_rms,
            "internal_rate_hz": self.internal_rate_hz,
        }.items():
            if not np.isfinite(value):
                raise ValueError(f"ReservoirParams.{name} must be finite, got {value!r}")
        if self.noise_v_rms < 0 or self.internal_rate_hz < 0:
            raise ValueError(
                "ReservoirParams.noise_v_rms and internal_rate_hz must be >= 0, got "
                f"{self.noise_v_rms!r} and {self.internal_rate_hz!r}"
            )

    @property
    def delay_s(self) -> float:
        """Loop delay ``tau = (N + k) * theta`` in seconds."""
        return (self.node_count + self.desync_nodes) * self.node_duration_s

    @property
    def kappa_rad_per_v(self) -> float:
        """MZM phase per drive volt, ``pi / (2 V_pi)``."""
        return math.pi / (2.0 * self.v_pi)

    @property
    def eta_v(self) -> float:
        """PD voltage at full MZM transmission, ``eta = P_0 * R_pd``."""
        return self.optical_power_w * self.pd_gain_v_per_w

    @property
    def alpha(self) -> float:
        """Feedback strength of the node map, ``kappa * G_fb`` (rad per volt of node state)."""
        return self.kappa_rad_per_v * self.feedback_gain

    @property
    def inertia(self) -> float:
        """Node-to-node coupling of the PD low-pass, ``c = exp(-theta / tau_pd)``."""
        return math.exp(-2.0 * math.pi * self.pd_bandwidth_hz * self.node_duration_s)


def _lowpass_noise_input_std(noise_v_rms: float, a: float) -> float:
    # A first-order IIR y[j] = a y[j-1] + (1-a) w[j] turns white input of variance s^2 into
    # output of variance (1-a)^2 / (1-a^2) s^2 = (1-a)/(1+a) s^2; invert for the input std.
    if a <= 0.0:
        return noise_v_rms
    return noise_v_rms * math.sqrt((1.0 + a) / (1.0 - a))


class DelayReservoir:
    """One delay-loop reservoir: waveform response for the bench, node-level twin for baselines.

    Usage::

        res = DelayReservoir(ReservoirParams())
        v_pd = res.respond(drive_v, fs=250e6, bias_v=1.0, rng=np.random.default_rng(0))
        x = res.layer_nodes(J)            # (batch, N) drives in V -> (batch, N) node states in V
        gJ = res.layer_vjp(J, grad_x)     # exact vector-Jacobian product of the twin
    """

    def __init__(self, params: ReservoirParams | None = None) -> None:
        self.params = params if params is not None else ReservoirParams()
        # The loop's trajectory for respond_internal(reuse_buffer=True): tens of MB for a long
        # waveform, kept so each call does not fault in fresh pages.
        self._work = np.zeros(0)

    # ---------------------------------------------------------------- waveform level

    def respond(
        self,
        drive_v: npt.ArrayLike,
        fs: float,
        bias_v: float | None = None,
        rng: np.random.Generator | None = None,
        method: RespondMethod = "auto",
    ) -> FloatArray:
        """PD voltage at the drive's sample times ``j / fs`` for an AWG drive sampled at ``fs``.

        ``bias_v`` is the MZM's DC bias (``params.bias_v`` if None). With ``rng`` None the loop
        is noise-free. The loop starts dark (no light in the fibre before the first sample).
        ``method``: ``"kernel"`` (compiled loop, needs numba), ``"reference"`` (numpy blocks) or
        ``"auto"`` (the kernel when numba is installed); same physics, same noise.
        """
        v, m = self._respond(drive_v, fs, bias_v, rng, method)
        return v[::m].copy()

    def respond_internal(
        self,
        drive_v: npt.ArrayLike,
        fs: float,
        bias_v: float | None = None,
        rng: np.random.Generator | None = None,
        method: RespondMethod = "auto",
        reuse_buffer: bool = False,
    ) -> tuple[FloatArray, float]:
        """Like :meth:`respond` but at the internal simulation rate: ``(v_pd, fs_internal)``.

        Sample ``j`` of the result is at time ``j / fs_internal``; the internal rate is an integer
        multiple of ``fs``. Use this when a scope samples faster than the AWG: pass the AWG's
        own held samples and rate, and the drive is held over each sample's internal steps.
        With ``reuse_buffer`` the result is a view of a buffer that the next such call
        overwrites (no allocation per call); copy it to keep it longer.
        """
        v, m = self._respond(drive_v, fs, bias_v, rng, method, reuse_buffer)
        return v, m * float(fs)

    def _respond(
        self,
        drive_v: npt.ArrayLike,
        fs: float,
        bias_v: float | None,
        rng: np.random.Generator | None,
        method: RespondMethod = "auto",
        reuse_buffer: bool = False,
    ) -> tuple[FloatArray, int]:
        p = self.params
        if method not in ("auto", "kernel", "reference"):
            raise ValueError(
                f"respond: method must be 'auto', 'kernel' or 'reference', got {method!r}"
            )
        drive = np.ascontiguousarray(drive_v, dtype=float)
        if drive.ndim != 1 or drive.size == 0:
            raise ValueError(
                f"respond: drive_v must be a non-empty 1-D array, got shape {drive.shape}"
            )
        if not np.all(np.isfinite(drive)):
            raise ValueError("respond: drive_v contains NaN or inf")
        if not (np.isfinite(fs) and fs > 0):
            raise ValueError(f"respond: sample rate fs must be finite and > 0, got {fs!r}")
        bias = p.bias_v if bias_v is None else float(bias_v)
        m = max(1, math.ceil(p.internal_rate_hz / fs - 1e-9)) if p.internal_rate_hz > 0 else 1
        fs_i = m * float(fs)
        d = p.delay_s * fs_i  # loop delay in internal samples, generally fractional
        d0 = math.floor(d + 1e-9)
        w = max(0.0, d - d0)
        if d0 < 2:
            raise ValueError(
                f"respond: loop delay {p.delay_s:g} s is under 2 samples at {fs_i:g} Sa/s; "
                "raise fs or internal_rate_hz"
            )
        n_tot = drive.size * m
        a = math.exp(-2.0 * math.pi * p.pd_bandwidth_hz / fs_i)
        noise_std = _lowpass_noise_input_std(p.noise_v_rms, a) if rng is not None else 0.0
        noisy = noise_std > 0.0 and rng is not None
        kappa, eta, g_fb = p.kappa_rad_per_v, p.eta_v, p.feedback_gain
        # e[j] is v at the END of internal sample j, i.e. v(t_{j+1}): the drive and the
        # fed-back signal are held over [t_j, t_{j+1}), and the low-pass is integrated exactly:
        #   e[j] = a e[j-1] + (1 - a) w[j],  a = exp(-2 pi f_pd / fs_i)   (tau_pd dv/dt = -v + w)
        # so v(t_j) = e[j-1] and the fed-back v(t_j - tau) = e[j - 1 - d], d = tau fs_i
        # (interpolated linearly when d is fractional). History before t = 0 is dark: pad zeros.
        pad = d0 + 2
        if reuse_buffer:
            if self._work.size < pad + n_tot:
                self._work = np.empty(pad + n_tot)
            e = self._work[: pad + n_tot]
            e[:pad] = 0.0  # only the dark history is read before it is written
        else:
            e = np.zeros(pad + n_tot)
        kernel = _loop_kernel() if method != "reference" else None
        if method == "kernel" and kernel is None:
            raise ValueError("respond: method='kernel' needs numba, which is not installed")
        if kernel is not None:
            # The noise comes in chunks of a buffer that stays in cache: the very numbers of one
            # rng.normal(0, noise_std, n_tot) draw (the generator's stream does not depend on
            # how it is cut), without an array of n_tot of them.
            chunk = 1 << 16
            buf = np.empty(min(chunk, n_tot) if noisy else 0)
            for j0 in range(0, n_tot, chunk):
                j1 = min(j0 + chunk, n_tot)
                if noisy and rng is not None:
                    rng.standard_normal(out=buf[: j1 - j0])
                kernel(
                    drive, m, buf[: j1 - j0], noise_std, e, j0, j1, d0, w, a, kappa, eta, g_fb, bias
                )
            return e[pad - 1 : pad - 1 + n_tot], m
        u_drive = np.repeat(drive, m) if m > 1 else drive
        b_coef = np.array([1.0 - a])
        a_coef = np.array([1.0, -a])
        last = 0.0
        # e[j] depends on e at j - d - 1 (at most j - d0 - 1): a block of d0 samples depends only
        # on earlier blocks, so each block is one vectorised step plus a C-level IIR.
        for start in range(0, n_tot, d0):
            stop = min(start + d0, n_tot)
            j0, j1 = pad + start, pad + stop
            delayed = e[j0 - d0 - 1 : j1 - d0 - 1]
            if w > 0.0:
                delayed = (1.0 - w) * delayed + w * e[j0 - d0 - 2 : j1 - d0 - 2]
            ideal = eta * np.sin(kappa * (u_drive[start:stop] + bias + g_fb * delayed)) ** 2
            if noisy and rng is not None:
                ideal = ideal + rng.normal(0.0, noise_std, size=ideal.shape)
            out, _ = lfilter(b_coef, a_coef, ideal, zi=np.array([a * last]))
            e[j0:j1] = out
            last = float(out[-1])
        return e[pad - 1 : pad - 1 + n_tot], m

    # ---------------------------------------------------------------- node level (twin)

    def _stream_inputs(
        self, J: npt.ArrayLike, periods: int
    ) -> tuple[FloatArray, str, tuple[int, ...]]:
        """Flatten node drives into a per-slot stream ``(batch, S)``; remember how to read back."""
        N = self.params.node_count
        arr = np.asarray(J, dtype=float)
        if not np.all(np.isfinite(arr)):
            raise ValueError("layer_nodes: J contains NaN or inf")
        if arr.shape[-1:] != (N,):
            raise ValueError(
                f"layer_nodes: J's last axis must be node_count={N} (ReservoirParams), "
                f"got shape {arr.shape}"
            )
        if arr.ndim == 1:
            arr = arr[None, :]
            kind, shape = "static1", (N,)
        elif arr.ndim == 2:
            kind, shape = "static", arr.shape
        elif arr.ndim == 3:
            return arr.reshape(arr.shape[0], -1), "sequence", arr.shape
        else:
            raise ValueError(
                f"layer_nodes: J must be (N,), (batch, N) or (batch, T, N), got {arr.shape}"
            )
        if not isinstance(periods, int | np.integer) or periods < 1:
            raise ValueError(f"layer_nodes: periods must be an integer >= 1, got {periods!r}")
        return np.tile(arr, (1, int(periods))), kind, shape

    def _read_stream(self, x: FloatArray, kind: str, shape: tuple[int, ...]) -> FloatArray:
        N = self.params.node_count
        if kind == "sequence":
            return x.reshape(shape)
        last = x[:, -N:]
        return last[0].copy() if kind == "static1" else last.copy()

    def _run_stream(
        self, js: FloatArray, bias: float, noise_std: float, rng: np.random.Generator | None
    ) -> tuple[FloatArray, FloatArray]:
        """Node map over a slot stream; returns states ``x`` and MZM phases ``pre``."""
        p = self.params
        D = p.node_count + p.desync_nodes
        c = p.inertia
        alpha, gamma, phi, eta = p.alpha, p.kappa_rad_per_v, p.kappa_rad_per_v * bias, p.eta_v
        batch, S = js.shape
        x = np.zeros((batch, S))
        pre = np.zeros((batch, S))
        u_std = _lowpass_noise_input_std(noise_std, c)
        for b0 in range(0, S, D):
            b1 = min(b0 + D, S)
            # pre[s] = alpha x[s - D] + gamma J[s] + phi, with x = 0 before the stream starts.
            delayed = x[:, b0 - D : b1 - D] if b0 >= D else 0.0
            pb = alpha * delayed + gamma * js[:, b0:b1] + phi
            u = eta * np.sin(pb) ** 2
            if u_std > 0.0 and rng is not None:
                u = u + rng.normal(0.0, u_std, size=u.shape)
            pre[:, b0:b1] = pb
            if c > 1e-12:
                # x[s] = c x[s-1] + (1 - c) u[s] along the slot axis.
                prev = x[:, b0 - 1] if b0 > 0 else np.zeros(batch)
                x[:, b0:b1], _ = lfilter([1.0 - c], [1.0, -c], u, axis=1, zi=(c * prev)[:, None])
            else:
                x[:, b0:b1] = u
        return x, pre

    def layer_nodes(
        self,
        J: npt.ArrayLike,
        *,
        periods: int = 3,
        bias_v: float | None = None,
        rng: np.random.Generator | None = None,
        noise_v_rms: float | None = None,
    ) -> FloatArray:
        """Node states (V) of the twin for node drives ``J`` (V of AWG drive).

        ``J`` of shape ``(batch, N)`` (or ``(N,)``) is a static input held for ``periods``
        periods from a dark loop; the last period's states are returned, same shape as ``J``.
        ``J`` of shape ``(batch, T, N)`` is a sequence, one period per step; all ``T`` periods are
        returned. With ``rng`` given, PD noise of ``noise_v_rms`` (default ``params.noise_v_rms``)
        is added per node and circulates in the loop.
        """
        js, kind, shape = self._stream_inputs(J, periods)
        bias = self.params.bias_v if bias_v is None else float(bias_v)
        std = self.params.noise_v_rms if noise_v_rms is None else float(noise_v_rms)
        if std < 0 or not np.isfinite(std):
            raise ValueError(f"layer_nodes: noise_v_rms must be finite and >= 0, got {std!r}")
        x, _ = self._run_stream(js, bias, std if rng is not None else 0.0, rng)
        return self._read_stream(x, kind, shape)

    def layer_vjp(
        self,
        J: npt.ArrayLike,
        grad_out: npt.ArrayLike,
        *,
        periods: int = 3,
        bias_v: float | None = None,
    ) -> FloatArray:
        """``grad_out^T dX/dJ`` of the noise-free twin: the gradient wrt ``J`` of a loss whose
        gradient wrt :meth:`layer_nodes`' output is ``grad_out`` (same shape as that output)."""
        p = self.params
        js, kind, shape = self._stream_inputs(J, periods)
        g_out = np.asarray(grad_out, dtype=float)
        if g_out.shape != shape:
            raise ValueError(f"layer_vjp: grad_out shape {g_out.shape} != output shape {shape}")
        bias = p.bias_v if bias_v is None else float(bias_v)
        _, pre = self._run_stream(js, bias, 0.0, None)
        batch, S = js.shape
        N, D, c = p.node_count, p.node_count + p.desync_nodes, p.inertia
        gy = np.zeros((batch, S))
        if kind == "sequence":
            gy[:] = g_out.reshape(batch, S)
        else:
            gy[:, -N:] = g_out.reshape(batch, N)
        dsin = p.eta_v * np.sin(2.0 * pre)  # d/dpre of eta sin^2(pre)
        gpre = np.zeros((batch, S))
        g_next = np.zeros(batch)  # total gradient wrt x at the first slot of the later block
        starts = list(range(0, S, D))
        for b0 in reversed(starts):
            b1 = min(b0 + D, S)
            # q[s] = dL/dx[s] not via x[s+1]: the read-out plus the feedback into pre[s + D].
            q = gy[:, b0:b1].copy()
            hi = min(b1 + D, S)
            if b0 + D < S:
                q[:, : hi - (b0 + D)] += p.alpha * gpre[:, b0 + D : hi]
            if c > 1e-12:
                # gx[s] = q[s] + c gx[s+1]: the low-pass recursion run backwards.
                gx_rev, _ = lfilter([1.0], [1.0, -c], q[:, ::-1], axis=1, zi=(c * g_next)[:, None])
                gx = gx_rev[:, ::-1]
                gpre[:, b0:b1] = (1.0 - c) * gx * dsin[:, b0:b1]
            else:
                gx = q
                gpre[:, b0:b1] = gx * dsin[:, b0:b1]
            g_next = gx[:, 0]
        gj = p.kappa_rad_per_v * gpre
        if kind == "sequence":
            return gj.reshape(shape)
        summed = gj.reshape(batch, -1, N).sum(axis=1)  # the same J drives every held period
        return summed[0] if kind == "static1" else summed

    def layer_jacobian(
        self, J: npt.ArrayLike, *, periods: int = 3, bias_v: float | None = None
    ) -> FloatArray:
        """Exact Jacobian ``dX_i/dJ_j`` of the noise-free static twin, shape ``(batch, N, N)``
        (``(N, N)`` for a 1-D ``J``). Forward-mode, in batch chunks to bound memory."""
        p = self.params
        arr = np.asarray(J, dtype=float)
        if arr.ndim not in (1, 2):
            raise ValueError(f"layer_jacobian: J must be (N,) or (batch, N), got {arr.shape}")
        one = arr.ndim == 1
        arr2 = np.atleast_2d(arr)
        js, _, _ = self._stream_inputs(arr2, periods)
        bias = p.bias_v if bias_v is None else float(bias_v)
        N, D, c = p.node_count, p.node_count + p.desync_nodes, p.inertia
        S = js.shape[1]
        # Tangent of the drive stream: J[s] = J_in[s mod N], so dJ[s]/dJ_in = e_{s mod N}.
        jdot = np.tile(np.eye(N), (S // N, 1))  # (S, N)
        out = np.empty((arr2.shape[0], N, N))
        chunk = max(1, 2_000_000 // max(1, S * N))
        for c0 in range(0, arr2.shape[0], chunk):
            jc = js[c0 : c0 + chunk]
            _, pre = self._run_stream(jc, bias, 0.0, None)
            dsin = p.eta_v * np.sin(2.0 * pre)
            xdot = np.zeros((jc.shape[0], S, N))
            for b0 in range(0, S, D):
                b1 = min(b0 + D, S)
                pdot = p.kappa_rad_per_v * jdot[None, b0:b1, :]
                if b0 >= D:
                    pdot = pdot + p.alpha * xdot[:, b0 - D : b1 - D, :]
                udot = dsin[:, b0:b1, None] * pdot
                if c > 1e-12:
                    prev = xdot[:, b0 - 1, :] if b0 > 0 else np.zeros((jc.shape[0], N))
                    xdot[:, b0:b1, :], _ = lfilter(
                        [1.0 - c], [1.0, -c], udot, axis=1, zi=(c * prev)[:, None, :]
                    )
                else:
                    xdot[:, b0:b1, :] = udot
            out[c0 : c0 + chunk] = xdot[:, -N:, :]
        return out[0] if one else out

    def layer_derivative_diag(
        self, J: npt.ArrayLike, *, periods: int = 3, bias_v: float | None = None
    ) -> FloatArray:
        """``dX_i/dJ_i`` of the twin, same shape as ``J``: the "f'" that plain DFA multiplies by."""
        jac = self.layer_jacobian(J, periods=periods, bias_v=bias_v)
        return np.diagonal(jac, axis1=-2, axis2=-1).copy()
