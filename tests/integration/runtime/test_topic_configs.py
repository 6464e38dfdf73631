"""The topic contract on a broker that enforces it: configs as declared, ``routing.updated`` really compacted.

Runs on the session's Apache Kafka (tansu stores ``cleanup.policy`` but never compacts).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

# confluent_kafka.admin re-exports ConfigResource without listing it in __all__.
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from deploy.stack.app_processes import gateway_spec
from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, poll_until, stop_all
from runtime.kafka_topics import ensure_project_topics
from runtime.settings import TopicSettings
from schemas.model_ready import ModelReady
from schemas.topics import MODEL_READY, ROUTING_UPDATED, TopicSpec
from tests.event_samples import all_events
from tests.gateway_harness import ready_bytes, routing_bytes, running_gateways
from tests.worker_harness import Record, snapshot, unique_topics

pytestmark = pytest.mark.integration

# On these test topics only: roll a segment 100 ms after its first record and let the cleaner take
# any dirty segment at once. The broker checks for cleanable logs every second (the stack's runner).
FAST_COMPACTION = {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01", "max.compaction.lag.ms": "100"}
COMPACTION_DEADLINE_S = 60.0


@pytest.fixture(autouse=True)
def _needs_a_compacting_broker(local_stack: LocalStack) -> None:
    assert local_stack.kafka_broker == "kafka", "these tests need Apache Kafka: PROMOTER_STACK_KAFKA_BROKER=kafka"


def _described_configs(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return {name: entry.value for name, entry in entries.items()}


async def test_project_topics_are_created_with_their_declared_configs(local_stack: LocalStack) -> None:
    topics = unique_topics()
    names = TopicSettings.model_validate({key.removeprefix("PROMOTER_TOPIC_").lower(): v for key, v in topics.items()})

    created = await ensure_project_topics(local_stack.kafka_settings(), names)

    assert sorted(created) == sorted(topics.values())
    admin = AIOKafkaAdminClient(bootstrap_servers=local_stack.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(list(topics.values()))}
    finally:
        await admin.close()
    for spec in names.specs():
        configs = await asyncio.to_thread(_described_configs, local_stack.kafka_bootstrap_servers, spec.name)
        assert {key: configs[key] for key in spec.broker_config()} == spec.broker_config(), spec.name
        assert described[spec.name] == spec.partitions, spec.name
    assert _described_configs(local_stack.kafka_bootstrap_servers, names.routing_updated)["cleanup.policy"] == "compact"
    ready_configs = _described_configs(local_stack.kafka_bootstrap_servers, names.model_ready)
    assert (ready_configs["cleanup.policy"], ready_configs["retention.ms"]) == ("delete", "-1")


async def test_a_service_that_may_not_create_topics_refuses_to_start_naming_the_missing_ones(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    topics = unique_topics()
    await _create(local_stack.kafka_bootstrap_servers, replace(MODEL_READY, name=topics["PROMOTER_TOPIC_MODEL_READY"]))
    env = {**local_stack.client_env(), **topics, "PROMOTER_KAFKA_CREATE_TOPICS": "false"}
    (port,) = free_ports(1)
    gateway = ManagedProcess(gateway_spec(env, port=port, run_dir=tmp_path, name="gw-no-topics"), tmp_path / "gw.log")
    gateway.start()
    try:
        assert poll_until(lambda: not gateway.alive(), 30.0), "the gateway started without its topics"
    finally:
        stop_all([gateway])
    assert gateway.returncode() != 0
    missing = f"{topics['PROMOTER_TOPIC_GATEWAY_STATUS']}, {topics['PROMOTER_TOPIC_ROUTING_UPDATED']}"
    log = gateway.log_text()
    assert f"these topics do not exist on the broker: {missing}. PROMOTER_KAFKA_CREATE_TOPICS=false" in log
    admin = AIOKafkaAdminClient(bootstrap_servers=local_stack.kafka_bootstrap_servers)
    await admin.start()
    try:
        assert topics["PROMOTER_TOPIC_ROUTING_UPDATED"] not in await admin.list_topics(), "nothing was created"
    finally:
        await admin.close()


async def _create(bootstrap: str, spec: TopicSpec, **configs: str) -> None:
    """``spec``'s topic with one partition (one filler record then rolls its segment) and extra ``configs``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topic = NewTopic(
            spec.name, num_partitions=1, replication_factor=1, topic_configs=spec.broker_config() | configs
        )
        await admin.create_topics([topic])
    finally:
        await admin.close()


def _latest_by_key(records: list[Record]) -> dict[bytes, list[Record]]:
    by_key: dict[bytes, list[Record]] = {}
    for record in records:
        by_key.setdefault(record.key or b"", []).append(record)
    return by_key


async def _until_compacted(
    producer: AIOKafkaProducer,
    bootstrap: str,
    topics: list[str],
    filler: Callable[[int], bytes],
    compacted: Callable[[dict[str, list[Record]]], bool],
) -> dict[str, list[Record]]:
    """Keep appending a filler record (it rolls the active segment, which is never cleaned) until ``compacted``."""
    deadline = time.monotonic() + COMPACTION_DEADLINE_S
    generation = 0
    while True:
        for topic in topics:
            await producer.send_and_wait(topic, filler(generation), key=b"filler")
        generation += 1
        logs = {topic: await snapshot(bootstrap, topic) for topic in topics}
        if compacted(logs):
            return logs
        assert time.monotonic() < deadline, f"not compacted within {COMPACTION_DEADLINE_S} s: {logs}"
        await asyncio.sleep(0.2)  # poll: one filler record per round


