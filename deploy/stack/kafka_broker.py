"""The local stack's Kafka broker as ``PROMOTER_STACK_KAFKA_BROKER`` selects it, and the client settings it needs.

Apache Kafka (default) runs the production defaults: idempotent producers, acks=all, topic configs
enforced. tansu starts in milliseconds but cannot do idempotence, compaction, retention or
transactions, and misreports end offsets after multi-record batches: its clients turn idempotence off
and poll fetches fast, since tansu answers fetches by polling.
"""

from __future__ import annotations

from pathlib import Path

from deploy.stack.apache_kafka import apache_kafka_specs
from deploy.stack.errors import StackError
from deploy.stack.process import ServiceSpec
from deploy.stack.settings import KafkaBrokerName, StackSettings
from deploy.stack.tansu_broker import tansu_spec
from runtime.settings import KafkaSettings

# Group sessions of 2 s (a join is held ~half a session on tansu; the broker's rebalances follow it too).
_FAST_GROUPS = {"PROMOTER_KAFKA_SESSION_TIMEOUT_MS": "2000", "PROMOTER_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}

_CLIENT_ENV: dict[KafkaBrokerName, dict[str, str]] = {
    "kafka": {"PROMOTER_KAFKA_ENABLE_IDEMPOTENCE": "true", **_FAST_GROUPS},
    "tansu": {"PROMOTER_KAFKA_ENABLE_IDEMPOTENCE": "false", "PROMOTER_KAFKA_FETCH_MAX_WAIT_MS": "20", **_FAST_GROUPS},
}


def broker_specs(broker: KafkaBrokerName, ports: list[int], run_dir: Path) -> list[ServiceSpec]:
    """How to run the selected broker: one node per port in ``ports`` (tansu: one node only)."""
    if broker == "kafka":
        return apache_kafka_specs(ports, run_dir)
    if len(ports) != 1:
        raise StackError(f"tansu runs one node, not {len(ports)}: set PROMOTER_STACK_KAFKA_BROKER=kafka for a cluster")
    return [tansu_spec(ports[0], run_dir)]


def client_env(broker: KafkaBrokerName) -> dict[str, str]:
    """``PROMOTER_KAFKA_*`` values a client of the selected local broker needs (bootstrap servers aside)."""
    return dict(_CLIENT_ENV[broker])


def local_client_settings(bootstrap_servers: str, broker: KafkaBrokerName | None = None) -> KafkaSettings:
    """The settings a client of the local broker at ``bootstrap_servers`` uses (broker: the configured one).

    For tests and benchmarks: ``AIOKafkaProducer(**local_client_settings(bootstrap).producer_kwargs())``
    is idempotent with acks=all on Apache Kafka, as in production.
    """
    chosen = broker or StackSettings().kafka_broker
    fields = {name.removeprefix("PROMOTER_KAFKA_").lower(): value for name, value in client_env(chosen).items()}
    return KafkaSettings.model_validate({**fields, "bootstrap_servers": bootstrap_servers})
