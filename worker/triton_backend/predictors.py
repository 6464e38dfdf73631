"""How a staged MLflow model becomes something with ``predict(ndarray)``, inside Triton's python backend.

Used by ``model.py`` (one model per stub) and by ``runtime_model.py`` (the shared runtime that holds
every light version's estimator). Staged next to them; standard library and numpy only at import:
each loader imports what it needs when it runs, so only a model that loads it pays for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from .serving_spec import ServingSpec, ServingSpecError


class Predictor(Protocol):
    def predict(self, batch: np.ndarray[Any, Any]) -> Any: ...


def load_sklearn(model_dir: str, spec: ServingSpec) -> Predictor:
    """The estimator of an MLflow sklearn model, read with skops/cloudpickle/pickle, without MLflow."""
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


class PyfuncAdapter:
    """Gives an ``mlflow.pyfunc`` model the ``predict(ndarray)`` of an sklearn estimator."""

    def __init__(self, model_dir: str, spec: ServingSpec) -> None:
        import mlflow.pyfunc  # noqa: PLC0415
        import pandas  # noqa: PLC0415

        # The worker compared the model's requirements with its own environment and said so before staging
        # (worker/model_environment.py): MLflow's check on every load would cost each load ~30 ms more.
        self._model = mlflow.pyfunc.load_model(model_dir, suppress_warnings=True)
        self._columns = list(spec.columns)
        self._pandas = pandas

    def predict(self, batch: np.ndarray[Any, Any]) -> Any:
        features: Any = self._pandas.DataFrame(batch, columns=self._columns) if self._columns else batch
        return self._model.predict(features)


Loader = Callable[[str, ServingSpec], Predictor]
LOADERS: dict[str, Loader] = {"sklearn": load_sklearn, "pyfunc": PyfuncAdapter}


def load_predictor(version_dir: str, spec: ServingSpec, loaders: Mapping[str, Loader]) -> Predictor:
    """The model of the version directory ``version_dir`` whose ``serving.json`` is ``spec``."""
    load = loaders.get(spec.loader)
    if load is None:
        raise ServingSpecError(f"serving.json names loader {spec.loader!r}; this model.py has {sorted(loaders)}")
    return load(os.path.join(version_dir, spec.model_dir), spec)


def as_output(predictions: Any, dtype: Any) -> np.ndarray[Any, Any]:
    """``predict``'s answer as a (rows, columns) array of the output tensor's dtype."""
    array = np.asarray(predictions)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    return array.astype(dtype, copy=False)
