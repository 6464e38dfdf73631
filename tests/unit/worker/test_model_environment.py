"""A model's requirements and Python version against the worker's environment (worker/model_environment.py)."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import sklearn
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from structlog.testing import capture_logs

from worker.model_environment import installed_versions, unmet_requirements
from worker.parity import prepare_case
from worker.serving_plan import plan_serving

RUNNING = ".".join(map(str, sys.version_info[:3]))


def _model_dir(tmp_path: Path, *requirements: str) -> Path:
    (tmp_path / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return tmp_path


def test_what_mlflow_logs_for_a_model_trained_here_is_met(tmp_path: Path) -> None:
    model_dir = _model_dir(
        tmp_path,
        f"mlflow=={mlflow.__version__}",
        f"scikit-learn=={sklearn.__version__}",
        f"numpy=={importlib.metadata.version('numpy')}",
    )
    assert unmet_requirements(model_dir, RUNNING) == []


def test_another_scikit_learn_version_is_named_with_both_versions(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path, "scikit-learn==0.20.3", "numpy>=1.0")
    assert unmet_requirements(model_dir, RUNNING) == [
        f"scikit-learn {sklearn.__version__} is installed, the model was logged with scikit-learn==0.20.3"
    ]


def test_a_package_not_installed_here_is_named(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path, "surely-not-installed-package==1.0  # a comment")
    assert unmet_requirements(model_dir, RUNNING) == [
        "surely-not-installed-package is not installed, the model was logged with surely-not-installed-package==1.0"
    ]


def test_names_are_compared_as_pip_normalises_them(tmp_path: Path) -> None:
    assert unmet_requirements(_model_dir(tmp_path, f"Scikit_Learn=={sklearn.__version__}"), RUNNING) == []


def test_options_paths_and_markers_that_do_not_apply_are_not_checked(tmp_path: Path) -> None:
    model_dir = _model_dir(
        tmp_path,
        "-r other-requirements.txt",
        "--extra-index-url https://example.invalid/simple",
        "./wheels/private_package-1.0-py3-none-any.whl",
        'surely-not-installed-package==1.0; python_version < "3.0"',
        "",
        "# only a comment",
    )
    assert unmet_requirements(model_dir, RUNNING) == []


@pytest.mark.parametrize(
    ("logged_with", "unmet"),
    [
        (f"{sys.version_info.major}.{sys.version_info.minor}.0", False),  # another patch release: compatible
        (f"{sys.version_info.major}.{sys.version_info.minor + 1}.2", True),
        (None, False),  # MLflow records it; a model without one is not judged
        ("not a version", False),
    ],
)
def test_the_python_version_is_compared_by_major_and_minor(
    tmp_path: Path, logged_with: str | None, unmet: bool
) -> None:
    found = unmet_requirements(tmp_path, logged_with)  # no requirements.txt: only the Python version
    expected = [f"Python {RUNNING} runs here, the model was logged with Python {logged_with}"] if unmet else []
    assert found == expected


def test_the_installed_versions_are_those_importlib_reports() -> None:
    assert installed_versions()["scikit-learn"] == importlib.metadata.version("scikit-learn")
    assert installed_versions()["mlflow"] == mlflow.__version__


def test_the_parity_reference_logs_what_the_environment_does_not_meet(tmp_path: Path) -> None:
    """The reference prediction loads the model without MLflow's own check; ours names the difference."""
    features = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    estimator = LogisticRegression().fit(features, [0, 0, 1, 1])
    model_dir = tmp_path / "model"
    mlflow.sklearn.save_model(
        estimator,
        str(model_dir),
        signature=infer_signature(features, estimator.predict(features)),
        input_example=features,
        pip_requirements=["scikit-learn==0.20.3"],
    )
    with capture_logs() as logs:
        case = prepare_case(model_dir, plan_serving(model_dir).signature)
    assert case.expected.tolist() == [0, 0, 1, 1]
    (warning,) = [entry for entry in logs if entry["event"] == "the worker's environment differs from the model's"]
    assert warning["log_level"] == "warning"
    assert warning["unmet"] == [
        f"scikit-learn {sklearn.__version__} is installed, the model was logged with scikit-learn==0.20.3"
    ]
