"""An in-process PyVISA backend: PyVISA (and PyMeasure) talk to bench emulators without sockets.

Drivers see an ordinary ``TCPIP0::<name>.labrig::5025::SOCKET`` resource, so the same driver
code runs here, over the TCP bench server and on hardware::

    rm, resources = make_resource_manager({"awg": awg, "scope": scope})
    awg_res = rm.open_resource(resources["awg"], read_termination="\\n", write_termination="\\n")
    awg_res.query("*IDN?")

    # PyMeasure takes the library object as ``visa_library``
    lib = make_visa_library({"awg": awg})
    instrument = Instrument(resource_name(awg.name), "AWG", visa_library=lib)

Every write runs the complete messages at once (under the bench lock); the replies wait in the
session's output queue for reads. Because nothing can arrive later except a reply held back by a
``delay`` fault, a read with nothing queued fails with ``VI_ERROR_TMO`` at once instead of
sleeping through the timeout. Bench faults act as on the wire: ``drop`` makes every later read
and write fail with ``VI_ERROR_CONN_LOST``, ``delay`` holds the reply back (a read that would
wait longer than the timeout fails with ``VI_ERROR_TMO``), ``garble`` corrupts it, ``silence``
discards it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, SupportsInt

import pyvisa
from pyvisa import attributes, constants, highlevel, rname
from pyvisa.constants import StatusCode
from pyvisa.typing import VISAEventContext, VISARMSession, VISASession
from pyvisa.util import LibraryPath

from labrig.sim.emulator import ScpiEmulator, Session, garble_bytes

__all__ = [
    "InProcessVisaLibrary",
    "make_resource_manager",
    "make_visa_library",
    "resource_name",
]

_RESOURCE_PORT = 5025


def resource_name(emulator_name: str) -> str:
    """The in-process resource name of the emulator called ``emulator_name``."""
    return f"TCPIP0::{emulator_name}.labrig::{_RESOURCE_PORT}::SOCKET"


def _canonical(name: str) -> str:
    """Resource names compare after PyVISA's normalisation (board number, case of the host)."""
    return str(rname.parse_resource_name(name)).lower()


@dataclass
class _Chunk:
    ready_at: float  # time.monotonic() when the reply may be read (delay faults)
    data: bytes
    offset: int = 0  # read position: big blocks are read in many pieces without copying


class _InProcSession:
    """One opened resource: an emulator session, its pending replies and VISA attributes."""

    def __init__(self, rm_session: VISARMSession, name: str, emulator: ScpiEmulator) -> None:
        self.emulator = emulator
        self.link: Session = emulator.open_session()
        self.replies: deque[_Chunk] = deque()
        self.connection_lost = False
        self.io_lock = threading.Lock()
        parsed = rname.parse_resource_name(name)
        self.attrs: dict[int, Any] = {
            constants.ResourceAttribute.resource_manager_session: rm_session,
            constants.ResourceAttribute.resource_name: str(parsed),
            constants.ResourceAttribute.resource_class: parsed.resource_class,
            constants.ResourceAttribute.interface_type: parsed.interface_type_const,
            constants.ResourceAttribute.interface_number: 0,
            constants.ResourceAttribute.tcpip_address: getattr(parsed, "host_address", ""),
            constants.ResourceAttribute.tcpip_port: _RESOURCE_PORT,
        }
        # The read-termination byte, or None: cached because PyVISA reads binary blocks in one
        # call per termination byte found in the data, so this path must stay cheap.
        self.termchar: int | None = None
        greeting = getattr(emulator, "greeting", None)
        if callable(greeting):
            banner = greeting()
            if isinstance(banner, bytes) and banner:
                self.replies.append(_Chunk(time.monotonic(), banner))

    def attribute(self, attribute: int) -> tuple[Any, StatusCode]:
        if attribute in self.attrs:
            return self.attrs[attribute], StatusCode.success
        attr = attributes.AttributesByID.get(attribute)
        if attr is None:
            return 0, StatusCode.error_nonsupported_attribute
        return attr.default, StatusCode.success

    def set_attribute(self, attribute: int, state: Any) -> None:
        self.attrs[attribute] = state
        if attribute in (
            constants.ResourceAttribute.termchar,
            constants.ResourceAttribute.termchar_enabled,
        ):
            enabled = self.attribute(constants.ResourceAttribute.termchar_enabled)[0]
            char = self.attribute(constants.ResourceAttribute.termchar)[0]
            self.termchar = int(char) & 0xFF if enabled else None

    def timeout_s(self) -> float | None:
        tmo = self.attribute(constants.ResourceAttribute.timeout_value)[0]
        if tmo is None or tmo == constants.VI_TMO_INFINITE:
            return None
        return max(0.0, float(tmo) / 1000.0)

    def write(self, data: bytes) -> tuple[int, StatusCode]:
        if self.connection_lost:
            return 0, StatusCode.error_connection_lost
        now = time.monotonic()
        for reply in self.link.feed_with_faults(data):
            fault = reply.fault
            if fault is None:
                if reply.data:
                    self.replies.append(_Chunk(now, reply.data))
            elif fault.kind == "drop":
                self.connection_lost = True
                self.replies.clear()
                break
            elif fault.kind == "delay":
                self.replies.append(_Chunk(now + fault.seconds, reply.data))
            elif fault.kind == "garble":
                garbled = garble_bytes(reply.data, self.emulator.terminator)
                self.replies.append(_Chunk(now, garbled))
            # "silence": the reply is never sent
        return len(data), StatusCode.success

    def read(self, count: int) -> tuple[bytes, StatusCode]:
        if self.connection_lost:
            return b"", StatusCode.error_connection_lost
        if not self.replies:
            # In-process, nothing can arrive later: fail now rather than sleep the timeout.
            return b"", StatusCode.error_timeout
        chunk = self.replies[0]
        wait = chunk.ready_at - time.monotonic()
        if wait > 0:
            timeout = self.timeout_s()
            if timeout is not None and wait > timeout:
                time.sleep(timeout)
                return b"", StatusCode.error_timeout
            time.sleep(wait)
        end = min(len(chunk.data), chunk.offset + count)
        status = StatusCode.success_max_count_read
        if self.termchar is not None:
            at = chunk.data.find(self.termchar, chunk.offset, end)
            if at >= 0:
                end = at + 1
                status = StatusCode.success_termination_character_read
        piece = chunk.data[chunk.offset : end]
        chunk.offset = end
        if end >= len(chunk.data):
            # the whole reply message is out: that is the END indicator
            self.replies.popleft()
            if status != StatusCode.success_termination_character_read:
                status = StatusCode.success
        return piece, status

    def clear(self) -> None:
        self.replies.clear()
        self.link.clear()


