"""The project's topics on a broker at a service's start: create the missing ones, or check they all exist.

With ``PROMOTER_KAFKA_CREATE_TOPICS=true`` (the default, for the local stack) a service creates each of its
topics that is missing (pre-create: auto-created topics get the broker's defaults); "already exists" is fine
(another service may create it at the same moment), any other refusal (no ACL to create topics, a
replication factor the cluster cannot meet) is a :class:`TopicsError`. With ``false`` (Kubernetes with
Strimzi ``KafkaTopic`` objects) it only checks, and a missing topic is a :class:`TopicsError` naming it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from runtime.logging import get_logger
from runtime.settings import KafkaSettings, TopicSettings
from schemas.topics import TopicSpec

log = get_logger(__name__)


class TopicsError(RuntimeError):
    """A service cannot start: its topics are missing and may not be created, or the broker refused to create them."""


class TopicAdmin(Protocol):
    """What :func:`prepare_topics` needs of ``AIOKafkaAdminClient``."""

    async def list_topics(self) -> list[str]: ...

    async def create_topics(self, new_topics: list[NewTopic]) -> Any: ...

    async def describe_topics(self, topics: list[str]) -> list[Any]: ...


async def until_topics_visible(admin: TopicAdmin, partitions: dict[str, int], timeout_s: float) -> None:
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


def _refusals(response: Any) -> dict[str, str]:
    """Topic -> why the broker refused to create it, from a CreateTopics response ("already exists" is no refusal)."""
    refused: dict[str, str] = {}
    for topic_error in response.topic_errors:
        topic, code = topic_error[0], topic_error[1]
        message = topic_error[2] if len(topic_error) > 2 else None  # v1+ carry a message
        error = for_code(code)
        if code == 0 or error is TopicAlreadyExistsError:
            continue
        refused[topic] = f"{error.message} ({message or error.description})"
    return refused


def _missing_message(missing: Sequence[str]) -> str:
    return (
        f"these topics do not exist on the broker: {', '.join(missing)}. PROMOTER_KAFKA_CREATE_TOPICS=false, so "
        "this service "
        "does not create them: create them (on Kubernetes: apply deploy/k8s/kafka-topics.yaml and wait for the "
        "KafkaTopic objects to be Ready), check the PROMOTER_TOPIC_* names, or set PROMOTER_KAFKA_CREATE_TOPICS=true"
    )


async def prepare_topics(
    admin: TopicAdmin, specs: Sequence[TopicSpec], *, create: bool, replication_factor: int, timeout_s: float
) -> list[str]:
    """Create (``create``) or only require the topics of ``specs``; return the names created."""
    existing = set(await admin.list_topics())
    missing = [spec for spec in specs if spec.name not in existing]
    if not missing:
        return []
    if not create:
        raise TopicsError(_missing_message([spec.name for spec in missing]))
    response = await admin.create_topics(
        [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication_factor,
                topic_configs=spec.broker_config(replication_factor),
            )
            for spec in missing
        ]
    )
    refused = _refusals(response)
    if refused:
        reasons = "; ".join(f"{topic}: {reason}" for topic, reason in sorted(refused.items()))
        raise TopicsError(
            f"the broker refused to create topics ({reasons}). Give this service's Kafka user the right to "
            "create topics, or create them beforehand and set PROMOTER_KAFKA_CREATE_TOPICS=false"
        )
    await until_topics_visible(admin, {spec.name: spec.partitions for spec in missing}, timeout_s)
    return [spec.name for spec in missing]


async def ensure_topics(kafka: KafkaSettings, specs: Sequence[TopicSpec], *, replication_factor: int = 1) -> list[str]:
    """Connect an admin client and :func:`prepare_topics` as ``PROMOTER_KAFKA_CREATE_TOPICS`` says."""
    admin = AIOKafkaAdminClient(**kafka.common_kwargs())
    await admin.start()
    try:
        return await prepare_topics(
            admin,
            specs,
            create=kafka.create_topics,
            replication_factor=replication_factor,
            timeout_s=kafka.request_timeout_ms / 1000,
        )
    finally:
        await admin.close()


async def ensure_project_topics(kafka: KafkaSettings, names: TopicSettings) -> list[str]:
    """Every topic of model-promoter under its configured name, created if missing and allowed."""
    return await ensure_topics(kafka, names.specs(), replication_factor=names.replication_factor)


async def ensure_service_topics(
    kafka: KafkaSettings, names: TopicSettings, used: set[str] | None = None, *, log_refusal: bool = True
) -> None:
    """At a service's start: the topics it uses (``used``; default every one) exist, or :class:`TopicsError`.

    Logs what it created, or (unless ``log_refusal`` is false: a caller that retries logs it once) the
    reason it cannot start before raising it.
    """
    specs = [spec for spec in names.specs() if used is None or spec.name in used]
    try:
        created = await ensure_topics(kafka, specs, replication_factor=names.replication_factor)
    except TopicsError as error:
        if log_refusal:
            log.error("cannot start: topics", error=str(error))  # noqa: TRY400 (the reason, without a traceback)
        raise
    if created:
        log.info("created topics", topics=created)
