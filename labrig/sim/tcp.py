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
input buffer (an emulator :class:`~labrig.sim.emulator.Session`) while the bench lock
serialises the commands of all of them.

Accepted sockets get ``TCP_NODELAY`` (no Nagle hold-back of small replies) and, on Linux,
``TCP_QUICKACK``, re-armed after every ``recv`` because the kernel clears it: without both, a
write followed by a query costs ~40 ms of delayed-ACK/Nagle interplay per round trip.

Bench faults act on the wire: ``drop`` closes that client's connection, ``delay`` sleeps before
sending the reply, ``garble`` corrupts the reply bytes (terminator kept), ``silence`` sends
nothing.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType

from labrig.sim.emulator import Reply, ScpiEmulator, garble_bytes

__all__ = ["BenchServer", "serve_forever"]

_RECV_SIZE = 1 << 20
_POLL_S = 0.2


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
        try:
            greeting = getattr(emulator, "greeting", None)
            if callable(greeting):
                banner = greeting()
                if isinstance(banner, bytes) and banner:
                    conn.sendall(banner)
            while not self._stop.is_set():
                try:
                    data = conn.recv(_RECV_SIZE)
                except OSError:
                    break
                if not data:
                    break
                _quickack(conn)
                if not self._answer(emulator, session.feed_with_faults(data), conn):
                    break
        finally:
            with self._lock:
                self._clients.discard(conn)
                self._client_threads.discard(threading.current_thread())
            with contextlib.suppress(OSError):
                conn.close()

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
