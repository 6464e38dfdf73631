"""A light version and the shared runtime outside Triton: real staged files, BLS faked by a direct call.

The real tritonserver run of the same path is tests/integration/worker/test_triton_backend.py.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.sklearn
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.unit.worker.triton_backend.test_model import FakeMetricFamily, FakeTensor, _fake_pb_utils
from worker.flavors.flavor import ServedTensors
from worker.flavors.sklearn import FLAVOR as SKLEARN
from worker.shared_runtime import RUNTIME_MODEL, stage_runtime
from worker.staging import stage_model

ROWS = load_iris(return_X_y=True)[0][:4]
MODULES = ("light_model", "runtime_model", "request_batches", "predictors")
CONFIG_TYPES = {"TYPE_INT64": np.int64, "TYPE_FP64": np.float64}


class TritonError:
    INTERNAL, INVALID_ARG = "INTERNAL", "INVALID_ARG"

    def __init__(self, message: str, code: str = INTERNAL) -> None:
        self._message, self.code = message, code

    def message(self) -> str:
        return self._message


class Response:
    def __init__(self, output_tensors: list[FakeTensor] | None = None, error: TritonError | None = None) -> None:
        self.output_tensors, self._error = output_tensors or [], error

    def error(self) -> TritonError | None:
        return self._error

    def has_error(self) -> bool:
        return self._error is not None


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("light")
    mlflow.sklearn.save_model(LogisticRegression(max_iter=500).fit(*load_iris(return_X_y=True)), str(root / "mlflow"))
    spec = SKLEARN.serving_spec(
        {"pickled_model": "model.skops", "serialization_format": "skops"},
        ServedTensors(input="input", output="output", columns=()),
    )
    for name in ("iris--00000000--v1", "iris--00000000--v2"):
        stage_model(
            root / "repo",
            name,
            mlflow_model_dir=root / "mlflow",
            sha256="a" * 64,
            config_pbtxt="",
            serving_spec=spec,
            stage_files=SKLEARN.stage_files,
            metadata={},
        )
    assert stage_runtime(root / "repo")
    assert not stage_runtime(root / "repo"), "staged once: its name is its content"
    return root / "repo"


def _args(model_dir: Path, config: dict[str, Any]) -> dict[str, str]:
    return {
        "model_repository": str(model_dir),
        "model_version": "1",
        "model_name": model_dir.name,
        "model_config": json.dumps(config),
    }


@pytest.fixture
def triton(repository: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """(a light version's model, the shared runtime), wired by a fake BLS."""
    pb_utils = _fake_pb_utils()
    pb_utils.TritonError = TritonError  # type: ignore[attr-defined]
    pb_utils.InferenceResponse = Response  # type: ignore[attr-defined]
    pb_utils.triton_string_to_numpy = CONFIG_TYPES.__getitem__  # type: ignore[attr-defined]
    pb_utils.get_input_tensor_by_name = lambda request, name: (  # type: ignore[attr-defined]
        FakeTensor(name, request[name]) if name in request else None
    )
    pb_utils.get_input_config_by_name = lambda config, name: next(i for i in config["input"] if i["name"] == name)  # type: ignore[attr-defined]
    pb_utils.get_output_tensor_by_name = lambda response, name: next(  # type: ignore[attr-defined]
        t for t in response.output_tensors if t.name == name
    )
    runtime_holder: list[Any] = []
    pb_utils.is_model_ready = lambda name: name == RUNTIME_MODEL and bool(runtime_holder)  # type: ignore[attr-defined]

    class InferenceRequest:
        def __init__(self, model_name: str, requested_output_names: list[str], inputs: list[FakeTensor]) -> None:
            assert model_name == RUNTIME_MODEL
            self.inputs = {tensor.name: tensor.array for tensor in inputs}

        def exec(self) -> Response:
            (response,) = runtime_holder[0].execute([self.inputs])
            return response  # type: ignore[no-any-return]

    pb_utils.InferenceRequest = InferenceRequest  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb_utils)
    for module in MODULES:
        monkeypatch.delitem(sys.modules, f"worker.triton_backend.{module}", raising=False)
    runtime = importlib.import_module("worker.triton_backend.runtime_model").TritonPythonModel()
    runtime.initialize(
        _args(repository / RUNTIME_MODEL, {"output": [{"name": "OUTPUT__INT64", "data_type": "TYPE_INT64"}]})
    )
    runtime_holder.append(runtime)
    light = importlib.import_module("worker.triton_backend.light_model").TritonPythonModel()
    tensors = {
        "input": [{"name": "input", "data_type": "TYPE_FP64"}],
        "output": [{"name": "output", "data_type": "TYPE_INT64"}],
    }
    light.initialize(_args(repository / "iris--00000000--v1", tensors))
    yield light, runtime
    for module in MODULES:
        sys.modules.pop(f"worker.triton_backend.{module}", None)


