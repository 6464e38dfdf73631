"""The whole system on one machine, with handles to break it: three Kafka brokers, two Tritons, a worker,
the ingress, two gateways.

The services are started by :func:`deploy.stack.services.start_services`, as ``make up`` starts them.
Both Tritons share one model repository, as the Triton StatefulSet in ``deploy/k8s`` does; the worker
and the gateways list both endpoints. Every service can be killed, stopped and started again on the
same ports, with the same data, as a restarted pod would be (:class:`ServiceHandle`); the stack stops
whatever runs at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from deploy.stack.local_stack import LocalStack
from deploy.stack.service_handle import ServiceHandle
from deploy.stack.services import service_handles, start_services
from deploy.stack.triton_server import NAME as TRITON_NAME
from deploy.stack.triton_server import triton_spec_on_free_ports

DEADLINE_S = 120.0
POLL_S = 0.05
# Three brokers, replication factor 3, min.insync.replicas 2: one broker may be killed (scenario broker_kill).
KAFKA_NODES = 3
SPARE_TRITON = "triton-spare"


@dataclass
class ChaosSystem:
    stack: LocalStack
    env: dict[str, str]
    tritons: list[ServiceHandle]
    worker: ServiceHandle
    ingress: ServiceHandle
    gateways: list[ServiceHandle]
    gateway_urls: list[str]
    triton_urls: list[str]

    def mlflow(self) -> ServiceHandle:
        """The stack's MLflow server (same port and sqlite store when started again)."""
        return self.stack.service("mlflow")

    def kafka_nodes(self) -> list[ServiceHandle]:
        """The stack's Kafka nodes by node id (``kafka-1`` first)."""
        return [self.stack.service(f"kafka-{node}") for node in range(1, self.stack.kafka_nodes + 1)]

    def spare_triton(self) -> ServiceHandle:
        """A Triton on the same repository that no service knows of, started: where a bare load is timed."""
        if SPARE_TRITON not in self.stack.pids():
            return triton_on(self.stack, SPARE_TRITON)
        spare = self.stack.service(SPARE_TRITON)
        spare.start()  # stopped after its last use
        return spare


def triton_on(stack: LocalStack, name: str) -> ServiceHandle:
    """Another ``tritonserver`` named ``name`` on the stack's model repository, on free ports, started."""
    spec = triton_spec_on_free_ports(stack.run_dir / name, stack.model_repository)
    stack.add_services([dataclasses.replace(spec, name=name)])
    return stack.service(name)


@contextmanager
def chaos_system(run_dir: Path, *, worker_env: Mapping[str, str]) -> Iterator[ChaosSystem]:
    """Start everything; the stack stops everything on the way out, whatever happened in between."""
    with LocalStack(run_dir / "stack", kafka_broker="kafka", kafka_nodes=KAFKA_NODES) as stack:
        tritons = [stack.service(TRITON_NAME), triton_on(stack, "triton-b")]
        endpoints = [triton.spec.endpoints for triton in tritons]
        services = start_services(
            stack,
            secrets.token_hex(24),
            env_overrides={
                "PROMOTER_TRITON_ENDPOINTS": ",".join(e["triton_http"] for e in endpoints),
                "PROMOTER_GATEWAY_TRITON_GRPC_ENDPOINTS": ",".join(e["triton_grpc"] for e in endpoints),
                "PROMOTER_LOG_LEVEL": "INFO",
            },
            worker_env=worker_env,
        )
        handles = service_handles(stack)
        yield ChaosSystem(
            stack=stack,
            env=services.env,
            tritons=tritons,
            worker=handles.worker,
            ingress=handles.ingress,
            gateways=handles.gateways,
            gateway_urls=services.gateways,
            triton_urls=[f"http://{e['triton_http']}" for e in endpoints],
        )


async def served_versions(http: httpx.AsyncClient, gateways: list[str], model: str, alias: str) -> list[int | None]:
    versions: list[int | None] = []
    for gateway in gateways:
        try:
            route = (await http.get(f"{gateway}/models")).json()["models"].get(model, {}).get("aliases", {}).get(alias)
        except (httpx.HTTPError, ValueError, KeyError):
            route = None
        versions.append(int(route["version"]) if route else None)
    return versions


async def until_served(
    http: httpx.AsyncClient, gateways: list[str], model: str, version: int, *, alias: str = "champion"
) -> float:
    """Seconds until every gateway routes ``alias`` of ``model`` to ``version`` (RuntimeError at the deadline)."""
    began = time.monotonic()
    while True:
        versions = await served_versions(http, gateways, model, alias)
        if all(v == version for v in versions):
            return time.monotonic() - began
        if time.monotonic() - began > DEADLINE_S:
            raise RuntimeError(f"{model}: gateways route {alias} to {versions}, not v{version}, after {DEADLINE_S} s")
        await asyncio.sleep(POLL_S)  # poll


async def ready_models(http: httpx.AsyncClient, triton_url: str) -> set[str]:
    """The Triton models READY on one endpoint (empty when it does not answer)."""
    try:
        index = (await http.post(f"{triton_url}/v2/repository/index", json={"ready": True})).json()
    except (httpx.HTTPError, ValueError):
        return set()
    return {str(entry["name"]) for entry in index if entry.get("state") == "READY"}


async def until_holds(http: httpx.AsyncClient, triton_url: str, models: set[str]) -> float:
    """Seconds until the Triton at ``triton_url`` reports every one of ``models`` READY."""
    began = time.monotonic()
    while not models <= await ready_models(http, triton_url):
        if time.monotonic() - began > DEADLINE_S:
            held = await ready_models(http, triton_url)
            raise RuntimeError(f"{triton_url} holds {sorted(held)}, not {sorted(models)}, after {DEADLINE_S} s")
        await asyncio.sleep(POLL_S)  # poll
    return time.monotonic() - began
