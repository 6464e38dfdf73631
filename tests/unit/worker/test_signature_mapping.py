from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema, TensorSpec

from worker.signature_mapping import UnsupportedSignatureError, summarise_signature


def test_tabular_iris_signature_packs_columns_into_one_tensor() -> None:
    frame = pd.DataFrame({"sepal length (cm)": [5.1], "petal width (cm)": [0.2], "count": [3]})
    signature = infer_signature(frame, np.array([0]))

    summary = summarise_signature(signature)

    (tensor,) = summary.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("input", "FP64", [3])
    assert [c.name for c in summary.columns] == ["sepal length (cm)", "petal width (cm)", "count"]
    assert [c.type for c in summary.columns] == ["double", "double", "long"]
    (output,) = summary.outputs
    assert (output.name, output.datatype, output.shape) == ("output", "INT64", [1])


def test_integer_columns_stay_integer() -> None:
    signature = ModelSignature(
        inputs=Schema([ColSpec("integer", "a"), ColSpec("long", "b")]), outputs=Schema([ColSpec("long")])
    )
    assert summarise_signature(signature).inputs[0].datatype == "INT64"


def test_tensor_signature_keeps_names_and_drops_batch_dimension() -> None:
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 28, 28), "image")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, 10))]),
    )

    summary = summarise_signature(signature)

    assert [(t.name, t.datatype, t.shape) for t in summary.inputs] == [("image", "FP32", [28, 28])]
    assert [(t.name, t.datatype, t.shape) for t in summary.outputs] == [("output", "FP32", [10])]
    assert summary.columns == []


@pytest.mark.parametrize(
    ("signature", "words"),
    [
        (None, "no signature"),
        (ModelSignature(inputs=Schema([ColSpec("double", "a")])), "no outputs"),
        (
            ModelSignature(inputs=Schema([ColSpec("string", "text")]), outputs=Schema([ColSpec("long")])),
            "column 'text' has type string",
        ),
        (
            ModelSignature(inputs=Schema([ColSpec("double", "a", required=False)]), outputs=Schema([ColSpec("long")])),
            "column 'a' is optional",
        ),
        (
            ModelSignature(
                inputs=Schema([TensorSpec(np.dtype("float32"), (4,), "x")]),
                outputs=Schema([TensorSpec(np.dtype("float32"), (-1,))]),
            ),
            "first dimension must be the batch dimension",
        ),
        (
            ModelSignature(
                inputs=Schema([TensorSpec(np.dtype("complex64"), (-1, 2), "x")]),
                outputs=Schema([TensorSpec(np.dtype("float32"), (-1,))]),
            ),
            "complex64 is not supported",
        ),
    ],
)
def test_unsupported_signatures_say_why(signature: ModelSignature | None, words: str) -> None:
    with pytest.raises(UnsupportedSignatureError, match=words):
        summarise_signature(signature)
