"""The virtual bench on the network: one TCP socket server per instrument on 127.0.0.1.

Real PyVISA reaches an emulator through pyvisa-py exactly as it reaches a LAN instrument's raw
socket port (``TCPIP0::127.0.0.1::<port>::SOCKET``)::

    with BenchServer({"awg": awg, "scope": scope}) as server:
        rm = pyvisa.ResourceManager("@py")
        awg_res = rm.open_resource(server.resources()["awg"],
                                   read_termination="\\n", write_termination="\\n")
        awg_res.query("*IDN?")

Ports are ephemeral (the OS picks free ones) unless ``base_port`` is given, then instrument ``i``
listens on ``base_port + i``. Each instrument accepts several clients; each client has its own
input buffer (an emulator :class:`~labrig.sim.emulator.Session`) and its own thread.

Instruments are independent: each frames its input under its own lock and runs its commands
under the bench's fair lock one at a time, so a busy instrument delays another by at most one
command (see :class:`~labrig.sim.bench.BenchLock`).

Arrival order. A client that writes to the DAC and then to the bench endpoint (``*trg`` then
``SIM:WAIT 0.3``) sent them in that order, but two server threads may run them in either order,
and bench time makes the difference visible (the trigger lands 0.3 s late). So every message is
stamped with the time the kernel received its last byte (``SO_TIMESTAMPNS``; the time of the
read where that is missing), and before it runs it waits (:class:`_Sequencer`, at most
``_MAX_GATE_S``) until no other connection that is not already running holds an earlier
message, received or still unread in its socket; it then queues for the bench lock. A sequential
client's commands thus run in the order it sent them, whatever the threads do, and a seeded run
gives the same numbers over TCP as in process.

Accepted sockets get ``TCP_NODELAY`` (no Nagle hold-back of small replies) and, on Linux,
``TCP_QUICKACK``, re-armed after every ``recv`` because the kernel clears it: without both, a
write followed by a query costs ~40 ms of delayed-ACK/Nagle interplay per round trip.

Bench faults act on the wire: ``drop`` closes that client's connection, ``delay`` sleeps before
sending the reply, ``garble`` corrupts the reply bytes (terminator kept), ``silence`` sends
nothing.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import itertools
import selectors
import socket
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType

from labrig.sim.bench import BenchLock
from labrig.sim.emulator import Reply, ScpiEmulator, Session, garble_bytes

__all__ = ["BenchServer", "serve_forever"]

_RECV_SIZE = 1 << 20
_POLL_S = 0.2
# Linux's SO_TIMESTAMPNS (Python does not export it everywhere); None where unsupported.
_SO_TIMESTAMPNS: int | None = getattr(
    socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None
)
_ANCILLARY = socket.CMSG_SPACE(16)
# Read up to the first line feed when it comes within this many bytes: each message then gets
# the arrival time of its own last byte. Large uploads are read in big pieces instead.
_SPLIT_BYTES = 1 << 16
# The longest a message waits for earlier arrivals on other connections (wall seconds): a
# safety net only; the order settles in microseconds unless the interpreter is starved.
_MAX_GATE_S = 0.5
_GATE_POLL_S = 0.005


def _pending_bytes(sock: socket.socket) -> int:
    """Bytes received by the kernel and not yet read (0 if the socket is gone)."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    except (OSError, ValueError):
        return 0
    return buf[0]


class _Conn:
    """One client connection as the sequencer sees it."""

    # IDLE: reading (its socket may hold unread bytes); HOLDING: bytes read, not yet stamped
    # into the gate; GATED: a message with ``stamp`` waits in the gate; RUNNING: its messages
    # hold a place in the bench lock's queue (or run).
    IDLE, HOLDING, GATED, RUNNING = 0, 1, 2, 3

    def __init__(self, sock: socket.socket, number: int, instrument: str) -> None:
        self.sock = sock
        self.number = number
        self.instrument = instrument
        self.state = _Conn.IDLE
        self.stamp: tuple[int, int] = (0, number)


