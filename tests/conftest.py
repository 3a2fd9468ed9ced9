"""Shared test set-up: Qt runs headless; runs go to a temporary directory."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest


@pytest.fixture(autouse=True)
def _runs_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write run records into the user's data directory from a test."""
    monkeypatch.setenv("LABRIG_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
