"""Upstream failures map to clear statuses (never a stack trace), through the real upstream connections and the
gateway's v2 fast path, against a small fake Triton on a loopback port (no processes, no broker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from fastapi import FastAPI

from gateway.inference import InferenceService
from gateway.metrics import GatewayMetrics
from gateway.routing_table import RoutingState
from gateway.settings import GatewaySettings
from gateway.upstream import TritonUpstream, UpstreamError
from gateway.v2_api import InferFastPath
from gateway.v2_routes import build_v2_router
from runtime.settings import TritonSettings
from tests.unit.gateway.test_routing import ready

RELEASE = web.AppKey("release", asyncio.Event)
ANSWER = {"model_name": "m--v1", "model_version": "1", "outputs": [{"name": "output", "data": [2]}]}


async def fake_triton(request: web.Request) -> web.Response:
    model = request.match_info["model"]
    if model == "slow":  # never answers until the fixture releases it: the gateway must time out first
        await request.app[RELEASE].wait()
    if model == "broken":
        return web.json_response({"error": "model crashed: CUDA out of memory"}, status=500)
    if model == "unparsable":  # Triton answers 500 to some malformed requests
        return web.json_response({"error": "parameter key 'x' was not found in the JSON"}, status=500)
    if model == "picky":
        return web.json_response({"error": "unexpected shape for input 'input'"}, status=400)
    if model == "gone":
        return web.json_response({"error": "Request for unknown model: 'gone' is not found"}, status=400)
    return web.json_response({**ANSWER, "model_name": model})


@pytest.fixture
async def triton() -> AsyncIterator[str]:
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_post("/v2/models/{model}/infer", fake_triton)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        app[RELEASE].set()
        await runner.cleanup()


async def _upstream(endpoint: str) -> TritonUpstream:
    upstream = TritonUpstream(TritonSettings(endpoints=endpoint, request_timeout_s=0.3), connect_timeout_s=0.5)
    await upstream.start()
    return upstream


@pytest.mark.parametrize(
    ("model", "status", "words"),
    [
        ("broken", 502, "CUDA out of memory"),
        ("picky", 400, "unexpected shape"),
        ("unparsable", 400, "not found in the JSON"),
        ("gone", 502, "does not serve the routed model"),
        ("slow", 504, "did not answer within 0.3 s"),
    ],
)
async def test_triton_failures_map_to_statuses(triton: str, model: str, status: int, words: str) -> None:
    upstream = await _upstream(triton)
    try:
        with pytest.raises(UpstreamError) as error:
            await upstream.infer(model, b"{}", {"content-type": "application/json"})
    finally:
        await upstream.close()
    assert error.value.status == status
    assert words in error.value.message


async def test_unreachable_triton_is_503() -> None:
    upstream = await _upstream("127.0.0.1:9")  # discard port: nothing listens
    try:
        with pytest.raises(UpstreamError) as error:
            await upstream.infer("m--v1", b"{}", {})
    finally:
        await upstream.close()
    assert error.value.status == 503


@pytest.fixture
async def gateway(triton: str) -> AsyncIterator[httpx.AsyncClient]:
    state = RoutingState()
    state.apply(ready(1, generation=0))
    state.apply(ready(2, generation=1, alias="challenger"))
    state.apply(ready(3, generation=0, model="orphan", alias="staging"))
    upstream = await _upstream(triton)
    service = InferenceService(GatewaySettings(), state, upstream, GatewayMetrics())
    app = FastAPI()
    app.include_router(build_v2_router(service, lambda: True))
    transport = httpx.ASGITransport(app=InferFastPath(app, service, max_body_bytes=1024))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client
    await upstream.close()


async def test_fast_path_routes_pins_and_names_who_answered(gateway: httpx.AsyncClient) -> None:
    default = await gateway.post("/v2/models/m/infer", content=b"{}")
    assert default.status_code == 200
    assert default.headers["x-model-version"] == "1"
    assert default.json()["model_name"] == "m"
    assert default.json()["parameters"] == {"alias": "champion", "triton_model_name": "m--v1"}
    by_alias = await gateway.post("/v2/models/m/infer?alias=challenger", content=b"{}")
    assert by_alias.headers["x-model-alias"] == "challenger"
    by_header = await gateway.post("/v2/models/m/infer", content=b"{}", headers={"X-Model-Alias": "challenger"})
    assert by_header.json()["model_version"] == "2"
    by_version = await gateway.post("/v2/models/m/versions/2/infer", content=b"{}")
    assert by_version.headers["x-model-alias"] == "challenger"


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v2/models/nope/infer", 404, "not served by this gateway"),
        ("/v2/models/orphan/infer", 503, "'champion' is not served"),
        ("/v2/models/m/versions/9/infer", 404, "version 9"),
        ("/v2/models/m/versions/x/infer", 422, "version"),
        ("/v2/models/m/infer?version=0", 422, "version"),
        ("/v2/models/m/infer?alias=ghost", 404, "alias 'ghost'"),
    ],
)
async def test_fast_path_refusals_are_clear(gateway: httpx.AsyncClient, path: str, status: int, words: str) -> None:
    response = await gateway.post(path, content=b"{}")
    assert response.status_code == status
    assert words in json.loads(response.content)["error"]


async def test_a_body_over_the_limit_gets_413_naming_it(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/v2/models/m/infer", content=b"x" * 1025)
    assert response.status_code == 413
    assert response.json()["error"] == "body: larger than the gateway's limit of 1024 bytes"
    assert (await gateway.post("/v2/models/m/infer", content=b"{}")).status_code == 200
