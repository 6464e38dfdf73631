"""The worker promotes real MLflow models into the real Triton, and rejects bad ones with a reason."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import sklearn
import tritonclient.http as triton_http

from deploy.stack.local_stack import LocalStack
from schemas.prepared_version import PrepareRequested, PrepareRequestedData
from tests.gateway_harness import promote
from tests.worker_harness import (
    Record,
    WorkerHandle,
    about,
    events,
    events_about,
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


READY = "io.modelpromoter.model.ready.v1"
PREPARED = "io.modelpromoter.model.prepared.v1"
CONCURRENCY = 4


@pytest.fixture(scope="module")
def worker(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerHandle]:
    """This module's worker promotes up to four models at once: every test here runs the concurrent path."""
    with running_worker(
        local_stack, tmp_path_factory.mktemp("worker"), PROMOTER_WORKER_CONCURRENCY=str(CONCURRENCY)
    ) as handle:
        yield handle


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
    first = await events_about(bootstrap, ready_topic, name, event_type=READY)
    set_alias(uri, name, "champion", v2)
    await produce(bootstrap, requested, [(name.encode(), request_bytes(name))])
    both = await events_about(bootstrap, ready_topic, name, count=2, event_type=READY)

    assert [e["data"]["version"] for e in both] == [v1, v2]
    assert both[0] == first[0]
    generations = [e["data"]["generation"] for e in both]
    assert generations[1] > generations[0]
    features, _ = iris_frame()
    for event, version in zip(both, (v1, v2), strict=True):
        data = event["data"]
        assert data["alias"] == "champion"
        assert data["flavor"] == "sklearn"
        assert [c["name"] for c in data["signature"]["columns"]] == list(features.columns)
        assert set(data["stage_seconds"]) >= {"resolve", "download", "check", "stage", "load", "prove"}
        served = _triton_predict(local_stack, data["triton_model_name"])
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

    (event,) = await events_about(bootstrap, worker.topic("model_rejected"), name)
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


async def test_a_model_logged_with_another_scikit_learn_is_served_and_the_difference_logged_for_its_promotion(
    local_stack: LocalStack, worker: WorkerHandle
) -> None:
    """The parity proof cannot see it (MLflow's reference runs this scikit-learn too): the worker's log says it,
    with the promotion's event id, model and version."""
    name = f"oldsk-{uuid.uuid4().hex[:6]}"
    logged_with = ("scikit-learn==0.20.3", f"numpy=={np.__version__}")
    version = register_iris(local_stack.mlflow_tracking_uri, name, pip_requirements=logged_with)

    ready = await promote(local_stack, worker, name, version)

    assert ready["data"]["version"] == version
    event_id = ready["data"]["request_event_id"]
    lines = [json.loads(line) for line in worker.process.log_text().splitlines() if name in line]
    (warning,) = [line for line in lines if line["event"] == "the worker's environment differs from the model's"]
    assert warning["level"] == "warning"
    assert (warning["event_id"], warning["model"], warning["version"]) == (event_id, name, version)
    assert warning["unmet"] == [
        f"scikit-learn {sklearn.__version__} is installed, the model was logged with scikit-learn==0.20.3"
    ]


async def test_unknown_model_is_rejected(local_stack: LocalStack, worker: WorkerHandle) -> None:
    name = f"ghost-{uuid.uuid4().hex[:6]}"
    bootstrap = local_stack.kafka_bootstrap_servers
    await produce(
        bootstrap, worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"], [(name.encode(), request_bytes(name))]
    )

    (event,) = await events_about(bootstrap, worker.topic("model_rejected"), name)
    assert event["data"]["reason_code"] == "model_not_found"
    assert name in event["data"]["message"]


async def test_a_prepared_version_is_loaded_unrouted_then_an_alias_move_serves_it_without_a_load(
    local_stack: LocalStack, worker: WorkerHandle
) -> None:
    name = f"prep-{uuid.uuid4().hex[:6]}"
    uri = local_stack.mlflow_tracking_uri
    version = register_iris(uri, name)
    bootstrap = local_stack.kafka_bootstrap_servers
    requested, ready_topic = worker.topic("promotion_requested"), worker.topic("model_ready")
    prepare = PrepareRequested(
        source="/tests",
        subject=name,
        data=PrepareRequestedData(model_name=name, version=version, origin="cli", requester="pytest"),
    )

    await produce(bootstrap, requested, [(name.encode(), prepare.to_json_bytes())])
    (prepared,) = await events_about(bootstrap, ready_topic, name, event_type=PREPARED)

    triton_model = prepared["data"]["triton_model_name"]
    assert prepared["data"]["request_event_id"] == prepare.id
    assert "load" in prepared["data"]["stage_seconds"]
    triton = triton_http.InferenceServerClient(local_stack.triton_http, network_timeout=10)
    try:
        assert triton.is_model_ready(triton_model), "prepared: loaded on Triton"
    finally:
        triton.close()
    assert worker.metric("promoter_prepared_versions") >= 1
    loads_before = worker.metric("promoter_promotion_stage_seconds_count", stage="load")

    set_alias(uri, name, "champion", version)
    await produce(bootstrap, requested, [(name.encode(), request_bytes(name))])
    (served,) = await events_about(bootstrap, ready_topic, name, event_type=READY)

    assert (served["data"]["alias"], served["data"]["version"]) == ("champion", version)
    assert served["data"]["triton_model_name"] == triton_model
    assert "load" not in served["data"]["stage_seconds"], "the alias move only announces it"
    assert worker.metric("promoter_promotion_stage_seconds_count", stage="load") == loads_before
    on_log = await events_about(bootstrap, ready_topic, name, count=2)
    assert [e["type"] for e in on_log] == [PREPARED, READY], "nothing routed it before the alias moved"


async def test_four_models_are_promoted_at_once_each_in_its_request_order(
    local_stack: LocalStack, worker: WorkerHandle
) -> None:
    uri, bootstrap = local_stack.mlflow_tracking_uri, local_stack.kafka_bootstrap_servers
    names = [f"iris-par{i}-{uuid.uuid4().hex[:6]}" for i in range(CONCURRENCY)]
    versions = {name: register_iris(uri, name) for name in names}
    requests: list[
        tuple[bytes | None, bytes]
    ] = [  # per model: the champion (a load), then the challenger on the same version (no load)
        (name.encode(), request_bytes(name, alias=alias, version=versions[name]))
        for name in names
        for alias in ("champion", "challenger")
    ]
    sent = time.monotonic()
    await produce(bootstrap, worker.topic("promotion_requested"), requests)

    def all_served(records: list[Record]) -> bool:
        return all(len(about(events(records), name, READY)) == 2 for name in names)

    records = await read_until(bootstrap, worker.topic("model_ready"), all_served, timeout_s=90)
    elapsed = time.monotonic() - sent

    busy_s = 0.0
    for name in names:
        served = about(events(records), name, READY)
        assert [e["data"]["alias"] for e in served] == ["champion", "challenger"], "one model's requests in order"
        assert served[0]["data"]["generation"] < served[1]["data"]["generation"]
        busy_s += sum(sum(e["data"]["stage_seconds"].values()) for e in served)
    # One after another, the promotions' own time could not exceed the wall time they all took.
    assert busy_s > elapsed, f"promotions did not overlap: {busy_s:.1f} s of work in {elapsed:.1f} s"
