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
progress), :mod:`~labrig.sweep.report` (figures).
"""

from labrig.sweep.driver import SweepResult, run_sweep
from labrig.sweep.grid import SweepError, SweepSpec, load_sweep_file, parse_axis
from labrig.sweep.record import is_sweep_dir, read_table

__all__ = [
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "is_sweep_dir",
    "load_sweep_file",
    "parse_axis",
    "read_table",
    "run_sweep",
]
