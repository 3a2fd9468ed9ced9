"""The base class of the virtual bench's SCPI instrument emulators.

A model emulator subclasses :class:`ScpiEmulator`, answers ``*IDN?`` through :meth:`identity`,
adds its commands in :meth:`register_commands` and restores its power-on settings in
:meth:`reset`::

    class Awg(ScpiEmulator):
        def __init__(self, name: str, bench: Bench | None = None) -> None:
            self.freq_hz = 1e3            # state first: the base calls register_commands()
            super().__init__(name, bench)

        def identity(self) -> str:
            return "Keysight Technologies,33522B,MY00000001,5.03-3.15-2.00-58-00"

        def register_commands(self) -> None:
            self.tree.add("[SOURce#]:FREQuency", write=self._set_freq, query=self._get_freq)

        def reset(self) -> None:
            self.freq_hz = 1e3
            super().reset()

        def _set_freq(self, ctx: Context, args: Args) -> None:
            args.require(1, 1)
            self.freq_hz = args.float(0, 1e-6, 30e6)

        def _get_freq(self, ctx: Context, args: Args) -> str:
            return format_nr3(self.freq_hz)

The base provides the IEEE 488.2 common commands (``*IDN? *RST *CLS *OPC *OPC? *ESR? *ESE(?)
*SRE(?) *STB? *TRG *WAI *TST?``), the SCPI error queue (``SYSTem:ERRor[:NEXT]?``,
``SYSTem:ERRor:COUNt?``, ``SYSTem:ERRor:ALL?``), the status bytes, and the plumbing to
transports: :meth:`feed` (bytes in, reply bytes out) and :meth:`open_session` (one per client
connection, each with its own input buffer). Transport-level faults from the bench's fault plan
(drop, delay, garble, silence) are handed to the transport in :class:`Reply`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from labrig.sim.bench import Bench, Fault, FloatArray
from labrig.sim.scpi import (
    STANDARD_ERRORS,
    Args,
    CommandTree,
    Context,
    HeaderPath,
    ScpiError,
    UnterminatedReply,
    iter_message,
    split_program_messages,
)

__all__ = [
    "TRANSPORT_FAULTS",
    "Reply",
    "ScpiEmulator",
    "Session",
    "esr_bit_for_error",
    "garble_bytes",
]

_log = logging.getLogger(__name__)

#: Faults the transport applies (the emulator only reports them).
TRANSPORT_FAULTS = frozenset({"drop", "delay", "garble", "silence"})

# IEEE 488.2 Standard Event Status Register bits.
ESR_OPC = 1 << 0
ESR_QYE = 1 << 2
ESR_DDE = 1 << 3
ESR_EXE = 1 << 4
ESR_CME = 1 << 5


def esr_bit_for_error(code: int) -> int:
    """The ``*ESR`` bit an error code sets: -1xx CME, -2xx EXE, -3xx and device codes DDE,
    -4xx QYE, 0 none."""
    if code == 0:
        return 0
    if -199 <= code <= -100:
        return ESR_CME
    if -299 <= code <= -200:
        return ESR_EXE
    if -499 <= code <= -400:
        return ESR_QYE
    return ESR_DDE


_FLIP_TOP_BIT = bytes(b ^ 0x80 for b in range(256))


def garble_bytes(data: bytes, terminator: bytes = b"\n") -> bytes:
    """Corrupt one reply the way a bad line would: every byte gets its top bit flipped (so it is
    no longer ASCII); the final terminator stays, so the client still reads one line."""
    if not data:
        return data
    has_term = data.endswith(terminator)
    body = data[: -len(terminator)] if has_term else data
    # a flipped 0x8A would become LF and split the line in two: keep it one line
    garbled = body.translate(_FLIP_TOP_BIT).replace(terminator, b"\xff")
    return garbled + (terminator if has_term else b"")


@dataclass(frozen=True)
class Reply:
    """What one program message produced: the reply bytes (with terminator; empty when
    nothing is to be sent) and a transport-level fault to apply to them, if one fired."""

    data: bytes
    fault: Fault | None = None


class Session:
    """One client connection to an emulator: its own input buffer, so clients never see each
    other's half-received messages. Transports create one per connection::

        session = emulator.open_session()
        for reply in session.feed_with_faults(sock.recv(65536)):
            ...
    """

    def __init__(self, emulator: ScpiEmulator) -> None:
        self.emulator = emulator
        self._buffer = bytearray()
        self._discarding = False  # dropping the rest of an over-long line
        self._overrun = False  # an overrun waits to be reported
        self._ready: list[bytes] = []  # framed messages not yet run

    def feed_with_faults(self, data: bytes) -> list[Reply]:
        """Add received bytes; run every complete message; one :class:`Reply` per message.

        Framing runs under the instrument's own lock only; each message then runs under the
        bench lock, one command at a time (see :meth:`ScpiEmulator.handle_message`), so other
        instruments answer between the commands of a long message. A line longer than
        :attr:`ScpiEmulator.max_input_bytes` is discarded up to its terminator and reported
        with the instrument's input-overrun error (:meth:`ScpiEmulator.input_overrun`).
        """
        with self.emulator.io_lock:
            self.frame(data)
            return self.run_ready()

    def frame(self, data: bytes) -> bool:
        """Add received bytes and split off the complete messages (they wait for
        :meth:`run_ready`). True when there is something to run (or an overrun to report)."""
        emulator = self.emulator
        with emulator.io_lock:
            if self._discarding:
                end = data.find(b"\n")
                if end < 0:
                    return self._overrun
                data = data[end + 1 :]
                self._discarding = False
            self._buffer += data
            self._ready.extend(split_program_messages(self._buffer))
            limit = emulator.max_input_bytes
            if limit and len(self._buffer) > limit:
                # The unterminated tail is longer than the input buffer: drop it and the rest
                # of its line, as an instrument whose input queue overflows does.
                self._buffer.clear()
                self._discarding = True
                self._overrun = True
            return bool(self._ready) or self._overrun

    def run_ready(self) -> list[Reply]:
        """Run the messages :meth:`frame` split off; one :class:`Reply` per message."""
        emulator = self.emulator
        with emulator.io_lock:
            ready, self._ready = self._ready, []
            limit = emulator.max_input_bytes
            replies = []
            for message in ready:
                if limit and len(message) > limit:
                    self._overrun = True  # arrived whole in one read, still too long to buffer
                    continue
                replies.append(emulator.process_message(message))
            if self._overrun:
                self._overrun = False
                with emulator.bench.lock:
                    emulator.input_overrun()
            return replies

    def feed(self, data: bytes) -> bytes:
        """Like :meth:`feed_with_faults` but returns the plain reply bytes (faults ignored,
        except that ``silence`` and ``drop`` replies are empty)."""
        out = bytearray()
        for reply in self.feed_with_faults(data):
            if reply.fault is None or reply.fault.kind in ("delay",):
                out += reply.data
            elif reply.fault.kind == "garble":
                out += garble_bytes(reply.data, self.emulator.terminator)
        return bytes(out)

    def clear(self) -> None:
        """Device clear: forget any half-received input."""
        with self.emulator.io_lock:
            self._buffer.clear()
            self._ready.clear()
            self._discarding = False


@dataclass
class _ErrorEntry:
    code: int
    message: str


@dataclass
class _Status:
    esr: int = 0
    ese: int = 0
    sre: int = 0
    errors: deque[_ErrorEntry] = field(default_factory=deque)


class ScpiEmulator:
    """Base of the SCPI instrument emulators; a bench :class:`~labrig.sim.bench.Part`.

    Subclasses set their state, then call ``super().__init__(name, bench)``, which registers the
    common commands, calls :meth:`register_commands` and adds the emulator to the bench (a
    private :class:`Bench` when ``bench`` is None).
    """

    terminator: ClassVar[bytes] = b"\n"
    #: How ``SYST:ERR?`` prints an entry; Keysight style (QDAC-II: ``'{code}, "{message}"'``).
    error_format: ClassVar[str] = '{code:+d},"{message}"'
    #: Error queue depth (SCPI minimum is 2; Keysight instruments keep 20).
    error_queue_size: ClassVar[int] = 20
    #: Append the device-dependent detail of a ScpiError to the queued message (``"text; detail"``).
    error_detail: ClassVar[bool] = True
    #: Bytes one line may hold before the input buffer overruns (:meth:`input_overrun`; 0 = no
    #: limit). The real buffer sizes are not documented (?): the default holds the largest
    #: upload a driver sends (a 33500B 16 M-point arb, a QDAC-II 10 M-point trace); models
    #: with small command sets set less.
    max_input_bytes: ClassVar[int] = 256 * 1024 * 1024
    #: Time the real instrument's link needs, charged to the bench clock for every message
    #: received and every reply sent: ``message_latency_s + bytes / link_bytes_per_s``. On a real
    #: rig the host waits for these transfers (an arbitrary waveform upload, a long record), so
    #: device time includes them. 0 = free (the bench's own control endpoint).
    link_bytes_per_s: ClassVar[float] = 0.0
    message_latency_s: ClassVar[float] = 0.0

    def __init__(self, name: str, bench: Bench | None = None) -> None:
        self.name = name
        self.bench = bench if bench is not None else Bench()
        self.tree = CommandTree()
        # One worker at a time per instrument: sessions of the same instrument take turns,
        # other instruments never wait for it (they share only the bench lock, per command).
        self.io_lock = threading.RLock()
        self._status = _Status()
        # Transport faults that fired on a message without a reply wait for the next reply.
        self._pending_faults: list[Fault] = []
        self._default_session = Session(self)
        self.register_common_commands()
        self.register_commands()
        self.bench.add(self)

    # ------------------------------------------------------------------ subclass hooks
    def identity(self) -> str:
        """The ``*IDN?`` reply: ``maker,model,serial,firmware``. Subclasses override."""
        return f"labrig,{type(self).__name__},0,0"

    def register_commands(self) -> None:
        """Add the model's commands to ``self.tree``. Subclasses override."""

    def reset(self) -> None:
        """``*RST``: restore the reset state. Subclasses reset their settings and call
        ``super().reset()``. Per IEEE 488.2 the error queue and status registers survive."""

    def wait_pending(self) -> None:
        """Complete pending operations (``*OPC``, ``*OPC?``, ``*WAI``); subclasses advance the
        bench clock to the end of running ramps/acquisitions here."""

    def on_bus_trigger(self) -> None:
        """``*TRG``: a bus trigger. Default: -211 trigger ignored."""
        raise ScpiError(-211)

    def on_fault(self, fault: Fault) -> None:
        """A non-transport fault fired on this instrument: ``error`` pushes its code here,
        ``drift`` steps the drift of the bench's device models."""
        if fault.kind == "error":
            self.push_error(fault.code, fault.message)
        elif fault.kind == "drift":
            self.bench.step_drift(fault.amount)

    def greeting(self) -> bytes:
        """Bytes the transports send to each client as it connects (a telnet-style banner, as
        the SR860 may send); default nothing."""
        return b""

    def input_overrun(self) -> None:
        """A line longer than :attr:`max_input_bytes` arrived: report it as the instrument does
        (SCPI -363 Input buffer overrun; the SR860 sets its INP status bit instead)."""
        self.push_error(
            -363, f"{STANDARD_ERRORS[-363]}; line longer than {self.max_input_bytes} bytes"
        )

    def self_test(self) -> int:
        """``*TST?`` result: 0 = passed."""
        return 0

    # ------------------------------------------------------------------ bench Part protocol
    def output(self, port: str, t: FloatArray) -> FloatArray:
        """Value of output ``port`` at bench times ``t``; the base instrument outputs 0."""
        return np.zeros_like(np.asarray(t, dtype=float))

    def on_trigger(self, port: str, t: float) -> None:
        """A trigger edge arrived at input ``port``; the base ignores it."""

    def snapshot(self) -> dict[str, object]:
        """The emulator's state for debugging and run records (subclasses extend)."""
        return {
            "name": self.name,
            "identity": self.identity(),
            "esr": self._status.esr,
            "errors": [(e.code, e.message) for e in self._status.errors],
        }

    # ------------------------------------------------------------------ error queue, status
    def push_error(self, code: int, message: str | None = None) -> None:
        """Queue an error and set its ``*ESR`` bit. A full queue keeps its oldest entries and
        replaces the last one with -350 Queue overflow."""
        if code == 0:
            return
        text = message if message is not None else STANDARD_ERRORS.get(code, "Error")
        errors = self._status.errors
        if len(errors) >= self.error_queue_size:
            errors[-1] = _ErrorEntry(-350, STANDARD_ERRORS[-350])
            self._status.esr |= ESR_QYE
        else:
            errors.append(_ErrorEntry(code, text))
        self._status.esr |= esr_bit_for_error(code)

    def pop_error(self) -> tuple[int, str]:
        """Oldest queued error, or ``(0, "No error")``."""
        if self._status.errors:
            e = self._status.errors.popleft()
            return e.code, e.message
        return 0, STANDARD_ERRORS[0]

    def error_count(self) -> int:
        return len(self._status.errors)

    def format_error(self, code: int, message: str) -> str:
        """One error-queue entry as ``SYST:ERR?`` prints it (quotes in the text are doubled)."""
        return self.error_format.format(code=code, message=message.replace('"', '""'))

    def push_scpi_error(self, error: ScpiError) -> None:
        """Queue a raised :class:`ScpiError` (with its detail when :attr:`error_detail`)."""
        message = error.message
        if self.error_detail and error.detail:
            message = f"{message}; {error.detail}"
        self.push_error(error.code, message)

    @property
    def esr(self) -> int:
        """Standard Event Status Register (read without clearing)."""
        return self._status.esr

    @esr.setter
    def esr(self, value: int) -> None:
        self._status.esr = int(value) & 0xFF

    @property
    def ese(self) -> int:
        return self._status.ese

    @property
    def sre(self) -> int:
        return self._status.sre

    def status_byte(self) -> int:
        """``*STB?``: bit 2 error queue not empty, bit 5 ESB, bit 6 MSS."""
        stb = 0
        if self._status.errors:
            stb |= 1 << 2
        if self._status.esr & self._status.ese:
            stb |= 1 << 5
        if stb & self._status.sre & ~(1 << 6):
            stb |= 1 << 6
        return stb

    def clear_status(self) -> None:
        """``*CLS``: empty the error queue and the event register."""
        self._status.errors.clear()
        self._status.esr = 0

    # ------------------------------------------------------------------ transport plumbing
    def open_session(self) -> Session:
        """A new client connection with its own input buffer."""
        return Session(self)

    def feed(self, data: bytes) -> bytes:
        """Feed raw bytes (any chunking) on the default session; returns the reply bytes, each
        reply message ending with :attr:`terminator`. Faults are reported, see
        :meth:`Session.feed`."""
        return self._default_session.feed(data)

    def feed_with_faults(self, data: bytes) -> list[Reply]:
        """Feed raw bytes on the default session; one :class:`Reply` per complete message."""
        return self._default_session.feed_with_faults(data)

    def process_message(self, message: bytes) -> Reply:
        """Run one complete program message with the bench's fault plan applied."""
        with self.bench.lock:
            transport_fault: Fault | None = None
            for fault in self.bench.faults.on_command(self.name, self.bench.clock.now):
                if fault.kind in TRANSPORT_FAULTS:
                    self._pending_faults.append(fault)
                else:
                    self.on_fault(fault)
            self._charge_link_time(len(message))
            data = self.handle_message(message) or b""
            self._charge_link_time(len(data), latency=False)
            # drop acts at once; the others act on the next message that has a reply
            for i, fault in enumerate(self._pending_faults):
                if fault.kind == "drop" or data:
                    transport_fault = self._pending_faults.pop(i)
                    break
            return Reply(data, transport_fault)

    def _charge_link_time(self, n_bytes: int, latency: bool = True) -> None:
        if self.link_bytes_per_s <= 0 or not self.bench.io_time:
            return
        dt = n_bytes / self.link_bytes_per_s + (self.message_latency_s if latency else 0.0)
        if dt > 0:
            self.bench.clock.advance(dt)

    def handle_message(self, message: bytes) -> bytes | None:
        """Run one complete program message (no terminator, no faults); return the reply line
        (query replies joined by ``;``, plus :attr:`terminator`) or None if nothing to send."""
        with self.bench.lock:
            replies: list[bytes] = []
            terminated = True
            path: HeaderPath | None = None
            for n, unit in enumerate(iter_message(message)):
                if n:
                    # Another instrument waiting for the bench goes first (one command each).
                    self.bench.lock.yield_to_waiters()
                if unit.error is not None:
                    self.push_scpi_error(unit.error)
                    path = None
                    continue
                if not unit.is_query:
                    # A setting may change what the bench's signals will be from now on.
                    self.bench.generation += 1
                try:
                    handler, ctx = self.tree.resolve(unit.header, unit.is_query, path)
                    path = ctx.path
                    result = handler(ctx, Args(unit.params, unit.header))
                except ScpiError as error:
                    self.push_scpi_error(error)
                    path = None
                    continue
                except (OverflowError, ValueError) as exc:
                    # An argument too large for the handler's arithmetic (inf as an integer, a
                    # 5000-digit number): out of range, as the instrument reports it.
                    self.push_error(-222, f"{STANDARD_ERRORS[-222]}; {exc}")
                    path = None
                    continue
                except Exception as exc:
                    # A bug in a handler must not kill the transport thread: report it the way
                    # an instrument reports an internal fault, and log the traceback.
                    _log.exception("%s: handler for %r failed", self.name, unit.header)
                    self.push_error(-300, f"Device-specific error; {type(exc).__name__}: {exc}")
                    path = None
                    continue
                if unit.is_query:
                    terminated = not isinstance(result, UnterminatedReply)
                    if isinstance(result, str):
                        replies.append(result.encode("latin-1", errors="replace"))
                    elif isinstance(result, bytes | bytearray):
                        replies.append(bytes(result))
                    else:
                        replies.append(str(result).encode("latin-1", errors="replace"))
            if not replies:
                return None
            body = b";".join(replies)
            # A block sent without a terminator (SR860 CAPTUREGET?) ends the reply when it is
            # the last one of the message.
            return body + self.terminator if terminated else body

    # ------------------------------------------------------------------ common commands
    def register_common_commands(self) -> None:
        """Register the IEEE 488.2 common commands and the SCPI error queue. Subclasses that
        differ (SR860: no SYST:ERR) remove or replace entries in :meth:`register_commands`."""
        add = self.tree.add
        add("*IDN", query=self._q_idn)
        add("*RST", write=self._w_rst)
        add("*CLS", write=self._w_cls)
        add("*OPC", write=self._w_opc, query=self._q_opc)
        add("*ESR", query=self._q_esr)
        add("*ESE", write=self._w_ese, query=self._q_ese)
        add("*SRE", write=self._w_sre, query=self._q_sre)
        add("*STB", query=self._q_stb)
        add("*TRG", write=self._w_trg)
        add("*WAI", write=self._w_wai)
        add("*TST", query=self._q_tst)
        add("SYSTem:ERRor[:NEXT]", query=self._q_err_next)
        add("SYSTem:ERRor:COUNt", query=self._q_err_count)
        add("SYSTem:ERRor:ALL", query=self._q_err_all)

    def _q_idn(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return self.identity()

    def _w_rst(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        self.reset()

    def _w_cls(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        self.clear_status()

    def _w_opc(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        self.wait_pending()
        self._status.esr |= ESR_OPC

    def _q_opc(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        self.wait_pending()
        return "1"

    def _q_esr(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        value, self._status.esr = self._status.esr, 0
        return str(value)

    def _w_ese(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self._status.ese = args.int(0, 0, 255)

    def _q_ese(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return str(self._status.ese)

    def _w_sre(self, ctx: Context, args: Args) -> None:
        args.require(1, 1)
        self._status.sre = args.int(0, 0, 255) & ~(1 << 6)

    def _q_sre(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return str(self._status.sre)

    def _q_stb(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return str(self.status_byte())

    def _w_trg(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        self.on_bus_trigger()

    def _w_wai(self, ctx: Context, args: Args) -> None:
        args.require(0, 0)
        self.wait_pending()

    def _q_tst(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return str(self.self_test())

    def _q_err_next(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return self.format_error(*self.pop_error())

    def _q_err_count(self, ctx: Context, args: Args) -> str:
        args.require(0, 0)
        return str(self.error_count())

    def _q_err_all(self, ctx: Context, args: Args) -> str:
        """All queued errors, oldest first, comma-separated (the queue is emptied); the
        no-error entry when empty."""
        args.require(0, 0)
        entries = [self.format_error(*self.pop_error())]
        while self._status.errors:
            entries.append(self.format_error(*self.pop_error()))
        return ",".join(entries)
