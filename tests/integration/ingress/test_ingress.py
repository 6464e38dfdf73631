"""MLflow webhooks through the real ingress process: signed deliveries in, promotion requests on Kafka out."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlflow import MlflowClient

from deploy.stack.app_processes import ingress_spec
from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from ingress.deliveries import event_id_for
from promoter_cli.webhook_registration import register_webhook
from tests.gateway_harness import GatewayHandle, iris_records, running_gateways
from tests.ingress_harness import Ingress, running_ingress, signed_delivery
from tests.worker_harness import (
    WorkerHandle,
    events,
    events_about,
    iris_frame,
    read_until,
    register_iris,
    running_worker,
    sklearn_predictions,
    snapshot,
    unique_topics,
    until,
    wait_for,
)

pytestmark = pytest.mark.integration

READY = "io.modelpromoter.model.ready.v1"


@contextmanager
def mlflow_webhook(tracking_uri: str, ingress: Ingress) -> Iterator[str]:
    name = f"it-ingress-{uuid.uuid4().hex[:8]}"
    registration = register_webhook(tracking_uri, f"{ingress.url}/webhooks/mlflow", ingress.secret, name=name)
    assert registration.created
    try:
        yield registration.webhook_id
    finally:
        MlflowClient(tracking_uri).delete_webhook(registration.webhook_id)


@contextmanager
def webhook_pipeline(stack: LocalStack, tmp_path: Path) -> Iterator[tuple[WorkerHandle, list[GatewayHandle]]]:
    """MLflow webhook -> ingress -> Kafka -> worker -> two gateways, all real, on fresh topics."""
    with running_worker(stack, tmp_path / "worker") as worker:
        env = {**stack.client_env(), **worker.topics}
        with (
            running_ingress(env, tmp_path / "ingress", secrets.token_hex(16)) as ingress,
            running_gateways(stack, tmp_path / "gateways", env, ["gw-a", "gw-b"]) as gateways,
            mlflow_webhook(stack.mlflow_tracking_uri, ingress),
        ):
            yield worker, gateways


def _requests_for(records: list[dict[str, object]], model: str, alias: str) -> list[dict[str, object]]:
    return [e for e in records if e.get("subject") == model and e["data"]["alias"] == alias]  # type: ignore[index]


async def test_an_alias_set_in_mlflow_is_served_through_webhook_ingress_and_worker(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    uri, bootstrap = local_stack.mlflow_tracking_uri, local_stack.kafka_bootstrap_servers
    name = f"webhook-{uuid.uuid4().hex[:6]}"
    version = register_iris(uri, name)
    client = MlflowClient(uri)

    with webhook_pipeline(local_stack, tmp_path) as (worker, gateways):
        requested = worker.topic("promotion_requested")

        async def warmed_up() -> bool:  # MLflow caches its webhook list per event type for up to its TTL
            client.set_registered_model_alias(name, "warmup", str(version))
            return bool(_requests_for(events(await snapshot(bootstrap, requested)), name, "warmup"))

        await until(warmed_up, timeout_s=30, what="the warm-up alias delivery reached Kafka through the ingress")
        client.set_registered_model_alias(name, "champion", str(version))

        (request,) = _requests_for(
            events(
                await read_until(
                    bootstrap, requested, lambda r: bool(_requests_for(events(r), name, "champion")), timeout_s=30
                )
            ),
            name,
            "champion",
        )
        served = await events_about(bootstrap, worker.topic("model_ready"), name, event_type=READY, timeout_s=60)
        while not any(e["data"]["alias"] == "champion" for e in served):
            served = await events_about(
                bootstrap, worker.topic("model_ready"), name, count=len(served) + 1, event_type=READY, timeout_s=60
            )
        await wait_for(
            lambda: all(g.served(name) == version for g in gateways), timeout_s=30, what="both gateways serve it"
        )
        features, _ = iris_frame()
        rows = features.sample(60, random_state=1)  # within the model's max_batch_size of 64
        async with httpx.AsyncClient(timeout=30) as http:
            answers = [await http.post(f"{g.url}/predict/{name}", json=iris_records(rows.to_numpy())) for g in gateways]

    assert request["data"]["origin"] == "mlflow_webhook"  # type: ignore[index]
    delivery_id = request["data"]["requester"].removeprefix("mlflow-webhook:")  # type: ignore[index]
    assert request["id"] == event_id_for(delivery_id)
    assert "version" not in request["data"], "the worker re-reads the alias; the webhook is only a hint"  # type: ignore[operator]
    assert {(e["data"]["alias"], e["data"]["version"]) for e in served} >= {("champion", version)}
    expected = sklearn_predictions(uri, name, version, rows)
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == str(version)
        assert np.array_equal(np.asarray(answer.json()["predictions"]).ravel(), expected)


async def test_duplicates_publish_once_and_kafka_down_answers_503(local_stack: LocalStack, tmp_path: Path) -> None:
    topics = unique_topics()
    secret = secrets.token_hex(16)
    payload = {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-11-22T00:00:00+00:00",
        "data": {"name": f"dup-{uuid.uuid4().hex[:6]}", "alias": "champion", "version": "1"},
    }
    headers, body = signed_delivery(secret, payload)

    with running_ingress({**local_stack.client_env(), **topics}, tmp_path / "up", secret) as ingress:
        async with httpx.AsyncClient(base_url=ingress.url, timeout=10) as http:
            answers = [await http.post("/webhooks/mlflow", content=body, headers=headers) for _ in range(3)]
            tampered = await http.post("/webhooks/mlflow", content=body + b" ", headers=headers)
            unknown = await http.get("/webhooks/unknown")
        records = await read_until(
            local_stack.kafka_bootstrap_servers, topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"], lambda r: len(r) >= 1
        )

    assert [a.status_code for a in answers] == [202, 200, 200]
    assert answers[1].json()["status"] == "duplicate"
    assert tampered.status_code == 401
    assert "does not match the body" in tampered.json()["error"]
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Not Found"})
    assert len(records) == 1
    assert json.loads(records[0].value)["id"] == event_id_for(headers["X-MLflow-Delivery-Id"])

    (closed,) = free_ports(1)
    down_env = {**local_stack.client_env(), **topics, "PROMOTER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}"}
    (port,) = free_ports(1)
    spec = ingress_spec(
        {**down_env, "PROMOTER_INGRESS_WEBHOOK_SECRETS": secret}, port=port, run_dir=tmp_path, ready_path="/health"
    )
    process = ManagedProcess(spec, tmp_path / "down.log")
    process.start()
    try:
        wait_all_ready([process])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            fresh_headers, fresh_body = signed_delivery(secret, payload)
            down = await http.post("/webhooks/mlflow", content=fresh_body, headers=fresh_headers)
            not_ready = await http.get("/ready")
    finally:
        stop_all([process])
    assert down.status_code == 503
    assert down.headers["retry-after"] == "5"
    assert "MLflow will retry" in down.json()["error"]
    assert (not_ready.status_code, not_ready.json()) == (503, {"error": "not connected to Kafka yet"})


async def test_a_burst_of_alias_changes_ends_with_what_the_registry_says_now(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    uri, bootstrap = local_stack.mlflow_tracking_uri, local_stack.kafka_bootstrap_servers
    name = f"burst-{uuid.uuid4().hex[:6]}"
    versions = [register_iris(uri, name, regularisation=0.05 + i) for i in range(3)]
    client = MlflowClient(uri)

    with webhook_pipeline(local_stack, tmp_path) as (worker, gateways):
        for version in [*versions, versions[0], versions[2], versions[1]]:  # ends on the second version
            client.set_registered_model_alias(name, "champion", str(version))
        truth = int(client.get_model_version_by_alias(name, "champion").version)
        requested = worker.topic("promotion_requested")

        def settled(records: list[dict[str, object]]) -> bool:
            answered = sum(
                worker.metric("promoter_promotions_total", outcome=o)
                for o in ("served", "duplicate", "coalesced", "already_served")
            )
            asked = len(_requests_for(records, name, "champion"))
            return asked > 0 and answered >= asked

        await read_until(bootstrap, requested, lambda r: settled(events(r)), timeout_s=90)
        served = await events_about(bootstrap, worker.topic("model_ready"), name, event_type=READY)
        await wait_for(
            lambda: all(g.served(name) == truth for g in gateways), timeout_s=30, what="gateways serve the truth"
        )

    assert truth == versions[1]
    assert served[-1]["data"]["version"] == truth, [e["data"]["version"] for e in served]
