"""Helpers for gateway tests on the real stack: gateway processes, promotions, hand-made log events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from deploy.stack.app_processes import gateway_spec
from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from schemas.model_ready import ModelReady, ModelReadyData, ServingStopped, ServingStoppedData
from schemas.routing_updated import RoutingUpdated, RoutingUpdatedData
from tests.worker_harness import (
    WorkerHandle,
    events,
    produce,
    read_until,
    request_bytes,
    set_alias,
)

IRIS_FEATURES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
READY_TYPE = "io.modelpromoter.model.ready.v1"


@dataclass
class GatewayHandle:
    name: str
    url: str
    process: ManagedProcess
    grpc_address: str = ""  # host:port of its gRPC API

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=10, **kwargs)

    def served(self, model: str, alias: str = "champion") -> int | None:
        """The version this replica routes ``alias`` of ``model`` to (None when it does not)."""
        aliases = self.get("/models").json()["models"].get(model, {}).get("aliases", {})
        version = aliases.get(alias, {}).get("version")
        return int(version) if version is not None else None

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            series, _, value = line.rpartition(" ")
            if series.split("{", 1)[0] == name and all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total


def _triton_grpc_of(stack: LocalStack, env: dict[str, str]) -> dict[str, str]:
    """The stack's Triton gRPC address when the gateways use the stack's Triton (tests with Tritons of their own
    set their gRPC endpoints themselves)."""
    if env.get("PROMOTER_TRITON_ENDPOINTS", stack.triton_http) != stack.triton_http:
        return {}
    return {"PROMOTER_GATEWAY_TRITON_GRPC_ENDPOINTS": stack.triton_grpc}


@contextmanager
def running_gateways(
    stack: LocalStack, run_dir: Path, env: dict[str, str], names: list[str], **settings: str
) -> Iterator[list[GatewayHandle]]:
    """Gateway processes reading the same topics as ``env`` (a worker's), all ready, stopped afterwards."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ports = free_ports(2 * len(names))
    http_ports, grpc_ports = ports[: len(names)], ports[len(names) :]
    common = {
        "PROMOTER_GATEWAY_HEARTBEAT_INTERVAL_S": "1",
        "PROMOTER_LOG_LEVEL": "INFO",
        **_triton_grpc_of(stack, env),
        **env,
        **settings,
    }
    processes = [
        ManagedProcess(
            gateway_spec(common, port=port, grpc_port=grpc_port, run_dir=run_dir, name=name), run_dir / f"{name}.log"
        )
        for name, port, grpc_port in zip(names, http_ports, grpc_ports, strict=True)
    ]
    for process in processes:
        process.start()
    try:
        wait_all_ready(processes)
        yield [
            GatewayHandle(name, f"http://127.0.0.1:{port}", process, f"127.0.0.1:{grpc_port}")
            for name, port, grpc_port, process in zip(names, http_ports, grpc_ports, processes, strict=True)
        ]
    finally:
        stop_all(processes)


async def promote(
    stack: LocalStack, worker: WorkerHandle, model: str, version: int, alias: str = "champion"
) -> dict[str, Any]:
    """Point ``alias`` at ``version`` in MLflow, ask the worker, return the model.ready event for it."""
    set_alias(stack.mlflow_tracking_uri, model, alias, version)
    event_id = str(uuid.uuid4())
    bootstrap = stack.kafka_bootstrap_servers
    await produce(
        bootstrap,
        worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"],
        [(model.encode(), request_bytes(model, alias=alias, event_id=event_id))],
    )

    def answered(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in documents if e["type"] == READY_TYPE and e["data"].get("request_event_id") == event_id]

    records = await read_until(
        bootstrap, worker.topics["PROMOTER_TOPIC_MODEL_READY"], lambda r: bool(answered(events(r))), timeout_s=90
    )
    (ready,) = answered(events(records))
    assert ready["data"]["version"] == version, ready
    return ready


def ready_bytes(template: dict[str, Any], **changes: Any) -> bytes:
    """A model.ready like ``template`` (an event document) with ``changes`` applied to its data."""
    data = ModelReadyData.model_validate({**template["data"], "request_event_id": None, **changes})
    return ModelReady(source="/tests/gateway", subject=data.model_name, data=data).to_json_bytes()


def stopped_bytes(model: str, alias: str, generation: int) -> bytes:
    data = ServingStoppedData(model_name=model, alias=alias, generation=generation)
    return ServingStopped(source="/tests/gateway", subject=model, data=data).to_json_bytes()


def routing_bytes(
    model: str, weights: dict[str, int], generation: int, shadow: str | None = None, sample: float = 0.0
) -> bytes:
    data = RoutingUpdatedData(
        model_name=model, weights=weights, shadow_alias=shadow, shadow_sample_percent=sample, generation=generation
    )
    return RoutingUpdated(source="/tests/gateway", subject=model, data=data).to_json_bytes()


def iris_records(rows: Any) -> list[dict[str, float]]:
    return [dict(zip(IRIS_FEATURES, map(float, row), strict=True)) for row in rows]
