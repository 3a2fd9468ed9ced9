"""Sub-commands of ``labrig`` beyond station and bench: measurements, training, runs, GUI.

Each lives beside the code it drives; this module only adds them to the parser.
"""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add every available sub-command to the ``labrig`` parser's sub-parsers ``sub``."""
