"""model.py outside Triton: a real staged sklearn model, Triton's python-backend API faked in memory.

The real tritonserver run of the same behaviour is tests/integration/worker/test_poison_rows.py.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.sklearn
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from worker.flavors.sklearn import FLAVOR as SKLEARN
from worker.staging import stage_model
from worker.triton_backend.serving_spec import ServingSpec

ROWS = load_iris(return_X_y=True)[0][:4]


class FakeTritonError:
    INTERNAL = "INTERNAL"
    INVALID_ARG = "INVALID_ARG"

    def __init__(self, message: str, code: str = INTERNAL) -> None:
        self.message, self.code = message, code


class FakeTensor:
    def __init__(self, name: str, array: np.ndarray[Any, Any]) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray[Any, Any]:
        return self.array


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor] | None = None, error: FakeTritonError | None = None) -> None:
        self.output_tensors, self.error = output_tensors or [], error


class FakeCounter:
    def __init__(self) -> None:
        self.value = 0.0

    def increment(self, value: float) -> None:
        self.value += value


class FakeMetricFamily:
    COUNTER = "counter"
    counters: dict[str, FakeCounter] = {}  # noqa: RUF012 - one registry per fake module, like Triton's

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name = name

    def Metric(self, labels: dict[str, str]) -> FakeCounter:  # Triton's spelling
        return self.counters.setdefault(f"{self.name}{labels}", FakeCounter())


def _fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.TritonError = FakeTritonError  # type: ignore[attr-defined]
    module.Tensor = FakeTensor  # type: ignore[attr-defined]
    module.InferenceResponse = FakeResponse  # type: ignore[attr-defined]
    FakeMetricFamily.counters = {}
    module.MetricFamily = FakeMetricFamily  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = lambda request, name: FakeTensor(name, request[name])  # type: ignore[attr-defined]
    module.get_output_config_by_name = lambda config, name: next(  # type: ignore[attr-defined]
        output for output in config["output"] if output["name"] == name
    )
    module.triton_string_to_numpy = {"TYPE_INT64": np.int64}.__getitem__  # type: ignore[attr-defined]
    return module


@pytest.fixture(scope="module")
def staged_iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model_py")
    features, target = load_iris(return_X_y=True, as_frame=True)
    mlflow.sklearn.save_model(LogisticRegression(max_iter=500).fit(features, target), str(root / "mlflow"))
    staged = stage_model(
        root / "repo",
        "iris--00000000--v1",
        mlflow_model_dir=root / "mlflow",
        sha256="a" * 64,
        config_pbtxt="",
        serving_spec=ServingSpec(
            loader="sklearn",
            input="input",
            output="output",
            model_file="model.skops",
            serialization_format="skops",
        ),
        stage_files=SKLEARN.stage_files,
        metadata={},
    )
    return staged.path


@pytest.fixture
def model(staged_iris: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    monkeypatch.delitem(sys.modules, "worker.triton_backend.model", raising=False)
    model_py = importlib.import_module("worker.triton_backend.model")
    instance = model_py.TritonPythonModel()
    instance.initialize(
        {
            "model_repository": str(staged_iris),
            "model_version": "1",
            "model_name": staged_iris.name,
            "model_config": json.dumps({"output": [{"name": "output", "data_type": "TYPE_INT64", "dims": [1]}]}),
        }
    )
    yield instance
    sys.modules.pop("worker.triton_backend.model", None)


def _answers(responses: list[FakeResponse]) -> list[list[int] | str]:
    return [
        f"{r.error.code}: {r.error.message}" if r.error else r.output_tensors[0].array.ravel().tolist()
        for r in responses
    ]


def _batches_split() -> float:
    return sum(counter.value for counter in FakeMetricFamily.counters.values())


def test_a_good_batch_is_predicted_once_and_split_per_request(model: Any) -> None:
    expected = model._model.predict(ROWS).tolist()

    responses = model.execute([{"input": ROWS[:3]}, {"input": ROWS[3:]}])

    assert _answers(responses) == [expected[:3], expected[3:]]
    assert _batches_split() == 0


def test_a_nan_row_fails_only_its_own_request_as_invalid_input(model: Any) -> None:
    expected = model._model.predict(ROWS).tolist()
    poisoned = ROWS[:1].copy()
    poisoned[0, 2] = np.nan

    answers = _answers(model.execute([{"input": ROWS[:2]}, {"input": poisoned}, {"input": ROWS[2:]}]))

    assert answers[0] == expected[:2]
    assert answers[2] == expected[2:]
    assert isinstance(answers[1], str)
    assert answers[1].startswith("INVALID_ARG: the model refused the input: ValueError: Input X contains NaN")
    assert _batches_split() == 1


def test_a_lone_bad_request_is_answered_without_a_split(model: Any) -> None:
    (answer,) = _answers(model.execute([{"input": np.full((1, 4), np.inf)}]))

    assert str(answer).startswith("INVALID_ARG: the model refused the input: ValueError: Input X contains infinity")
    assert _batches_split() == 0


def test_a_failure_that_is_not_the_input_is_an_internal_error(model: Any) -> None:
    class Broken:
        def predict(self, batch: np.ndarray[Any, Any]) -> Any:
            raise MemoryError("no room for the batch")

    model._model = Broken()

    answers = _answers(model.execute([{"input": ROWS[:1]}, {"input": ROWS[1:2]}]))

    assert answers == ["INTERNAL: prediction failed: MemoryError: no room for the batch"] * 2
    assert _batches_split() == 1
