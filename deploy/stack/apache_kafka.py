"""Apache Kafka in the local stack: one KRaft node (broker and controller), jars from ``deploy/kafka/pom.xml``.

The process is ``sh -c "java ... kafka.tools.StorageTool format ... && exec java ... kafka.Kafka ..."``:
formatting the fresh data dir and running the broker are one managed process (the stack starts it
once mlflow answers). Ready once a Metadata request names a broker and a controller.
"""

from __future__ import annotations

import base64
import os
import shlex
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from deploy.stack.kafka_jvm import jvm_command
from deploy.stack.ports import LOOPBACK, free_ports
from deploy.stack.probes import kafka_metadata_answers
from deploy.stack.process import ManagedProcess, ReadyCheck, ServiceSpec

NAME = "kafka"
# Counted from the stack's start, and the broker starts once mlflow answers (within its 60 s).
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
NODE_ID = 1

# Production-like where clients can tell (acks=all, idempotence, topic configs as declared), sized
# for one node on a small machine, and quick where only waiting would differ.
_TUNING = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    "num.network.threads": "2",
    "num.io.threads": "4",
    # A group's first join is not held back waiting for more members.
    "group.initial.rebalance.delay.ms": "0",
    # The local stack's clients use 2 s sessions (README, local stack): the broker must accept them.
    "group.min.session.timeout.ms": "1000",
    # The log cleaner looks for compactable logs every second, not every 15 s, with a small buffer.
    "log.cleaner.backoff.ms": "1000",
    "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
}


def new_cluster_id() -> str:
    """A random cluster id in Kafka's form: a UUID, URL-safe base64 without padding (22 characters)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def broker_properties(port: int, controller_port: int, data_dir: Path) -> dict[str, str]:
    """``server.properties`` of a single-node KRaft cluster on loopback."""
    return {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{LOOPBACK}:{controller_port}",
        "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        **_TUNING,
    }


def _write_properties(path: Path, properties: Mapping[str, str]) -> None:
    path.touch(mode=0o600)  # a secured broker's file holds its own credentials
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))


def _ready(port: int) -> ReadyCheck:
    def check(process: ManagedProcess) -> bool:
        return kafka_metadata_answers(LOOPBACK, port)

    return check


def data_dir(run_dir: Path) -> Path:
    """The broker's log dir: the stack removes it once the broker has stopped."""
    return run_dir / "kafka" / "data"


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
    """Format a fresh log dir under ``run_dir/kafka`` and run the broker on ``port`` (controller: a free port).

    ``dump_class_archive``: the broker writes the classes it loaded there when it exits (``python -m deploy.kafka``).
    ``extra_properties`` replace or add to :func:`broker_properties` (a secured listener: ``secure_kafka.py``),
    ``format_args`` go to ``StorageTool format`` (e.g. ``--add-scram``), ``ready`` replaces the PLAINTEXT probe.
    """
    home = run_dir / "kafka"
    home.mkdir(parents=True, exist_ok=True)
    controller_port = controller_port or next(p for p in free_ports(2) if p != port)
    properties = home / "server.properties"
    _write_properties(
        properties, {**broker_properties(port, controller_port, data_dir(run_dir)), **(extra_properties or {})}
    )
    format_storage = [
        *jvm_command(home / "format-jvm.args"),
        "kafka.tools.StorageTool",
        "format",
        f"--cluster-id={new_cluster_id()}",
        f"--config={properties}",
        *format_args,
    ]
    broker_jvm = jvm_command(home / "broker-jvm.args", dump_class_archive=dump_class_archive)
    run_broker = [*broker_jvm, "kafka.Kafka", str(properties)]
    return ServiceSpec(
        name=name,
        argv=["/bin/sh", "-c", f"{shlex.join(format_storage)} && exec {shlex.join(run_broker)}"],
        env=dict(os.environ),
        cwd=home,
        ready=ready or _ready(port),
        ready_timeout_s=READY_TIMEOUT_S,
        stop_timeout_s=STOP_TIMEOUT_S,
        endpoints={"kafka": f"{LOOPBACK}:{port}"},
    )
