"""The gateway's gRPC API and its Triton gRPC upstream, in process: failures map to gRPC status codes (never a
stack trace), only the model name and version are rewritten, one retry elsewhere for a failure before Triton
ran the request. Triton is a small fake gRPC server on a loopback port (no broker). The API's tests run against
both fronts: the Python server alone, and the native one (the ``promoter-grpc-front`` child, `make grpc-front`)
with the Python server as its slow path."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.grpc_api import GatewayServicer, status_code
from gateway.grpc_front import GrpcFront
from gateway.inference import InferenceService
from gateway.metrics import GatewayMetrics
from gateway.responses import ALIAS_RESPONSE_HEADER, VERSION_RESPONSE_HEADER
from gateway.routing_policy import RouteError
from gateway.routing_table import RoutingState
from gateway.settings import GatewaySettings
from gateway.triton_grpc import TritonGrpcUpstream, upstream_error
from gateway.upstream import TritonUpstream, UpstreamError
from runtime.settings import TritonSettings
from tests.unit.gateway.test_routing import ready

Code = grpc.StatusCode

# What the fake Triton does, by the registered model's name (the part of the Triton model name before "--").
FAILURES = {
    "gone": (Code.NOT_FOUND, "Request for unknown model: 'gone--v1' is not found"),
    "nan": (Code.INTERNAL, "Failed to process the request(s), message: Input X contains NaN."),
    "crash": (Code.INTERNAL, "model crashed: CUDA out of memory"),
    "picky": (Code.INVALID_ARGUMENT, "unexpected shape for input 'input', model expects [-1,4]"),
}


class FakeTriton:
    """Answers ModelInfer by echoing the request's tensors, or fails as ``FAILURES`` says; ``slow`` never answers."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.release = asyncio.Event()

    async def infer(self, request: Any, context: Any) -> Any:
        self.seen.append(request)
        model = request.model_name.split("--")[0]
        if model == "slow":
            await self.release.wait()
        if model in FAILURES:
            await context.abort(*FAILURES[model])
        response = service_pb2.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        response.raw_output_contents.extend(request.raw_input_contents)
        return response


def _closed_port() -> str:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
async def triton() -> AsyncIterator[tuple[str, FakeTriton]]:
    fake = FakeTriton()
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        fake.infer,
        request_deserializer=service_pb2.ModelInferRequest.FromString,
        response_serializer=service_pb2.ModelInferResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", fake
    finally:
        fake.release.set()
        await server.stop(None)


@dataclass
class Gateway:
    stub: Any
    metrics: GatewayMetrics
    front: GrpcFront

    async def sample(self, name: str, **labels: str) -> float:
        """A sample of the replica's registry as /metrics renders it (the native front's counts included)."""
        await self.front.refresh_metrics()
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(params=["python", "native"])
async def gateway(triton: tuple[str, FakeTriton], request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    """A stub talking to a gateway's gRPC front (Python alone, or native with Python as its slow path), routing
    to the fake Triton."""
    state = RoutingState()
    state.apply(ready(1, generation=0))
    state.apply(ready(2, generation=1, alias="challenger"))
    state.apply(ready(3, generation=0, model="orphan", alias="staging"))
    for model in ("gone", "nan", "crash", "picky", "slow"):
        state.apply(ready(1, generation=0, model=model))
    metrics = GatewayMetrics()
    grpc_upstream = TritonGrpcUpstream([triton[0]], timeout_s=5.0, metrics=metrics)
    await grpc_upstream.start()
    http_upstream = TritonUpstream(TritonSettings(endpoints="127.0.0.1:9"), connect_timeout_s=0.5)
    settings = GatewaySettings(grpc_front=request.param, grpc_port=0, max_request_bytes=1 << 20)
    service = InferenceService(settings, state, http_upstream, metrics, grpc_upstream)
    servicer = GatewayServicer(service, lambda: True)
    front = GrpcFront(settings, servicer, state, grpc_upstream.rotation, metrics, timeout_s=5.0)
    await front.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{front.port}") as channel:
            yield Gateway(service_pb2_grpc.GRPCInferenceServiceStub(channel), metrics, front)
    finally:
        await front.stop()
        await service.close()
        await grpc_upstream.close()


def _request(model: str, version: str = "") -> Any:
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version, id="req-7")
    tensor = request.inputs.add(name="input", datatype="FP64", shape=[1, 4])
    tensor.parameters["binary_data_size"].int64_param = 32
    request.parameters["priority"].int64_param = 3
    request.raw_input_contents.append(bytes(range(32)))
    return request


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (RouteError(404, "model 'x' is not served"), Code.NOT_FOUND),
        (RouteError(503, "alias 'champion' is not served"), Code.UNAVAILABLE),
        (UpstreamError(503, "Triton is unavailable", "unavailable"), Code.UNAVAILABLE),
        (UpstreamError(502, "no such model", "triton_error", retry_reason="unknown_model"), Code.UNAVAILABLE),
        (UpstreamError(400, "Input X contains NaN.", "bad_request"), Code.INVALID_ARGUMENT),
        (UpstreamError(504, "too slow", "timeout"), Code.DEADLINE_EXCEEDED),
        (UpstreamError(502, "CUDA out of memory", "triton_error"), Code.INTERNAL),
    ],
)
def test_failures_map_to_grpc_status_codes(error: RouteError | UpstreamError, code: grpc.StatusCode) -> None:
    assert status_code(error) is code


