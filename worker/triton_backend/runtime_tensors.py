"""The tensors between a light version (``light_model.py``) and the shared runtime (``runtime_model.py``).

Standard library only: staged beside both, and imported by the worker, which writes the runtime's
``config.pbtxt``. A delegated request carries ``CALL`` (which version, and the Triton datatypes of its
tensors), the rows flattened in ``INPUT__<datatype>`` and their shape in ``SHAPE``; the answer comes
flattened in ``OUTPUT__<datatype>``, one row per input row. Triton checks an input's datatype against
the config, so the runtime declares one optional input and one output per datatype.
"""

from __future__ import annotations

CALL = "CALL"
"""STRING [4]: version directory, its artifact sha256, input datatype, output datatype (e.g. ``FP64``)."""
SHAPE = "SHAPE"
"""INT64 [-1]: the shape of the rows before they were flattened."""
DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "STRING",
)
"""Triton config datatypes without ``TYPE_`` (``STRING`` is the wire's BYTES)."""


def datatype_of(config_type: str) -> str:
    """``TYPE_FP64`` (as in a model's config) -> ``FP64``."""
    return config_type.removeprefix("TYPE_")


def input_name(datatype: str) -> str:
    return f"INPUT__{datatype}"


def output_name(datatype: str) -> str:
    return f"OUTPUT__{datatype}"
