"""Kafka security as deployed: SASL_SSL with SCRAM-SHA-512, a CA the test makes, ACLs per service.

One Apache Kafka broker for the module (``deploy/stack/secure_kafka.py``), not the session stack's:
the users and ACLs of ``deploy/kafka_resources.py`` (what the Strimzi ``KafkaUser`` objects say), and
the ingress started with the Kafka settings of its Kubernetes Deployment (``deploy/k8s``), only the
bootstrap address and the CA file pointing at this broker.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from deploy.kafka_resources import SERVICES, WORKER_GROUP
from deploy.stack.apache_kafka import FORMAT_ARGS_FILE
from deploy.stack.app_processes import ingress_spec, worker_spec
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, command_line, poll_until, stop_all, wait_all_ready
from deploy.stack.secure_kafka import SecureKafka
from ingress.deliveries import event_id_for
from runtime.kafka_clients import assign_from_start, started
from schemas import topics
from schemas.fleet_status import FLEET_STATUS_KEY_PREFIX
from tests.ingress_harness import running_ingress, signed_delivery
from tests.secure_kafka_harness import running_secure_kafka
from tests.unit.deploy.kustomization import find, pod_spec, render

pytestmark = pytest.mark.integration

INGRESS_USER = "promoter-ingress"
Record: TypeAlias = ConsumerRecord[bytes, bytes]
REFUSED_EXIT_DEADLINE_S = 30.0
#: The local stack's consumer-group timing (the broker's group.min.session.timeout.ms allows it).
FAST_GROUPS = {"PROMOTER_KAFKA_SESSION_TIMEOUT_MS": "2000", "PROMOTER_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecureKafka, ManagedProcess]]:
    """The secured broker with every service's ACLs and the project's topics, for this module."""
    with running_secure_kafka(tmp_path_factory.mktemp("kafka-secure")) as running:
        yield running


def deployed_kafka_env(deployment: str) -> dict[str, str]:
    """The ``PROMOTER_KAFKA_*`` values a Deployment of ``deploy/k8s`` gets from the ConfigMap and its own env."""
    objects = render()
    config = find(objects, "ConfigMap", "model-promoter")["data"]
    (container,) = pod_spec(find(objects, "Deployment", deployment))["containers"]
    own = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return {name: value for name, value in {**config, **own}.items() if name.startswith("PROMOTER_KAFKA_")}


def as_deployed(kafka: SecureKafka, deployment: str, *, password: str | None = None) -> dict[str, str]:
    """A Deployment's Kafka settings, pointed at the test broker and its CA, with the user's password."""
    env = deployed_kafka_env(deployment)
    user = env["PROMOTER_KAFKA_SASL_USERNAME"]
    return {
        **env,
        "PROMOTER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "PROMOTER_KAFKA_SSL_CAFILE": str(kafka.tls.ca_cert),
        "PROMOTER_KAFKA_SASL_PASSWORD": password or kafka.passwords[user].get_secret_value(),
    }


def about(records: list[Record], key: str) -> list[Record]:
    return [record for record in records if record.key == key.encode()]


async def read_as(
    kafka: SecureKafka, user: str, names: list[str], done: Callable[[list[Record]], bool], timeout_s: float = 30
) -> list[Record]:
    """Every record of the topics ``names`` from their start, read as ``user`` (no group), once ``done`` holds."""
    settings = kafka.client_settings(user)
    records: list[Record] = []
    async with started(AIOKafkaConsumer(**{**settings.consumer_kwargs(), "group_id": None})) as consumer:
        assert await assign_from_start(consumer, names)
        deadline = time.monotonic() + timeout_s
        while not done(records):
            assert time.monotonic() < deadline, f"{names}: not there within {timeout_s} s: {records}"
            batches = await consumer.getmany(timeout_ms=200)
            records += [record for batch in batches.values() for record in batch]
    return records


def whole_log(process: ManagedProcess) -> str:
    """Everything the process wrote (``log_text`` is only the tail)."""
    return process.log_path.read_text(errors="replace")


def assert_no_secret(text: str, kafka: SecureKafka, *also: str) -> None:
    leaked = [user for user, password in kafka.passwords.items() if password.get_secret_value() in text]
    leaked += [value for value in also if value in text]
    assert not leaked, f"passwords of {leaked} appear in the log"


async def test_the_ingress_publishes_with_the_kubernetes_settings(
    secure_kafka: tuple[SecureKafka, ManagedProcess], tmp_path: Path
) -> None:
    kafka, broker = secure_kafka
    env = as_deployed(kafka, "promoter-ingress")
    assert (env["PROMOTER_KAFKA_SECURITY_PROTOCOL"], env["PROMOTER_KAFKA_SASL_MECHANISM"]) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
    ), "the Kubernetes config this test stands for"
    assert env["PROMOTER_KAFKA_SASL_USERNAME"] == INGRESS_USER
    secret = secrets.token_hex(16)
    model = f"secure-{uuid.uuid4().hex[:6]}"
    payload = {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-11-22T00:00:00+00:00",
        "data": {"name": model, "alias": "champion", "version": "1"},
    }
    headers, body = signed_delivery(secret, payload)

    with running_ingress(env, tmp_path, secret) as ingress:
        async with httpx.AsyncClient(base_url=ingress.url, timeout=10) as http:
            answer = await http.post("/webhooks/mlflow", content=body, headers=headers)
        # Read back as the worker reads its requests: its own user, which may read that topic.
        records = await read_as(
            kafka, "promoter-worker", [topics.PROMOTION_REQUESTED.name], lambda got: bool(about(got, model))
        )
        log = whole_log(ingress.process)

    assert answer.status_code == 202, answer.text
    (request,) = about(records, model)
    assert json.loads(request.value or b"")["id"] == event_id_for(headers["X-MLflow-Delivery-Id"])
    assert "connected to Kafka" in log
    assert_no_secret(log, kafka, secret)
    assert_no_secret(whole_log(broker), kafka)


async def test_a_wrong_password_stops_the_ingress_at_once_saying_why(
    secure_kafka: tuple[SecureKafka, ManagedProcess], tmp_path: Path
) -> None:
    kafka, _ = secure_kafka
    wrong = secrets.token_hex(16)
    env = {**as_deployed(kafka, "promoter-ingress", password=wrong), "PROMOTER_INGRESS_WEBHOOK_SECRETS": "s"}
    (port,) = free_ports(1)
    process = ManagedProcess(ingress_spec(env, port=port, run_dir=tmp_path), tmp_path / "ingress.log")
    started_at = time.monotonic()
    process.start()
    try:
        exited = poll_until(lambda: not process.alive(), REFUSED_EXIT_DEADLINE_S)
        took_s = time.monotonic() - started_at
    finally:
        stop_all([process])
    log = whole_log(process)

    assert exited, f"the ingress kept running with a wrong password: {process.tail()}"
    assert process.returncode() != 0
    print(f"wrong password: the ingress exited {process.returncode()} after {took_s:.1f} s")
    refusal = [json.loads(line) for line in log.splitlines() if "Kafka refused this service" in line]
    assert refusal, log
    reason = refusal[0]["reason"]
    assert f"refused the credentials of SASL user '{INGRESS_USER}' (SCRAM-SHA-512)" in reason
    assert "PROMOTER_KAFKA_SASL_PASSWORD" in reason
    assert refusal[0]["level"] == "error"
    assert_no_secret(log, kafka, wrong)


def test_no_password_is_on_the_command_line_of_the_running_broker_and_its_format_file_is_gone(
    secure_kafka: tuple[SecureKafka, ManagedProcess],
) -> None:
    kafka, broker = secure_kafka
    passwords = [password.get_secret_value() for password in kafka.passwords.values()]
    command_lines = [line for pid in broker.group_pids() if (line := command_line(pid)) is not None]
    assert command_lines, "the broker runs"
    assert any("kafka.Kafka" in line for line in command_lines)
    assert not [line for line in command_lines for password in passwords if password in line]
    assert not (broker.spec.cwd / FORMAT_ARGS_FILE).exists(), "the SCRAM users' file was removed after formatting"
    assert not [p for p in passwords if p in " ".join(broker.spec.argv)], "nor on the format step's command line"


async def test_each_service_is_denied_what_is_not_its_own(secure_kafka: tuple[SecureKafka, ManagedProcess]) -> None:
    kafka, _ = secure_kafka
    assert {service.user for service in SERVICES} <= set(kafka.passwords)

    gateway = kafka.client_settings("promoter-gateway")
    async with started(AIOKafkaProducer(**gateway.producer_kwargs())) as producer:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(topics.PROMOTION_REQUESTED.name, b"{}", key=b"not-mine")

    # The worker reads its requests, but only in its own consumer group.
    worker = kafka.client_settings("promoter-worker")
    stranger = AIOKafkaConsumer(
        topics.PROMOTION_REQUESTED.name, **{**worker.consumer_kwargs(), "group_id": f"{WORKER_GROUP}-other"}
    )
    with pytest.raises(GroupAuthorizationFailedError):
        async with started(stranger):
            await stranger.getmany(timeout_ms=5000)


async def test_the_worker_dead_letters_and_reports_its_fleet_with_the_kubernetes_settings(
    secure_kafka: tuple[SecureKafka, ManagedProcess], tmp_path: Path
) -> None:
    kafka, _ = secure_kafka
    (closed, health_port) = free_ports(2)
    env = {
        **as_deployed(kafka, "promotion-worker"),
        **FAST_GROUPS,
        "PROMOTER_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed}",  # not needed to dead-letter
        "PROMOTER_TRITON_ENDPOINTS": f"127.0.0.1:{closed}",  # reported down on gateway.status
        "PROMOTER_TRITON_MODEL_REPOSITORY": str(tmp_path / "repository"),
        "PROMOTER_WORKER_DOWNLOAD_DIR": str(tmp_path / "downloads"),
        "PROMOTER_WORKER_REGISTRY_WRITEBACK": "false",
        "PROMOTER_WORKER_RECONCILE_INTERVAL_S": "0",
        # The ingress test's request waits for MLflow: retried quickly, so the worker stops quickly.
        "PROMOTER_WORKER_BACKOFF_INITIAL_S": "0.05",
        "PROMOTER_WORKER_BACKOFF_MAX_S": "0.1",
    }
    (tmp_path / "repository").mkdir()
    model = f"secure-{uuid.uuid4().hex[:6]}"
    spec = worker_spec(env, health_port=health_port, run_dir=tmp_path, name="secure-worker")
    worker = ManagedProcess(spec, tmp_path / "worker.log")
    worker.start()
    try:
        wait_all_ready([worker])
        ingress = kafka.client_settings(INGRESS_USER)
        async with started(AIOKafkaProducer(**ingress.producer_kwargs())) as producer:
            await producer.send_and_wait(topics.PROMOTION_REQUESTED.name, b"not a request", key=model.encode())
        fleet_key = f"{FLEET_STATUS_KEY_PREFIX}secure-worker"
        records = await read_as(
            kafka,
            "promoter-oncall",
            [topics.PROMOTION_DLQ.name, topics.GATEWAY_STATUS.name],
            lambda got: bool(about(got, model)) and bool(about(got, fleet_key)),
        )
    finally:
        stop_all([worker])
    log = whole_log(worker)

    (dead_letter,) = about(records, model)
    assert dead_letter.value == b"not a request"
    assert about(records, fleet_key), "the worker's fleet status got through its ACLs"
    assert "AuthorizationFailed" not in log, "the worker's KafkaUser allows all it does"
    assert "Failed to create topic" not in log
    assert_no_secret(log, kafka)
