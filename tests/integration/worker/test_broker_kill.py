"""A broker of a three-node cluster SIGKILLed and started again while promotion requests flow: nothing lost.

The requests name models the registry does not have, so each one must end in ``model.rejected``
and in the dead-letter topic, with no Triton involved: the sets of request ids must be equal.
The killed node is the consumer group's coordinator and leads a third of the partitions; it dies
while the worker is answering the first requests.

A request may be answered twice: the worker's group loses its coordinator, a commit is refused and
the batch is delivered again (at-least-once; measured in ``tests/benchmarks/exactly_once.py``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from deploy.stack.kafka_broker import local_client_settings
from deploy.stack.local_stack import LocalStack
from tests.kafka_cluster import CLUSTER_NODES, bootstrap_servers, group_coordinator, running_kafka_cluster
from tests.worker_harness import Record, events, headers, read_until, request_bytes, running_worker, snapshot

pytestmark = pytest.mark.integration

PER_PHASE = 8  # requests before the kill, while the node is down, after it is back


def _event_ids(records: list[Record], prefix: str) -> Counter[str]:
    return Counter(
        event["data"]["request_event_id"] for event in events(records) if event["subject"].startswith(prefix)
    )


def _dead_letter_ids(records: list[Record], prefix: str) -> Counter[str]:
    return Counter(
        headers(record)["x-dlq-event-id"] for record in records if (record.key or b"").decode().startswith(prefix)
    )


async def test_a_killed_broker_loses_no_request_rejection_or_dead_letter(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    prefix = f"missing-{uuid.uuid4().hex[:6]}-"
    sent: list[str] = []
    with running_kafka_cluster(tmp_path / "kafka") as nodes:
        bootstrap = bootstrap_servers(nodes)
        settings = {
            "PROMOTER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PROMOTER_TOPIC_REPLICATION_FACTOR": str(CLUSTER_NODES),
        }
        with running_worker(local_stack, tmp_path / "worker", **settings) as worker:
            producer = AIOKafkaProducer(**local_client_settings(bootstrap).producer_kwargs())
            await producer.start()

            async def send(phase: str) -> None:
                for i in range(PER_PHASE):
                    event_id = str(uuid.uuid4())
                    model = f"{prefix}{phase}-{i}"
                    await producer.send_and_wait(
                        worker.topic("promotion_requested"), request_bytes(model, event_id=event_id), key=model.encode()
                    )
                    sent.append(event_id)

            try:
                await send("before")
                await read_until(bootstrap, worker.topic("model_rejected"), lambda r: len(_event_ids(r, prefix)) >= 2)
                victim = nodes[await group_coordinator(bootstrap) - 1]
                await asyncio.to_thread(victim.kill)
                killed_at = time.monotonic()
                await send("down")
                down_s = time.monotonic() - killed_at
                await asyncio.to_thread(victim.start)
                await send("after")
            finally:
                await producer.stop()

            rejected_topic, dlq_topic = worker.topic("model_rejected"), worker.topic("promotion_dlq")
            await read_until(bootstrap, rejected_topic, lambda r: len(_event_ids(r, prefix)) >= len(sent), timeout_s=60)
            await read_until(
                bootstrap, dlq_topic, lambda r: len(_dead_letter_ids(r, prefix)) >= len(sent), timeout_s=30
            )
            rejected_records = await snapshot(bootstrap, rejected_topic)
            rejected = _event_ids(rejected_records, prefix)
            dead_letters = _dead_letter_ids(await snapshot(bootstrap, dlq_topic), prefix)

    assert down_s < 30, f"sending {PER_PHASE} requests with a node down took {down_s:.1f} s"
    assert sorted(rejected) == sorted(sent), "every request ends in model.rejected"
    assert sorted(dead_letters) == sorted(sent), "every request ends in the dead-letter topic"
    reasons = {e["data"]["reason_code"] for e in events(rejected_records) if e["subject"].startswith(prefix)}
    assert reasons == {"model_not_found"}, "rejected for its own reason only"
    # What a redelivery may add: the same answer again, never a different one.
    assert sum(dead_letters.values()) - len(sent) == sum(rejected.values()) - len(sent), "one dead letter per answer"
