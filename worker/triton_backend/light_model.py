"""Triton python-backend model for a light scikit-learn version: numpy only, predictions delegated.

Staged as ``<repository>/<triton model>/1/model.py`` with ``serving_spec.py``, ``request_batches.py``,
``runtime_tensors.py``, ``serving.json`` and the MLflow model directory ``model/``. It imports no
scikit-learn: its stub is as small and loads as fast as any numpy-only model. Each dynamic batch is
sent by BLS (business logic scripting) to the shared runtime named in ``serving.json``
(``runtime_model.py``), which loads this version's estimator from this directory once (checked
against the artifact digest staged beside it) and predicts. The version stays its own immutable
Triton model; only the interpreter with scikit-learn imported is shared.

Triton allows BLS only in ``execute``, so the estimator is loaded by the first request: the worker's
parity proof, before any gateway routes to the version. The worker loads the runtime before the
version; when it is not READY anyway (a version loaded by hand), ``initialize`` loads it through
Triton's model-loading API, so a READY version never lacks its runtime. A batch the runtime refuses is split per
request, so a caller's bad row fails only its own request (``request_batches.py``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend stub

# Triton's stub imports this file as module ``<version>.model``: these are the files staged beside it.
from .request_batches import RuntimeRefusalError, SplitCounter, answer_requests
from .runtime_tensors import CALL, SHAPE, datatype_of, input_name, output_name
from .serving_spec import MARKER_FILE, SERVING_SPEC_FILE, ServingSpec, ServingSpecError


def _artifact_sha256(model_dir: str) -> str:
    with open(os.path.join(model_dir, MARKER_FILE)) as handle:
        marker = json.load(handle)
    digest = marker.get("artifact_sha256") if isinstance(marker, dict) else None
    if not isinstance(digest, str):
        raise ServingSpecError(f"{MARKER_FILE} beside this version names no artifact_sha256")
    return digest


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, SERVING_SPEC_FILE)) as handle:
            spec = ServingSpec.from_json(handle.read())
        if spec.runtime_model is None or spec.model_file is None:
            raise ServingSpecError("serving.json of a light version must name 'runtime_model' and 'model_file'")
        model_file = os.path.join(version_dir, spec.model_dir, spec.model_file)
        if not os.path.isfile(model_file):  # a broken folder fails its load, not its first request
            raise ServingSpecError(f"the staged model file {model_file} is missing")
        config = json.loads(args["model_config"])
        input_type = datatype_of(pb_utils.get_input_config_by_name(config, spec.input)["data_type"])
        output_type = datatype_of(pb_utils.get_output_config_by_name(config, spec.output)["data_type"])
        self._runtime = spec.runtime_model
        if not pb_utils.is_model_ready(self._runtime):  # loaded by hand, or Triton restarted: load it first
            pb_utils.load_model(model_name=self._runtime)
        self._input = spec.input
        self._output = spec.output
        call = [version_dir, _artifact_sha256(args["model_repository"]), input_type, output_type]
        self._call = np.array([item.encode() for item in call], dtype=np.object_)
        self._runtime_input = input_name(input_type)
        self._runtime_output = output_name(output_type)
        self._count_split = SplitCounter(args["model_name"])

    def _predict(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        request = pb_utils.InferenceRequest(
            model_name=self._runtime,
            requested_output_names=[self._runtime_output],
            inputs=[
                pb_utils.Tensor(CALL, self._call),
                pb_utils.Tensor(self._runtime_input, np.ascontiguousarray(batch).reshape(-1)),
                pb_utils.Tensor(SHAPE, np.asarray(batch.shape, dtype=np.int64)),
            ],
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeRefusalError(response.error())
        flat = pb_utils.get_output_tensor_by_name(response, self._runtime_output).as_numpy()
        predictions: np.ndarray[Any, Any] = flat.reshape(batch.shape[0], -1)
        return predictions

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, self._input).as_numpy() for r in requests]
        return answer_requests(arrays, self._predict, self._output, self._count_split)