class _Sequencer:
    """Runs messages from different connections in the order the kernel received them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._conns: set[_Conn] = set()
        self._numbers = itertools.count()
        self.timeouts = 0  # gates left after _MAX_GATE_S without the order settled

    def register(self, sock: socket.socket, instrument: str) -> _Conn:
        with self._cond:
            conn = _Conn(sock, next(self._numbers), instrument)
            self._conns.add(conn)
            return conn

    def unregister(self, conn: _Conn) -> None:
        with self._cond:
            self._conns.discard(conn)
            self._cond.notify_all()

    def _must_wait(self, me: _Conn) -> bool:
        for other in self._conns:
            if other.instrument == me.instrument:
                continue  # one instrument's clients take turns on its own lock
            if other.state == _Conn.HOLDING:
                return True  # read a moment ago: its stamp is coming
            if other.state == _Conn.GATED and other.stamp < me.stamp:
                return True
            if other.state == _Conn.IDLE and _pending_bytes(other.sock) > 0:
                return True  # its reader stamps it in a moment: earlier or later than us?
        return False

    def gate(self, me: _Conn, stamp_ns: int, lock: BenchLock) -> None:
        """Wait for the earlier arrivals, then take a place in the bench lock's queue."""
        deadline = time.monotonic() + _MAX_GATE_S
        with self._cond:
            me.state, me.stamp = _Conn.GATED, (stamp_ns, me.number)
            self._cond.notify_all()
            while self._must_wait(me):
                if time.monotonic() >= deadline:
                    self.timeouts += 1
                    break
                self._cond.wait(_GATE_POLL_S)
            lock.reserve()
            me.state = _Conn.RUNNING
            self._cond.notify_all()

    def holding(self, me: _Conn) -> None:
        """``me`` is about to read bytes the kernel holds: they stop showing as pending."""
        with self._cond:
            me.state = _Conn.HOLDING

    def done(self, me: _Conn) -> None:
        with self._cond:
            me.state = _Conn.IDLE
            self._cond.notify_all()


def _enable_stamps(sock: socket.socket) -> bool:
    if _SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _recv_stamped(
    sock: socket.socket, stamped: bool, before_read: Callable[[], None]
) -> tuple[bytes, int]:
    """Read what has arrived (up to the first line feed when it is near); return it with the
    kernel's arrival time of its last byte in ns (the read time where stamps are missing).
    ``before_read`` runs once bytes are there and before they leave the kernel."""
    peek = sock.recv(_RECV_SIZE, socket.MSG_PEEK)
    if not peek:
        return b"", 0
    before_read()
    lf = peek.find(b"\n", 0, _SPLIT_BYTES)
    size = lf + 1 if lf >= 0 else len(peek)
    if not stamped:
        return sock.recv(size), time.time_ns()
    data, ancillary, _flags, _addr = sock.recvmsg(size, _ANCILLARY)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= 16:
            seconds, nanoseconds = struct.unpack("qq", payload[:16])
            return data, seconds * 1_000_000_000 + nanoseconds
    return data, time.time_ns()


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _quickack(sock)


def _quickack(sock: socket.socket) -> None:
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


