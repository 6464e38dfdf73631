"""A light sklearn version and the shared runtime in the real tritonserver: NaN rows fail only their own requests.

Concurrent clients call Triton's own HTTP API while dynamic batching (a 20 ms queue delay) puts
their requests into shared ``execute`` calls; some clients send rows with NaN.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from mlflow import MlflowClient

from deploy.stack.local_stack import LocalStack
from tests.worker_harness import (
    WorkerHandle,
    events_about,
    iris_frame,
    produce,
    register_iris,
    request_bytes,
    sklearn_predictions,
)

pytestmark = pytest.mark.integration

READY = "io.modelpromoter.model.ready.v1"
GOOD_CLIENTS = 6
NAN_CLIENTS = 2
REQUESTS_PER_CLIENT = 20


async def _promote_with_slow_batching(stack: LocalStack, worker: WorkerHandle, name: str) -> tuple[int, str]:
    uri = stack.mlflow_tracking_uri
    version = register_iris(uri, name)
    # Requests wait up to 20 ms for each other, so concurrent callers share batches.
    MlflowClient(uri).set_registered_model_tag(name, "triton.max_queue_delay_us", "20000")
    bootstrap = stack.kafka_bootstrap_servers
    request = request_bytes(name, version=version)
    await produce(bootstrap, worker.topic("promotion_requested"), [(name.encode(), request)])
    (ready,) = await events_about(bootstrap, worker.topic("model_ready"), name, event_type=READY, timeout_s=120)
    return version, str(ready["data"]["triton_model_name"])


def _body(row: np.ndarray[Any, Any]) -> str:
    tensor = {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": row.tolist()}
    return json.dumps({"inputs": [tensor]})  # NaN is written as the JSON literal NaN, which Triton reads


def _batches_split(stack: LocalStack, triton_model: str) -> float:
    text = httpx.get(stack.triton_metrics_url, timeout=10).text
    series = f'promoter_batches_split_total{{model="{triton_model}"}} '
    return sum(float(line.removeprefix(series)) for line in text.splitlines() if line.startswith(series))


async def test_nan_rows_fail_only_their_own_requests_with_400(local_stack: LocalStack, worker: WorkerHandle) -> None:
    name = f"poison-{uuid.uuid4().hex[:6]}"
    version, triton_model = await _promote_with_slow_batching(local_stack, worker, name)
    features, _ = iris_frame()
    rows = features.to_numpy(dtype=np.float64)
    expected = sklearn_predictions(local_stack.mlflow_tracking_uri, name, version, features)
    poisoned = rows.copy()
    poisoned[:, 2] = np.nan
    good_answers: list[tuple[int, int, Any]] = []  # (row, status, body)
    nan_answers: list[tuple[int, Any]] = []  # (status, body)

    async with httpx.AsyncClient(base_url=f"http://{local_stack.triton_http}", timeout=30) as client:

        async def caller(first_row: int, bad: bool) -> None:
            for i in range(REQUESTS_PER_CLIENT):
                row = (first_row + i) % len(rows)
                response = await client.post(
                    f"/v2/models/{triton_model}/infer", content=_body((poisoned if bad else rows)[row])
                )
                if bad:
                    nan_answers.append((response.status_code, response.json()))
                else:
                    good_answers.append((row, response.status_code, response.json()))

        await asyncio.gather(
            *(caller(client_index * 17, bad=False) for client_index in range(GOOD_CLIENTS)),
            *(caller(client_index * 31, bad=True) for client_index in range(NAN_CLIENTS)),
        )

    failed_good = [(row, status, body) for row, status, body in good_answers if status != 200]
    assert failed_good == [], f"{len(failed_good)} good requests failed, e.g. {failed_good[:3]}"
    assert len(good_answers) == GOOD_CLIENTS * REQUESTS_PER_CLIENT
    for row, _status, body in good_answers:
        assert body["outputs"][0]["data"] == [int(expected[row])], f"row {row}"
    assert len(nan_answers) == NAN_CLIENTS * REQUESTS_PER_CLIENT
    assert {status for status, _body in nan_answers} == {400}
    for _status, body in nan_answers:
        assert body["error"].startswith("the model refused the input: ValueError: Input X contains NaN"), body
    # Proof that NaN rows shared batches with good ones: such batches were split, not failed whole.
    assert _batches_split(local_stack, triton_model) > 0

    grpc_client = triton_grpc.InferenceServerClient(local_stack.triton_grpc)
    try:
        tensor = triton_grpc.InferInput("input", [1, 4], "FP64")
        tensor.set_data_from_numpy(np.full((1, 4), np.inf))
        with pytest.raises(triton_grpc.InferenceServerException) as caught:
            grpc_client.infer(triton_model, [tensor], client_timeout=30)
    finally:
        grpc_client.close()
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "Input X contains infinity" in str(caught.value.message())
