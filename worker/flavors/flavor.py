"""The protocol every served flavor implements, and what the python-backend flavors share."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from worker.triton_backend import PYTHON_BACKEND_FILES
from worker.triton_backend.serving_spec import ServingSpec

PYTHON_BACKEND = "python"


@dataclass(frozen=True, slots=True)
class ServedTensors:
    """The Triton tensors a model is served under, from its signature (the same for every flavor)."""

    input: str
    output: str
    columns: tuple[str, ...]

    def spec(self, loader: str) -> ServingSpec:
        """A serving spec for ``loader`` with these tensors; flavors add their loading fields."""
        return ServingSpec(loader=loader, input=self.input, output=self.output, columns=self.columns)


class Flavor(Protocol):
    """One MLflow flavor the worker can serve through Triton."""

    @property
    def name(self) -> str:
        """The key in MLmodel's ``flavors``; also ``flavor`` in ``model.ready``."""
        ...

    @property
    def detection_rank(self) -> int:
        """Lower is tried first when an MLmodel carries several served flavors (unique per flavor)."""
        ...

    @property
    def backend(self) -> str:
        """The Triton backend in ``config.pbtxt`` (``python``, ``onnxruntime``)."""
        ...

    @property
    def backend_missing(self) -> str:
        """The rejection message when the target Tritons lack :attr:`backend`: what to do about it."""
        ...

    def detects(self, mlmodel_flavors: Mapping[str, Any]) -> bool:
        """Whether this flavor serves a model whose MLmodel has ``mlmodel_flavors``."""
        return self.name in mlmodel_flavors

    def serving_spec(self, options: Mapping[str, Any], tensors: ServedTensors) -> ServingSpec:
        """The ``serving.json`` for a model with these flavor ``options`` (its MLmodel section).

        Raises :class:`worker.errors.PermanentFailure` for a model of this flavor that cannot be served.
        """
        ...

    def stage_files(self, spec: ServingSpec, mlflow_model_dir: Path, version_dir: Path) -> None:
        """Write what Triton's backend needs into ``version_dir`` (the MLflow files are already in it)."""
        ...


class PythonBackendFlavor(Flavor):
    """Served by the generated ``model.py`` on Triton's python backend, which every Triton has."""

    backend = PYTHON_BACKEND

    @property
    def backend_missing(self) -> str:
        return f"{self.name} models need Triton's python backend"

    def stage_files(self, spec: ServingSpec, mlflow_model_dir: Path, version_dir: Path) -> None:
        for source in PYTHON_BACKEND_FILES:
            shutil.copyfile(source, version_dir / source.name)