def _answers(responses: list[Response]) -> list[Any]:
    return [
        f"{error.code}: {error.message()}" if (error := r.error()) else r.output_tensors[0].array.ravel().tolist()
        for r in responses
    ]


def _split() -> float:
    return sum(counter.value for counter in FakeMetricFamily.counters.values())


def test_a_batch_is_predicted_by_the_runtime_and_split_per_request(triton: tuple[Any, Any]) -> None:
    light, runtime = triton
    responses = light.execute([{"input": ROWS[:3]}, {"input": ROWS[3:]}])

    ((estimator),) = runtime._estimators.values()
    expected = estimator.predict(ROWS).tolist()
    assert _answers(responses) == [expected[:3], expected[3:]]
    assert _split() == 0


def test_a_nan_row_fails_only_its_own_request_as_invalid_input(triton: tuple[Any, Any]) -> None:
    light, _runtime = triton
    poisoned = ROWS[:1].copy()
    poisoned[0, 2] = np.nan

    answers = _answers(light.execute([{"input": ROWS[:2]}, {"input": poisoned}, {"input": ROWS[2:]}]))

    assert isinstance(answers[0], list)
    assert isinstance(answers[2], list)
    assert answers[1].startswith("INVALID_ARG: the model refused the input: ValueError: Input X contains NaN")
    assert _split() == 1


def test_the_runtime_refuses_a_directory_outside_its_repository_or_with_another_digest(
    triton: tuple[Any, Any], repository: Path, tmp_path: Path
) -> None:
    _light, runtime = triton
    outside = tmp_path / "elsewhere" / "1"
    shutil.copytree(repository / "iris--00000000--v1", outside.parent)

    def call(version_dir: Path, sha256: str) -> str:
        request = {
            "CALL": np.array([str(version_dir).encode(), sha256.encode(), b"FP64", b"INT64"], dtype=np.object_),
            "INPUT__FP64": ROWS[:1].reshape(-1),
            "SHAPE": np.array([1, 4]),
        }
        (answer,) = _answers(runtime.execute([request]))
        return str(answer)

    assert "is not a version directory of this Triton's model repository" in call(outside, "a" * 64)
    assert "holds artifact " + "a" * 64 + ", not " + "b" * 64 in call(repository / "iris--00000000--v2" / "1", "b" * 64)
    assert call(repository / "iris--00000000--v2" / "1", "a" * 64).startswith("[")


def test_the_runtime_forgets_the_estimator_of_a_removed_version(triton: tuple[Any, Any], repository: Path) -> None:
    light, runtime = triton
    light.execute([{"input": ROWS[:1]}])
    version_dir = next(iter(runtime._estimators))[0]
    moved = Path(version_dir).with_name("moved")
    Path(version_dir).rename(moved)
    try:
        runtime._sweep()
        assert runtime._estimators == {}
    finally:
        moved.rename(version_dir)
