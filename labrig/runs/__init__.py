"""Runs: documents, the live document stream, HDF5 run records, checkpoints, reports, catalogue.

- :mod:`labrig.runs.documents` — StartDoc / EventDoc / LogDoc / StopDoc
- :mod:`labrig.runs.stream` — DocumentStream: non-blocking fan-out to live subscribers
- :mod:`labrig.runs.record` — RecordWriter / RunRecord: ``run.h5`` (SWMR, flushed per event)
- :mod:`labrig.runs.checkpoint` — atomic per-event checkpoints and ``resume(run_dir)``
- :mod:`labrig.runs.report` — ``make_report(run_dir)``: PNG plots
- :mod:`labrig.runs.catalog` — ``list_runs(runs_dir)``

The runner that ties them to a procedure is :mod:`labrig.procedures.runner`. Nothing is imported
here, so ``import labrig.runs.record`` does not pull in matplotlib.
"""
