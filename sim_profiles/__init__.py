"""pyvisa-sim profiles, one per instrument model, shipped as package data.

``profile_path("keysight_33500b")`` gives a path usable as ``ResourceManager(f"{path}@sim")``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

MODELS = ("keysight_33500b", "keysight_infiniivision", "qdevil_qdac2", "srs_sr860")


def profile_path(model: str) -> Path:
    """Filesystem path of the profile for ``model`` (one of :data:`MODELS`)."""
    if model not in MODELS:
        raise ValueError(f"no pyvisa-sim profile for {model!r}; known: {', '.join(MODELS)}")
    return Path(str(resources.files("sim_profiles").joinpath(f"{model}.yaml")))
