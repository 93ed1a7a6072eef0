"""Fixtures for the ledger tests: a real MLflow store (SQLite in a temp dir)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking store; artifacts land in tmp_path/mlruns (MLflow's sqlite default)."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
