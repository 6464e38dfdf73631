"""The native gRPC front's feed and its counts, in process: the shared client-bucket vectors (Go checks the same
file), what a model looks like to Go, counts merged into the replica's metrics, and a Triton endpoint that
cannot be reached on the fast path answered by the slow path and ejected from both (the real
``promoter-grpc-front`` child; Triton is the fake gRPC server of ``test_grpc_api``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2_grpc

from gateway.endpoint_rotation import Backoff, Choice
from gateway.grpc_api import GatewayServicer, status_code
from gateway.grpc_front import (
    BUILT_BINARY,
    FrontCollector,
    GrpcFront,
    NativeFrontMissing,
    ejected_entry,
    model_entry,
)
from gateway.inference import InferenceService
from gateway.metrics import REQUEST_BUCKETS_S, GatewayMetrics
from gateway.routing_policy import client_bucket
from gateway.routing_table import RoutingState
from gateway.settings import GatewaySettings
from gateway.triton_grpc import TritonGrpcUpstream, upstream_error
from gateway.upstream import TritonUpstream
from runtime.settings import TritonSettings
from tests.unit.gateway.test_grpc_api import FakeTriton, _closed_port, _request, triton  # noqa: F401
from tests.unit.gateway.test_routing import policy, ready

TESTDATA = Path(__file__).parents[3] / "gateway" / "grpc_front_go" / "testdata"
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def test_client_bucket_matches_the_shared_vectors() -> None:
    vectors = json.loads((TESTDATA / "client_buckets.json").read_text())["vectors"]
    assert len(vectors) >= 10
    for vector in vectors:
        assert client_bucket(vector["client_id"]) == vector["bucket"], vector


def test_triton_failures_are_classified_as_the_shared_vectors_say() -> None:
    """The one classification of Triton's gRPC failures; Go's copy (upstream.go) checks the same file."""
    vectors = json.loads((TESTDATA / "upstream_errors.json").read_text(encoding="utf-8"))["vectors"]
    assert len(vectors) >= 15
    assert {vector["retry_reason"] for vector in vectors} == {None, "unreachable", "unknown_model"}
    for vector in vectors:
        error = upstream_error(_CODES[vector["code"]], vector["details"])
        got = {
            "status": error.status,
            "grpc_code": status_code(error).value[0],
            "message": error.message,
            "outcome": error.outcome,
            "retry_reason": error.retry_reason,
        }
        assert got == {key: vector[key] for key in got}, vector["details"][:80]


def test_a_model_entry_carries_routes_in_order_the_default_and_the_bucket_table() -> None:
    state = RoutingState()
    state.apply(ready(1, generation=0))
    state.apply(ready(2, generation=0, alias="challenger"))
    state.apply(policy({"challenger": 30, "champion": 70}, generation=1))
    model = state.table.model("m")
    assert model is not None
    entry = model_entry(model, "champion")
    assert entry["routes"] == [
        {"alias": "champion", "triton": "m--v1", "version": 1},
        {"alias": "challenger", "triton": "m--v2", "version": 2},
    ]
    assert entry["default"] == "champion"
    assert entry["buckets"] == ["challenger"] * 30 + ["champion"] * 70
    assert entry["shadow"] is False
    assert model_entry(model, "staging")["default"] == ""  # no default route: the slow path says why


def test_a_shadow_that_may_copy_sends_the_model_to_the_slow_path() -> None:
    state = RoutingState()
    state.apply(ready(1, generation=0))
    state.apply(ready(2, generation=0, alias="challenger"))
    state.apply(policy({"champion": 100}, generation=1, shadow="challenger", sample=5.0))
    model = state.table.model("m")
    assert model is not None
    assert model_entry(model, "champion")["shadow"] is True
    state.apply(policy({"champion": 100}, generation=2))
    model = state.table.model("m")
    assert model is not None
    assert model_entry(model, "champion")["shadow"] is False


def test_routing_state_tells_its_listeners_what_changed() -> None:
    state = RoutingState()
    told: list[set[str]] = []
    state.listeners.append(lambda changes: told.append({c.model_name for c in changes if c is not None}))
    state.apply_all([ready(1, generation=0), ready(1, generation=0, model="n")])
    state.apply(ready(1, generation=0))  # stale: nothing changed
    assert told == [{"m", "n"}, set()]


def test_the_collector_adds_the_native_counts_to_the_same_series() -> None:
    metrics = GatewayMetrics()
    collector = FrontCollector(metrics)
    metrics.requests.labels("m", "champion", "1", "v2", "grpc", "200").inc(2)
    metrics.latency.labels("m", "v2", "grpc").observe(0.004)
    collector.report = {
        "requests": [
            {"model": "m", "alias": "champion", "version": "1", "label": "200", "value": 5},
            {"model": "m", "alias": "champion", "version": "1", "label": "504", "value": 1},
        ],
        "errors": [{"model": "m", "alias": "champion", "version": "1", "label": "timeout", "value": 1}],
        "latency": [
            {"model": "m", "buckets": [1 if b >= 0.001 else 0 for b in REQUEST_BUCKETS_S], "count": 6, "sum": 0.5}
        ],
    }
    value = metrics.registry.get_sample_value
    requests = {"model": "m", "alias": "champion", "version": "1", "api": "v2", "protocol": "grpc"}
    assert value("gateway_requests_total", {**requests, "code": "200"}) == 7
    assert value("gateway_requests_total", {**requests, "code": "504"}) == 1
    assert value("gateway_errors_total", {"model": "m", "alias": "champion", "version": "1", "reason": "timeout"}) == 1
    latency = {"model": "m", "api": "v2", "protocol": "grpc"}
    assert value("gateway_request_duration_seconds_count", latency) == 7
    assert value("gateway_request_duration_seconds_sum", latency) == pytest.approx(0.504)
    assert value("gateway_request_duration_seconds_bucket", {**latency, "le": "0.005"}) == 2  # 1 + Python's
    assert value("gateway_request_duration_seconds_bucket", {**latency, "le": "+Inf"}) == 7


def test_ejections_are_sent_by_endpoint_index() -> None:
    upstream = TritonGrpcUpstream(["a:1", "b:2"], timeout_s=1.0, backoff=Backoff(), metrics=GatewayMetrics())
    told: list[dict[str, Any]] = []
    upstream.rotation.listeners.append(lambda: told.append(ejected_entry(upstream.rotation)))
    upstream.rotation.failed(Choice(0), "m--v1", scope="endpoint", reason="unreachable")
    upstream.rotation.failed(Choice(1), "m--v2", scope="model", reason="unknown_model")
    assert told[-1] == {"endpoints": [0], "models": {"m--v2": [1]}}


@pytest.fixture
async def two_endpoint_front(triton: tuple[str, FakeTriton]) -> AsyncIterator[tuple[Any, TritonGrpcUpstream]]:  # noqa: F811
    """The native front over a closed port and the fake Triton, in that order."""
    state = RoutingState()
    state.apply(ready(1, generation=0))
    metrics = GatewayMetrics()
    upstream = TritonGrpcUpstream([_closed_port(), triton[0]], timeout_s=5.0, backoff=Backoff(30, 30), metrics=metrics)
    await upstream.start()
    settings = GatewaySettings(grpc_front="native", grpc_port=0)
    service = InferenceService(
        settings,
        state,
        TritonUpstream(TritonSettings(endpoints="127.0.0.1:9"), connect_timeout_s=0.5),
        metrics,
        upstream,
    )
    front = GrpcFront(
        settings, GatewayServicer(service, lambda: True), state, upstream.rotation, metrics, timeout_s=5.0
    )
    await front.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{front.port}") as channel:
            yield service_pb2_grpc.GRPCInferenceServiceStub(channel), upstream
    finally:
        await front.stop()
        await service.close()
        await upstream.close()


async def test_an_unreachable_endpoint_on_the_fast_path_fails_no_request(
    two_endpoint_front: tuple[Any, TritonGrpcUpstream],
    triton: tuple[str, FakeTriton],  # noqa: F811
) -> None:
    stub, upstream = two_endpoint_front
    answers = [await stub.ModelInfer(_request("m")) for _ in range(20)]
    assert [answer.model_version for answer in answers] == ["1"] * 20
    dead = upstream.endpoints[0]
    assert upstream.rotation.ejected() == {(dead, None): "unreachable"}  # told by the fast path or seen itself
    # Once ejected, the fast path sends the dead endpoint's turns to the slow path, which sends them to the
    # live one: every request reached the fake Triton exactly once or (the first failures) twice at most.
    assert 20 <= len(triton[1].seen) <= 22


def test_the_checkout_build_is_where_make_puts_it() -> None:
    assert BUILT_BINARY.parts[-3:] == (".cache", "bin", "promoter-grpc-front")


async def test_a_missing_native_front_stops_the_start_naming_the_make_target(tmp_path: Path) -> None:
    metrics = GatewayMetrics()
    upstream = TritonGrpcUpstream(["127.0.0.1:9"], timeout_s=1.0, metrics=metrics)
    settings = GatewaySettings(grpc_front="native", grpc_port=0, grpc_front_binary=str(tmp_path / "absent"))
    state = RoutingState()
    service = InferenceService(
        settings, state, TritonUpstream(TritonSettings(endpoints="127.0.0.1:9"), connect_timeout_s=0.5), metrics
    )
    front = GrpcFront(settings, GatewayServicer(service, lambda: True), state, upstream.rotation, metrics, timeout_s=1)
    with pytest.raises(NativeFrontMissing) as missing:
        await front.start()
    await front.stop()
    assert "make grpc-front" in str(missing.value)
    assert "PROMOTER_GATEWAY_GRPC_FRONT=python" in str(missing.value)
