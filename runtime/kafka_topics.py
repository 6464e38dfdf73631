"""Create the project's topics on a broker, idempotently (pre-create: auto-created topics get defaults)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from runtime.settings import KafkaSettings, TopicSettings
from schemas.topics import TopicSpec


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
        return [spec.name for spec in missing]
    finally:
        await admin.close()


async def ensure_project_topics(kafka: KafkaSettings, names: TopicSettings) -> list[str]:
    """Create every topic of model-promoter that is missing, under its configured name."""
    return await ensure_topics(kafka, names.specs(), replication_factor=names.replication_factor)
