"""ONNX models: the graph served by Triton's onnxruntime backend, no python code in Triton."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from worker.flavors.flavor import Flavor, ServedTensors
from worker.triton_backend.serving_spec import ServingSpec

BACKEND = "onnxruntime"
MODEL_FILE = "model.onnx"
"""Where Triton's onnxruntime backend looks for the graph in the version directory by default."""


class OnnxFlavor(Flavor):
    name = "onnx"
    detection_rank = 10  # before sklearn and pyfunc: an ONNX model also has the python_function flavor
    backend = BACKEND
    backend_missing = (
        "ONNX models need Triton's onnxruntime backend; set PROMOTER_WORKER_ONNX_BACKEND=true "
        "once every Triton endpoint has it"
    )

    def serving_spec(self, options: Mapping[str, Any], tensors: ServedTensors) -> ServingSpec:
        return replace(tensors.spec("onnxruntime"), model_file=options.get("data", MODEL_FILE))

    def stage_files(self, spec: ServingSpec, mlflow_model_dir: Path, version_dir: Path) -> None:
        shutil.copyfile(mlflow_model_dir / (spec.model_file or MODEL_FILE), version_dir / MODEL_FILE)


FLAVOR = OnnxFlavor()
