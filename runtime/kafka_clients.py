"""Small aiokafka building blocks: clients that always stop, reading topics from offset 0, publishing events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from runtime.settings import KafkaSettings
from schemas.envelope import KAFKA_HEADERS, CloudEvent


class _Client(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


ClientT = TypeVar("ClientT", bound=_Client)


@asynccontextmanager
async def started(client: ClientT) -> AsyncIterator[ClientT]:
    """``async with started(AIOKafkaProducer(...)) as producer:``; stopped on every way out."""
    try:
        await client.start()
        yield client
    finally:
        await client.stop()


async def publish_event(kafka: KafkaSettings, topic: str, event: CloudEvent, *, key: str) -> None:
    """Publish one event and wait for the broker's acknowledgement (a short-lived producer: CLI, DAGs)."""
    async with started(AIOKafkaProducer(**kafka.producer_kwargs())) as producer:
        await producer.send_and_wait(topic, value=event.to_json_bytes(), key=key.encode(), headers=KAFKA_HEADERS)


async def assign_from_start(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Assign every partition of ``topics`` (no consumer group) from offset 0; ``[]`` when none exist yet.

    The partitions come from a fresh metadata answer for all topics: a group-less consumer's own
    metadata holds no topic on Apache Kafka (its bootstrap asks for none), so
    ``consumer.partitions_for_topic`` would say the topic does not exist.
    """
    cluster = await consumer._client.fetch_all_metadata()  # the metadata AIOKafkaConsumer.topics() reads
    partitions = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
    if partitions:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
    return partitions
