"""The secured Apache Kafka broker of ``deploy/stack/secure_kafka.py``, ready, with every service's ACLs and topics.

ACLs and readiness go through ``confluent-kafka``'s admin client: aiokafka's has no ACL calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import KafkaException

# confluent_kafka.admin re-exports these without listing them in __all__.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from deploy.kafka_resources import SERVICES, ServiceAccess
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from deploy.stack.secure_kafka import ADMIN_USER, SecureKafka, secure_kafka_spec
from runtime.kafka_topics import ensure_project_topics
from runtime.settings import TopicSettings

ACL_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 1.0


def admin_answers(kafka: SecureKafka) -> bool:
    """One authenticated metadata request as the admin: True once it names a broker and a controller."""
    try:
        metadata = AdminClient(kafka.librdkafka_config()).list_topics(timeout=PROBE_TIMEOUT_S)
    except KafkaException:
        return False
    return bool(metadata.brokers) and metadata.controller_id >= 0


def service_acl_bindings(service: ServiceAccess) -> list[AclBinding]:
    """ACL bindings that allow ``service`` what its Strimzi ``KafkaUser`` allows, and no more."""
    return [
        AclBinding(
            ResourceType[acl["resource"]["type"].upper()],
            acl["resource"]["name"],
            ResourcePatternType[acl["resource"]["patternType"].upper()],
            f"User:{service.user}",
            "*",
            AclOperation[operation.upper()],
            AclPermissionType.ALLOW,
        )
        for acl in service.acls()
        for operation in acl["operations"]
    ]


def create_service_acls(kafka: SecureKafka) -> int:
    """Create every service's ACLs as the admin; return how many bindings were created."""
    bindings = [binding for service in SERVICES for binding in service_acl_bindings(service)]
    admin = AdminClient(kafka.librdkafka_config())  # held until every answer is in: a freed client cancels them
    for future in admin.create_acls(bindings, request_timeout=ACL_TIMEOUT_S).values():
        future.result(timeout=ACL_TIMEOUT_S)
    return len(bindings)


@contextmanager
def running_secure_kafka(run_dir: Path) -> Iterator[tuple[SecureKafka, ManagedProcess]]:
    """The secured broker, ready, with the services' ACLs and the project's topics (created by the admin)."""
    spec, kafka = secure_kafka_spec(run_dir, admin_answers)
    broker = ManagedProcess(spec, run_dir / "kafka.log")
    broker.start()
    try:
        wait_all_ready([broker])
        create_service_acls(kafka)
        asyncio.run(ensure_project_topics(kafka.client_settings(ADMIN_USER), TopicSettings()))
        yield kafka, broker
    finally:
        stop_all([broker])
