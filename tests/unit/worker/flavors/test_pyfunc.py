"""The python_function flavor: any other MLflow model, through mlflow.pyfunc inside Triton."""

from __future__ import annotations

from pathlib import Path

from worker.flavors.flavor import ServedTensors
from worker.flavors.pyfunc import FLAVOR
from worker.triton_backend.serving_spec import ServingSpec


def test_spec_is_the_pyfunc_loader_with_the_tensors() -> None:
    tensors = ServedTensors(input="input", output="output", columns=("x",))

    spec = FLAVOR.serving_spec({"loader_module": "mlflow.pyfunc.model"}, tensors)

    assert spec == ServingSpec(loader="pyfunc", input="input", output="output", columns=("x",))


def test_stages_the_python_backend_files(tmp_path: Path) -> None:
    FLAVOR.stage_files(ServingSpec(loader="pyfunc", input="i", output="o"), tmp_path / "mlflow", tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "model.py",
        "predictors.py",
        "request_batches.py",
        "serving_spec.py",
    ]
    assert (FLAVOR.name, FLAVOR.backend) == ("python_function", "python")
