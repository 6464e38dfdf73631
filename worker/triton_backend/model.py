"""Triton python-backend model for an MLflow model staged by model-promoter, in a stub of its own.

Copied unchanged into ``<repository>/<triton model>/1/model.py``, next to ``serving_spec.py`` (the
type of ``serving.json``; the project package is not importable inside Triton), ``predictors.py``
(the loaders), ``request_batches.py``, ``serving.json`` (how to load: loader, model file, tensor
names, feature columns) and the MLflow model directory ``model/``. Used for pyfunc models, whose
code stays isolated in its own process (scikit-learn versions are light: ``light_model.py``), and
still run by sklearn versions staged before those. Heavy imports happen inside ``initialize`` and
only what the loader needs.

``execute`` predicts a dynamic batch once and splits it per request when a caller's row spoils it
(``request_batches.py``); ``promoter_batches_split_total`` on Triton's ``/metrics`` counts such batches.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend stub

# Triton's stub imports this file as module ``<version>.model`` (the model directory is on sys.path),
# so these find the files staged beside it; in the project, worker/triton_backend/*.py.
from .predictors import LOADERS, as_output, load_predictor
from .request_batches import SplitCounter, answer_requests
from .serving_spec import SERVING_SPEC_FILE, ServingSpec


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, SERVING_SPEC_FILE)) as handle:
            spec = ServingSpec.from_json(handle.read())
        self._model = load_predictor(version_dir, spec, LOADERS)
        self._input = spec.input
        self._output = spec.output
        config = pb_utils.get_output_config_by_name(json.loads(args["model_config"]), self._output)
        self._output_dtype = pb_utils.triton_string_to_numpy(config["data_type"])
        self._count_split = SplitCounter(args["model_name"])
        # sklearn warns when an estimator fit on a DataFrame predicts on an ndarray; same values.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def _predict(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return as_output(self._model.predict(batch), self._output_dtype)

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, self._input).as_numpy() for r in requests]
        return answer_requests(arrays, self._predict, self._output, self._count_split)
