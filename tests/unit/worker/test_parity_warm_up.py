"""The worker's start-up warm-up leaves nothing for the first promotions to build at once."""

from __future__ import annotations

import pytest
from mlflow.utils import requirements_utils

from worker.parity import warm_up_model_libraries


def test_the_warm_up_builds_mlflows_installed_package_map(monkeypatch: pytest.MonkeyPatch) -> None:
    # mlflow.pyfunc.load_model builds this map on first use; built lazily, every promotion that started while
    # the first build ran built it again.
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    monkeypatch.setattr(requirements_utils, "_PACKAGES_TO_MODULES", None)
    warm_up_model_libraries()
    assert requirements_utils._MODULES_TO_PACKAGES
    assert requirements_utils._PACKAGES_TO_MODULES["scikit-learn"] == "sklearn"
