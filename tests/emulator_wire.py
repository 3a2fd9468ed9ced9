"""Talking to an emulator directly, line by line, in the emulator tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from labrig.sim.emulator import ScpiEmulator


def ask(emu: ScpiEmulator, command: str) -> str:
    """Send one line; the reply without its terminator ("" when there is none)."""
    return emu.feed(command.encode() + b"\n").decode("latin-1").removesuffix("\n")


def send(emu: ScpiEmulator, command: str | bytes) -> None:
    """Send one line that must not be answered."""
    data = command if isinstance(command, bytes) else command.encode()
    assert emu.feed(data + b"\n") == b""


def error_codes(emu: ScpiEmulator, query: str = "SYST:ERR?") -> list[int]:
    """Drain the error queue by ``query``; the codes, oldest first."""
    codes: list[int] = []
    while (code := int(ask(emu, query).split(",")[0])) != 0:
        codes.append(code)
    return codes


def profile_device(profile: Path, device: str) -> dict[str, Any]:
    """A device of a pyvisa-sim profile, every value as text (as pyvisa-sim reads it)."""
    data = yaml.load(profile.read_text(), Loader=yaml.loader.BaseLoader)
    return data["devices"][device]  # type: ignore[no-any-return]


def profile_reply(prop: dict[str, Any], value: str) -> str:
    """What a profile property's getter answers for ``value``, typed as its specs say."""
    typed: object = {"float": float, "int": int, "str": str}[prop["specs"]["type"]](value)
    return prop["getter"]["r"].format(typed)
