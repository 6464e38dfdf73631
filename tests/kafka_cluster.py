"""A three-node Apache Kafka cluster for the tests that kill a broker, and which node to kill.

The nodes are :class:`deploy.stack.service_handle.ServiceHandle` handles: SIGKILL one, start it again on its own
data (same ports, same cluster id), as a restarted broker pod would be.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from deploy.stack.apache_kafka import apache_kafka_specs
from deploy.stack.ports import free_ports
from deploy.stack.process import stop_all, wait_all_ready
from deploy.stack.service_handle import ServiceHandle

CLUSTER_NODES = 3
OFFSETS_TOPIC = "__consumer_offsets"


@contextmanager
def running_kafka_cluster(run_dir: Path, nodes: int = CLUSTER_NODES) -> Iterator[list[ServiceHandle]]:
    """``nodes`` KRaft nodes started together; all stopped (and their data removed) on the way out."""
    services = [
        ServiceHandle(spec, run_dir / "logs" / f"{spec.name}.log")
        for spec in apache_kafka_specs(free_ports(nodes), run_dir)
    ]
    for service in services:
        service.start_in_background()
    try:
        wait_all_ready([service.running() for service in services])
        yield services
    finally:
        stop_all([service.process for service in services if service.process is not None])


def bootstrap_servers(nodes: list[ServiceHandle]) -> str:
    return nodes[0].spec.endpoints["kafka_bootstrap_servers"]


async def group_coordinator(bootstrap: str, timeout_s: float = 30.0) -> int:
    """The node id leading the (single) partition of ``__consumer_offsets``: every group's coordinator.

    The broker-kill faults kill this node, so the consumer group loses its coordinator as well as
    the partitions the node led. The topic appears once the first group looked for its coordinator.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            (described,) = await admin.describe_topics([OFFSETS_TOPIC])
            leaders = [int(p["leader"]) for p in described.get("partitions", []) if int(p["leader"]) >= 0]
            if leaders:
                return leaders[0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{OFFSETS_TOPIC} has no leader after {timeout_s:g} s: {described}")
            await asyncio.sleep(0.1)  # poll the broker's metadata
    finally:
        await admin.close()
