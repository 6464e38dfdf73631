"""Any other MLflow model with the generic ``python_function`` flavor: loaded through mlflow.pyfunc in Triton."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.flavors.flavor import PythonBackendFlavor, ServedTensors
from worker.triton_backend.serving_spec import ServingSpec


class PyfuncFlavor(PythonBackendFlavor):
    name = "python_function"
    detection_rank = 90  # the fallback: nearly every MLflow model also has this flavor

    def serving_spec(self, options: Mapping[str, Any], tensors: ServedTensors) -> ServingSpec:
        return tensors.spec("pyfunc")


FLAVOR = PyfuncFlavor()
