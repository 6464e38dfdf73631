"""One retry on another endpoint for an inference that failed before Triton ran it, never after; ejection and
re-admission through the real upstream connections, and the v2 fast path, /predict (split) and merged inferences
surviving an endpoint without the routed model. Against small fake Tritons on loopback ports."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from fastapi import FastAPI

from gateway.endpoint_rotation import Backoff
from gateway.inference import InferenceService
from gateway.metrics import GatewayMetrics
from gateway.predict_api import build_predict_router
from gateway.routing_table import RoutingState
from gateway.settings import GatewaySettings
from gateway.upstream import TritonUpstream, UpstreamError
from gateway.v2_api import InferFastPath
from gateway.v2_routes import build_v2_router
from runtime.settings import TritonSettings
from tests.unit.gateway.test_request_merging import request_body, triton_answer
from tests.unit.gateway.test_routing import ready

MODEL = "m--v1"
JSON_HEADERS = {"content-type": "application/json"}
BODY = request_body([[1.0, 2.0]])
NEVER = Backoff(initial_s=600, max_s=600)  # no trial within a test: what is ejected stays out
#: Answers of the real tritonserver 2.51 (python backend), as measured.
SCRIPTED_ERRORS = {
    "broken": (500, "model crashed: CUDA out of memory"),
    "nan-internal": (500, "ValueError: Input X contains NaN."),  # a per-request TritonError without a code
    "nan-invalid": (400, "Input X contains NaN."),  # the same with TritonError.INVALID_ARG
    "picky": (400, "unexpected shape for input 'input'"),
}


@dataclass
class FakeTriton:
    """Answers per row like :func:`triton_answer`; ``missing`` models get Triton's 404, ``unavailable`` its 503;
    a few model names script a failure of their own."""

    missing: set[str] = field(default_factory=set)
    unavailable: set[str] = field(default_factory=set)
    hanging: set[str] = field(default_factory=set)  # answered once ``release`` is set
    seen: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    endpoint: str = ""

    async def infer(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        self.seen[model] += 1
        scripted = SCRIPTED_ERRORS.get(model)
        if model in self.missing:
            scripted = (404, f"Request for unknown model: '{model}' has no available versions")
        elif model in self.unavailable:
            scripted = (503, "Server not ready")
        elif model == "slow" or model in self.hanging:
            await self.release.wait()
        if scripted is not None:
            return web.json_response({"error": scripted[1]}, status=scripted[0])
        return web.Response(body=triton_answer(model, await request.read()), content_type="application/json")


Serve = Callable[[FakeTriton], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []
    fakes: list[FakeTriton] = []

    async def start(fake: FakeTriton) -> str:
        app = web.Application()
        app.router.add_post("/v2/models/{model}/infer", fake.infer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        fakes.append(fake)
        fake.endpoint = f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return fake.endpoint

    yield start
    for fake in fakes:
        fake.release.set()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def hangs_up() -> AsyncIterator[Callable[[float], Awaitable[str]]]:
    """A server that reads a request and closes the connection without a byte, after ``delay_s``."""
    servers: list[asyncio.Server] = []

    async def start(delay_s: float) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(delay_s)  # the scripted delay before hanging up
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., Awaitable[TritonUpstream]]]:
    started: list[TritonUpstream] = []

    async def start(*endpoints: str, timeout_s: float = 2.0, backoff: Backoff = NEVER) -> TritonUpstream:
        settings = TritonSettings(endpoints=",".join(endpoints), request_timeout_s=timeout_s)
        upstream = TritonUpstream(settings, connect_timeout_s=0.5, backoff=backoff)
        await upstream.start()
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        await upstream.close()


def metric(upstream: TritonUpstream, name: str, **labels: str) -> float:
    return upstream.metrics.registry.get_sample_value(name, labels) or 0.0


async def answered(upstream: TritonUpstream, count: int, model: str = MODEL) -> None:
    for _ in range(count):
        response = await upstream.infer(model, BODY, JSON_HEADERS)
        assert response.status == 200


async def test_a_refused_endpoint_is_retried_elsewhere_and_ejected(serve: Serve, upstreams: Any) -> None:
    good = FakeTriton()
    upstream = await upstreams("127.0.0.1:9", await serve(good))
    await answered(upstream, 10)
    assert good.seen[MODEL] == 10
    assert metric(upstream, "gateway_upstream_retries_total", reason="unreachable") == 1
    assert upstream.rotation.ejected() == {("127.0.0.1:9", None): "unreachable"}
    assert metric(upstream, "gateway_endpoint_ejections_total", endpoint="127.0.0.1:9", scope="endpoint") == 1


async def test_a_connection_dropped_before_any_answer_byte_is_retried_elsewhere(
    serve: Serve, hangs_up: Any, upstreams: Any
) -> None:
    good = FakeTriton()
    dead = await hangs_up(0.0)
    upstream = await upstreams(dead, await serve(good))
    await answered(upstream, 6)
    assert good.seen[MODEL] == 6
    assert metric(upstream, "gateway_upstream_retries_total", reason="reset") == 1
    assert upstream.rotation.ejected() == {(dead, None): "reset"}


@pytest.mark.parametrize(("fault", "reason"), [("missing", "unknown_model"), ("unavailable", "unavailable")])
async def test_a_model_missing_on_one_endpoint_ejects_only_that_pair(
    serve: Serve, upstreams: Any, fault: str, reason: str
) -> None:
    empty, good = FakeTriton(), FakeTriton()
    getattr(empty, fault).add(MODEL)
    upstream = await upstreams(await serve(empty), await serve(good))
    await answered(upstream, 8)
    assert (empty.seen[MODEL], good.seen[MODEL]) == (1, 8)
    assert metric(upstream, "gateway_upstream_retries_total", reason=reason) == 1
    assert upstream.rotation.ejected() == {(empty.endpoint, MODEL): reason}
    await answered(upstream, 4, model="other--v1")  # the endpoint still serves every other model
    assert (empty.seen["other--v1"], good.seen["other--v1"]) == (2, 2)


async def test_the_pair_is_readmitted_once_a_trial_is_answered(serve: Serve, upstreams: Any) -> None:
    empty, good = FakeTriton(missing={MODEL}), FakeTriton()
    upstream = await upstreams(await serve(empty), await serve(good), backoff=Backoff(initial_s=0.05, max_s=0.1))
    await answered(upstream, 2)
    assert upstream.rotation.ejected() == {(empty.endpoint, MODEL): "unknown_model"}
    empty.missing.clear()  # loaded there again
    before = empty.seen[MODEL]

    async def readmitted() -> bool:
        await answered(upstream, 1)
        return not upstream.rotation.ejected()

    deadline = asyncio.get_running_loop().time() + 5
    while not await readmitted():
        assert asyncio.get_running_loop().time() < deadline, "the pair was not readmitted within 5 s"
        await asyncio.sleep(0.01)  # poll: one request at a time until the trial is due
    await answered(upstream, 4)
    assert empty.seen[MODEL] >= before + 3  # back in the round robin
    assert metric(upstream, "gateway_endpoint_readmissions_total", endpoint=empty.endpoint, scope="model") == 1
    assert metric(upstream, "gateway_ejected_upstreams", scope="model") == 0


async def test_a_trial_that_does_not_answer_gets_half_the_deadline_then_goes_elsewhere(
    serve: Serve, upstreams: Any
) -> None:
    suspect, good = FakeTriton(missing={MODEL}), FakeTriton()
    upstream = await upstreams(await serve(suspect), await serve(good), timeout_s=1.0, backoff=Backoff(0.05, 0.05))
    await answered(upstream, 1)
    suspect.missing.clear()
    suspect.hanging.add(MODEL)  # half up: it takes the request and does not answer
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while suspect.seen[MODEL] < 2:  # one request at a time until one is the trial
        assert loop.time() < deadline, "no trial within 5 s"
        began = loop.time()
        await answered(upstream, 1)
        took = loop.time() - began
    assert 0.5 <= took < 1.0  # half the deadline on the trial, then answered elsewhere
    assert metric(upstream, "gateway_upstream_retries_total", reason="trial_timeout") == 1
    assert upstream.rotation.ejected() == {(suspect.endpoint, MODEL): "trial_timeout"}


@pytest.mark.parametrize(
    ("model", "status", "words"),
    [
        ("picky", 400, "unexpected shape"),
        ("nan-invalid", 400, "Input X contains NaN."),
        ("nan-internal", 400, "Input X contains NaN."),
        ("broken", 502, "CUDA out of memory"),
        ("slow", 504, "did not answer within 0.3 s"),
    ],
)
async def test_a_request_triton_may_have_run_is_never_retried(
    serve: Serve, upstreams: Any, model: str, status: int, words: str
) -> None:
    first, second = FakeTriton(), FakeTriton()
    upstream = await upstreams(await serve(first), await serve(second), timeout_s=0.3)
    with pytest.raises(UpstreamError) as error:
        await upstream.infer(model, BODY, JSON_HEADERS)
    assert (error.value.status, first.seen[model], second.seen[model]) == (status, 1, 0)
    assert words in error.value.message
    assert upstream.rotation.ejected() == {}
    assert metric(upstream, "gateway_upstream_retries_total", reason="unknown_model") == 0


async def test_a_model_no_endpoint_has_is_tried_twice_and_is_502(serve: Serve, upstreams: Any) -> None:
    fakes = [FakeTriton(missing={MODEL}) for _ in range(3)]
    upstream = await upstreams(*[await serve(fake) for fake in fakes])
    with pytest.raises(UpstreamError) as error:
        await upstream.infer(MODEL, BODY, JSON_HEADERS)
    assert error.value.status == 502
    assert "does not serve the routed model" in error.value.message
    assert sum(fake.seen[MODEL] for fake in fakes) == 2  # once more elsewhere, not everywhere
    lonely = await upstreams(fakes[0].endpoint)
    with pytest.raises(UpstreamError):
        await lonely.infer(MODEL, BODY, JSON_HEADERS)
    assert metric(lonely, "gateway_upstream_retries_total", reason="unknown_model") == 0


async def test_when_every_endpoint_is_ejected_one_is_still_tried(serve: Serve, upstreams: Any) -> None:
    fake = FakeTriton(missing={MODEL})
    upstream = await upstreams("127.0.0.1:9", await serve(fake))
    with pytest.raises(UpstreamError):
        await upstream.infer(MODEL, BODY, JSON_HEADERS)
    fake.missing.clear()
    await answered(upstream, 1)  # not failed fast: the least recently failed answered
    assert upstream.rotation.ejected() == {("127.0.0.1:9", None): "unreachable"}


async def test_the_retry_shares_the_callers_deadline(serve: Serve, hangs_up: Any, upstreams: Any) -> None:
    slow = FakeTriton()
    upstream = await upstreams(await hangs_up(0.2), await serve(slow), timeout_s=0.3)
    with pytest.raises(UpstreamError) as error:
        await upstream.infer("slow", BODY, JSON_HEADERS)
    assert error.value.status == 504
    assert slow.seen["slow"] == 1  # retried, then out of time


@pytest.fixture
async def gateway(serve: Serve) -> AsyncIterator[tuple[httpx.AsyncClient, InferenceService, FakeTriton]]:
    empty, good = FakeTriton(missing={MODEL}), FakeTriton()
    state = RoutingState()
    state.apply(ready(1, generation=0).model_copy(update={"max_batch_size": 4}))
    metrics = GatewayMetrics()
    settings = TritonSettings(endpoints=f"{await serve(empty)},{await serve(good)}", request_timeout_s=5)
    # The production connect deadline: 45 connections opened at once on a loop shared with the client and both
    # fakes can take longer than the 0.5 s used elsewhere here on a busy machine, and a connect timeout on the one
    # endpoint that has the model, retried on the one without it, is a second fault the retry cannot cover.
    connect_timeout_s = GatewaySettings().triton_connect_timeout_s
    upstream = TritonUpstream(
        settings, connect_timeout_s=connect_timeout_s, backoff=Backoff(0.01, 0.02), metrics=metrics
    )
    await upstream.start()
    service = InferenceService(GatewaySettings(), state, upstream, metrics)
    app = FastAPI()
    app.include_router(build_v2_router(service, lambda: True))
    app.include_router(build_predict_router(service))
    transport = httpx.ASGITransport(app=InferFastPath(app, service, max_body_bytes=1 << 20))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client, service, empty
    await service.close()
    await upstream.close()


async def test_every_api_survives_an_endpoint_without_the_routed_model(
    gateway: tuple[httpx.AsyncClient, InferenceService, FakeTriton],
) -> None:
    client, service, empty = gateway
    bodies = [request_body([[float(i), 1.0]]) for i in range(40)]
    v2 = [client.post("/v2/models/m/infer", content=body, headers=JSON_HEADERS) for body in bodies]
    records = [{"a": float(i), "b": 2.0} for i in range(10)]  # max_batch_size 4: three inferences
    predict = [client.post("/predict/m", json=records) for _ in range(5)]
    answers = await asyncio.gather(*v2, *predict)
    assert [answer.status_code for answer in answers] == [200] * len(answers), [a.text for a in answers if a.is_error]
    for body, answer in zip(bodies, answers[: len(bodies)], strict=True):
        assert answer.json()["outputs"] == json.loads(triton_answer(MODEL, body))["outputs"]
    assert answers[-1].json()["predictions"] == [i + 2.0 for i in range(10)]
    registry = service.metrics.registry
    assert (registry.get_sample_value("gateway_merged_requests_total", {"model": "m"}) or 0) > 0
    assert (registry.get_sample_value("gateway_upstream_retries_total", {"reason": "unknown_model"}) or 0) >= 1
    assert empty.seen[MODEL] >= 1
    errors = [s for family in registry.collect() if family.name == "gateway_errors" for s in family.samples]
    assert [s for s in errors if s.name == "gateway_errors_total"] == []
