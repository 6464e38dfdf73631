"""The worker promotes real MLflow models into the real Triton, and rejects bad ones with a reason."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton_http

from deploy.stack.local_stack import LocalStack
from tests.worker_harness import (
    WorkerHandle,
    events,
    iris_frame,
    produce,
    read_until,
    register_iris,
    request_bytes,
    running_worker,
    set_alias,
    sklearn_predictions,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerHandle]:
    with running_worker(local_stack, tmp_path_factory.mktemp("worker")) as handle:
        yield handle


def _ready_for(records: list[dict[str, object]], model: str) -> list[dict[str, object]]:
    return [e for e in records if e["type"] == "io.modelpromoter.model.ready.v1" and e["subject"] == model]


def _triton_predict(stack: LocalStack, triton_model: str) -> np.ndarray:  # type: ignore[type-arg]
    features, _ = iris_frame()
    client = triton_http.InferenceServerClient(stack.triton_http, network_timeout=30)
    rows = features.to_numpy(dtype=np.float64)
    answers = []
    try:
        for start in range(0, len(rows), 50):  # max_batch_size is 64
            chunk = rows[start : start + 50]
            tensor = triton_http.InferInput("input", list(chunk.shape), "FP64")
            tensor.set_data_from_numpy(chunk)
            answers.append(np.asarray(client.infer(triton_model, [tensor]).as_numpy("output")).ravel())
        return np.concatenate(answers)
    finally:
        client.close()


async def test_alias_promotions_serve_v1_then_v2(local_stack: LocalStack, worker: WorkerHandle) -> None:
    name = f"iris-{uuid.uuid4().hex[:6]}"
    uri = local_stack.mlflow_tracking_uri
    v1 = register_iris(uri, name, regularisation=1.0)
    v2 = register_iris(uri, name, regularisation=0.01)
    bootstrap = local_stack.kafka_bootstrap_servers
    requested, ready_topic = (
        worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"],
        worker.topics["PROMOTER_TOPIC_MODEL_READY"],
    )

    set_alias(uri, name, "champion", v1)
    await produce(bootstrap, requested, [(name.encode(), request_bytes(name))])
    first = _ready_for(
        events(await read_until(bootstrap, ready_topic, lambda r: len(_ready_for(events(r), name)) >= 1)), name
    )
    set_alias(uri, name, "champion", v2)
    await produce(bootstrap, requested, [(name.encode(), request_bytes(name))])
    both = _ready_for(
        events(await read_until(bootstrap, ready_topic, lambda r: len(_ready_for(events(r), name)) >= 2)), name
    )

    assert [e["data"]["version"] for e in both] == [v1, v2]  # type: ignore[index]
    assert both[0] == first[0]
    generations = [e["data"]["generation"] for e in both]  # type: ignore[index]
    assert generations[1] > generations[0]
    features, _ = iris_frame()
    for event, version in zip(both, (v1, v2), strict=True):
        data = event["data"]
        assert data["alias"] == "champion"  # type: ignore[index]
        assert data["flavor"] == "sklearn"  # type: ignore[index]
        assert [c["name"] for c in data["signature"]["columns"]] == list(features.columns)  # type: ignore[index]
        assert set(data["stage_seconds"]) >= {"resolve", "download", "check", "stage", "load", "prove"}  # type: ignore[index]
        served = _triton_predict(local_stack, data["triton_model_name"])  # type: ignore[index]
        assert np.array_equal(served, sklearn_predictions(uri, name, version, features))
    assert not np.array_equal(
        sklearn_predictions(uri, name, v1, features), sklearn_predictions(uri, name, v2, features)
    ), "v1 and v2 must differ for this test to tell them apart"


async def test_model_without_signature_is_rejected_with_that_reason(
    local_stack: LocalStack, worker: WorkerHandle
) -> None:
    name = f"nosig-{uuid.uuid4().hex[:6]}"
    version = register_iris(local_stack.mlflow_tracking_uri, name, signature=False)
    bootstrap = local_stack.kafka_bootstrap_servers

    await produce(
        bootstrap,
        worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"],
        [(name.encode(), request_bytes(name, version=version))],
    )

    rejected = events(
        await read_until(
            bootstrap,
            worker.topics["PROMOTER_TOPIC_MODEL_REJECTED"],
            lambda r: any(e["subject"] == name for e in events(r)),
        )
    )
    (event,) = [e for e in rejected if e["subject"] == name]
    assert event["data"]["reason_code"] == "missing_signature"
    assert "has no signature" in event["data"]["message"]
    dlq = await read_until(
        bootstrap, worker.topics["PROMOTER_TOPIC_PROMOTION_DLQ"], lambda r: any(rec.key == name.encode() for rec in r)
    )
    (letter,) = [rec for rec in dlq if rec.key == name.encode()]
    header = {k: v.decode() for k, v in letter.headers}
    assert header["x-dlq-reason-code"] == "missing_signature"
    assert header["x-dlq-error-type"] == "permanent"
    assert events([letter])[0]["data"]["model_name"] == name


async def test_unknown_model_is_rejected(local_stack: LocalStack, worker: WorkerHandle) -> None:
    name = f"ghost-{uuid.uuid4().hex[:6]}"
    bootstrap = local_stack.kafka_bootstrap_servers
    await produce(
        bootstrap, worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"], [(name.encode(), request_bytes(name))]
    )

    rejected = events(
        await read_until(
            bootstrap,
            worker.topics["PROMOTER_TOPIC_MODEL_REJECTED"],
            lambda r: any(e["subject"] == name for e in events(r)),
        )
    )
    (event,) = [e for e in rejected if e["subject"] == name]
    assert event["data"]["reason_code"] == "model_not_found"
    assert name in event["data"]["message"]
