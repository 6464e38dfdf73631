"""The gateway's gRPC API on the real stack, called with ``tritonclient.grpc`` (and the raw stubs where the
trailing metadata matters): metadata, answers equal to direct Triton gRPC's, a swap under gRPC load, the A/B
split by client-id metadata, and every status code it answers with. Replica grpc-a has the native front (Go),
grpc-b the Python one alone (``PROMOTER_GATEWAY_GRPC_FRONT=python``: merging is the Python server's), so the
tests that use both compare them."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as triton_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import LOOPBACK
from deploy.stack.process import child_pid
from gateway.grpc_front import BINARY_NAME
from gateway.routing_policy import client_bucket, weighted_alias
from tests.gateway_harness import GatewayHandle, promote, ready_bytes, routing_bytes, running_gateways
from tests.worker_harness import WorkerHandle, iris_frame, produce, register_iris, running_worker, wait_for

pytestmark = pytest.mark.integration

ROWS = iris_frame()[0].head(20).to_numpy(dtype=np.float64)


@dataclass
class World:
    stack: LocalStack
    worker: WorkerHandle
    model: str
    run_dir: Path
    registered: list[int]
    gateways: list[GatewayHandle] = field(default_factory=list)
    promotions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def latest(self) -> dict[str, Any]:
        data: dict[str, Any] = self.promotions[-1]["data"]
        return data

    async def promote(self, version: int) -> None:
        self.promotions.append(await promote(self.stack, self.worker, self.model, version))

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await produce(self.stack.kafka_bootstrap_servers, self.worker.topics[topic], [(key.encode(), value)])


@pytest.fixture(scope="module")
async def world(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Any:
    run_dir = tmp_path_factory.mktemp("gateway-grpc")
    model = f"grpc-iris-{uuid.uuid4().hex[:6]}"
    registered = [register_iris(local_stack.mlflow_tracking_uri, model, regularisation=c) for c in (1.0, 0.01)]
    with running_worker(local_stack, run_dir / "worker") as worker:
        current = World(local_stack, worker, model, run_dir, registered)
        await current.promote(registered[0])
        with (
            running_gateways(local_stack, run_dir / "gateways", worker.env, ["grpc-a"]) as native,
            running_gateways(
                local_stack, run_dir / "gateways-python", worker.env, ["grpc-b"], PROMOTER_GATEWAY_GRPC_FRONT="python"
            ) as python,
        ):
            current.gateways = [*native, *python]
            yield current


def _inputs(rows: np.ndarray[Any, Any]) -> list[triton_grpc.InferInput]:
    tensor = triton_grpc.InferInput("input", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    return [tensor]


async def _infer(address: str, model: str, rows: np.ndarray[Any, Any] = ROWS, **options: Any) -> Any:
    client = triton_grpc.InferenceServerClient(address)
    try:
        return await client.infer(model, _inputs(rows), **options)
    finally:
        await client.close()


async def _failure(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as raised:
        await call
    return raised.value


async def test_metadata_and_readiness_come_from_the_served_signature(world: World) -> None:
    client = triton_grpc.InferenceServerClient(world.gateways[0].grpc_address)
    try:
        assert await client.is_server_live() is True
        assert await client.is_server_ready() is True
        assert (await client.get_server_metadata(as_json=True))["name"] == "model-promoter-gateway"
        assert await client.is_model_ready(world.model) is True
        assert await client.is_model_ready("no-such-model") is False
        metadata = await client.get_model_metadata(world.model, as_json=True)
        pinned = await client.get_model_metadata(world.model, model_version=str(world.latest["version"]), as_json=True)
    finally:
        await client.close()
    assert metadata["name"] == world.model
    assert str(world.latest["version"]) in metadata["versions"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [("input", "FP64", ["-1", "4"])]
    assert [t["name"] for t in metadata["outputs"]] == ["output"]
    assert pinned == metadata


async def test_inference_equals_direct_triton_grpc_and_names_who_answered(world: World) -> None:
    gateway = world.gateways[0]
    answered_before = gateway.metric("gateway_requests_total", protocol="grpc", code="200")
    through = await _infer(gateway.grpc_address, world.model, request_id="r-1")
    direct = await _infer(world.stack.triton_grpc, world.latest["triton_model_name"])
    assert np.array_equal(through.as_numpy("output"), direct.as_numpy("output"))
    response = through.get_response()
    assert (response.model_name, response.model_version, response.id) == (
        world.model,
        str(world.latest["version"]),
        "r-1",
    )
    assert response.parameters["alias"].string_param == "champion"

    async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelInfer(through_request(world.model, ROWS[:1]))
        await call
        trailers = dict(await call.trailing_metadata())
    assert trailers["x-model-version"] == str(world.latest["version"])
    assert trailers["x-model-alias"] == "champion"
    assert gateway.metric("gateway_requests_total", protocol="grpc", code="200") >= answered_before + 2


def through_request(model: str, rows: np.ndarray[Any, Any], version: str = "") -> Any:
    """A raw ``ModelInferRequest`` carrying ``rows`` as raw_input_contents."""
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "input", "FP64"
    tensor.shape.extend(rows.shape)
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype=np.float64).tobytes())
    return request


async def test_concurrent_requests_merged_into_shared_inferences_each_get_their_own_rows(world: World) -> None:
    gateway = world.gateways[1]
    merged_before = gateway.metric("gateway_merged_requests_total", model=world.model)
    requests = [through_request(world.model, ROWS[i % len(ROWS) : i % len(ROWS) + 1]) for i in range(2 * len(ROWS))]
    for index, request in enumerate(requests):
        request.id = f"r-{index}"
    async with (
        grpc.aio.insecure_channel(gateway.grpc_address) as channel,
        grpc.aio.insecure_channel(world.stack.triton_grpc) as triton_channel,
    ):
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        responses = await asyncio.gather(*(stub.ModelInfer(request, timeout=10) for request in requests))
        direct = await service_pb2_grpc.GRPCInferenceServiceStub(triton_channel).ModelInfer(
            through_request(world.latest["triton_model_name"], ROWS), timeout=10
        )
    expected = np.frombuffer(direct.raw_output_contents[0], dtype=np.int64)
    for index, response in enumerate(responses):
        assert (response.id, response.model_version) == (f"r-{index}", str(world.latest["version"]))
        assert [tuple(output.shape) for output in response.outputs] == [(1, 1)]
        assert np.frombuffer(response.raw_output_contents[0], dtype=np.int64)[0] == expected[index % len(ROWS)]
    assert gateway.metric("gateway_merged_requests_total", model=world.model) > merged_before


async def test_no_grpc_request_fails_across_a_promotion_under_load(world: World) -> None:
    before, target = world.latest["version"], world.registered[1]
    results: list[tuple[str, str]] = []  # (model_version answered, failure or "")
    stop = asyncio.Event()

    async def caller(index: int) -> None:
        client = triton_grpc.InferenceServerClient(world.gateways[index % len(world.gateways)].grpc_address)
        try:
            while not stop.is_set():
                try:
                    result = await client.infer(world.model, _inputs(ROWS[:1]), client_timeout=10)
                except InferenceServerException as error:
                    results.append(("", f"{error.status()}: {error.message()}"))
                else:
                    results.append((result.get_response().model_version, ""))
        finally:
            await client.close()

    load = [asyncio.create_task(caller(index)) for index in range(4)]
    try:
        await wait_for(lambda: len(results) >= 20, timeout_s=10, what="gRPC load running")
        await world.promote(target)
        switched = len(results)
        await wait_for(
            lambda: sum(1 for version, _ in results[switched:] if version == str(target)) >= 40,
            timeout_s=10,
            what="the new version answering gRPC under load",
        )
    finally:
        stop.set()
        await asyncio.gather(*load)
    failures = [failure for _, failure in results if failure]
    assert not failures, failures[:5]
    assert {version for version, _ in results} == {str(before), str(target)}


async def test_ab_split_follows_the_client_id_metadata_and_pins_are_honoured(world: World) -> None:
    model = f"grpc-ab-{uuid.uuid4().hex[:6]}"
    first, second = world.promotions[0], world.promotions[-1]
    await world.publish("PROMOTER_TOPIC_MODEL_READY", model, ready_bytes(first, model_name=model, generation=0))
    challenger = ready_bytes(second, model_name=model, alias="challenger", generation=1)
    await world.publish("PROMOTER_TOPIC_MODEL_READY", model, challenger)
    weights = {"champion": 70, "challenger": 30}
    await world.publish("PROMOTER_TOPIC_ROUTING_UPDATED", model, routing_bytes(model, weights, 0))

    def policy_seen(gateway: GatewayHandle) -> bool:
        view = gateway.get("/models").json()["models"].get(model, {})
        return view.get("weights") == weights and len(view.get("aliases", {})) == 2

    await wait_for(lambda: all(policy_seen(g) for g in world.gateways), timeout_s=10, what="A/B policy applied")
    clients = [f"client-{i}" for i in range(300)]
    ordered = tuple(sorted(weights.items()))
    expected = {c: weighted_alias(ordered, client_bucket(c)) for c in clients}
    limit = asyncio.Semaphore(16)
    rows = ROWS[:1]

    async def answer(stub: Any, client: str, pin: tuple[tuple[str, str], ...] = ()) -> tuple[str, str, str]:
        async with limit:
            call = stub.ModelInfer(through_request(model, rows), metadata=(("x-client-id", client), *pin))
            response = await call
            trailers = dict(await call.trailing_metadata())
        return trailers["x-model-alias"], trailers["x-model-version"], response.model_version

    a, b = world.gateways
    async with (
        grpc.aio.insecure_channel(a.grpc_address) as on_a,
        grpc.aio.insecure_channel(b.grpc_address) as on_b,
    ):
        stub_a, stub_b = (service_pb2_grpc.GRPCInferenceServiceStub(c) for c in (on_a, on_b))
        answers_a = await asyncio.gather(*(answer(stub_a, c) for c in clients))
        answers_b = await asyncio.gather(*(answer(stub_b, c) for c in clients[:100]))
        pinned = await answer(stub_a, clients[0], (("x-model-alias", "challenger"),))
    versions = {"champion": str(first["data"]["version"]), "challenger": str(second["data"]["version"])}
    assert {c: alias for c, (alias, _, _) in zip(clients, answers_a, strict=True)} == expected
    assert answers_b == answers_a[:100]
    for alias, trailer_version, answered_version in answers_a:
        assert trailer_version == answered_version == versions[alias]
    assert pinned == ("challenger", versions["challenger"], versions["challenger"])


async def test_unknown_models_and_versions_are_not_found(world: World) -> None:
    address = world.gateways[0].grpc_address
    unknown = await _failure(_infer(address, "no-such-model"))
    assert unknown.status() == "StatusCode.NOT_FOUND"
    assert "'no-such-model' is not served by this gateway" in unknown.message()
    version = await _failure(_infer(address, world.model, model_version="999"))
    assert version.status() == "StatusCode.NOT_FOUND"
    assert "version 999" in version.message()
    bad_pin = await _failure(_infer(address, world.model, model_version="latest"))
    assert bad_pin.status() == "StatusCode.INVALID_ARGUMENT"


def _triton_requests(world: World, triton_model: str) -> float:
    """Inference requests for ``triton_model`` the stack's Triton received since it started, by its own counts
    (succeeded or failed: a model that refuses its input with an error response counts as a success)."""
    total = 0.0
    for line in httpx.get(world.stack.triton_metrics_url, timeout=10).text.splitlines():
        if line.startswith(
            (
                f'nv_inference_request_success{{model="{triton_model}"',
                f'nv_inference_request_failure{{model="{triton_model}"',
            )
        ):
            total += float(line.rpartition(" ")[2])
    return total


@pytest.mark.parametrize("front", [0, 1], ids=["native", "python"])
async def test_an_input_triton_refuses_is_invalid_argument_with_tritons_message_sent_once(
    world: World, front: int
) -> None:
    rows = ROWS[:2].copy()
    rows[1, 2] = math.nan
    triton_model = world.latest["triton_model_name"]
    before = _triton_requests(world, triton_model)
    refused = await _failure(_infer(world.gateways[front].grpc_address, world.model, rows))
    assert refused.status() == "StatusCode.INVALID_ARGUMENT", refused.message()
    assert "nan" in refused.message().lower()
    assert "Traceback" not in refused.message()
    # Triton ran it (the model refused it), so it was not sent again. Triton counts a request as it releases it,
    # which may follow its answer by a moment: wait for the count to move, then it must have moved by one.
    await wait_for(
        lambda: _triton_requests(world, triton_model) > before, timeout_s=10, what="Triton counting the request"
    )
    assert _triton_requests(world, triton_model) - before == 1


async def test_nothing_servable_is_unavailable(world: World) -> None:
    model = f"grpc-orphan-{uuid.uuid4().hex[:6]}"
    orphan = ready_bytes(world.promotions[-1], model_name=model, alias="challenger", generation=0)
    await world.publish("PROMOTER_TOPIC_MODEL_READY", model, orphan)
    gateway = world.gateways[0]
    await wait_for(lambda: gateway.served(model, "challenger") is not None, timeout_s=10, what="orphan routed")
    failure = await _failure(_infer(gateway.grpc_address, model))
    assert failure.status() == "StatusCode.UNAVAILABLE"
    assert "alias 'champion' is not served" in failure.message()


async def test_other_rpcs_are_unimplemented_and_say_what_to_use(world: World) -> None:
    client = triton_grpc.InferenceServerClient(world.gateways[0].grpc_address)
    try:
        load = await _failure(client.load_model(world.model))
        shared = await _failure(client.get_system_shared_memory_status())
    finally:
        await client.close()
    assert load.status() == "StatusCode.UNIMPLEMENTED"
    assert "promoter promote" in load.message()
    assert shared.status() == "StatusCode.UNIMPLEMENTED"
    assert "raw_input_contents" in shared.message()


@contextmanager
def _silent_listener() -> Iterator[str]:
    """A port that accepts connections and never answers (a hung Triton)."""
    with closing(socket.socket()) as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(16)
        yield f"{LOOPBACK}:{listener.getsockname()[1]}"


def _closed_port() -> str:
    with closing(socket.socket()) as probe:
        probe.bind((LOOPBACK, 0))
        return f"{LOOPBACK}:{probe.getsockname()[1]}"  # nothing listens once it is closed


async def test_triton_unreachable_is_unavailable_and_the_callers_deadline_is_honoured(world: World) -> None:
    triton_timeout_s = 30.0
    env = {**world.worker.env, "PROMOTER_TRITON_REQUEST_TIMEOUT_S": str(triton_timeout_s)}
    with (
        _silent_listener() as hung,
        running_gateways(
            world.stack,
            world.run_dir / "gw-nowhere",
            {**env, "PROMOTER_GATEWAY_TRITON_GRPC_ENDPOINTS": _closed_port()},
            ["gw-nowhere"],
        ) as (nowhere,),
        running_gateways(
            world.stack,
            world.run_dir / "gw-hung",
            {**env, "PROMOTER_GATEWAY_TRITON_GRPC_ENDPOINTS": hung},
            ["gw-hung"],
        ) as (stuck,),
    ):
        gone = await _failure(_infer(nowhere.grpc_address, world.model))
        assert gone.status() == "StatusCode.UNAVAILABLE"
        assert gone.message().startswith("Triton is unavailable")

        late = await _failure(_infer(stuck.grpc_address, world.model, client_timeout=1.0))
        assert late.status() == "StatusCode.DEADLINE_EXCEEDED"
        # The front answers just before the deadline, not the server transport's reset at it (which a caller
        # whose own timer had not yet fired read as CANCELLED: 1 in 40 before the fix).
        statuses = [
            (await _failure(_infer(stuck.grpc_address, world.model, client_timeout=0.3))).status() for _ in range(10)
        ]
        assert statuses == ["StatusCode.DEADLINE_EXCEEDED"] * 10
        # The gateway gave up with the caller (its own deadline to Triton is 30 s): the attempt ends and is
        # timed well before that.
        await wait_for(
            lambda: stuck.metric("gateway_request_duration_seconds_count", protocol="grpc") >= 1,
            timeout_s=10,
            what="the gateway ending the request at the caller's deadline",
        )
        assert stuck.metric("gateway_request_duration_seconds_sum", protocol="grpc") < triton_timeout_s / 2


async def test_an_unreachable_triton_on_the_fast_path_is_answered_by_the_slow_path(world: World) -> None:
    """The native front's first endpoint is a closed port: the requests it sent there are answered by the slow
    path (the other endpoint), none fails, and the slow path's rotation ejects the dead one (told by the front)."""
    dead = _closed_port()
    endpoints = f"{dead},{world.stack.triton_grpc}"
    with running_gateways(
        world.stack,
        world.run_dir / "gw-half",
        {**world.worker.env, "PROMOTER_GATEWAY_TRITON_GRPC_ENDPOINTS": endpoints},
        ["gw-half"],
    ) as (half,):
        async with grpc.aio.insecure_channel(half.grpc_address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            answers = [await stub.ModelInfer(through_request(world.model, ROWS[:1]), timeout=10) for _ in range(30)]
        assert {answer.model_version for answer in answers} == {str(world.latest["version"])}
        assert half.metric("gateway_requests_total", protocol="grpc", code="200") == 30
        assert half.metric("gateway_endpoint_ejections_total", endpoint=dead) >= 1


def _front_child(gateway: GatewayHandle) -> int | None:
    """The pid of ``gateway``'s native gRPC front (its child running promoter-grpc-front), if one runs."""
    return child_pid(gateway.process.pid, lambda command: BINARY_NAME in command)


async def test_a_killed_native_front_is_started_again_on_the_same_port(world: World) -> None:
    """SIGKILL of the Go child: the replica starts a new one on the same address, fed the whole table; gRPC
    requests are answered again and the restart is counted."""
    with running_gateways(world.stack, world.run_dir / "gw-restart", world.worker.env, ["gw-restart"]) as (gateway,):
        killed = _front_child(gateway)
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        await wait_for(
            lambda: _front_child(gateway) not in (None, killed), timeout_s=30, what="a new native front started"
        )
        async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            answer = await stub.ModelInfer(through_request(world.model, ROWS[:1]), timeout=20, wait_for_ready=True)
        assert answer.model_version == str(world.latest["version"])
        assert gateway.metric("gateway_grpc_front_restarts_total") == 1
        assert gateway.metric("gateway_requests_total", protocol="grpc", code="200") == 1  # counted by the new front
