"""scikit-learn models: light versions whose predictions the shared runtime makes, without MLflow.

Each version is its own Triton model (``light_model.py``, numpy only) delegating to the shared
scikit-learn runtime of :mod:`worker.shared_runtime`, which reads the skops/pickle file directly.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from schemas.promotion_rejected import ReasonCode
from worker.errors import PermanentFailure
from worker.flavors.flavor import PythonBackendFlavor, ServedTensors
from worker.shared_runtime import RUNTIME_MODEL
from worker.triton_backend import LIGHT_VERSION_FILES, staged_name
from worker.triton_backend.serving_spec import ServingSpec

SERIALIZATION_FORMATS = ("skops", "cloudpickle", "pickle")


class SklearnFlavor(PythonBackendFlavor):
    name = "sklearn"
    detection_rank = 20

    def serving_spec(self, options: Mapping[str, Any], tensors: ServedTensors) -> ServingSpec:
        serialization = options.get("serialization_format", "cloudpickle")
        if serialization not in SERIALIZATION_FORMATS:
            raise PermanentFailure(
                ReasonCode.UNSUPPORTED_FLAVOR, f"sklearn serialization format {serialization!r} is not supported"
            )
        trusted = options.get("skops_trusted_types")
        return replace(
            tensors.spec("sklearn"),
            model_file=options["pickled_model"],
            serialization_format=serialization,
            skops_trusted_types=tuple(trusted) if trusted is not None else None,
            runtime_model=RUNTIME_MODEL,
        )

    def stage_files(self, spec: ServingSpec, mlflow_model_dir: Path, version_dir: Path) -> None:
        for source in LIGHT_VERSION_FILES:
            shutil.copyfile(source, version_dir / staged_name(LIGHT_VERSION_FILES, source))


FLAVOR = SklearnFlavor()
