"""Triton python-backend model for an MLflow model staged by model-promoter.

Copied unchanged into ``<repository>/<triton model>/1/model.py``, next to ``serving_spec.py`` (the
type of ``serving.json``; the project package is not importable inside Triton), ``serving.json``
(how to load: loader, model file, tensor names, feature columns) and the MLflow model directory
``model/``. Heavy imports happen inside ``initialize`` and only what the loader needs: an sklearn
model is deserialised with skops/pickle directly, without importing MLflow, which keeps a load
around 1.5 s instead of 3-8 s. Other pyfunc models go through mlflow.pyfunc.

``execute`` concatenates every request of a dynamic batch and predicts once. When that fails,
each request is predicted alone, so a caller's bad row (NaN, inf, a value the model refuses)
fails only that caller's request: values the model refuses (``ValueError``) come back as
INVALID_ARG, which Triton answers with HTTP 400 / gRPC INVALID_ARGUMENT; anything else as an
internal error. ``promoter_batches_split_total`` on Triton's ``/metrics`` counts such batches.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend stub

# Triton's stub imports this file as module ``<version>.model`` (the model directory is on sys.path),
# so this finds the serving_spec.py staged beside it; in the project, worker/triton_backend/serving_spec.py.
from .serving_spec import SERVING_SPEC_FILE, ServingSpec, ServingSpecError


class Predictor(Protocol):
    def predict(self, batch: np.ndarray[Any, Any]) -> Any: ...


def _load_sklearn(model_dir: str, spec: ServingSpec) -> Predictor:
    if spec.model_file is None:
        raise ServingSpecError("serving.json: the sklearn loader needs 'model_file'")
    path = os.path.join(model_dir, spec.model_file)
    if spec.serialization_format == "skops":
        import skops.io  # noqa: PLC0415

        trusted = list(spec.skops_trusted_types) if spec.skops_trusted_types is not None else None
        estimator: Predictor = skops.io.load(path, trusted=trusted)
        return estimator
    if spec.serialization_format == "cloudpickle":
        import cloudpickle  # noqa: PLC0415

        with open(path, "rb") as handle:
            estimator = cloudpickle.load(handle)
        return estimator
    import pickle  # noqa: PLC0415

    with open(path, "rb") as handle:
        estimator = pickle.load(handle)  # noqa: S301 - the worker checked and digested this artifact
    return estimator


class _PyfuncAdapter:
    """Gives an ``mlflow.pyfunc`` model the ``predict(ndarray)`` of an sklearn estimator."""

    def __init__(self, model_dir: str, spec: ServingSpec) -> None:
        import mlflow.pyfunc  # noqa: PLC0415
        import pandas  # noqa: PLC0415

        self._model = mlflow.pyfunc.load_model(model_dir)
        self._columns = list(spec.columns)
        self._pandas = pandas

    def predict(self, batch: np.ndarray[Any, Any]) -> Any:
        features: Any = self._pandas.DataFrame(batch, columns=self._columns) if self._columns else batch
        return self._model.predict(features)


LOADERS: dict[str, Callable[[str, ServingSpec], Predictor]] = {"sklearn": _load_sklearn, "pyfunc": _PyfuncAdapter}


def _error_response(error: Exception) -> Any:
    message = f"{type(error).__name__}: {error}"
    if isinstance(error, ValueError):  # the model refuses these values: the caller's input, not the server
        code = pb_utils.TritonError.INVALID_ARG
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"the model refused the input: {message}", code))
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"prediction failed: {message}"))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, SERVING_SPEC_FILE)) as handle:
            spec = ServingSpec.from_json(handle.read())
        load = LOADERS.get(spec.loader)
        if load is None:
            raise ServingSpecError(f"serving.json names loader {spec.loader!r}; this model.py has {sorted(LOADERS)}")
        self._model = load(os.path.join(version_dir, spec.model_dir), spec)
        self._input = spec.input
        self._output = spec.output
        config = pb_utils.get_output_config_by_name(json.loads(args["model_config"]), self._output)
        self._output_dtype = pb_utils.triton_string_to_numpy(config["data_type"])
        # The family must outlive its metric (Triton refuses to count on a metric of a deleted family).
        self._batches_split_family = pb_utils.MetricFamily(
            name="promoter_batches_split_total",
            description="Dynamic batches whose joint prediction failed, so each request was predicted alone",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self._batches_split = self._batches_split_family.Metric(labels={"model": args["model_name"]})
        # sklearn warns when an estimator fit on a DataFrame predicts on an ndarray; same values.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def _predict(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        predictions = np.asarray(self._model.predict(batch))
        if predictions.ndim == 1:
            predictions = predictions.reshape(-1, 1)
        return predictions.astype(self._output_dtype, copy=False)

    def _response(self, predictions: np.ndarray[Any, Any]) -> Any:
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self._output, predictions)])

    def _predict_alone(self, array: np.ndarray[Any, Any]) -> Any:
        try:
            return self._response(self._predict(array))
        except Exception as error:  # this request's own failure, answered to it alone
            return _error_response(error)

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, self._input).as_numpy() for r in requests]
        if len(arrays) == 1:
            return [self._predict_alone(arrays[0])]
        try:
            predictions = self._predict(np.concatenate(arrays))
        except Exception:  # a row of one caller must not fail the others: predict each request alone
            self._batches_split.increment(1)
            return [self._predict_alone(array) for array in arrays]
        responses = []
        start = 0
        for array in arrays:
            end = start + array.shape[0]
            responses.append(self._response(predictions[start:end]))
            start = end
        return responses
