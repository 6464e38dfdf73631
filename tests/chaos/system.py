"""The whole system on one machine, with handles to break it: three Kafka brokers, two Tritons, a worker,
the ingress, two gateways.

Both Tritons share one model repository, as the Triton StatefulSet in ``deploy/k8s`` does; the worker
and the gateways list both endpoints. Every service can be killed, stopped and started again on the
same ports, with the same data, as a restarted pod would be.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy.stack.app_processes import gateway_spec, ingress_spec, worker_spec
from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import LOOPBACK, free_ports
from deploy.stack.process import ManagedProcess, ServiceSpec, stop_all, wait_all_ready
from deploy.stack.triton_server import triton_spec_on_free_ports
from promoter_cli.webhook_registration import register_webhook

DEADLINE_S = 120.0
POLL_S = 0.05
# Three brokers, replication factor 3, min.insync.replicas 2: one broker may be killed (scenario broker_kill).
KAFKA_NODES = 3


@dataclass
class Service:
    """One process of the system that a scenario may kill and start again (same spec: same ports, same data)."""

    spec: ServiceSpec
    log_path: Path
    process: ManagedProcess | None = None

    def start(self) -> None:
        wait_all_ready([self.start_in_background()])

    def start_in_background(self) -> ManagedProcess:
        """Start the process without waiting for it to be ready (several start side by side)."""
        self.process = ManagedProcess(self.spec, self.log_path)
        self.process.start()
        return self.process

    def kill(self) -> None:
        """SIGKILL the whole process group and wait until it is gone."""
        process = self.running()
        process.kill()
        deadline = time.monotonic() + 10
        while not process.gone():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} survived SIGKILL for 10 s")
            time.sleep(POLL_S)  # poll
        process.remove_leftovers()

    def stop(self) -> None:
        stop_all([self.running()])

    def running(self) -> ManagedProcess:
        if self.process is None:
            raise RuntimeError(f"{self.spec.name} was never started")
        return self.process


@dataclass
class ChaosSystem:
    stack: LocalStack
    env: dict[str, str]
    tritons: list[Service]
    worker: Service
    ingress: Service
    gateways: list[Service]
    gateway_urls: list[str]
    triton_urls: list[str]
    run_dir: Path
    extra: list[Service] = field(default_factory=list)

    @property
    def services(self) -> list[Service]:
        return [*self.tritons, self.worker, self.ingress, *self.gateways, *self.extra]

    def mlflow(self) -> Service:
        """The stack's MLflow server as a :class:`Service` (same port and sqlite store when started again)."""
        process = next(p for p in self.stack.processes if p.name == "mlflow")
        service = Service(process.spec, process.log_path, process)
        self.extra.append(service)
        return service

    def kafka_nodes(self) -> list[Service]:
        """The stack's Kafka nodes by node id (``kafka-1`` first), as :class:`Service` handles to kill and start."""
        nodes = sorted((p for p in self.stack.processes if p.name.startswith("kafka-")), key=lambda p: p.name)
        return [Service(p.spec, p.log_path, p) for p in nodes]

    def spare_triton(self) -> Service:
        """A Triton on the same repository that no service knows of: where a bare load is timed."""
        service = triton_on(self.stack, self.run_dir / "triton-spare")
        service.start()
        self.extra.append(service)
        return service


def triton_on(stack: LocalStack, run_dir: Path) -> Service:
    """Another ``tritonserver`` on the stack's model repository, on free ports (not started)."""
    spec = triton_spec_on_free_ports(run_dir, stack.model_repository)
    return Service(spec, run_dir / "tritonserver.log")


def _stack_triton(stack: LocalStack) -> Service:
    process = next(p for p in stack.processes if p.name == "tritonserver")
    return Service(process.spec, process.log_path, process)


@contextmanager
def chaos_system(run_dir: Path, *, worker_env: dict[str, str]) -> Iterator[ChaosSystem]:
    """Start everything; stop everything on the way out, whatever happened in between."""
    with LocalStack(run_dir / "stack", kafka_broker="kafka", kafka_nodes=KAFKA_NODES) as stack:
        second = triton_on(stack, run_dir / "triton-b")
        second.start()
        tritons = [_stack_triton(stack), second]
        triton_urls = [stack.triton_http, second.spec.endpoints["triton_http"]]
        triton_grpc = [stack.triton_grpc, second.spec.endpoints["triton_grpc"]]
        secret = secrets.token_hex(24)
        env = {
            **stack.client_env(),
            "PROMOTER_TRITON_ENDPOINTS": ",".join(triton_urls),
            "PROMOTER_GATEWAY_TRITON_GRPC_ENDPOINTS": ",".join(triton_grpc),
            "PROMOTER_LOG_LEVEL": "INFO",
        }
        worker_port, ingress_port, gw_a, gw_b = free_ports(4)
        logs = run_dir / "logs"
        worker = Service(
            worker_spec({**env, **worker_env}, health_port=worker_port, run_dir=run_dir), logs / "worker.log"
        )
        ingress = Service(
            ingress_spec({**env, "PROMOTER_INGRESS_WEBHOOK_SECRETS": secret}, port=ingress_port, run_dir=run_dir),
            logs / "ingress.log",
        )
        gateways = [
            Service(gateway_spec(env, port=port, run_dir=run_dir, name=name), logs / f"{name}.log")
            for port, name in ((gw_a, "gateway-a"), (gw_b, "gateway-b"))
        ]
        system = ChaosSystem(
            stack=stack,
            env=env,
            tritons=tritons,
            worker=worker,
            ingress=ingress,
            gateways=gateways,
            gateway_urls=[f"http://{LOOPBACK}:{gw_a}", f"http://{LOOPBACK}:{gw_b}"],
            triton_urls=[f"http://{url}" for url in triton_urls],
            run_dir=run_dir,
        )
        try:
            wait_all_ready([service.start_in_background() for service in (worker, ingress, *gateways)])
            register_webhook(stack.mlflow_tracking_uri, f"http://{LOOPBACK}:{ingress_port}/webhooks/mlflow", secret)
            yield system
        finally:
            stop_all([s.process for s in system.services if s.process is not None])


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
