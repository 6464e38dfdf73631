"""Files copied into every staged python-backend Triton model.

``model.py`` is the entry point Triton runs; ``serving_spec.py`` is the type of ``serving.json``
that ``model.py`` imports from beside itself (the project package is not installed there).
"""

from pathlib import Path

MODEL_PY = Path(__file__).with_name("model.py")
SERVING_SPEC_PY = Path(__file__).with_name("serving_spec.py")
PYTHON_BACKEND_FILES = (MODEL_PY, SERVING_SPEC_PY)
