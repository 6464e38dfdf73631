"""The sklearn flavor: skops/pickle files loaded directly by model.py, on the python backend."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from worker.errors import PermanentFailure
from worker.flavors.flavor import ServedTensors
from worker.flavors.sklearn import FLAVOR
from worker.shared_runtime import RUNTIME_MODEL
from worker.triton_backend import LIGHT_MODEL_PY
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
        runtime_model=RUNTIME_MODEL,
    )


def test_an_mlmodel_without_a_format_is_cloudpickle() -> None:
    spec = FLAVOR.serving_spec({"pickled_model": "model.pkl"}, TENSORS)

    assert (spec.serialization_format, spec.skops_trusted_types) == ("cloudpickle", None)


def test_an_unknown_serialization_format_is_refused() -> None:
    with pytest.raises(PermanentFailure, match="sklearn serialization format 'joblib' is not supported") as caught:
        FLAVOR.serving_spec({"pickled_model": "m", "serialization_format": "joblib"}, TENSORS)
    assert caught.value.reason == "unsupported_flavor"


def test_stages_a_light_version_that_imports_no_sklearn(tmp_path: Path) -> None:
    FLAVOR.stage_files(TENSORS.spec("sklearn"), tmp_path / "mlflow", tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "model.py",
        "request_batches.py",
        "runtime_tensors.py",
        "serving_spec.py",
    ]
    staged = (tmp_path / "model.py").read_text()
    assert staged == LIGHT_MODEL_PY.read_text()
    third_party = {name.split(".")[0] for name in _imported_modules(tmp_path)} - set(sys.stdlib_module_names)
    assert third_party == {"numpy", "triton_python_backend_utils"}
    assert FLAVOR.backend == "python"


def _imported_modules(directory: Path) -> set[str]:
    names: set[str] = set()
    for path in directory.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:  # not the staged siblings
                names.add(node.module)
    return names