async def test_routing_updated_is_compacted_and_a_gateway_started_afterwards_gets_the_same_routing(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    bootstrap = local_stack.kafka_bootstrap_servers
    topics = unique_topics()
    routing = replace(ROUTING_UPDATED, name=topics["PROMOTER_TOPIC_ROUTING_UPDATED"])
    await _create(bootstrap, routing, **FAST_COMPACTION)
    model_a, model_b = f"compact-a-{uuid.uuid4().hex[:6]}", f"compact-b-{uuid.uuid4().hex[:6]}"
    splits = [{"champion": 100 - 10 * (g % 5), "challenger": 10 * (g % 5)} for g in range(20)]
    producer = AIOKafkaProducer(**local_stack.kafka_settings().producer_kwargs())
    await producer.start()
    try:
        for generation, weights in enumerate(splits):
            await producer.send_and_wait(
                routing.name, routing_bytes(model_a, weights, generation), key=model_a.encode()
            )
        await producer.send_and_wait(routing.name, routing_bytes(model_b, {"champion": 100}, 0), key=model_b.encode())
        await producer.send_and_wait(routing.name, routing_bytes(model_b, {"challenger": 100}, 1), key=model_b.encode())

        def one_per_model(logs: dict[str, list[Record]]) -> bool:
            by_key = _latest_by_key(logs[routing.name])
            return len(by_key.get(model_a.encode(), [])) == 1 and len(by_key.get(model_b.encode(), [])) == 1

        logs = await _until_compacted(
            producer, bootstrap, [routing.name], lambda g: routing_bytes("filler", {"champion": 100}, g), one_per_model
        )
    finally:
        await producer.stop()

    by_key = _latest_by_key(logs[routing.name])
    (kept_a,) = by_key[model_a.encode()]
    assert kept_a.offset == len(splits) - 1, "the broker kept model A's latest record and dropped the 19 before it"
    assert logs[routing.name][0].offset > 0, "the log no longer starts at offset 0"

    env = {**local_stack.client_env(), **topics}
    with running_gateways(local_stack, tmp_path / "gateways", env, ["gw-late"]) as (gateway,):

        def policies() -> dict[str, Any]:
            models = gateway.get("/models").json()["models"]
            return {name: models.get(name, {}).get("weights") for name in (model_a, model_b)}

        want = {model_a: splits[-1], model_b: {"challenger": 100}}
        deadline = time.monotonic() + 30
        while policies() != want:
            assert time.monotonic() < deadline, f"the late gateway routes {policies()}, want {want}"
            await asyncio.sleep(0.2)  # poll the gateway's view


async def test_model_ready_is_kept_whole_because_compaction_by_model_would_drop_other_aliases(
    local_stack: LocalStack,
) -> None:
    """model.ready is keyed by model name (per-model order): compacting it would keep one alias per model."""
    bootstrap = local_stack.kafka_bootstrap_servers
    suffix = uuid.uuid4().hex[:8]
    as_declared = replace(MODEL_READY, name=f"it.model_ready.declared.{suffix}")
    if_compacted = replace(MODEL_READY, name=f"it.model_ready.compacted.{suffix}", compacted=True)
    # The declared topic gets the same fast segments: only the cleanup policy differs between the two.
    await _create(bootstrap, as_declared, **FAST_COMPACTION)
    await _create(bootstrap, if_compacted, **FAST_COMPACTION)
    model = f"ready-{suffix}"
    (sample,) = [event for event in all_events() if isinstance(event, ModelReady)]
    template = sample.model_dump(mode="json")
    champion = ready_bytes(template, model_name=model, alias="champion", version=1, generation=1)
    challenger = ready_bytes(template, model_name=model, alias="challenger", version=2, generation=2)
    producer = AIOKafkaProducer(**local_stack.kafka_settings().producer_kwargs())
    await producer.start()
    try:
        for topic in (as_declared.name, if_compacted.name):
            await producer.send_and_wait(topic, champion, key=model.encode())
            await producer.send_and_wait(topic, challenger, key=model.encode())

        def compacted_copy_lost_a_record(logs: dict[str, list[Record]]) -> bool:
            return len(_latest_by_key(logs[if_compacted.name]).get(model.encode(), [])) == 1

        logs = await _until_compacted(
            producer,
            bootstrap,
            [as_declared.name, if_compacted.name],
            lambda g: ready_bytes(template, model_name="filler", generation=g + 1),
            compacted_copy_lost_a_record,
        )
    finally:
        await producer.stop()

    def aliases(topic: str) -> list[str]:
        records = _latest_by_key(logs[topic]).get(model.encode(), [])
        return [ModelReady.model_validate_json(r.value or b"").data.alias for r in records]

    assert aliases(if_compacted.name) == ["challenger"], "compaction by model name dropped the champion"
    assert aliases(as_declared.name) == ["champion", "challenger"], "as declared, every alias's record stays"