class InProcessVisaLibrary(highlevel.VisaLibraryBase):
    """A PyVISA library whose resources are bench emulators in this process.

    Build it with :func:`make_visa_library` (or :meth:`bind`); pass it to
    ``pyvisa.ResourceManager(lib)`` or to PyMeasure as ``visa_library=lib``.
    """

    _instance_ids = itertools.count(1)
    emulators: dict[str, ScpiEmulator]
    sessions: dict[int, _InProcSession]

    @staticmethod
    def get_library_paths() -> tuple[LibraryPath, ...]:
        return (LibraryPath("labrig-inprocess"),)

    @staticmethod
    def get_debug_info() -> dict[str, str]:
        return {"backend": "labrig in-process virtual bench"}

    def _init(self) -> None:
        self.emulators = {}
        self.sessions = {}
        self._rm_sessions: set[int] = set()
        self._next_session = itertools.count(1000)
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def bind(cls, emulators: Mapping[str, ScpiEmulator]) -> InProcessVisaLibrary:
        """A new library serving ``emulators`` (name -> emulator) as
        ``TCPIP0::<name>.labrig::5025::SOCKET``."""
        # PyVISA caches libraries by path: a unique path gives each bench its own library.
        lib = cls(f"labrig-inprocess-{next(cls._instance_ids)}")
        assert isinstance(lib, InProcessVisaLibrary)
        lib.emulators = {_canonical(resource_name(name)): emu for name, emu in emulators.items()}
        lib._names = {name: resource_name(name) for name in emulators}
        return lib

    def resources(self) -> dict[str, str]:
        """Emulator name -> resource name."""
        return dict(self._names)

    def _new_handle(self) -> int:
        with self._lock:
            return next(self._next_session)

    def _session(self, session: Any) -> _InProcSession | None:
        return self.sessions.get(int(session)) if session is not None else None

    # ------------------------------------------------------------------ resource manager
    def open_default_resource_manager(self) -> tuple[VISARMSession, StatusCode]:
        handle = self._new_handle()
        self._rm_sessions.add(handle)
        return VISARMSession(handle), StatusCode.success

    def list_resources(self, session: VISARMSession, query: str = "?*::INSTR") -> tuple[str, ...]:
        return tuple(rname.filter(list(self.resources().values()), query))

    def open(
        self,
        session: VISARMSession,
        resource_name: str,
        access_mode: constants.AccessModes = constants.AccessModes.no_lock,
        open_timeout: SupportsInt = constants.VI_TMO_IMMEDIATE,
    ) -> tuple[VISASession, StatusCode]:
        try:
            key = _canonical(resource_name)
        except rname.InvalidResourceName:
            return VISASession(0), self.handle_return_value(
                None, StatusCode.error_invalid_resource_name
            )
        emulator = self.emulators.get(key)
        if emulator is None:
            return VISASession(0), self.handle_return_value(
                None, StatusCode.error_resource_not_found
            )
        handle = self._new_handle()
        self.sessions[handle] = _InProcSession(session, resource_name, emulator)
        return VISASession(handle), StatusCode.success

    def close(self, session: VISASession | VISARMSession | VISAEventContext) -> StatusCode:
        handle = int(session)
        if handle in self._rm_sessions:
            self._rm_sessions.discard(handle)
            # Forget the library in PyVISA's cache so a closed bench can be collected.
            registry = highlevel.VisaLibraryBase._registry
            for key, lib in list(registry.items()):
                if lib is self:
                    del registry[key]
            return StatusCode.success
        if self.sessions.pop(handle, None) is None:
            return StatusCode.error_invalid_object
        return StatusCode.success

    # ------------------------------------------------------------------ message I/O
    def write(self, session: VISASession, data: bytes) -> tuple[int, StatusCode]:
        sess = self._session(session)
        if sess is None:
            return 0, self.handle_return_value(session, StatusCode.error_invalid_object)
        with sess.io_lock:
            count, status = sess.write(bytes(data))
        return count, self.handle_return_value(session, status)

    def read(self, session: VISASession, count: int) -> tuple[bytes, StatusCode]:
        sess = self._session(session)
        if sess is None:
            return b"", self.handle_return_value(session, StatusCode.error_invalid_object)
        with sess.io_lock:
            data, status = sess.read(int(count))
        if status < 0:
            self.handle_return_value(session, status)  # raises VisaIOError
        return data, status

    def clear(self, session: VISASession) -> StatusCode:
        sess = self._session(session)
        if sess is None:
            return self.handle_return_value(session, StatusCode.error_invalid_object)
        with sess.io_lock:
            sess.clear()
        return StatusCode.success

    def flush(self, session: VISASession, mask: constants.BufferOperation) -> StatusCode:
        sess = self._session(session)
        if sess is None:
            return self.handle_return_value(session, StatusCode.error_invalid_object)
        discard_read = constants.BufferOperation.discard_read_buffer
        if int(mask) & int(discard_read):
            with sess.io_lock:
                sess.replies.clear()
        return StatusCode.success

    def read_stb(self, session: VISASession) -> tuple[int, StatusCode]:
        sess = self._session(session)
        if sess is None:
            return 0, self.handle_return_value(session, StatusCode.error_invalid_object)
        with sess.emulator.bench.lock:
            return sess.emulator.status_byte(), StatusCode.success

    def assert_trigger(
        self, session: VISASession, protocol: constants.TriggerProtocol
    ) -> StatusCode:
        """A device trigger (GPIB GET) acts like ``*TRG``."""
        sess = self._session(session)
        if sess is None:
            return self.handle_return_value(session, StatusCode.error_invalid_object)
        with sess.io_lock:
            sess.write(b"*TRG" + sess.emulator.terminator)
        return StatusCode.success

    # ------------------------------------------------------------------ attributes, events
    def get_attribute(
        self,
        session: VISASession | VISARMSession | VISAEventContext,
        attribute: constants.ResourceAttribute | constants.EventAttribute,
    ) -> tuple[Any, StatusCode]:
        sess = self._session(session)
        if sess is None:
            return 0, StatusCode.error_invalid_object
        return sess.attribute(int(attribute))

    def set_attribute(
        self,
        session: VISASession | VISARMSession | VISAEventContext,
        attribute: constants.ResourceAttribute | constants.EventAttribute,
        attribute_state: Any,
    ) -> StatusCode:
        sess = self._session(session)
        if sess is None:
            return StatusCode.error_invalid_object
        sess.set_attribute(int(attribute), attribute_state)
        return StatusCode.success

    def disable_event(self, session: Any, event_type: Any, mechanism: Any) -> StatusCode:
        return StatusCode.success

    def discard_events(self, session: Any, event_type: Any, mechanism: Any) -> StatusCode:
        return StatusCode.success

    def lock(
        self, session: Any, lock_type: Any, timeout: Any, requested_key: Any = None
    ) -> tuple[str, StatusCode]:
        return "", StatusCode.success

    def unlock(self, session: Any) -> StatusCode:
        return StatusCode.success


def make_visa_library(emulators: Mapping[str, ScpiEmulator]) -> InProcessVisaLibrary:
    """A PyVISA library object serving ``emulators`` (name -> emulator) in this process."""
    return InProcessVisaLibrary.bind(emulators)


def make_resource_manager(
    emulators: Mapping[str, ScpiEmulator],
) -> tuple[pyvisa.ResourceManager, dict[str, str]]:
    """A ResourceManager over ``emulators``, and emulator name -> resource name.

    Close the manager (``rm.close()``) when done; that also releases the library.
    """
    lib = make_visa_library(emulators)
    return pyvisa.ResourceManager(lib), lib.resources()
