"""VISA drivers for labrig's instrument models, and the role interfaces procedures program against.

A driver is built from ``(resource, visa_library)`` and never knows whether it talks to hardware,
pyvisa-sim, or the labrig virtual bench.
"""

from instruments.errors import (
    ChannelLimits,
    InstrumentConnectionError,
    InstrumentReportedError,
    LimitError,
)

__all__ = [
    "ChannelLimits",
    "InstrumentConnectionError",
    "InstrumentReportedError",
    "LimitError",
]
