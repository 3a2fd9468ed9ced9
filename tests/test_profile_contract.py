"""Contract: each model's pyvisa-sim profile and its virtual-bench emulator answer alike."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from sim_contract import ToyEmulator, check_profile_against_emulator

PROFILES = Path(__file__).resolve().parent.parent / "sim_profiles"

# (profile, module, emulator class, properties the real instrument clamps instead of refusing;
# each profile's header comment documents these differences)
MODELS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("keysight_33500b.yaml", "labrig.sim.keysight_33500b", "Keysight33500BEmulator", ()),
    (
        "keysight_infiniivision.yaml",
        "labrig.sim.keysight_infiniivision",
        "InfiniiVisionEmulator",
        ("ch?_offset", "waveform_points"),
    ),
    ("qdevil_qdac2.yaml", "labrig.sim.qdevil_qdac2", "QDac2Emulator", ()),
    ("srs_sr860.yaml", "labrig.sim.srs_sr860", "SR860Emulator", ()),
]


@pytest.mark.parametrize(
    ("profile", "module", "cls", "clamping"), MODELS, ids=[m[2] for m in MODELS]
)
def test_profile_matches_emulator(
    profile: str, module: str, cls: str, clamping: tuple[str, ...]
) -> None:
    path = PROFILES / profile
    assert path.exists(), f"{profile} is missing"
    emulator_cls = getattr(importlib.import_module(module), cls)
    checked = check_profile_against_emulator(path, lambda: emulator_cls("dut"), clamping=clamping)
    assert checked, "the profile defines no dialogues or properties"


TOY_PROFILE = """
spec: "1.1"
devices:
  toy:
    eom:
      TCPIP SOCKET: {q: "\\n", r: "\\n"}
    error:
      error_queue:
        - q: "SYST:ERR?"
          default: '+0,"No error"'
          command_error: '-113,"Undefined header"'
    dialogues:
      - {q: "*IDN?", r: "labrig,TOY1,0001,1.0"}
      - {q: "*OPC?", r: "1"}
      - {q: "*RST"}
    properties:
      frequency:
        default: 1000.0
        getter: {q: "SOUR1:FREQ?", r: "{:+.15E}"}
        setter: {q: "SOUR1:FREQ {}"}
        specs: {min: 0.001, max: 30000000.0, type: float}
      function:
        default: "SIN"
        getter: {q: "FUNC?", r: "{:s}"}
        setter: {q: "FUNC {:s}"}
        specs: {type: str, valid: [SIN, SQU, ARB]}
      output:
        default: 0
        getter: {q: "OUTP2?", r: "{:d}"}
        setter: {q: "OUTP2 {:d}"}
        specs: {type: int, valid: [0, 1]}
"""


def test_harness_passes_a_matching_profile(tmp_path: Path) -> None:
    path = tmp_path / "toy.yaml"
    path.write_text(TOY_PROFILE)
    checked = check_profile_against_emulator(path, ToyEmulator)
    assert any("refuse" in c for c in checked)
    assert any("set 'ARB'" in c for c in checked)


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("labrig,TOY1,0001,1.0", "labrig,TOY2,0001,1.0", "'*IDN?' replied"),
        ("default: 1000.0", "default: 2000.0", "after *RST"),
        ("max: 30000000.0", "max: 40000000.0", "read back"),
        ('{q: "*RST"}', '{q: "*BOGUS"}', "command error"),
    ],
)
def test_harness_catches_a_mismatch(tmp_path: Path, old: str, new: str, complaint: str) -> None:
    path = tmp_path / "toy.yaml"
    path.write_text(TOY_PROFILE.replace(old, new))
    with pytest.raises(AssertionError, match=complaint.replace("*", r"\*").replace("?", r"\?")):
        check_profile_against_emulator(path, ToyEmulator)
