"""Triton python-backend model for an MLflow model staged by model-promoter.

Copied unchanged into ``<repository>/<triton model>/1/model.py``. Next to it the worker writes
``serving.json`` (how to load: loader, model file, tensor names, feature columns) and the MLflow
model directory ``model/``. Heavy imports happen inside ``initialize`` and only what the loader
needs: an sklearn model is deserialised with skops/pickle directly, without importing MLflow,
which keeps a load around 1.5 s instead of 3-8 s. Other pyfunc models go through mlflow.pyfunc.

``execute`` concatenates every request of a dynamic batch, predicts once and splits the result.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend stub


def _load_sklearn(model_dir: str, spec: dict[str, Any]) -> Any:
    path = os.path.join(model_dir, spec["model_file"])
    serialization = spec["serialization_format"]
    if serialization == "skops":
        import skops.io  # noqa: PLC0415

        return skops.io.load(path, trusted=spec.get("skops_trusted_types"))
    if serialization == "cloudpickle":
        import cloudpickle  # noqa: PLC0415

        with open(path, "rb") as handle:
            return cloudpickle.load(handle)
    import pickle  # noqa: PLC0415

    with open(path, "rb") as handle:
        return pickle.load(handle)  # noqa: S301 - the worker checked and digested this artifact


class _PyfuncAdapter:
    """Gives an ``mlflow.pyfunc`` model the ``predict(ndarray)`` of an sklearn estimator."""

    def __init__(self, model_dir: str, columns: list[str]) -> None:
        import mlflow.pyfunc  # noqa: PLC0415
        import pandas  # noqa: PLC0415

        self._model = mlflow.pyfunc.load_model(model_dir)
        self._columns = columns
        self._pandas = pandas

    def predict(self, batch: np.ndarray[Any, Any]) -> Any:
        features: Any = self._pandas.DataFrame(batch, columns=self._columns) if self._columns else batch
        return self._model.predict(features)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, "serving.json")) as handle:
            spec = json.load(handle)
        model_dir = os.path.join(version_dir, spec["model_dir"])
        if spec["loader"] == "sklearn":
            self._model = _load_sklearn(model_dir, spec)
        else:
            self._model = _PyfuncAdapter(model_dir, spec.get("columns", []))
        self._input = spec["input"]
        self._output = spec["output"]
        config = json.loads(args["model_config"])
        output_config = pb_utils.get_output_config_by_name(config, self._output)
        self._output_dtype = pb_utils.triton_string_to_numpy(output_config["data_type"])
        # sklearn warns when an estimator fit on a DataFrame predicts on an ndarray; same values.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            arrays = [pb_utils.get_input_tensor_by_name(r, self._input).as_numpy() for r in requests]
            predictions = np.asarray(self._model.predict(np.concatenate(arrays)))
            if predictions.ndim == 1:
                predictions = predictions.reshape(-1, 1)
            predictions = predictions.astype(self._output_dtype, copy=False)
        except Exception as error:  # one bad batch must not kill the model instance
            message = f"{type(error).__name__}: {error}"
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in requests]
        responses = []
        start = 0
        for array in arrays:
            end = start + array.shape[0]
            tensor = pb_utils.Tensor(self._output, predictions[start:end])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start = end
        return responses
