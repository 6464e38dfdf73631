"""Files copied into every staged Triton model: ``model.py``, the python-backend entry point."""

from pathlib import Path

MODEL_PY = Path(__file__).with_name("model.py")
