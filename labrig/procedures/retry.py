"""Retrying instrument calls: a timeout, a dropped connection or a garbled reply is tried again.

:func:`retry` is the one retry loop of labrig; :meth:`labrig.procedures.base.Procedure.retry`
binds it to a run's logging and stop flag, and the runner uses it for its own instrument calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from labrig.errors import ProcedureError

try:
    from pyvisa.errors import VisaIOError
except ImportError:  # pyvisa is a dependency, but the runner must not need it to load
    VisaIOError = None  # type: ignore[assignment, misc]

__all__ = ["RETRYABLE_ERRORS", "RetriesExhaustedError", "RunAborted", "retry"]

T = TypeVar("T")
_logger = logging.getLogger("labrig.procedures")


class RunAborted(ProcedureError):
    """Raise from a procedure to end the run safely with status 'aborted' and this reason.

    Use it for conditions the procedure detects and handles (an instrument that stays
    unreachable, an output that saturates for good); anything else that escapes ``execute()``
    ends the run as 'failed'.
    """


# A garbled reply surfaces as a UnicodeDecodeError from PyVISA: a transport fault, retried.
# A connection the other end dropped surfaces from a socket as the built-in
# ConnectionResetError / BrokenPipeError / ConnectionAbortedError (all ConnectionError, as is
# InstrumentConnectionError) and from VISA as a VisaIOError (VI_ERROR_CONN_LOST, ...).
# (LimitError, a ValueError, is deliberately not among these.)
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    UnicodeDecodeError,
)
if VisaIOError is not None:
    RETRYABLE_ERRORS = (*RETRYABLE_ERRORS, VisaIOError)


# ----------------------------------------------------------------------------------- retry


class RetriesExhaustedError(RunAborted):
    """An instrument call kept failing after every retry; the run aborts safely."""


def retry(
    call: Callable[[], T],
    *,
    attempts: int = 3,
    backoff_s: float = 0.1,
    max_backoff_s: float = 5.0,
    retry_on: tuple[type[BaseException], ...] = RETRYABLE_ERRORS,
    reconnect: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
    what: str = "",
) -> T:
    """Call ``call()``; on a timeout or dropped connection, wait and try again.

    Up to ``attempts`` calls in all, waiting ``backoff_s``, then twice as long each time (at most
    ``max_backoff_s``). Only ``retry_on`` errors are retried (by default
    ``ConnectionError`` (``InstrumentConnectionError``, ``ConnectionResetError``,
    ``BrokenPipeError``), ``TimeoutError`` and pyvisa's ``VisaIOError``); anything else,
    an ``InstrumentReportedError`` or a ``LimitError`` say, propagates at once. ``reconnect`` is
    called before each new attempt (re-open the session). The wait ends early if
    ``should_stop()`` turns true, raising :class:`RunAborted`.

    Raises :class:`RetriesExhaustedError` (a ``RunAborted``: the runner ends the run as
    'aborted', with this message as the reason) naming ``what``, the attempts and the last error.
    """
    if attempts < 1:
        raise ValueError(f"retry: attempts={attempts} must be >= 1")
    if backoff_s < 0 or max_backoff_s < 0:
        raise ValueError(f"retry: back-off {backoff_s} s / max {max_backoff_s} s must be >= 0")
    label = what or getattr(call, "__qualname__", None) or repr(call)
    delay = backoff_s
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except retry_on as exc:
            last = exc
            if attempt == attempts:
                break
            message = (
                f"{label}: attempt {attempt}/{attempts} failed ({type(exc).__name__}: {exc}); "
                f"retrying in {delay:.3g} s"
            )
            (log or _logger.warning)(message)
            deadline = time.monotonic() + delay
            while (remaining := deadline - time.monotonic()) > 0:
                if should_stop is not None and should_stop():
                    raise RunAborted(f"{label}: stop requested while retrying") from exc
                time.sleep(min(0.05, remaining))
            delay = min(max(delay * 2.0, 1e-3), max_backoff_s)
            if reconnect is not None:
                try:
                    reconnect()
                except retry_on as reconnect_exc:
                    last = reconnect_exc
                    (log or _logger.warning)(
                        f"{label}: reconnect failed ({type(reconnect_exc).__name__}: "
                        f"{reconnect_exc})"
                    )
    raise RetriesExhaustedError(
        f"{label}: gave up after {attempts} attempts; last error {type(last).__name__}: {last}"
    ) from last
