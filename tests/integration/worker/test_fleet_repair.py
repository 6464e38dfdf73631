"""A second Triton on the same repository, SIGKILLed and restarted empty, gets every routed model back by itself."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http
from typer.testing import CliRunner

from deploy.stack.local_stack import LocalStack
from deploy.stack.process import ManagedProcess, ServiceSpec, stop_all, wait_all_ready
from deploy.stack.triton_server import triton_spec_on_free_ports
from promoter_cli.main import app
from tests.worker_harness import (
    WorkerHandle,
    events_about,
    iris_frame,
    produce,
    ready_on,
    register_iris,
    request_bytes,
    running_worker,
    until,
    wait_for,
)

pytestmark = pytest.mark.integration

READY = "io.modelpromoter.model.ready.v1"


def _predict(url: str, model: str) -> np.ndarray:  # type: ignore[type-arg]
    rows = iris_frame()[0].to_numpy(dtype=np.float64)[:20]
    client = triton_http.InferenceServerClient(url, network_timeout=30)
    try:
        tensor = triton_http.InferInput("input", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows)
        return np.asarray(client.infer(model, [tensor]).as_numpy("output"))
    finally:
        client.close()


def _status_output(worker: WorkerHandle) -> str:
    result = CliRunner().invoke(app, ["status"], env=worker.env)
    assert result.exit_code == 0, result.output
    return result.output


def _state_is(worker: WorkerHandle, endpoint: str, state: str) -> bool:
    return worker.metric("promoter_fleet_endpoint_state", endpoint=endpoint, state=state) == 1


def _start(spec: ServiceSpec, log: Path) -> ManagedProcess:
    process = ManagedProcess(spec, log)
    process.start()
    wait_all_ready([process])
    return process


async def test_a_triton_restarted_empty_gets_every_routed_model_back(local_stack: LocalStack, tmp_path: Path) -> None:
    name = f"heal-{uuid.uuid4().hex[:6]}"
    version = register_iris(local_stack.mlflow_tracking_uri, name)
    spec = triton_spec_on_free_ports(tmp_path / "second-triton", local_stack.model_repository)
    second = spec.endpoints["triton_http"]
    processes = [_start(spec, tmp_path / "second-triton.log")]
    try:
        with running_worker(
            local_stack,
            tmp_path / "worker",
            PROMOTER_TRITON_ENDPOINTS=f"{local_stack.triton_http},{second}",
            PROMOTER_WORKER_FLEET_STATUS_INTERVAL_S="2",
        ) as worker:
            bootstrap = local_stack.kafka_bootstrap_servers
            await produce(
                bootstrap, worker.topic("promotion_requested"), [(name.encode(), request_bytes(name, version=version))]
            )
            (ready,) = await events_about(bootstrap, worker.topic("model_ready"), name, event_type=READY)
            model = ready["data"]["triton_model_name"]
            assert ready_on(second, model), "a promotion loads on every endpoint"

            processes[0].kill()
            await wait_for(processes[0].gone, timeout_s=30, what="the second Triton is gone after SIGKILL")
            processes[0].remove_leftovers()
            await wait_for(lambda: _state_is(worker, second, "down"), timeout_s=30, what="endpoint marked down")
            status = await asyncio.to_thread(_status_output, worker)
            assert f"Triton {second} — down since" in status

            processes.append(_start(spec, tmp_path / "second-triton-restarted.log"))  # same ports, nothing loaded
            await wait_for(lambda: ready_on(second, model), timeout_s=120, what="the routed model back on it")
            await wait_for(lambda: _state_is(worker, second, "in_sync"), timeout_s=30, what="endpoint in sync")

            assert worker.metric("promoter_fleet_repairs_total", endpoint=second, outcome="repaired") == 1
            assert worker.metric("promoter_fleet_repairs_total", endpoint=local_stack.triton_http) == 0
            assert _state_is(worker, local_stack.triton_http, "in_sync")
            np.testing.assert_array_equal(_predict(second, model), _predict(local_stack.triton_http, model))
            assert "endpoint repaired: model reloaded" in worker.process.log_text()

            async def status_in_sync() -> bool:
                output = await asyncio.to_thread(_status_output, worker)
                return f"Triton {second} — in sync since" in output

            await until(status_in_sync, timeout_s=30, what="promoter status shows the endpoint in sync")
    finally:
        stop_all(processes)
