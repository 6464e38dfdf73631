"""The sklearn flavor: skops/pickle files loaded directly by model.py, on the python backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import PermanentFailure
from worker.flavors.flavor import ServedTensors
from worker.flavors.sklearn import FLAVOR
from worker.triton_backend.serving_spec import ServingSpec

TENSORS = ServedTensors(input="input", output="output", columns=("a", "b"))


def test_skops_model_spec_carries_the_file_format_and_trusted_types() -> None:
    options = {
        "pickled_model": "model.skops",
        "serialization_format": "skops",
        "skops_trusted_types": ["sklearn.tree._tree.Tree"],
    }

    spec = FLAVOR.serving_spec(options, TENSORS)

    assert spec == ServingSpec(
        loader="sklearn",
        input="input",
        output="output",
        columns=("a", "b"),
        model_file="model.skops",
        serialization_format="skops",
        skops_trusted_types=("sklearn.tree._tree.Tree",),
    )


def test_an_mlmodel_without_a_format_is_cloudpickle() -> None:
    spec = FLAVOR.serving_spec({"pickled_model": "model.pkl"}, TENSORS)

    assert (spec.serialization_format, spec.skops_trusted_types) == ("cloudpickle", None)


def test_an_unknown_serialization_format_is_refused() -> None:
    with pytest.raises(PermanentFailure, match="sklearn serialization format 'joblib' is not supported") as caught:
        FLAVOR.serving_spec({"pickled_model": "m", "serialization_format": "joblib"}, TENSORS)
    assert caught.value.reason == "unsupported_flavor"


def test_stages_the_python_backend_files(tmp_path: Path) -> None:
    FLAVOR.stage_files(TENSORS.spec("sklearn"), tmp_path / "mlflow", tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.py", "serving_spec.py"]
    assert "class TritonPythonModel" in (tmp_path / "model.py").read_text()
    assert FLAVOR.backend == "python"
