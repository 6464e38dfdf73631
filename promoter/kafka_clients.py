"""Use aiokafka clients as context managers that always stop them, also when ``start()`` failed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaProducer

from promoter.settings import KafkaSettings
from schemas.envelope import CloudEvent

CLOUDEVENTS_CONTENT_TYPE = b"application/cloudevents+json"


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
        await producer.send_and_wait(
            topic, value=event.to_json_bytes(), key=key.encode(), headers=[("content-type", CLOUDEVENTS_CONTENT_TYPE)]
        )
