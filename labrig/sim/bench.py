"""The virtual bench: one simulated clock, parts wired together, triggers, a voltage log, faults.

Every emulated instrument and every device model is a :class:`Part`. Parts have named *ports*.
An output port is a continuous-time signal: ``part.output(port, t)`` returns the port's value
(volts, or amperes for current outputs) at the times ``t`` (seconds of bench time, a 1-D float
array, need not be uniform). An input port is read by asking the bench what is wired to it:
``bench.signal("scope.ch1", t)``. Wiring is a mapping *input port -> output port*, given by the
station (e.g. ``"scope.ch1" <- "dnpu.tia"``); an unwired input reads 0 V.

Triggers are events, not signals: ``bench.fire("qdac.trig1", t)`` delivers ``on_trigger(port, t)``
to every part whose input is wired to ``qdac.trig1``.

Time only moves forward, and only when something that takes time on real hardware happens: a
ramp, a settle wait, a playback, an acquisition. Parts call :meth:`SimClock.advance_to`. In
real-time pacing the clock also sleeps so bench time never runs ahead of wall time.

The bench keeps, for each port named in ``watch_voltages``, the most negative and most positive
value the port ever output (:attr:`Bench.voltage_extremes`): evidence that no electrode saw a
voltage beyond its limits.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Pacing = Literal["fast", "realtime"]


class SimClock:
    """Bench time in seconds. Monotonic; thread-safe; optional real-time pacing."""

    def __init__(self, pacing: Pacing = "fast") -> None:
        self._now = 0.0
        self.pacing: Pacing = pacing
        self._wall_origin = time.monotonic()
        self._lock = threading.Lock()

    @property
    def now(self) -> float:
        return self._now

    def advance(self, dt: float) -> float:
        """Move time forward by ``dt`` seconds (negative is an error). Returns the new time."""
        if dt < 0 or not np.isfinite(dt):
            raise ValueError(f"bench time can only move forward, got dt={dt!r}")
        return self.advance_to(self._now + dt)

    def advance_to(self, t: float) -> float:
        """Move time forward to ``t`` (no-op if ``t`` is in the past). Returns the new time."""
        with self._lock:
            if t > self._now:
                self._now = float(t)
            now = self._now
        if self.pacing == "realtime":
            lag = now - (time.monotonic() - self._wall_origin)
            if lag > 0:
                time.sleep(lag)
        return now


class BenchLock:
    """The bench's physics lock: reentrant, first come first served, and yieldable.

    Every instrument's commands run under it (the physics is single-threaded), but instruments
    are independent boxes: a worker running a long message calls :meth:`yield_to_waiters`
    between commands (and inside long computations); once it has held the lock for
    :attr:`yield_after_s`, that hands the lock to every thread already waiting, in arrival
    order, and then takes it back. Messages shorter than that run whole, in the order their
    workers queued (what keeps a served bench deterministic). A plain lock would not do: a
    thread that releases and re-acquires at once keeps a C lock against waiters that still need
    the GIL to wake, so another instrument could wait for the whole message.

    A transport may :meth:`reserve` a place in the queue for the calling thread before it is
    ready to run (the TCP server does, in the order the messages arrived); the thread's next
    :meth:`acquire` then waits for that place, and :meth:`cancel_reservation` gives it up.
    """

    #: Hold the lock at least this long before yielding it to waiters (wall seconds).
    yield_after_s = 0.02

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._held_since = 0.0
        self._queue: deque[int] = deque()
        self._tickets = itertools.count()
        self._reserved: dict[int, int] = {}

    def _wait_turn(self, me: int, depth: int, ticket: int | None = None) -> None:
        if ticket is None:
            ticket = next(self._tickets)
            self._queue.append(ticket)
        while self._owner is not None or self._queue[0] != ticket:
            self._cond.wait()
        self._queue.popleft()
        self._owner, self._depth = me, depth
        self._held_since = time.monotonic()

    def reserve(self) -> None:
        """Queue the calling thread now; its next :meth:`acquire` takes this place."""
        me = threading.get_ident()
        with self._cond:
            if self._owner == me or me in self._reserved:
                return
            ticket = next(self._tickets)
            self._queue.append(ticket)
            self._reserved[me] = ticket

    def cancel_reservation(self) -> None:
        """Give up a place taken by :meth:`reserve` and not used (no-op if there is none)."""
        with self._cond:
            ticket = self._reserved.pop(threading.get_ident(), None)
            if ticket is not None:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def acquire(self) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
            elif me in self._reserved:
                self._wait_turn(me, 1, self._reserved.pop(me))
            elif self._owner is None and not self._queue:
                self._owner, self._depth = me, 1
                self._held_since = time.monotonic()
            else:
                self._wait_turn(me, 1)
        return True

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("BenchLock released by a thread that does not hold it")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                if self._queue:
                    self._cond.notify_all()

    def yield_to_waiters(self) -> None:
        """If other threads wait for the lock and the caller has held it for
        :attr:`yield_after_s`, let them all run first (the caller must hold the lock, at any
        depth; it holds it again, at the same depth, on return)."""
        if not self._queue:  # racy read, fine: a late arrival waits for the next yield
            return
        if time.monotonic() - self._held_since < self.yield_after_s:
            return
        me = threading.get_ident()
        with self._cond:
            if self._owner != me or not self._queue:
                return
            depth = self._depth
            self._owner, self._depth = None, 0
            self._cond.notify_all()
            self._wait_turn(me, depth)

    def __enter__(self) -> BenchLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@runtime_checkable
class Part(Protocol):
    """Anything on the bench: an instrument emulator or a device model."""

    name: str

    def output(self, port: str, t: FloatArray) -> FloatArray:
        """Value of output ``port`` at bench times ``t``."""
        ...

    def on_trigger(self, port: str, t: float) -> None:
        """A trigger edge arrived at input ``port`` at bench time ``t``."""
        ...


FaultKind = Literal["drop", "delay", "garble", "error", "drift", "silence"]


@dataclass
class Fault:
    """One injected fault.

    - ``drop``: the instrument's connection is closed instead of replying.
    - ``delay``: the reply is held back ``seconds`` of wall time.
    - ``garble``: the reply's bytes are corrupted (a malformed line).
    - ``silence``: the query gets no reply at all (the client times out).
    - ``error``: ``code``/``message`` is pushed into the instrument's error queue.
    - ``drift``: the device model's drift state is stepped by ``amount``.

    It fires once, at the ``at_command``-th command the instrument receives (1-based), or at the
    first command after bench time ``at_time_s``.
    """

    kind: FaultKind
    instrument: str
    at_command: int | None = None
    at_time_s: float | None = None
    seconds: float = 0.0
    code: int = -300
    message: str = "Device-specific error"
    amount: float = 0.0
    fired: bool = False


@dataclass
class FaultPlan:
    """The faults still to fire, and a count of commands each instrument has received."""

    faults: list[Fault] = field(default_factory=list)
    command_counts: dict[str, int] = field(default_factory=dict)

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def on_command(self, instrument: str, now: float) -> list[Fault]:
        """Count one command to ``instrument``; return the faults that fire on it (marked fired)."""
        n = self.command_counts.get(instrument, 0) + 1
        self.command_counts[instrument] = n
        due: list[Fault] = []
        for fault in self.faults:
            if fault.fired or fault.instrument != instrument:
                continue
            by_count = fault.at_command is not None and n >= fault.at_command
            by_time = fault.at_time_s is not None and now >= fault.at_time_s
            if by_count or by_time:
                fault.fired = True
                due.append(fault)
        return due


class Bench:
    """Parts, wiring, one clock, seeded per-stream noise (:meth:`rng_for`), a voltage log and a
    fault plan."""

    def __init__(
        self,
        wiring: Mapping[str, str] | None = None,
        seed: int = 0,
        pacing: Pacing = "fast",
        watch_voltages: Iterable[str] = (),
        io_time: bool = False,
    ) -> None:
        self.clock = SimClock(pacing)
        self.seed = seed
        self.parts: dict[str, Part] = {}
        self.wiring: dict[str, str] = dict(wiring or {})
        self.faults = FaultPlan()
        self.voltage_extremes: dict[str, tuple[float, float]] = {}
        # Bumped by every command that changes an instrument's state (any non-query). A part
        # may cache a computed signal while the generation is unchanged: between two settings
        # changes every reader (a scope, five lock-ins) sees the same signal, noise and all.
        self.generation = 0
        # Charge each instrument's link time (per-message latency + bytes / link rate) to the
        # clock. Benches built from a station do; a bare bench (unit tests of one emulator's
        # command set and physics) keeps time exact.
        self.io_time = io_time
        self._watched = set(watch_voltages)
        # One lock serialises the commands of all instruments (the physics is single-threaded);
        # it is fair and held one command at a time (BenchLock), so a busy instrument never
        # holds another for more than one command.
        self.lock = BenchLock()

    def rng_for(self, stream: str, t: float) -> np.random.Generator:
        """A generator for the noise of ``stream`` (a part's name) in an evaluation at bench
        time ``t``: seeded by (bench seed, stream, t in ns). Noise is then a function of bench
        time, not of how many evaluations came before, so a run resumed on a fresh bench whose
        clock is set to where the checkpoint left off draws the very same noise."""
        ns = round(t * 1e9)
        key = [
            self.seed & 0xFFFFFFFF,
            zlib.crc32(stream.encode()),
            ns & 0xFFFFFFFF,
            (ns >> 32) & 0xFFFFFFFF,
        ]
        return np.random.default_rng(key)

    # ----------------------------------------------------------------- parts and wiring
    def add(self, part: Part) -> Part:
        if part.name in self.parts:
            raise ValueError(f"a part named {part.name!r} is already on the bench")
        self.parts[part.name] = part
        return part

    def connect(self, input_port: str, output_port: str) -> None:
        """Wire ``output_port`` (``"part.port"``) into ``input_port``."""
        self.wiring[input_port] = output_port

    def source_of(self, input_port: str) -> str | None:
        return self.wiring.get(input_port)

    def signal(self, input_port: str, t: FloatArray) -> FloatArray:
        """What arrives at ``input_port`` at times ``t`` (0 where nothing is wired)."""
        t = np.asarray(t, dtype=float)
        source = self.wiring.get(input_port)
        if source is None:
            return np.zeros_like(t)
        part_name, _, port = source.partition(".")
        part = self.parts.get(part_name)
        if part is None:
            raise KeyError(f"{input_port!r} is wired to {source!r}, but no part {part_name!r}")
        return part.output(port, t)

    def fire(self, output_port: str, t: float) -> None:
        """Deliver a trigger edge from ``output_port`` at time ``t`` to every wired input."""
        for input_port, source in list(self.wiring.items()):
            if source == output_port:
                part_name, _, port = input_port.partition(".")
                part = self.parts.get(part_name)
                if part is not None:
                    part.on_trigger(port, t)

    def step_drift(self, amount: float) -> None:
        """Step the drift of every part that models drift (a ``drift`` fault)."""
        for part in self.parts.values():
            step = getattr(part, "step_drift", None)
            if callable(step):
                step(amount)

    # ----------------------------------------------------------------- safety evidence
    def watches(self, port: str) -> bool:
        return port in self._watched

    def watched_ports(self) -> set[str]:
        return set(self._watched)

    def log_voltage(self, port: str, low: float, high: float) -> None:
        """Record that ``port`` output values in ``[low, high]``; keeps the all-time extremes."""
        if port not in self._watched:
            return
        old = self.voltage_extremes.get(port)
        if old is None:
            self.voltage_extremes[port] = (float(low), float(high))
        else:
            self.voltage_extremes[port] = (min(old[0], float(low)), max(old[1], float(high)))
