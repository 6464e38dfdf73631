"""scikit-learn models: deserialised inside Triton with skops/pickle directly, without MLflow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from schemas.promotion_rejected import ReasonCode
from worker.errors import PermanentFailure
from worker.flavors.flavor import PythonBackendFlavor, ServedTensors
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
        )


FLAVOR = SklearnFlavor()
