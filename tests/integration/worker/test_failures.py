"""Failures never take serving down: a skewed model is rejected and unloaded, a frozen Triton is retried."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest
import tritonclient.http as triton_http
from mlflow.models import infer_signature
from mlflow.pyfunc.model import PythonModel

from deploy.stack.local_stack import LocalStack
from tests.worker_harness import (
    events,
    headers,
    iris_frame,
    produce,
    read_until,
    register_iris,
    request_bytes,
    running_worker,
)

pytestmark = pytest.mark.integration


def _register_skewed_model(tracking_uri: str, name: str) -> int:
    """A pyfunc whose answer depends on where it runs: serving code that disagrees with training."""

    class ServingSkew(PythonModel):
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            import sys

            inside_triton = "triton_python_backend_utils" in sys.modules
            return (model_input.sum(axis=1) > 10).astype("int64") + int(inside_triton)

    features, _ = iris_frame()
    example = features.head(5)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ServingSkew(),
            input_example=example,
            signature=infer_signature(example, np.zeros(5, dtype=np.int64)),
            registered_model_name=name,
        )
    assert info.registered_model_version is not None
    return int(info.registered_model_version)


def _rejections(records: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    return [e for e in records if e["subject"] == model]


async def test_parity_mismatch_is_rejected_and_the_new_model_unloaded(local_stack: LocalStack, tmp_path: Path) -> None:
    name = f"skew-{uuid.uuid4().hex[:6]}"
    version = _register_skewed_model(local_stack.mlflow_tracking_uri, name)
    bootstrap = local_stack.kafka_bootstrap_servers

    with running_worker(local_stack, tmp_path) as worker:
        await produce(
            bootstrap,
            worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"],
            [(name.encode(), request_bytes(name, version=version))],
        )
        rejected = _rejections(
            events(
                await read_until(
                    bootstrap,
                    worker.topics["PROMOTER_TOPIC_MODEL_REJECTED"],
                    lambda r: bool(_rejections(events(r), name)),
                    timeout_s=120,
                )
            ),
            name,
        )

    (event,) = rejected
    assert event["data"]["reason_code"] == "parity_mismatch"
    assert "disagrees with MLflow on 5 of 5 example rows" in event["data"]["message"]
    assert "stage prove" in event["data"]["message"]
    client = triton_http.InferenceServerClient(local_stack.triton_http, network_timeout=10)
    try:
        index = {m["name"]: m.get("state") for m in client.get_model_repository_index()}
        triton_name = next(n for n in index if n.startswith(f"{name}--"))
        assert not client.is_model_ready(triton_name), "the rejected model must be unloaded"
    finally:
        client.close()


@contextmanager
def frozen(stack: LocalStack) -> Iterator[None]:
    """Triton stops answering (SIGSTOP, like a partition) and comes back afterwards, models intact."""
    (triton,) = [p for p in stack.processes if p.name == "tritonserver"]
    os.kill(triton.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(triton.pid, signal.SIGCONT)


def _triton_answers(stack: LocalStack, triton_model: str) -> np.ndarray[Any, Any]:
    features, _ = iris_frame()
    client = triton_http.InferenceServerClient(stack.triton_http, network_timeout=10)
    try:
        tensor = triton_http.InferInput("input", [5, 4], "FP64")
        tensor.set_data_from_numpy(features.head(5).to_numpy(dtype=np.float64))
        return np.asarray(client.infer(triton_model, [tensor]).as_numpy("output")).ravel()
    finally:
        client.close()


async def test_triton_unreachable_retries_then_dead_letters_and_the_old_version_keeps_serving(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    name = f"frozen-{uuid.uuid4().hex[:6]}"
    uri = local_stack.mlflow_tracking_uri
    v1 = register_iris(uri, name)
    v2 = register_iris(uri, name, regularisation=0.05)
    bootstrap = local_stack.kafka_bootstrap_servers

    with running_worker(
        local_stack, tmp_path, PROMOTER_WORKER_MAX_ATTEMPTS="3", PROMOTER_TRITON_REQUEST_TIMEOUT_S="1"
    ) as worker:
        requested = worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"]
        await produce(bootstrap, requested, [(name.encode(), request_bytes(name, version=v1))])
        (served,) = [
            e
            for e in events(
                await read_until(
                    bootstrap,
                    worker.topics["PROMOTER_TOPIC_MODEL_READY"],
                    lambda r: any(e["subject"] == name for e in events(r)),
                )
            )
            if e["subject"] == name
        ]
        v1_model = served["data"]["triton_model_name"]
        before = _triton_answers(local_stack, v1_model)

        with frozen(local_stack):
            await produce(bootstrap, requested, [(name.encode(), request_bytes(name, version=v2))])
            dlq = await read_until(
                bootstrap,
                worker.topics["PROMOTER_TOPIC_PROMOTION_DLQ"],
                lambda r: any(rec.key == name.encode() for rec in r),
                timeout_s=60,
            )
            retries = worker.metric("promoter_promotion_retries_total")

        after = _triton_answers(local_stack, v1_model)

    (letter,) = [rec for rec in dlq if rec.key == name.encode()]
    diagnostic = headers(letter)
    assert diagnostic["x-dlq-reason-code"] == "retries_exhausted"
    assert diagnostic["x-dlq-error-type"] == "transient"
    assert diagnostic["x-dlq-attempts"] == "3"
    assert "did not answer" in diagnostic["x-dlq-reason"]
    assert diagnostic["x-dlq-first-failure-at"] <= diagnostic["x-dlq-last-failure-at"]
    assert retries == 2
    assert events([letter])[0]["data"]["version"] == v2, "the original request, byte for byte"
    assert np.array_equal(before, after), "v1 kept serving through the failed promotion"
