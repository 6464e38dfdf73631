"""Apache Kafka in the local stack: KRaft nodes (each a broker and a controller), jars from ``deploy/kafka/pom.xml``.

One node by default; three (``PROMOTER_STACK_KAFKA_NODES=3``) for the fault suite: a quorum of three
voters, replication factor 3 and ``min.insync.replicas`` 2, so one node may die without losing an
acknowledged record or the ability to write.

Each node is ``sh -c "java ... StorageTool format --ignore-formatted ... && exec java ... kafka.Kafka ..."``:
formatting its data dir and running the broker are one managed process, and the same command starts
a killed node again on the data it had. Ready once a Metadata request names a controller and every node.

Extra format arguments (the secured broker's ``--add-scram`` users, with their passwords) never reach a
command line, where ``ps`` shows them to every user of the machine: they go, with ``StorageTool`` and its
arguments, into a Java argument file readable by its owner only (``format.args``, mode 0600), which the
command removes once the format step ran. A restart after that finds the data formatted and skips it.
"""

from __future__ import annotations

import base64
import os
import shlex
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.stack.kafka_jvm import jvm_command
from deploy.stack.ports import LOOPBACK, free_ports
from deploy.stack.probes import kafka_metadata_answers
from deploy.stack.process import ManagedProcess, ReadyCheck, ServiceSpec
from schemas.topics import min_insync_replicas

NAME = "kafka"
# Counted from the stack's start, and the broker starts once mlflow answers (within its own deadline).
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
NODE_ID = 1
#: The format step's main class and arguments when some are secret (``format_args``): 0600, removed after it.
FORMAT_ARGS_FILE = "format.args"

# Production-like where clients can tell (acks=all, idempotence, topic configs as declared), sized
# for one node on a small machine, and quick where only waiting would differ.
_TUNING = {
    "num.partitions": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    "num.network.threads": "2",
    "num.io.threads": "4",
    # A group's first join is not held back waiting for more members.
    "group.initial.rebalance.delay.ms": "0",
    # The local stack's clients use 2 s sessions (README, local stack): the broker must accept them.
    "group.min.session.timeout.ms": "1000",
    # A killed node is fenced, and its partitions get new leaders, 3 s after its last heartbeat (default 9 s).
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "3000",
    # The log cleaner looks for compactable logs every second, not every 15 s, with a small buffer.
    "log.cleaner.backoff.ms": "1000",
    "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
}


def new_cluster_id() -> str:
    """A random cluster id in Kafka's form: a UUID, URL-safe base64 without padding (22 characters)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _replication(nodes: int) -> dict[str, str]:
    """Every topic, the broker's own ones included, replicated to each node (one node: no replication)."""
    factor, min_isr = str(nodes), str(min_insync_replicas(nodes))
    return {
        "default.replication.factor": factor,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": factor,
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": factor,
        "share.coordinator.state.topic.min.isr": min_isr,
    }


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node of the local cluster: its id, client port and controller port."""

    node_id: int
    port: int
    controller_port: int


def broker_properties(node: KafkaNode, voters: list[KafkaNode], data_dir: Path) -> dict[str, str]:
    """``server.properties`` of ``node`` in a KRaft cluster on loopback whose every node is a voter."""
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(f"{v.node_id}@{LOOPBACK}:{v.controller_port}" for v in voters),
        "listeners": f"PLAINTEXT://{LOOPBACK}:{node.port},CONTROLLER://{LOOPBACK}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{node.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        **_replication(len(voters)),
        **_TUNING,
    }


def write_private_args_file(path: Path, args: Sequence[str]) -> None:
    """A Java ``@argfile`` of ``args`` (a main class and its arguments), readable and writable by its owner only."""
    quoted = ('"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"' for arg in args)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an older file of another mode keeps its mode under O_CREAT
    with os.fdopen(descriptor, "w") as file:
        file.write("\n".join(quoted) + "\n")


def _write_properties(path: Path, properties: Mapping[str, str]) -> None:
    path.touch(mode=0o600)  # a secured broker's file holds its own credentials
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))


def _ready(port: int, nodes: int) -> ReadyCheck:
    def check(process: ManagedProcess) -> bool:
        return kafka_metadata_answers(LOOPBACK, port, min_brokers=nodes)

    return check


def data_dir(run_dir: Path) -> Path:
    """Where the nodes' log dirs are: the stack removes it once the brokers have stopped."""
    return run_dir / "kafka" / "data"


def cluster_nodes(ports: list[int]) -> list[KafkaNode]:
    """One node per client port in ``ports`` (ids from 1), each with a free controller port."""
    controller_ports = [p for p in free_ports(2 * len(ports)) if p not in ports][: len(ports)]
    return [
        KafkaNode(i, port, controller)
        for i, (port, controller) in enumerate(zip(ports, controller_ports, strict=True), 1)
    ]


