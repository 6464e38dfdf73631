"""Map an MLflow model signature to the tensors Triton serves, and to the summary ``model.ready`` carries.

Two signature shapes are supported:

* **Tabular** (column-based, e.g. a pandas DataFrame of numeric features): the columns are
  packed, in signature order, into one input tensor ``input`` of shape ``[n_columns]``, typed
  with the widest numeric type among them. The column names travel in the summary so gateways
  can accept records keyed by feature name.
* **Tensor-based** (numpy arrays): each tensor keeps its name (``input`` / ``output`` when
  unnamed), datatype and shape without the leading batch dimension.

Anything else (strings, binary, nested types, optional columns, named outputs of mixed types) is
refused with :class:`UnsupportedSignatureError`, naming what is not supported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types import TensorSpec as MLflowTensorSpec

from schemas.model_ready import ColumnSpec, SignatureSummary, TensorDatatype, TensorSpec

INPUT_TENSOR = "input"
OUTPUT_TENSOR = "output"

_NUMPY_TO_TRITON: dict[str, TensorDatatype] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
_COLUMN_TO_TRITON: dict[DataType, TensorDatatype] = {
    DataType.boolean: "BOOL",
    DataType.integer: "INT32",
    DataType.long: "INT64",
    DataType.float: "FP32",
    DataType.double: "FP64",
}
# Packing several numeric columns into one tensor: the widest type wins.
_WIDENING: tuple[TensorDatatype, ...] = ("BOOL", "INT32", "INT64", "FP32", "FP64")


class UnsupportedSignatureError(ValueError):
    """The signature cannot be served by a generated Triton model; the message says why."""


def triton_datatype(dtype: np.dtype[Any]) -> TensorDatatype:
    datatype = _NUMPY_TO_TRITON.get(np.dtype(dtype).name)
    if datatype is None:
        raise UnsupportedSignatureError(f"tensor dtype {np.dtype(dtype).name} is not supported")
    return datatype


def _column_datatype(column: ColSpec) -> TensorDatatype:
    datatype = _COLUMN_TO_TRITON.get(column.type) if isinstance(column.type, DataType) else None
    if datatype is None:
        label = column.name or "(unnamed)"
        raise UnsupportedSignatureError(
            f"column {label!r} has type {getattr(column.type, 'name', column.type)}; "
            "only numeric and boolean columns are supported"
        )
    if not column.required:
        raise UnsupportedSignatureError(f"column {column.name!r} is optional; every column must be required")
    return datatype


def _widest(datatypes: list[TensorDatatype]) -> TensorDatatype:
    return max(datatypes, key=_WIDENING.index)


def _tensor_specs(schema: Schema, default_name: str) -> list[TensorSpec]:
    specs: list[TensorSpec] = []
    for index, spec in enumerate(schema.inputs):
        assert isinstance(spec, MLflowTensorSpec)  # noqa: S101 - guaranteed by is_tensor_spec()
        shape = list(spec.shape)
        if not shape or shape[0] != -1:
            raise UnsupportedSignatureError(
                f"tensor {spec.name or default_name!r} has shape {tuple(shape)}; "
                "the first dimension must be the batch dimension (-1)"
            )
        name = spec.name or (default_name if len(schema.inputs) == 1 else f"{default_name}_{index}")
        specs.append(TensorSpec(name=name, datatype=triton_datatype(spec.type), shape=shape[1:] or [1]))
    return specs


def _output_specs(schema: Schema) -> list[TensorSpec]:
    if schema.is_tensor_spec():
        return _tensor_specs(schema, OUTPUT_TENSOR)
    columns: list[ColSpec] = list(schema.inputs)  # type: ignore[arg-type]
    datatype = _widest([_column_datatype(column) for column in columns])
    return [TensorSpec(name=OUTPUT_TENSOR, datatype=datatype, shape=[len(columns)])]


def summarise_signature(signature: ModelSignature | None) -> SignatureSummary:
    """The served layout of ``signature``; raises :class:`UnsupportedSignatureError` if there is none."""
    if signature is None or signature.inputs is None:
        raise UnsupportedSignatureError("the model has no signature; log it with `signature=` or an `input_example`")
    if signature.outputs is None:
        raise UnsupportedSignatureError("the model signature has no outputs; log it with an output schema")
    if signature.params:
        raise UnsupportedSignatureError("signatures with inference params are not supported")
    inputs_schema = signature.inputs
    if inputs_schema.is_tensor_spec():
        return SignatureSummary(
            inputs=_tensor_specs(inputs_schema, INPUT_TENSOR), outputs=_output_specs(signature.outputs)
        )
    columns: list[ColSpec] = list(inputs_schema.inputs)
    if not inputs_schema.has_input_names():
        raise UnsupportedSignatureError("tabular inputs must have column names")
    datatypes = [_column_datatype(column) for column in columns]
    return SignatureSummary(
        inputs=[TensorSpec(name=INPUT_TENSOR, datatype=_widest(datatypes), shape=[len(columns)])],
        outputs=_output_specs(signature.outputs),
        columns=[
            ColumnSpec(name=str(column.name), type=column.type.name, required=column.required)  # type: ignore[arg-type,union-attr]
            for column in columns
        ],
    )
