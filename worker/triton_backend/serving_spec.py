"""How ``model.py`` inside Triton loads and calls one staged MLflow model: the typed ``serving.json``.

Shared by the worker (which writes ``serving.json``) and ``model.py`` (which reads it inside
Triton's python-backend stub). The project package is not importable there, so this module is
staged next to ``model.py`` and must stay standard library only.

The JSON format is the one staged models have always had: a flat object whose keys are the
field names below, fields that do not apply left out. Keys this version does not know are
ignored and missing optional keys take their defaults, so older and newer ``serving.json``
files keep loading.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

SERVING_SPEC_FILE = "serving.json"
MARKER_FILE = "promoter.json"
"""Written by the worker's staging beside the version directory: who staged it, its ``artifact_sha256``."""
DEFAULT_MODEL_DIR = "model"


class ServingSpecError(ValueError):
    """A ``serving.json`` that cannot be used; the message names the file's problem."""


def _text(document: dict[str, Any], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value:
        raise ServingSpecError(f"serving.json: {key!r} must be a non-empty string, got {value!r}")
    return value


def _optional_text(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    return _text(document, key)


def _texts(document: dict[str, Any], key: str) -> tuple[str, ...] | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ServingSpecError(f"serving.json: {key!r} must be a list of strings, got {value!r}")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class ServingSpec:
    """What ``model.py`` needs to load the MLflow model and map Triton tensors to ``predict``."""

    loader: str
    """Which loader of ``predictors.py`` (``sklearn``, ``pyfunc``), or ``onnxruntime`` (no model.py)."""
    input: str
    """Name of the Triton input tensor."""
    output: str
    """Name of the Triton output tensor."""
    columns: tuple[str, ...] = ()
    """Feature names of a tabular signature, in tensor order; empty for tensor signatures."""
    model_dir: str = DEFAULT_MODEL_DIR
    """The MLflow model directory, relative to the version directory."""
    model_file: str | None = None
    """The serialized model, relative to ``model_dir``, for loaders that read it directly."""
    serialization_format: str | None = None
    """sklearn only: ``skops``, ``cloudpickle`` or ``pickle``."""
    skops_trusted_types: tuple[str, ...] | None = None
    """sklearn + skops only: types the model was saved to trust when loading."""
    runtime_model: str | None = None
    """The shared runtime Triton model this (light) version delegates its predictions to."""

    def to_json(self) -> str:
        document = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        return json.dumps({key: value for key, value in document.items() if value is not None}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ServingSpec:
        try:
            document = json.loads(text)
        except ValueError as error:
            raise ServingSpecError(f"serving.json is not JSON: {error}") from None
        if not isinstance(document, dict):
            raise ServingSpecError(f"serving.json must hold an object, got {type(document).__name__}")
        return cls(
            loader=_text(document, "loader"),
            input=_text(document, "input"),
            output=_text(document, "output"),
            columns=_texts(document, "columns") or (),
            model_dir=_optional_text(document, "model_dir") or DEFAULT_MODEL_DIR,
            model_file=_optional_text(document, "model_file"),
            serialization_format=_optional_text(document, "serialization_format"),
            skops_trusted_types=_texts(document, "skops_trusted_types"),
            runtime_model=_optional_text(document, "runtime_model"),
        )
