"""A Triton that restricts its model-repository API: without the admin token a promotion is rejected at once
with a reason that names the setting; with it the promotion is served. Over HTTP (a worker process) and gRPC."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import tritonclient.http as triton_http
from pydantic import SecretStr

from deploy.stack.local_stack import LocalStack
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from deploy.stack.triton_server import triton_spec_on_free_ports
from runtime.settings import TritonSettings
from schemas.promotion_rejected import ReasonCode
from tests.integration.deploy.test_triton import write_affine_model
from tests.worker_harness import (
    WorkerHandle,
    events_about,
    headers,
    produce,
    read_until,
    register_iris,
    request_bytes,
    running_worker,
    wait_for,
)
from worker.errors import PermanentFailure
from worker.triton_fleet import TritonEndpoint

pytestmark = pytest.mark.integration

READY = "io.modelpromoter.model.ready.v1"
HEADER = "x-promoter-admin"


@dataclass(frozen=True)
class RestrictedTriton:
    http: str
    grpc: str
    token: str


@contextmanager
def restricted_triton(stack: LocalStack, run_dir: Path) -> Iterator[RestrictedTriton]:
    """A second ``tritonserver`` on the session's model repository, restricted as deploy/k8s/triton.yaml does."""
    token = secrets.token_hex(16)
    spec = triton_spec_on_free_ports(
        run_dir,
        stack.model_repository,
        extra_args=[
            f"--http-restricted-api=model-repository:{HEADER}={token}",
            f"--grpc-restricted-protocol=model-repository:{HEADER}={token}",
        ],
    )
    process = ManagedProcess(spec, run_dir / "triton.log")
    process.start()
    try:
        wait_all_ready([process])
        yield RestrictedTriton(spec.endpoints["triton_http"], spec.endpoints["triton_grpc"], token)
    finally:
        stop_all([process])


def _ready_on(url: str, model: str) -> bool:
    client = triton_http.InferenceServerClient(url, network_timeout=5)  # readiness is not restricted
    try:
        return bool(client.is_model_ready(model))
    finally:
        client.close()


def _whole_log(worker: WorkerHandle) -> str:
    return worker.process.log_path.read_text(errors="replace")


async def _rejection(worker: WorkerHandle, bootstrap: str, name: str, version: int) -> dict[str, object]:
    await produce(
        bootstrap, worker.topic("promotion_requested"), [(name.encode(), request_bytes(name, version=version))]
    )
    (rejected,) = await events_about(bootstrap, worker.topic("model_rejected"), name, timeout_s=120)
    data: dict[str, object] = rejected["data"]
    return data


async def test_a_promotion_is_rejected_without_the_admin_token_and_served_with_it(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    name = f"tok-{uuid.uuid4().hex[:6]}"
    version = register_iris(local_stack.mlflow_tracking_uri, name)
    bootstrap = local_stack.kafka_bootstrap_servers
    wrong = secrets.token_hex(16)

    with restricted_triton(local_stack, tmp_path / "triton") as triton:
        with running_worker(local_stack, tmp_path / "no-token", PROMOTER_TRITON_ENDPOINTS=triton.http) as worker:
            rejected = await _rejection(worker, bootstrap, name, version)
            assert rejected["reason_code"] == ReasonCode.TRITON_LOAD_FAILED
            message = str(rejected["message"])
            assert f"Triton {triton.http} refused a model-repository call (load of " in message
            assert "this worker sent no admin header" in message
            assert "PROMOTER_TRITON_ADMIN_TOKEN must match" in message
            assert rejected["attempts"] == 1, "a refused token is permanent: not retried"
            assert worker.metric("promoter_promotion_retries_total") == 0
            (letter,) = [
                r
                for r in await read_until(bootstrap, worker.topic("promotion_dlq"), lambda r: len(r) >= 1)
                if r.key == name.encode()
            ]
            assert headers(letter)["x-dlq-error-type"] == "permanent"
            assert headers(letter)["x-dlq-reason-code"] == "triton_load_failed"
            await wait_for(
                lambda: worker.metric("promoter_fleet_endpoint_state", endpoint=triton.http, state="down") == 1,
                timeout_s=30,
                what="the refusing endpoint reported down",
            )
            assert "PROMOTER_TRITON_ADMIN_TOKEN must match" in _whole_log(worker)

        with running_worker(
            local_stack,
            tmp_path / "wrong-token",
            PROMOTER_TRITON_ENDPOINTS=triton.http,
            PROMOTER_TRITON_ADMIN_TOKEN=wrong,
        ) as worker:
            rejected = await _rejection(worker, bootstrap, name, version)
            assert rejected["reason_code"] == ReasonCode.TRITON_LOAD_FAILED
            assert "sent an admin header Triton does not accept" in str(rejected["message"])
            assert wrong not in str(rejected["message"])
        assert wrong not in _whole_log(worker)

        with running_worker(
            local_stack,
            tmp_path / "token",
            PROMOTER_TRITON_ENDPOINTS=triton.http,
            PROMOTER_TRITON_ADMIN_TOKEN=triton.token,
        ) as worker:
            await produce(
                bootstrap, worker.topic("promotion_requested"), [(name.encode(), request_bytes(name, version=version))]
            )
            (ready,) = await events_about(bootstrap, worker.topic("model_ready"), name, event_type=READY, timeout_s=120)
            model = ready["data"]["triton_model_name"]
            assert _ready_on(triton.http, model)
            await wait_for(
                lambda: worker.metric("promoter_fleet_endpoint_state", endpoint=triton.http, state="in_sync") == 1,
                timeout_s=30,
                what="the endpoint in sync once the worker sends the token",
            )
        assert triton.token not in _whole_log(worker)


def _grpc_endpoint(triton: RestrictedTriton, token: str | None) -> TritonEndpoint:
    settings = TritonSettings(
        endpoints=[triton.grpc],
        protocol="grpc",
        load_timeout_s=60,
        request_timeout_s=10,
        admin_token=SecretStr(token) if token is not None else None,
    )
    return TritonEndpoint(triton.grpc, settings)


async def test_a_grpc_load_needs_the_admin_token(local_stack: LocalStack, tmp_path: Path) -> None:
    model = f"it_affine_{uuid.uuid4().hex[:8]}"
    write_affine_model(local_stack.model_repository, model)
    with restricted_triton(local_stack, tmp_path / "triton") as triton:
        for token, sent in (
            (None, "no admin header"),
            (secrets.token_hex(16), "an admin header Triton does not accept"),
        ):
            endpoint = _grpc_endpoint(triton, token)
            try:
                with pytest.raises(PermanentFailure, match="PROMOTER_TRITON_ADMIN_TOKEN must match") as refused:
                    await endpoint.load(model)
                assert refused.value.reason is ReasonCode.TRITON_LOAD_FAILED
                assert f"this worker sent {sent}" in refused.value.message
                if token is not None:
                    assert token not in refused.value.message
                assert not await endpoint.is_ready(model)
            finally:
                await endpoint.close()

        endpoint = _grpc_endpoint(triton, triton.token)
        try:
            await endpoint.load(model)  # is_live + load + is_ready: only the load carries the header
            assert await endpoint.is_ready(model)
            assert (await endpoint.loaded_models())[model] == "READY"
            await endpoint.unload(model)
        finally:
            await endpoint.close()
