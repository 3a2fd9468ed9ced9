"""Sweeps: a procedure run over a grid of parameter points on Dask distributed.

::

    from labrig.sweep import SweepSpec, run_sweep, read_table

    spec = SweepSpec("hge", fixed={"max_iterations": 20, "initializations": 1},
                     grid={"task": ["AND", "OR", "XOR"], "device_seed": list(range(20))})
    result = run_sweep(spec, runs_dir="runs", workers=2)
    table = read_table(result.sweep_dir)      # pandas: one row per point

Modules: :mod:`~labrig.sweep.grid` (what a sweep is, sweep files, expansion into points),
:mod:`~labrig.sweep.point` (running one point on a worker), :mod:`~labrig.sweep.record` (the
sweep folder and its table), :mod:`~labrig.sweep.driver` (the Dask driver: resume, Ctrl-C,
progress), :mod:`~labrig.sweep.report` (figures), :mod:`~labrig.sweep.cli` (``labrig sweep``).
The names below are imported on first use, so that ``labrig`` starts without loading Dask.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SweepError": "labrig.sweep.grid",
    "SweepSpec": "labrig.sweep.grid",
    "load_sweep_file": "labrig.sweep.grid",
    "parse_axis": "labrig.sweep.grid",
    "SweepResult": "labrig.sweep.driver",
    "run_sweep": "labrig.sweep.driver",
    "is_sweep_dir": "labrig.sweep.record",
    "read_table": "labrig.sweep.record",
    "make_sweep_report": "labrig.sweep.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'labrig.sweep' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
