"""serving.json: what the worker writes is what model.py reads inside Triton, and older files still load."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from worker import triton_backend
from worker.flavors.flavor import ServedTensors
from worker.flavors.sklearn import FLAVOR as SKLEARN
from worker.staging import stage_model
from worker.triton_backend.serving_spec import ServingSpec, ServingSpecError

# As the worker plans it for an MLmodel's sklearn flavor section.
SKLEARN_SPEC = SKLEARN.serving_spec(
    {
        "pickled_model": "model.skops",
        "serialization_format": "skops",
        "skops_trusted_types": ["sklearn.tree._tree.Tree"],
    },
    ServedTensors(input="input", output="output", columns=("sepal length (cm)", "sepal width (cm)")),
)
# serving.json exactly as the worker staged it before the spec was typed (commit d60e8c3).
STAGED_BEFORE_THE_TYPE = {
    "sklearn": """{
  "loader": "sklearn",
  "model_file": "model.skops",
  "serialization_format": "skops",
  "skops_trusted_types": null,
  "input": "input",
  "output": "output",
  "columns": ["sepal length (cm)", "sepal width (cm)"],
  "model_dir": "model"
}""",
    "pyfunc": '{"loader": "pyfunc", "input": "x", "output": "y", "columns": [], "model_dir": "model"}',
}


def test_round_trip() -> None:
    assert ServingSpec.from_json(SKLEARN_SPEC.to_json()) == SKLEARN_SPEC


def test_what_the_worker_stages_is_what_the_staged_module_reads(tmp_path: Path) -> None:
    mlflow_dir = tmp_path / "mlflow"
    mlflow_dir.mkdir()
    (mlflow_dir / "model.skops").write_bytes(b"model-bytes")
    staged = stage_model(
        tmp_path / "repo",
        "iris--00000000--v1",
        mlflow_model_dir=mlflow_dir,
        sha256="a" * 64,
        config_pbtxt="",
        serving_spec=SKLEARN_SPEC,
        stage_files=SKLEARN.stage_files,
        metadata={},
    )
    version_dir = staged.path / "1"
    # model.py's reader inside Triton: the serving_spec.py staged beside it, not the project's module.
    module_spec = importlib.util.spec_from_file_location("staged_serving_spec", version_dir / "serving_spec.py")
    assert module_spec is not None
    assert module_spec.loader is not None
    staged_module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = staged_module
    try:
        module_spec.loader.exec_module(staged_module)
        read = staged_module.ServingSpec.from_json((version_dir / "serving.json").read_text())
    finally:
        del sys.modules[module_spec.name]

    assert type(read) is not ServingSpec
    assert asdict(read) == asdict(SKLEARN_SPEC)  # model_dir "model" is where the MLflow files were staged
    assert (version_dir / read.model_dir / "model.skops").read_bytes() == b"model-bytes"


def test_serving_json_staged_before_the_type_still_loads_and_keeps_its_format() -> None:
    sklearn = ServingSpec.from_json(STAGED_BEFORE_THE_TYPE["sklearn"])
    pyfunc = ServingSpec.from_json(STAGED_BEFORE_THE_TYPE["pyfunc"])

    assert (sklearn.loader, sklearn.model_file, sklearn.serialization_format) == ("sklearn", "model.skops", "skops")
    assert sklearn.skops_trusted_types is None
    assert sklearn.columns == ("sepal length (cm)", "sepal width (cm)")
    assert (pyfunc.loader, pyfunc.input, pyfunc.output, pyfunc.columns, pyfunc.model_dir) == (
        "pyfunc",
        "x",
        "y",
        (),
        "model",
    )
    old = json.loads(STAGED_BEFORE_THE_TYPE["sklearn"])
    assert json.loads(sklearn.to_json()) == {key: value for key, value in old.items() if value is not None}


def test_keys_of_a_newer_writer_are_ignored() -> None:
    spec = ServingSpec.from_json('{"loader": "pyfunc", "input": "x", "output": "y", "added_later": 3}')

    assert spec == ServingSpec(loader="pyfunc", input="x", output="y")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "serving.json is not JSON"),
        ("[]", "must hold an object, got list"),
        ('{"loader": "pyfunc", "output": "y"}', "'input' must be a non-empty string, got None"),
        ('{"loader": "pyfunc", "input": "x", "output": "y", "columns": "a,b"}', "'columns' must be a list of strings"),
    ],
)
def test_unusable_files_are_named(text: str, message: str) -> None:
    with pytest.raises(ServingSpecError, match=message):
        ServingSpec.from_json(text)


def test_the_modules_listed_as_inside_triton_are_exactly_those_importing_its_utils() -> None:
    package = Path(triton_backend.__file__).parent
    importing = {
        f"worker.triton_backend.{path.stem}"
        for path in package.glob("*.py")
        if "import triton_python_backend_utils" in path.read_text()
    }
    assert importing == set(triton_backend.MODULES_INSIDE_TRITON)
