"""Publish a traffic policy for a model on ``routing.updated``: A/B weights across aliases, a shadow alias.

The generation is the publishing time in milliseconds, so a later policy always wins over an
earlier one at every gateway, whichever order they read them in.
"""

from __future__ import annotations

import time

from runtime.kafka_clients import publish_event
from runtime.settings import KafkaSettings, TopicSettings
from schemas.routing_updated import RoutingUpdated, RoutingUpdatedData


async def publish_routing(
    model: str,
    weights: dict[str, int],
    *,
    shadow_alias: str | None = None,
    shadow_sample_percent: float = 0.0,
    kafka: KafkaSettings | None = None,
    topics: TopicSettings | None = None,
) -> RoutingUpdated:
    """Validate and publish the policy (ValueError naming the field when it is not valid)."""
    kafka = kafka or KafkaSettings()
    topics = topics or TopicSettings()
    data = RoutingUpdatedData(
        model_name=model,
        weights=weights,
        shadow_alias=shadow_alias,
        shadow_sample_percent=shadow_sample_percent,
        generation=time.time_ns() // 1_000_000,
    )
    event = RoutingUpdated(source="/model-promoter/cli", subject=model, data=data)
    await publish_event(kafka, topics.routing_updated, event, key=model)
    return event
