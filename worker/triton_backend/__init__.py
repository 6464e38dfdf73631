"""Files copied into staged python-backend Triton models; each runs inside Triton's python-backend stub.

The project package is not importable there, so each staged model gets its entry point as
``model.py`` and the modules it imports beside it:

- a version in a stub of its own (pyfunc): ``model.py``;
- a light scikit-learn version, numpy only, delegating to the shared runtime: ``light_model.py``;
- the shared scikit-learn runtime, one per Triton: ``runtime_model.py``.
"""

from pathlib import Path

_HERE = Path(__file__).parent
MODEL_PY = _HERE / "model.py"
LIGHT_MODEL_PY = _HERE / "light_model.py"
RUNTIME_MODEL_PY = _HERE / "runtime_model.py"
SERVING_SPEC_PY = _HERE / "serving_spec.py"
PREDICTORS_PY = _HERE / "predictors.py"
REQUEST_BATCHES_PY = _HERE / "request_batches.py"
RUNTIME_TENSORS_PY = _HERE / "runtime_tensors.py"

MODULES_INSIDE_TRITON = tuple(
    f"{__name__}.{path.stem}" for path in (MODEL_PY, LIGHT_MODEL_PY, RUNTIME_MODEL_PY, REQUEST_BATCHES_PY)
)
"""Modules that import ``triton_python_backend_utils``: importable only inside Triton's stub."""

ENTRY_POINT = "model.py"
"""The name Triton's python backend runs in a version directory."""

PYTHON_BACKEND_FILES = (MODEL_PY, SERVING_SPEC_PY, PREDICTORS_PY, REQUEST_BATCHES_PY)
"""A version in its own stub: staged under their own names."""
LIGHT_VERSION_FILES = (LIGHT_MODEL_PY, SERVING_SPEC_PY, REQUEST_BATCHES_PY, RUNTIME_TENSORS_PY)
"""A light version: the first is staged as ``model.py``."""
RUNTIME_FILES = (RUNTIME_MODEL_PY, SERVING_SPEC_PY, PREDICTORS_PY, REQUEST_BATCHES_PY, RUNTIME_TENSORS_PY)
"""The shared runtime: the first is staged as ``model.py``."""


def staged_name(files: tuple[Path, ...], source: Path) -> str:
    """The file name of ``source`` in a version directory: the first of ``files`` is the entry point."""
    return ENTRY_POINT if source == files[0] else source.name
