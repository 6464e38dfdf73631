"""Create the project's topics on a broker, idempotently (pre-create: auto-created topics get defaults)."""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from runtime.settings import KafkaSettings, TopicSettings
from schemas.topics import TopicSpec


async def until_topics_visible(admin: AIOKafkaAdminClient, partitions: dict[str, int], timeout_s: float) -> None:
    """Wait until the broker's metadata shows every new topic with all its partitions.

    Apache Kafka answers a create once its controller committed it; a reader that asks for the
    partitions a moment later could still be told there are none.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        described = {
            topic["topic"]: len(topic["partitions"]) for topic in await admin.describe_topics(list(partitions))
        }
        if all(described.get(name) == count for name, count in partitions.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"created topics not visible with all partitions within {timeout_s:g} s: {described}")
        await asyncio.sleep(0.1)  # poll the broker's metadata


async def ensure_topics(kafka: KafkaSettings, specs: list[TopicSpec], *, replication_factor: int = 1) -> list[str]:
    """Create each topic in ``specs`` that does not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(**kafka.common_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        name=spec.name,
                        num_partitions=spec.partitions,
                        replication_factor=replication_factor,
                        topic_configs=spec.broker_config(),
                    )
                    for spec in missing
                ]
            )
            await until_topics_visible(
                admin, {spec.name: spec.partitions for spec in missing}, kafka.request_timeout_ms / 1000
            )
        return [spec.name for spec in missing]
    finally:
        await admin.close()


async def ensure_project_topics(kafka: KafkaSettings, names: TopicSettings) -> list[str]:
    """Create every topic of model-promoter that is missing, under its configured name."""
    return await ensure_topics(kafka, names.specs(), replication_factor=names.replication_factor)
