"""Fixtures shared by the worker's unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def mlflow_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registry() sets MLflow's retry and timeout variables for the process: restore them after the test."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "recorded for restoring")
        monkeypatch.delenv(name)