@pytest.mark.parametrize(
    ("code", "details", "status", "retry_reason"),
    [
        (Code.UNAVAILABLE, "failed to connect to all addresses; last error: Connection refused", 503, "unreachable"),
        (Code.UNAVAILABLE, "Socket closed", 503, None),  # mid-call: Triton may have run it
        (Code.UNAVAILABLE, "Request for unknown model: 'm--v1' has no available versions", 502, "unknown_model"),
        (Code.NOT_FOUND, "Request for unknown model: 'm--v1' is not found", 502, "unknown_model"),
        (Code.INVALID_ARGUMENT, "unexpected shape", 400, None),
        (Code.INTERNAL, "Input X contains NaN.", 400, None),
        (Code.INTERNAL, "CUDA out of memory", 502, None),
        (Code.DEADLINE_EXCEEDED, "Deadline Exceeded", 504, None),
    ],
)
def test_triton_grpc_failures_map_like_http_ones(
    code: grpc.StatusCode, details: str, status: int, retry_reason: str | None
) -> None:
    error = upstream_error(code, details)
    assert (error.status, error.retry_reason) == (status, retry_reason)


async def test_only_the_model_name_and_version_are_rewritten(gateway: Gateway, triton: tuple[str, FakeTriton]) -> None:
    stub = gateway.stub
    sent = _request("m")
    call = stub.ModelInfer(sent, metadata=(("x-model-alias", "challenger"),))
    response = await call
    trailers = dict(await call.trailing_metadata())
    (forwarded,) = triton[1].seen
    assert (forwarded.model_name, forwarded.model_version) == ("m--v2", "")
    expected = _request("m--v2")
    assert forwarded == expected  # tensors, raw contents and parameters as sent
    assert (response.model_name, response.model_version, response.id) == ("m", "2", "req-7")
    assert list(response.raw_output_contents) == list(sent.raw_input_contents)
    assert response.parameters["alias"].string_param == "challenger"
    assert trailers == {"x-model-version": "2", "x-model-alias": "challenger"}
    labels = {"model": "m", "alias": "challenger", "version": "2", "api": "v2", "protocol": "grpc", "code": "200"}
    assert await gateway.sample("gateway_requests_total", **labels) == 1
    assert await gateway.sample("gateway_request_duration_seconds_count", model="m", api="v2", protocol="grpc") == 1
    # Who answered: the native front itself (the Python server, its slow path, counted nothing), or Python.
    by_python = gateway.metrics.requests.labels("m", "challenger", "2", "v2", "grpc", "200")._value.get()
    assert by_python == (0 if gateway.front.native else 1)


@pytest.mark.parametrize(
    ("model", "version", "code", "words"),
    [
        ("nope", "", Code.NOT_FOUND, "'nope' is not served by this gateway"),
        ("m", "9", Code.NOT_FOUND, "version 9 of model 'm' is not served"),
        ("m", "latest", Code.INVALID_ARGUMENT, "model_version: must be an MLflow version"),
        ("orphan", "", Code.UNAVAILABLE, "alias 'champion' is not served"),
        ("gone", "", Code.UNAVAILABLE, "does not serve the routed model"),
        ("nan", "", Code.INVALID_ARGUMENT, "Input X contains NaN."),
        ("picky", "", Code.INVALID_ARGUMENT, "unexpected shape for input 'input'"),
        ("crash", "", Code.INTERNAL, "CUDA out of memory"),
    ],
)
async def test_failures_reach_the_caller_as_status_codes(
    gateway: Gateway, model: str, version: str, code: grpc.StatusCode, words: str
) -> None:
    stub = gateway.stub
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ModelInfer(_request(model, version))
    assert failure.value.code() is code
    assert words in failure.value.details()
    assert "Traceback" not in failure.value.details()


