"""Duplicates load once, rollbacks are instant, malformed messages never stop the consumer."""

from __future__ import annotations

import json
import uuid

import pytest

from deploy.stack.local_stack import LocalStack
from tests.worker_harness import (
    Record,
    WorkerHandle,
    events_about,
    headers,
    produce,
    read_until,
    register_iris,
    request_bytes,
    set_alias,
    wait_for,
)

pytestmark = pytest.mark.integration


READY = "io.modelpromoter.model.ready.v1"


async def test_the_same_request_five_times_loads_and_announces_once(
    local_stack: LocalStack, worker: WorkerHandle
) -> None:
    name = f"dup-{uuid.uuid4().hex[:6]}"
    version = register_iris(local_stack.mlflow_tracking_uri, name)
    downloads_before = worker.metric("promoter_promotion_stage_seconds_count", stage="download")
    duplicates_before = worker.metric("promoter_promotions_total", outcome="duplicate")
    same = request_bytes(name, version=version, event_id=str(uuid.uuid4()))
    after = request_bytes(name, alias="challenger", version=version)  # answered after every duplicate was handled
    bootstrap = local_stack.kafka_bootstrap_servers
    key: bytes | None = name.encode()
    messages = [(key, same)] * 5 + [(key, after)]

    await produce(bootstrap, worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"], messages)
    announced = await events_about(bootstrap, worker.topic("model_ready"), name, count=2, event_type=READY)

    assert [e["data"]["alias"] for e in announced] == ["champion", "challenger"], "one answer per request event id"
    await wait_for(
        lambda: worker.metric("promoter_promotions_total", outcome="duplicate") == duplicates_before + 4,
        timeout_s=10,
        what="4 duplicates counted",
    )
    assert worker.metric("promoter_promotion_stage_seconds_count", stage="download") == downloads_before + 1, (
        "one copy: the challenger reuses the staged model"
    )


async def test_rollback_to_a_loaded_version_is_a_new_decision_without_a_load(
    local_stack: LocalStack, worker: WorkerHandle
) -> None:
    name = f"rollback-{uuid.uuid4().hex[:6]}"
    uri = local_stack.mlflow_tracking_uri
    v1, v2 = register_iris(uri, name), register_iris(uri, name, regularisation=0.05)
    bootstrap = local_stack.kafka_bootstrap_servers
    requested, ready_topic = (
        worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"],
        worker.topics["PROMOTER_TOPIC_MODEL_READY"],
    )

    for count, version in enumerate((v1, v2, v1), start=1):
        set_alias(uri, name, "champion", version)
        await produce(bootstrap, requested, [(name.encode(), request_bytes(name))])
        announced = await events_about(bootstrap, ready_topic, name, count=count, event_type=READY)

    assert [e["data"]["version"] for e in announced] == [v1, v2, v1]
    generations = [e["data"]["generation"] for e in announced]
    assert generations == sorted(set(generations)), "every decision gets a greater generation"
    rollback_stages = announced[-1]["data"]["stage_seconds"]
    assert "download" not in rollback_stages
    assert "stage" not in rollback_stages
    assert announced[-1]["data"]["triton_model_name"] == announced[0]["data"]["triton_model_name"]


MALFORMED: list[bytes] = [
    b"not json",
    b"\xff\xfe binary",
    b"[]",
    b'{"type": "io.modelpromoter.promotion.requested.v1"}',
    b'{"type": "com.example.unknown", "data": {}}',
    json.dumps(
        {
            "specversion": "1.0",
            "id": "x",
            "source": "/t",
            "type": "io.modelpromoter.promotion.requested.v1",
            "data": {"model_name": "m", "alias": "latest", "origin": "cli", "requester": "r"},
        }
    ).encode(),
    json.dumps(
        {
            "specversion": "1.0",
            "id": "y",
            "source": "/t",
            "type": "io.modelpromoter.promotion.requested.v1",
            "data": {"model_name": "m", "version": "3", "origin": "cli", "requester": "r"},
        }
    ).encode(),
    b"",
]


async def test_malformed_messages_go_to_the_dlq_and_valid_ones_are_served(
    local_stack: LocalStack, worker: WorkerHandle
) -> None:
    name = f"mixed-{uuid.uuid4().hex[:6]}"
    version = register_iris(local_stack.mlflow_tracking_uri, name)
    aliases = [f"a{i}" for i in range(10)]
    marker = uuid.uuid4().hex
    messages: list[tuple[bytes | None, bytes]] = []
    for index in range(200):
        bad = MALFORMED[index % len(MALFORMED)]
        messages.append((f"junk-{marker}-{index}".encode(), bad))
        if index % 20 == 0:
            alias = aliases[index // 20]
            messages.append((name.encode(), request_bytes(name, alias=alias, version=version)))
    bootstrap = local_stack.kafka_bootstrap_servers

    await produce(bootstrap, worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"], messages)

    def ours(records: list[Record]) -> list[Record]:
        return [r for r in records if (r.key or b"").startswith(f"junk-{marker}".encode())]

    dead = ours(
        await read_until(
            bootstrap, worker.topics["PROMOTER_TOPIC_PROMOTION_DLQ"], lambda r: len(ours(r)) >= 200, timeout_s=90
        )
    )
    served = await events_about(bootstrap, worker.topic("model_ready"), name, count=10, event_type=READY, timeout_s=90)

    assert len(dead) == 200
    by_key = {r.key: r for r in dead}
    for index in range(200):
        letter = by_key[f"junk-{marker}-{index}".encode()]
        assert letter.value == MALFORMED[index % len(MALFORMED)], "original bytes kept"
        diagnostic = headers(letter)
        assert diagnostic["x-dlq-error-type"] == "malformed"
        assert diagnostic["x-dlq-reason-code"] == "invalid_event"
        assert diagnostic["x-dlq-reason"].startswith("not a valid promotion request: ")
        assert diagnostic["x-dlq-source-topic"] == worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"]
        assert int(diagnostic["x-dlq-source-offset"]) >= 0
    reasons = {headers(by_key[f"junk-{marker}-{i}".encode()])["x-dlq-reason"] for i in range(len(MALFORMED))}
    assert any("data.alias: alias 'latest' is reserved" in reason for reason in reasons)
    assert any("data.version: Input should be a valid integer" in reason for reason in reasons)
    assert sorted(e["data"]["alias"] for e in served) == sorted(aliases)
