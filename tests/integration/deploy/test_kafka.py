"""The local stack's broker (Kafka or tansu) speaks enough Kafka for the project: topics, keys, headers, groups."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.stack.local_stack import LocalStack
from runtime.kafka_topics import until_topics_visible

pytestmark = pytest.mark.integration

PARTITIONS = 3


async def test_produce_and_consume_keys_headers_and_per_key_order(local_stack: LocalStack) -> None:
    bootstrap = local_stack.kafka_bootstrap_servers
    topic = f"it-kafka-{uuid.uuid4().hex[:12]}"
    group = f"it-group-{uuid.uuid4().hex[:12]}"

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
        await until_topics_visible(admin, {topic: PARTITIONS}, timeout_s=30)
    finally:
        await admin.close()

    keys = [f"model-{i}".encode() for i in range(4)]
    sent: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
    partition_of: dict[bytes, int] = {}
    producer = AIOKafkaProducer(**local_stack.kafka_settings().producer_kwargs())
    await producer.start()
    try:
        for seq in range(5):
            for key in keys:
                value = f"{key.decode()}:{seq}".encode()
                headers = [("seq", str(seq).encode()), ("source", b"integration-test")]
                metadata = await producer.send_and_wait(topic, value=value, key=key, headers=headers)
                assert partition_of.setdefault(key, metadata.partition) == metadata.partition
                sent.append((key, value, headers))
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    received: list[tuple[bytes, bytes, list[tuple[str, bytes]], int]] = []
    try:
        while len(received) < len(sent):
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"no records within 10 s; got {len(received)} of {len(sent)}"
            for records in batches.values():
                for record in records:
                    assert record.key is not None
                    assert record.value is not None
                    received.append((record.key, record.value, list(record.headers), record.partition))
    finally:
        await consumer.stop()

    assert len(received) == len(sent)
    assert sorted((k, v) for k, v, _, _ in received) == sorted((k, v) for k, v, _ in sent)
    for key, value, headers, partition in received:
        assert partition == partition_of[key]
        assert headers == [("seq", value.split(b":")[1]), ("source", b"integration-test")]
    for key in keys:
        values = [value for k, value, _, _ in received if k == key]
        assert values == [f"{key.decode()}:{seq}".encode() for seq in range(5)], "per-key order broken"
