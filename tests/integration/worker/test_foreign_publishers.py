"""Promotion requests published by other stacks' clients are served: librdkafka (as Airflow's Kafka
provider publishes, through ``confluent-kafka``) and the Kafka distribution's console producer."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer

from deploy.stack.kafka_jvm import jvm_command
from deploy.stack.local_stack import LocalStack
from tests.worker_harness import WorkerHandle, events_about, register_iris, request_bytes, set_alias

pytestmark = pytest.mark.integration

READY = "io.modelpromoter.model.ready.v1"
CONSOLE_PRODUCER_TIMEOUT_S = 120.0


def _registered(stack: LocalStack, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    version = register_iris(stack.mlflow_tracking_uri, name, regularisation=1.0)
    set_alias(stack.mlflow_tracking_uri, name, "champion", version)
    return name


def _publish_with_librdkafka(stack: LocalStack, topic: str, key: bytes, value: bytes) -> None:
    kafka = stack.kafka_settings()
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "client.id": "airflow-provider-like",
            "acks": "all",
            "enable.idempotence": kafka.enable_idempotence,
        }
    )
    errors: list[str] = []
    producer.produce(
        topic, value=value, key=key, on_delivery=lambda error, _: errors.append(str(error)) if error else None
    )
    if producer.flush(30) != 0:
        raise KafkaException(f"librdkafka did not deliver within 30 s: {errors}")
    assert errors == []


async def test_a_request_from_confluent_kafka_is_served(local_stack: LocalStack, worker: WorkerHandle) -> None:
    name = _registered(local_stack, "rdkafka")
    event_id = str(uuid.uuid4())
    requested = worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"]

    await asyncio.to_thread(
        _publish_with_librdkafka, local_stack, requested, name.encode(), request_bytes(name, event_id=event_id)
    )

    (ready,) = await events_about(
        local_stack.kafka_bootstrap_servers, worker.topics["PROMOTER_TOPIC_MODEL_READY"], name, event_type=READY
    )
    assert ready["data"]["request_event_id"] == event_id


async def test_a_request_from_the_console_producer_is_served(
    local_stack: LocalStack, worker: WorkerHandle, tmp_path: Path
) -> None:
    name = _registered(local_stack, "console")
    event_id = str(uuid.uuid4())
    line = name.encode() + b"\t" + request_bytes(name, event_id=event_id) + b"\n"
    assert line.count(b"\n") == 1, "one request per line"
    kafka = local_stack.kafka_settings()
    command = [
        *jvm_command(tmp_path / "jvm.args"),
        "org.apache.kafka.tools.ConsoleProducer",
        f"--bootstrap-server={kafka.bootstrap_servers}",
        f"--topic={worker.topics['PROMOTER_TOPIC_PROMOTION_REQUESTED']}",
        "--reader-property=parse.key=true",
        "--reader-property=key.separator=\t",
        "--producer-property=acks=all",
        f"--producer-property=enable.idempotence={str(kafka.enable_idempotence).lower()}",
    ]

    result = await asyncio.to_thread(
        subprocess.run, command, input=line, capture_output=True, timeout=CONSOLE_PRODUCER_TIMEOUT_S, check=False
    )

    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    (ready,) = await events_about(
        local_stack.kafka_bootstrap_servers, worker.topics["PROMOTER_TOPIC_MODEL_READY"], name, event_type=READY
    )
    assert ready["data"]["request_event_id"] == event_id