@pytest.mark.parametrize(
    ("model", "code", "status", "reason"),
    [
        ("nan", Code.INVALID_ARGUMENT, "400", "bad_request"),
        ("picky", Code.INVALID_ARGUMENT, "400", "bad_request"),
        ("crash", Code.INTERNAL, "502", "triton_error"),
    ],
)
async def test_a_failure_after_triton_ran_the_request_is_answered_once_named_and_counted(
    gateway: Gateway,
    triton: tuple[str, FakeTriton],
    model: str,
    code: grpc.StatusCode,
    status: str,
    reason: str,
) -> None:
    """Triton may have run it: not sent again (on the native front, not handed to the slow path either), the
    route named in the trailers, counted under its code and reason, on both fronts alike."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await gateway.stub.ModelInfer(_request(model))
    assert failure.value.code() is code
    assert len(triton[1].seen) == 1
    trailers = dict(failure.value.trailing_metadata() or ())
    assert trailers[VERSION_RESPONSE_HEADER.lower()] == "1"
    assert trailers[ALIAS_RESPONSE_HEADER.lower()] == "champion"
    route = {"model": model, "alias": "champion", "version": "1"}
    assert await gateway.sample("gateway_requests_total", **route, api="v2", protocol="grpc", code=status) == 1
    assert await gateway.sample("gateway_errors_total", **route, reason=reason) == 1


async def test_the_callers_deadline_bounds_the_upstream_call(gateway: Gateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await gateway.stub.ModelInfer(_request("slow"), timeout=0.3)
    assert failure.value.code() is Code.DEADLINE_EXCEEDED
    labels = {"model": "slow", "api": "v2", "protocol": "grpc"}
    elapsed_s = 0.0
    for _ in range(300):  # within 3 s: the handler ends when the caller's deadline passes
        elapsed_s = await gateway.sample("gateway_request_duration_seconds_sum", **labels)
        if elapsed_s > 0:
            break
        await asyncio.sleep(0.01)  # poll
    assert 0 < elapsed_s < 2.0  # ended with the caller, not at the upstream's 5 s


async def test_model_control_is_unimplemented_and_says_what_to_use(gateway: Gateway) -> None:
    stub = gateway.stub
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.RepositoryModelLoad(service_pb2.RepositoryModelLoadRequest(model_name="m"))
    assert failure.value.code() is Code.UNIMPLEMENTED
    assert "promoter promote" in failure.value.details()


async def test_metadata_and_readiness_answer_from_the_routing_table(gateway: Gateway) -> None:
    stub = gateway.stub
    metadata = await stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="m", version="2"))
    assert (metadata.name, list(metadata.versions)) == ("m", ["1", "2"])
    assert [(t.name, t.datatype) for t in metadata.inputs] == [("input", "FP64")]
    assert (await stub.ModelReady(service_pb2.ModelReadyRequest(name="m"))).ready is True
    assert (await stub.ModelReady(service_pb2.ModelReadyRequest(name="orphan"))).ready is False
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope"))
    assert failure.value.code() is Code.NOT_FOUND


async def test_an_unreachable_endpoint_is_retried_elsewhere_and_ejected(triton: tuple[str, FakeTriton]) -> None:
    metrics = GatewayMetrics()
    dead = _closed_port()
    upstream = TritonGrpcUpstream([dead, triton[0]], timeout_s=5.0, metrics=metrics)
    await upstream.start()
    try:
        answers = [await upstream.infer("m--v1", _request("m")) for _ in range(4)]
    finally:
        await upstream.close()
    assert [answer.model_name for answer in answers] == ["m--v1"] * 4
    assert metrics.upstream_retries.labels("unreachable")._value.get() == 1
    assert upstream.rotation.ejected() == {(dead, None): "unreachable"}


async def test_a_model_missing_on_one_endpoint_is_retried_on_another(triton: tuple[str, FakeTriton]) -> None:
    metrics = GatewayMetrics()
    upstream = TritonGrpcUpstream([triton[0], triton[0]], timeout_s=5.0, metrics=metrics)
    await upstream.start()
    try:
        with pytest.raises(UpstreamError) as failure:
            await upstream.infer("gone--v1", _request("gone"))
    finally:
        await upstream.close()
    assert failure.value.retry_reason == "unknown_model"
    assert len(triton[1].seen) == 2  # the first endpoint, then once on the other
    assert metrics.upstream_retries.labels("unknown_model")._value.get() == 1


def test_triton_grpc_endpoints_are_configured_or_derived_from_the_http_ones() -> None:
    derived = GatewaySettings()
    assert derived.triton_grpc_targets(["localhost:8000", "http://triton-1:9000"]) == [
        "localhost:8001",
        "triton-1:9001",
    ]
    configured = GatewaySettings(triton_grpc_endpoints="a:1, b:2")
    assert configured.triton_grpc_targets(["localhost:8000"]) == ["a:1", "b:2"]
