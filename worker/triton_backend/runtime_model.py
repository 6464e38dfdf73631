"""The shared scikit-learn runtime: one Triton model that predicts for every light version.

Staged once per worker release as ``<repository>/promoter-sklearn-runtime-<digest>/1/model.py``
with ``predictors.py``, ``serving_spec.py``, ``request_batches.py`` and ``runtime_tensors.py``;
its config (written by the worker, ``worker/shared_runtime.py``) declares the tensors of
``runtime_tensors.py``. ``initialize`` imports scikit-learn and skops once, the cost every version
paid in a stub of its own before. Each request, sent by a light version's ``model.py`` through
BLS, names that version's directory and artifact digest: the estimator is loaded from there on the
first request (only from a directory of this model repository whose staged digest matches) and
kept until the directory is gone (the worker deletes a version's directory only after unloading
it), checked at most every ``SWEEP_INTERVAL_S``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any

import triton_python_backend_utils as pb_utils  # provided by Triton's python backend stub

# Triton's stub imports this file as module ``<version>.model``: these are the files staged beside it.
from .predictors import Loader, Predictor, as_output, load_predictor, load_sklearn
from .request_batches import error_response
from .runtime_tensors import CALL, SHAPE, input_name, output_name
from .serving_spec import MARKER_FILE, SERVING_SPEC_FILE, ServingSpec, ServingSpecError

RUNTIME_LOADERS: dict[str, Loader] = {"sklearn": load_sklearn}
SWEEP_INTERVAL_S = 10.0


def warm_up() -> None:
    """Import what every sklearn version needs, so no version's first request pays for it."""
    import sklearn  # noqa: F401, PLC0415
    import skops.io  # noqa: F401, PLC0415


def load_version(repository: str, version_dir: str, sha256: str) -> Predictor:
    """The estimator staged in ``version_dir``, refused unless it lies in ``repository`` with digest ``sha256``."""
    real = os.path.realpath(version_dir)
    if os.path.dirname(os.path.dirname(real)) != repository:
        raise ServingSpecError(f"{version_dir} is not a version directory of this Triton's model repository")
    with open(os.path.join(os.path.dirname(real), MARKER_FILE)) as handle:
        staged = json.load(handle).get("artifact_sha256")
    if staged != sha256:
        raise ServingSpecError(f"{version_dir} holds artifact {staged}, not {sha256}: it changed after its load")
    with open(os.path.join(real, SERVING_SPEC_FILE)) as handle:
        spec = ServingSpec.from_json(handle.read())
    return load_predictor(real, spec, RUNTIME_LOADERS)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        # model_repository is this model's own directory; the versions are its siblings
        self._repository = os.path.dirname(os.path.realpath(args["model_repository"]))
        config = json.loads(args["model_config"])
        self._output_dtypes = {
            output["name"]: pb_utils.triton_string_to_numpy(output["data_type"]) for output in config["output"]
        }
        self._estimators: dict[tuple[str, str], Predictor] = {}
        self._swept = time.monotonic()
        warm_up()
        # sklearn warns when an estimator fit on a DataFrame predicts on an ndarray; same values.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def _sweep(self) -> None:
        """Forget the estimators of versions whose directory was removed (retired)."""
        self._swept = time.monotonic()
        for key in [key for key in self._estimators if not os.path.isdir(key[0])]:
            del self._estimators[key]

    def _estimator(self, version_dir: str, sha256: str) -> Predictor:
        key = (version_dir, sha256)
        estimator = self._estimators.get(key)
        if estimator is None:
            self._sweep()
            estimator = load_version(self._repository, version_dir, sha256)
            self._estimators[key] = estimator
        return estimator

    def _answer(self, request: Any) -> Any:
        version_dir, sha256, input_type, output_type = (
            item.decode() for item in pb_utils.get_input_tensor_by_name(request, CALL).as_numpy().ravel()
        )
        try:
            estimator = self._estimator(version_dir, sha256)
        except Exception as error:  # the version's files, not the caller's rows
            message = f"the shared runtime could not load {version_dir}: {type(error).__name__}: {error}"
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
        rows = pb_utils.get_input_tensor_by_name(request, input_name(input_type)).as_numpy()
        shape = pb_utils.get_input_tensor_by_name(request, SHAPE).as_numpy()
        name = output_name(output_type)
        try:
            predictions = as_output(estimator.predict(rows.reshape(shape)), self._output_dtypes[name])
        except Exception as error:  # this request's own failure, answered to it alone
            return error_response(error)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, predictions.reshape(-1))])

    def execute(self, requests: list[Any]) -> list[Any]:
        if time.monotonic() - self._swept > SWEEP_INTERVAL_S:
            self._sweep()
        return [self._answer(request) for request in requests]
