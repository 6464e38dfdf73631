"""The same ``/predict`` call the Try-a-model page makes, as ``curl`` and as ``tritonclient`` code to copy.

The tritonclient code speaks the Open Inference Protocol to the gateway (which routes it like
``/predict``): one row of the signature's single input tensor, features in the signature's order.
"""

from __future__ import annotations

import json
import shlex
from typing import Any
from urllib.parse import quote, urlsplit

from schemas.model_ready import ModelReadyData

NUMPY_DTYPES = {
    "BOOL": "bool_", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}  # fmt: skip


def predict_url(gateway_url: str, model: str, alias: str) -> str:
    return f"{gateway_url}/predict/{quote(model, safe='')}?alias={quote(alias, safe='')}"


def curl_command(gateway_url: str, model: str, alias: str, record: dict[str, Any]) -> str:
    return " \\\n  ".join(
        [
            f"curl -sS -X POST {shlex.quote(predict_url(gateway_url, model, alias))}",
            "-H 'content-type: application/json'",
            f"-d {shlex.quote(json.dumps(record))}",
        ]
    )


def tritonclient_code(gateway_url: str, ready: ModelReadyData, alias: str, record: dict[str, Any]) -> str | None:
    """Python that makes the same inference with ``tritonclient.http``; None for a tensor signature
    or a datatype numpy lacks."""
    tensor = ready.signature.inputs[0]
    dtype = NUMPY_DTYPES.get(tensor.datatype)
    if dtype is None or not ready.signature.columns:
        return None
    row = [record[column.name] for column in ready.signature.columns]
    names = ", ".join(repr(column.name) for column in ready.signature.columns)
    output = ready.signature.outputs[0].name
    return "\n".join(
        [
            "import numpy as np",
            "import tritonclient.http as httpclient",
            "",
            "# the gateway speaks the Open Inference Protocol; X-Model-Alias picks the alias",
            f"client = httpclient.InferenceServerClient({urlsplit(gateway_url).netloc!r})",
            f"# features in the signature's order: {names}",
            f"rows = np.array([{row!r}], dtype=np.{dtype})",
            f"inputs = [httpclient.InferInput({tensor.name!r}, list(rows.shape), {tensor.datatype!r})]",
            "inputs[0].set_data_from_numpy(rows)",
            f"answer = client.infer({ready.model_name!r}, inputs, headers={{'X-Model-Alias': {alias!r}}})",
            f"print(answer.as_numpy({output!r}).tolist())",
        ]
    )