class BenchServer:
    """TCP socket servers for a set of emulators (name -> emulator, or an iterable of them).

    Use as a context manager, or call :meth:`start` and :meth:`close`. :meth:`resources` gives
    the VISA resource name of each instrument. ``close`` disconnects every client and joins all
    threads within ``join_timeout_s``.
    """

    def __init__(
        self,
        emulators: Mapping[str, ScpiEmulator] | Iterable[ScpiEmulator],
        host: str = "127.0.0.1",
        base_port: int = 0,
        *,
        join_timeout_s: float = 5.0,
    ) -> None:
        if isinstance(emulators, Mapping):
            self.emulators: dict[str, ScpiEmulator] = dict(emulators)
        else:
            self.emulators = {emu.name: emu for emu in emulators}
        self.host = host
        self.base_port = base_port
        self.join_timeout_s = join_timeout_s
        self._listeners: dict[str, socket.socket] = {}
        self._ports: dict[str, int] = {}
        self._stop = threading.Event()
        self._clients: set[socket.socket] = set()
        self._client_threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._accept_thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._sequencer = _Sequencer()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> BenchServer:
        """Bind and listen on every instrument's port and start accepting. Returns self."""
        if self._accept_thread is not None:
            return self
        try:
            for i, name in enumerate(self.emulators):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                port = self.base_port + i if self.base_port else 0
                sock.bind((self.host, port))
                sock.listen(16)
                sock.setblocking(False)
                self._listeners[name] = sock
                self._ports[name] = sock.getsockname()[1]
        except OSError:
            self._close_listeners()
            raise
        self._wake_r, self._wake_w = socket.socketpair()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="labrig-bench-accept", daemon=True
        )
        self._accept_thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, disconnect all clients, join the threads (bounded wait)."""
        self._stop.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(self.join_timeout_s)
        with self._lock:
            clients = list(self._clients)
            threads = list(self._client_threads)
        for sock in clients:
            # shutdown wakes a thread blocked in recv on this socket
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(self.join_timeout_s)
        self._close_listeners()
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._wake_r = self._wake_w = None

    def _close_listeners(self) -> None:
        for sock in self._listeners.values():
            sock.close()
        self._listeners.clear()

    def __enter__(self) -> BenchServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ addresses
    def ports(self) -> dict[str, int]:
        """Instrument name -> TCP port (after :meth:`start`)."""
        return dict(self._ports)

    def resources(self) -> dict[str, str]:
        """Instrument name -> ``TCPIP0::<host>::<port>::SOCKET``."""
        return {name: f"TCPIP0::{self.host}::{port}::SOCKET" for name, port in self._ports.items()}

    @property
    def client_count(self) -> int:
        """Clients connected right now."""
        with self._lock:
            return len(self._clients)

    # ------------------------------------------------------------------ threads
    def _accept_loop(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            for name, sock in self._listeners.items():
                selector.register(sock, selectors.EVENT_READ, name)
            assert self._wake_r is not None
            selector.register(self._wake_r, selectors.EVENT_READ, None)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=_POLL_S):
                    if key.data is None:
                        continue  # wake-up: the loop condition sees the stop flag
                    listener = key.fileobj
                    assert isinstance(listener, socket.socket)
                    try:
                        conn, _addr = listener.accept()
                    except (BlockingIOError, OSError):
                        continue
                    self._start_client(key.data, conn)
        finally:
            selector.close()

    def _start_client(self, name: str, conn: socket.socket) -> None:
        conn.setblocking(True)
        _tune(conn)
        thread = threading.Thread(
            target=self._serve_client,
            args=(self.emulators[name], conn),
            name=f"labrig-bench-{name}",
            daemon=True,
        )
        with self._lock:
            if self._stop.is_set():
                conn.close()
                return
            self._clients.add(conn)
            self._client_threads.add(thread)
        thread.start()

    def _serve_client(self, emulator: ScpiEmulator, conn: socket.socket) -> None:
        session = emulator.open_session()
        sequencer = self._sequencer
        me = sequencer.register(conn, emulator.name)
        stamped = _enable_stamps(conn)
        try:
            greeting = getattr(emulator, "greeting", None)
            if callable(greeting):
                banner = greeting()
                if isinstance(banner, bytes) and banner:
                    conn.sendall(banner)
            while not self._stop.is_set():
                try:
                    data, stamp = _recv_stamped(conn, stamped, lambda: sequencer.holding(me))
                except OSError:
                    break
                if not data:
                    break
                _quickack(conn)
                if not self._answer(emulator, self._run(emulator, session, me, data, stamp), conn):
                    break
        finally:
            self._sequencer.unregister(me)
            with self._lock:
                self._clients.discard(conn)
                self._client_threads.discard(threading.current_thread())
            with contextlib.suppress(OSError):
                conn.close()

    def _run(
        self, emulator: ScpiEmulator, session: Session, me: _Conn, data: bytes, stamp: int
    ) -> list[Reply]:
        """Run the messages ``data`` completes, in arrival order with the other connections."""
        lock = emulator.bench.lock
        with emulator.io_lock:  # this instrument's other clients wait here, not in the gate
            if not session.frame(data):
                self._sequencer.done(me)  # an incomplete message: nothing to order yet
                return []
            self._sequencer.gate(me, stamp, lock)
            try:
                return session.run_ready()
            finally:
                lock.cancel_reservation()
                self._sequencer.done(me)

    def _answer(self, emulator: ScpiEmulator, replies: list[Reply], conn: socket.socket) -> bool:
        """Send the replies, applying faults. False when the connection is to be closed."""
        out = bytearray()
        for reply in replies:
            fault = reply.fault
            if fault is None:
                out += reply.data
            elif fault.kind == "drop":
                return False
            elif fault.kind == "delay":
                if out:
                    conn.sendall(out)
                    out.clear()
                if self._stop.wait(fault.seconds):
                    return False
                out += reply.data
            elif fault.kind == "garble":
                out += garble_bytes(reply.data, emulator.terminator)
            # "silence": nothing is sent
        if out:
            try:
                conn.sendall(out)
            except OSError:
                return False
        return True


def serve_forever(
    emulators: Mapping[str, ScpiEmulator] | Iterable[ScpiEmulator] | BenchServer,
    stop_event: threading.Event,
    *,
    host: str = "127.0.0.1",
    base_port: int = 0,
    on_ready: Callable[[dict[str, str]], None] | None = None,
) -> None:
    """Serve until ``stop_event`` is set (for the CLI). ``on_ready``, if callable, gets the
    name -> resource mapping once the ports are listening."""
    server = (
        emulators if isinstance(emulators, BenchServer) else BenchServer(emulators, host, base_port)
    )
    with server:
        if on_ready is not None:
            on_ready(server.resources())
        while not stop_event.wait(_POLL_S):
            pass
