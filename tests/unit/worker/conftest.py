"""Fixtures shared by the worker's unit tests."""

from __future__ import annotations

import pytest

from worker.registry import MLFLOW_CLIENT_VARIABLES


@pytest.fixture
def mlflow_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registry() sets MLflow's client variables for the process: restore them (unset) after the test."""
    for name in MLFLOW_CLIENT_VARIABLES:
        monkeypatch.setenv(name, "recorded for restoring")
        monkeypatch.delenv(name)
