"""What the console pages show, read from the topics to their end (never from a store of its own).

The serving view reuses ``promoter status``'s :class:`ServingStatus` and the routing client's
:class:`NewestPolicies`; the history is :class:`console.serving_history.ServingHistory`. Each read
starts a consumer, reads every named topic to the end seen at start, and stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import ConsumerRecord

from console.serving_history import ServingHistory
from promoter_cli.serving_status import ServingStatus
from promoter_client.routing import NewestPolicies
from runtime.settings import KafkaSettings, TopicSettings
from runtime.topic_reading import caught_up
from schemas.routing_updated import RoutingUpdatedData


@dataclass
class ServingSnapshot:
    """What should be served, what each gateway serves, each Triton endpoint, and each model's traffic policy."""

    status: ServingStatus = field(default_factory=ServingStatus)
    routing: NewestPolicies = field(default_factory=NewestPolicies)

    @property
    def policies(self) -> dict[str, RoutingUpdatedData]:
        return self.routing.by_model


async def read_serving(kafka: KafkaSettings, topics: TopicSettings, timeout_s: float) -> ServingSnapshot:
    """``model.ready``, ``gateway.status`` and ``routing.updated`` read to their end."""
    snapshot = ServingSnapshot()

    def apply(record: ConsumerRecord[bytes, bytes]) -> None:
        if record.topic == topics.routing_updated:
            snapshot.routing.apply(record)
        else:
            snapshot.status.apply(record)

    names = [topics.model_ready, topics.gateway_status, topics.routing_updated]
    async with caught_up(kafka, names, apply, timeout_s):
        return snapshot


async def read_history(kafka: KafkaSettings, topics: TopicSettings, timeout_s: float) -> ServingHistory:
    """``model.ready`` and ``model.rejected`` read to their end."""
    history = ServingHistory()
    async with caught_up(kafka, [topics.model_ready, topics.model_rejected], history.apply, timeout_s):
        return history
