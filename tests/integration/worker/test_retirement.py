"""Old versions are unloaded and removed only once no live gateway routes to them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import tritonclient.http as triton_http

from deploy.stack.local_stack import LocalStack
from schemas.gateway_status import (
    GatewayHeartbeat,
    GatewayHeartbeatData,
    GatewaySwapAcked,
    GatewaySwapAckedData,
    ServedRoute,
)
from tests.worker_harness import events, produce, read_until, register_iris, request_bytes, running_worker, wait_for

pytestmark = pytest.mark.integration


def _route(ready: dict[str, object]) -> ServedRoute:
    data = ready["data"]
    assert isinstance(data, dict)
    return ServedRoute(
        model_name=data["model_name"],
        alias=data["alias"],
        version=data["version"],
        triton_model_name=data["triton_model_name"],
        generation=data["generation"],
    )


async def test_retirement_waits_for_the_gateways_to_ack(local_stack: LocalStack, tmp_path: Path) -> None:
    name = f"retire-{uuid.uuid4().hex[:6]}"
    uri = local_stack.mlflow_tracking_uri
    v1, v2 = register_iris(uri, name), register_iris(uri, name, regularisation=0.05)
    bootstrap = local_stack.kafka_bootstrap_servers
    triton = triton_http.InferenceServerClient(local_stack.triton_http, network_timeout=10)

    with running_worker(
        local_stack, tmp_path, PROMOTER_WORKER_KEEP_LOADED_VERSIONS="1", PROMOTER_WORKER_RETIRE_GRACE_S="600"
    ) as worker:
        requested, status = (
            worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"],
            worker.topics["PROMOTER_TOPIC_GATEWAY_STATUS"],
        )

        async def promote(version: int, count: int) -> dict[str, object]:
            await produce(bootstrap, requested, [(name.encode(), request_bytes(name, version=version))])
            served = [
                e
                for e in events(
                    await read_until(
                        bootstrap,
                        worker.topics["PROMOTER_TOPIC_MODEL_READY"],
                        lambda r: sum(e["subject"] == name for e in events(r)) >= count,
                    )
                )
                if e["subject"] == name
            ]
            return served[-1]

        first = await promote(v1, 1)
        heartbeat = GatewayHeartbeat(
            source="/tests/gateway",
            data=GatewayHeartbeatData(
                gateway_id="gw-1", ready=True, started_at=datetime.now(UTC), interval_s=60, routes=[_route(first)]
            ),
        )
        await produce(bootstrap, status, [(b"gw-1", heartbeat.to_json_bytes())])
        second = await promote(v2, 2)
        await promote(v2, 3)  # one more batch: a retirement sweep has run since v2 was served
        v1_model, v2_model = _route(first).triton_model_name, _route(second).triton_model_name

        assert triton.is_model_ready(v1_model), "gw-1 still routes v1: it must stay loaded"
        assert (local_stack.model_repository / v1_model).is_dir()
        assert worker.metric("promoter_retirements_total") == 0

        ack = GatewaySwapAcked(
            source="/tests/gateway",
            data=GatewaySwapAckedData(gateway_id="gw-1", route=_route(second), previous_version=v1),
        )
        await produce(bootstrap, status, [(b"gw-1", ack.to_json_bytes())])
        await wait_for(lambda: not triton.is_model_ready(v1_model), timeout_s=30, what="v1 unloaded after the ack")
        await wait_for(
            lambda: not (local_stack.model_repository / v1_model).exists(), timeout_s=10, what="v1 directory removed"
        )

        # The directory vanishes inside the removal; the retirement is counted once the removal returned.
        await wait_for(
            lambda: worker.metric("promoter_retirements_total") == 1, timeout_s=10, what="the retirement counted"
        )
        assert triton.is_model_ready(v2_model)
        assert worker.metric("promoter_retirement_errors_total") == 0
    triton.close()
