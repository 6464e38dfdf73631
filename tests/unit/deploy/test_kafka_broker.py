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
from deploy.stack.apache_kafka import KafkaNode, apache_kafka_specs, broker_properties, new_cluster_id
from deploy.stack.errors import StackError
from deploy.stack.kafka_broker import broker_specs, client_env, local_client_settings
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
    node = KafkaNode(1, 19092, 19093)
    properties = broker_properties(node, [node], tmp_path / "data")
    assert properties["process.roles"] == "broker,controller"
    assert properties["controller.quorum.voters"] == f"{properties['node.id']}@127.0.0.1:19093"
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert properties["log.dirs"] == str(tmp_path / "data")
    assert properties["group.initial.rebalance.delay.ms"] == "0"
    assert int(properties["group.min.session.timeout.ms"]) <= 2000, "the stack's clients use 2 s sessions"
    assert (properties["offsets.topic.replication.factor"], properties["min.insync.replicas"]) == ("1", "1")


def test_three_nodes_are_three_voters_replicating_everything_three_times_two_in_sync(tmp_path: Path) -> None:
    nodes = [KafkaNode(1, 19092, 19093), KafkaNode(2, 19094, 19095), KafkaNode(3, 19096, 19097)]
    properties = broker_properties(nodes[1], nodes, tmp_path / "data")
    assert properties["node.id"] == "2"
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert properties[key] == "3", key
    assert properties["min.insync.replicas"] == properties["transaction.state.log.min.isr"] == "2"


def test_a_cluster_shares_one_cluster_id_and_a_killed_node_starts_again_on_its_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(kafka_jars, "CACHE_DIR", tmp_path / "cache")
    kafka_jars.CACHE_DIR.mkdir()
    jar = tmp_path / "kafka.jar"
    jar.write_bytes(b"")
    kafka_jars.cache_file().write_text(f"{jar}\n")
    ports = free_ports(3)

    specs = apache_kafka_specs(ports, tmp_path / "run")

    assert [s.name for s in specs] == ["kafka-1", "kafka-2", "kafka-3"]
    assert {s.endpoints["kafka_bootstrap_servers"] for s in specs} == {",".join(f"127.0.0.1:{p}" for p in ports)}
    commands = [s.argv[-1] for s in specs]
    cluster_ids = {c.split("--cluster-id=")[1].split()[0] for c in commands}
    assert len(cluster_ids) == 1, "every node formats with the same cluster id"
    assert all("format --ignore-formatted" in c for c in commands), "a restart must not fail on its own data"
    data_dirs = {(s.cwd / "server.properties").read_text().split("log.dirs=")[1].split()[0] for s in specs}
    assert len(data_dirs) == 3


def test_tansu_runs_one_node_only(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="tansu runs one node, not 3"):
        broker_specs("tansu", free_ports(3), tmp_path)


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


def test_the_probe_of_a_cluster_node_waits_until_every_node_has_registered() -> None:
    for brokers, ready in (([1, 2], False), ([1, 2, 3], True)):
        server = socket.create_server(("127.0.0.1", 0))

        def answer(server: socket.socket = server, brokers: list[int] = brokers) -> None:
            connection, _ = server.accept()
            with connection:
                (size,) = struct.unpack(">i", connection.recv(4))
                (correlation_id,) = struct.unpack_from(">i", connection.recv(size), 4)
                connection.sendall(_metadata_answer(correlation_id, brokers, 1))

        thread = threading.Thread(target=answer)
        thread.start()
        try:
            assert kafka_metadata_answers("127.0.0.1", server.getsockname()[1], min_brokers=3) is ready, brokers
        finally:
            thread.join(timeout=5)
            server.close()


def test_the_probe_says_no_when_nothing_listens() -> None:
    (port,) = free_ports(1)
    assert kafka_metadata_answers("127.0.0.1", port) is False
