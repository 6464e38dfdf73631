"""Unit tests of the local stack's broker choice, the Kafka runner's configuration and its readiness probe."""

from __future__ import annotations

import shutil
import socket
import struct
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from deploy.kafka.__main__ import main as make_kafka
from deploy.stack import kafka_jars
from deploy.stack.apache_kafka import broker_properties, new_cluster_id
from deploy.stack.errors import StackError
from deploy.stack.kafka_broker import client_env, local_client_settings
from deploy.stack.ports import free_ports
from deploy.stack.probes import kafka_metadata_answers
from deploy.stack.settings import StackSettings


def test_apache_kafka_is_the_default_and_tansu_is_chosen_by_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMOTER_STACK_KAFKA_BROKER", raising=False)
    assert StackSettings().kafka_broker == "kafka"
    monkeypatch.setenv("PROMOTER_STACK_KAFKA_BROKER", "tansu")
    assert StackSettings().kafka_broker == "tansu"
    monkeypatch.setenv("PROMOTER_STACK_KAFKA_BROKER", "redpanda")
    with pytest.raises(ValidationError, match="kafka_broker"):
        StackSettings()


def test_clients_of_apache_kafka_run_the_production_producer_defaults() -> None:
    producer = local_client_settings("127.0.0.1:9092", "kafka").producer_kwargs()
    assert (producer["enable_idempotence"], producer["acks"]) == (True, "all")
    assert "PROMOTER_KAFKA_FETCH_MAX_WAIT_MS" not in client_env("kafka"), "Kafka answers fetches when data arrives"


def test_clients_of_tansu_turn_idempotence_off_and_poll_fetches_fast() -> None:
    settings = local_client_settings("127.0.0.1:9092", "tansu")
    assert settings.producer_kwargs()["enable_idempotence"] is False
    assert settings.consumer_kwargs()["fetch_max_wait_ms"] == 20
    assert settings.bootstrap_servers == "127.0.0.1:9092"


def test_broker_properties_make_one_kraft_node_on_loopback(tmp_path: Path) -> None:
    properties = broker_properties(19092, 19093, tmp_path / "data")
    assert properties["process.roles"] == "broker,controller"
    assert properties["controller.quorum.voters"] == f"{properties['node.id']}@127.0.0.1:19093"
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert properties["log.dirs"] == str(tmp_path / "data")
    assert properties["group.initial.rebalance.delay.ms"] == "0"
    assert int(properties["group.min.session.timeout.ms"]) <= 2000, "the stack's clients use 2 s sessions"


def test_cluster_ids_are_22_url_safe_characters() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(
        len(i) == 22 and set(i) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for i in ids
    )


def test_missing_java_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(StackError, match=r"^java not found: Apache Kafka needs a Java 17\+ runtime"):
        kafka_jars.java_binary()


def test_unresolved_or_stale_jars_say_run_make_kafka(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kafka_jars, "CACHE_DIR", tmp_path)
    with pytest.raises(StackError, match=r"not resolved for pom.xml as it is now: run make kafka"):
        kafka_jars.kafka_classpath()

    jar = tmp_path / "kafka.jar"
    jar.write_bytes(b"")
    kafka_jars.cache_file().write_text(f"{jar}:{tmp_path / 'gone.jar'}\n")
    assert kafka_jars.cached_classpath() is None, "a jar removed from ~/.m2 since makes the cache stale"
    kafka_jars.cache_file().write_text(f"{jar}\n")
    assert kafka_jars.kafka_classpath() == str(jar)


def test_make_kafka_does_nothing_when_the_stack_runs_tansu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROMOTER_STACK_KAFKA_BROKER", "tansu")
    monkeypatch.setattr(shutil, "which", lambda name: None)  # not even java is needed
    assert make_kafka() == 0
    assert "tansu: nothing to resolve" in capsys.readouterr().err


def _string(text: bytes | None) -> bytes:
    return struct.pack(">h", -1) if text is None else struct.pack(">h", len(text)) + text


def _metadata_answer(correlation_id: int, brokers: list[int], controller_id: int) -> bytes:
    body = struct.pack(">iii", correlation_id, 0, len(brokers))
    for node_id in brokers:
        body += struct.pack(">i", node_id) + _string(b"127.0.0.1") + struct.pack(">i", 9092) + _string(None)
    body += _string(b"cluster-id") + struct.pack(">i", controller_id) + struct.pack(">i", 0)
    return struct.pack(">i", len(body)) + body


def test_the_probe_wants_a_broker_and_a_controller_in_the_metadata_answer() -> None:
    cases = [([1], 1, True), ([], 1, False), ([1], -1, False)]
    for brokers, controller, ready in cases:
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]

        def answer(server: socket.socket = server, brokers: list[int] = brokers, controller: int = controller) -> None:
            connection, _ = server.accept()
            with connection:
                (size,) = struct.unpack(">i", connection.recv(4))
                request = connection.recv(size)
                assert struct.unpack_from(">hh", request, 0) == (3, 4), "Metadata v4"
                (correlation_id,) = struct.unpack_from(">i", request, 4)
                body = _metadata_answer(correlation_id, brokers, controller)
                connection.sendall(body)

        thread = threading.Thread(target=answer)
        thread.start()
        try:
            assert kafka_metadata_answers("127.0.0.1", port) is ready, (brokers, controller)
        finally:
            thread.join(timeout=5)
            server.close()


def test_the_probe_says_no_when_nothing_listens() -> None:
    (port,) = free_ports(1)
    assert kafka_metadata_answers("127.0.0.1", port) is False