def bootstrap_servers(nodes: list[KafkaNode]) -> str:
    """Every node's client address: a client still finds the cluster while any one node is down."""
    return ",".join(f"{LOOPBACK}:{node.port}" for node in nodes)


def apache_kafka_specs(ports: list[int], run_dir: Path, *, dump_class_archive: Path | None = None) -> list[ServiceSpec]:
    """One KRaft node per port in ``ports``, all sharing a fresh cluster id, homes under ``run_dir/kafka``.

    One port: the service is ``kafka``; several: ``kafka-1``, ``kafka-2``, ... Each spec formats its
    log dir unless it already holds one, so starting it again after a kill keeps the node's data.
    ``dump_class_archive``: the broker writes the classes it loaded there when it exits (``python -m deploy.kafka``).
    """
    nodes = cluster_nodes(ports)
    cluster_id = new_cluster_id()
    single = len(nodes) == 1
    return [
        _node_spec(
            node,
            nodes,
            cluster_id,
            home=run_dir / "kafka" if single else run_dir / "kafka" / f"node-{node.node_id}",
            node_data=data_dir(run_dir) if single else data_dir(run_dir) / f"node-{node.node_id}",
            name=NAME if single else f"{NAME}-{node.node_id}",
            dump_class_archive=dump_class_archive,
        )
        for node in nodes
    ]


def apache_kafka_spec(
    port: int,
    run_dir: Path,
    *,
    dump_class_archive: Path | None = None,
    controller_port: int | None = None,
    extra_properties: Mapping[str, str] | None = None,
    format_args: Sequence[str] = (),
    ready: ReadyCheck | None = None,
    name: str = NAME,
) -> ServiceSpec:
    """One broker on ``port`` (controller: ``controller_port`` or a free port): the local stack's default.

    ``dump_class_archive``: the broker writes the classes it loaded there when it exits (``python -m deploy.kafka``).
    ``extra_properties`` replace or add to :func:`broker_properties` (a secured listener: ``secure_kafka.py``),
    ``format_args`` go to ``StorageTool format`` (e.g. ``--add-scram``), ``ready`` replaces the PLAINTEXT probe.
    """
    if controller_port is None:
        (node,) = cluster_nodes([port])
    else:
        node = KafkaNode(NODE_ID, port, controller_port)
    return _node_spec(
        node,
        [node],
        new_cluster_id(),
        home=run_dir / "kafka",
        node_data=data_dir(run_dir),
        name=name,
        dump_class_archive=dump_class_archive,
        extra_properties=extra_properties,
        format_args=format_args,
        ready=ready,
    )


def _node_spec(
    node: KafkaNode,
    nodes: list[KafkaNode],
    cluster_id: str,
    *,
    home: Path,
    node_data: Path,
    name: str,
    dump_class_archive: Path | None,
    extra_properties: Mapping[str, str] | None = None,
    format_args: Sequence[str] = (),
    ready: ReadyCheck | None = None,
) -> ServiceSpec:
    home.mkdir(parents=True, exist_ok=True)
    properties = home / "server.properties"
    _write_properties(properties, {**broker_properties(node, nodes, node_data), **(extra_properties or {})})
    format_jvm = jvm_command(home / "format-jvm.args")
    format_storage = [
        "kafka.tools.StorageTool",
        "format",
        "--ignore-formatted",
        f"--cluster-id={cluster_id}",
        f"--config={properties}",
    ]
    broker_jvm = jvm_command(home / "broker-jvm.args", dump_class_archive=dump_class_archive)
    run_broker = f"exec {shlex.join([*broker_jvm, 'kafka.Kafka', str(properties)])}"
    if format_args:
        args_file = home / FORMAT_ARGS_FILE
        write_private_args_file(args_file, [*format_storage, *format_args])
        shown = shlex.quote(str(args_file))
        # Removed whatever the format step's exit: a failed format leaves no password behind either.
        command = (
            f"if [ -e {shown} ]; then {shlex.join([*format_jvm, f'@{args_file}'])}; status=$?; rm -f {shown}; "
            f'[ "$status" -eq 0 ] || exit "$status"; fi; {run_broker}'
        )
    else:
        command = f"{shlex.join([*format_jvm, *format_storage])} && {run_broker}"
    return ServiceSpec(
        name=name,
        argv=["/bin/sh", "-c", command],
        env=dict(os.environ),
        cwd=home,
        ready=ready or _ready(node.port, len(nodes)),
        ready_timeout_s=READY_TIMEOUT_S,
        stop_timeout_s=STOP_TIMEOUT_S,
        ports=(node.port,),
        endpoints={"kafka": f"{LOOPBACK}:{node.port}", "kafka_bootstrap_servers": bootstrap_servers(nodes)},
    )
