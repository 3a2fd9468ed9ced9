"""labrig's typed errors. Instrument-level errors live in :mod:`instruments.errors`."""

from __future__ import annotations

from instruments.errors import (
    InstrumentConnectionError,
    InstrumentReportedError,
    LimitError,
)


class StationError(ValueError):
    """A station file is invalid: names the file, the key and what is wrong."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: [{key}]" if key else source
        super().__init__(f"{where}: {problem}")


class ProcedureError(RuntimeError):
    """A procedure could not run or aborted for a stated reason."""


__all__ = [
    "InstrumentConnectionError",
    "InstrumentReportedError",
    "LimitError",
    "ProcedureError",
    "StationError",
]
