"""Every Kafka topic of model-promoter: default name, what the key is, partitions, retention.

The names are defaults; deployments override them with ``PROMOTER_TOPIC_*`` settings
(:class:`runtime.settings.TopicSettings`). Everything else is the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.dead_letter_replayed import DeadLetterReplayed
from schemas.envelope import CloudEvent
from schemas.fleet_status import WorkerFleetStatus
from schemas.gateway_status import GatewayHeartbeat, GatewaySwapAcked
from schemas.model_ready import ModelReady, ServingStopped
from schemas.prepared_version import ModelPrepared, PrepareRequested
from schemas.promotion_rejected import PromotionRejected
from schemas.promotion_requested import PromotionRequested
from schemas.routing_updated import RoutingUpdated

RETAIN_FOREVER_MS = -1
SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000
THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000


def min_insync_replicas(replication_factor: int) -> int:
    """Replicas that must hold a write before the broker acknowledges it (producers send acks=all).

    2 from replication factor 3 on: one broker may die without losing an acknowledged record, and
    writes go on while it is down. Below 3, 1: requiring every replica would stop writes on one loss.
    """
    return 2 if replication_factor >= 3 else 1


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    key: str
    purpose: str
    partitions: int
    compacted: bool
    retention_ms: int
    event_types: tuple[type[CloudEvent], ...] = field(default=())

    def broker_config(self, replication_factor: int = 1) -> dict[str, str]:
        """Topic-level configuration to create it with, on ``replication_factor`` replicas."""
        return {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(min_insync_replicas(replication_factor)),
        }


PROMOTION_REQUESTED = TopicSpec(
    name="model.promotion.requested",
    key="registered model name",
    purpose="promotion requests from the ingress, DAGs and the CLI",
    partitions=6,
    compacted=False,
    retention_ms=SEVEN_DAYS_MS,
    event_types=(PromotionRequested, PrepareRequested),
)
# Keyed by model name for per-model order, so it cannot be compacted without losing the other
# aliases of a model: it is kept whole instead. One record per promotion keeps it small.
MODEL_READY = TopicSpec(
    name="model.ready",
    key="registered model name",
    purpose="the serving-state log gateways replay: one record per served (model, alias, version)",
    partitions=6,
    compacted=False,
    retention_ms=RETAIN_FOREVER_MS,
    event_types=(ModelReady, ServingStopped, ModelPrepared),
)
MODEL_REJECTED = TopicSpec(
    name="model.rejected",
    key="registered model name",
    purpose="permanent failures with the reason, for people and dashboards",
    partitions=3,
    compacted=False,
    retention_ms=THIRTY_DAYS_MS,
    event_types=(PromotionRejected,),
)
PROMOTION_DLQ = TopicSpec(
    name="model.promotion.dlq",
    key="the original record's key",
    purpose="original bytes unchanged plus diagnostic headers (reason, attempts, source offset)",
    partitions=3,
    compacted=False,
    retention_ms=THIRTY_DAYS_MS,
)
GATEWAY_STATUS = TopicSpec(
    name="gateway.status",
    key="gateway id; worker/<replica id> for a worker's fleet status",
    purpose="swap acks and heartbeats from gateway replicas; each worker's view of the Triton endpoints",
    partitions=3,
    compacted=False,
    retention_ms=SEVEN_DAYS_MS,
    event_types=(GatewaySwapAcked, GatewayHeartbeat, WorkerFleetStatus),
)
ROUTING_UPDATED = TopicSpec(
    name="routing.updated",
    key="registered model name",
    purpose="traffic policy per model: A/B weights, shadow target; the latest per model wins",
    partitions=3,
    compacted=True,
    retention_ms=RETAIN_FOREVER_MS,
    event_types=(RoutingUpdated,),
)

DEAD_LETTER_REPLAYS = TopicSpec(
    name="model.promotion.replays",
    key="registered model name",
    purpose="audit: who replayed which dead letter, when, how often",
    partitions=1,
    compacted=False,
    retention_ms=RETAIN_FOREVER_MS,
    event_types=(DeadLetterReplayed,),
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    PROMOTION_REQUESTED,
    MODEL_READY,
    MODEL_REJECTED,
    PROMOTION_DLQ,
    GATEWAY_STATUS,
    ROUTING_UPDATED,
    DEAD_LETTER_REPLAYS,
)
